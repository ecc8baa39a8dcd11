"""The default policy's reconciliation at start-up, and the watch-fed authorization index, on both store backends."""
from __future__ import annotations

import copy

from storage.apiserver.auth import User
from storage.apiserver.authz import Authorization
from storage.apiserver.bootstrap import AUTOUPDATE, reconcile_bootstrap_policy
from storage.apiserver.rbac import Attributes
from storage.store.sql import SqlStore
from support import wait_for

RBAC = "rbac.authorization.k8s.io"


def test_reconcile_restores_what_a_default_lost_unless_autoupdate_is_false(store: SqlStore) -> None:
    reconcile_bootstrap_policy(store)
    basic = store.get("clusterroles", "", "system:basic-user")
    wanted_rules = copy.deepcopy(basic["rules"])
    store.update("clusterroles", {**basic, "rules": wanted_rules[:1] + [{"verbs": ["get"], "nonResourceURLs": ["/extra"]}]})
    binding = store.get("clusterrolebindings", "", "system:discovery")
    store.update("clusterrolebindings", {**binding, "subjects": []})
    reconcile_bootstrap_policy(store)
    basic = store.get("clusterroles", "", "system:basic-user")
    assert all(r in basic["rules"] for r in wanted_rules)
    assert {"verbs": ["get"], "nonResourceURLs": ["/extra"]} in basic["rules"]  # an admin's addition stays
    assert store.get("clusterrolebindings", "", "system:discovery")["subjects"] == [
        {"apiGroup": RBAC, "kind": "Group", "name": "system:authenticated"}]
    # Opted out: left exactly as the admin made it.
    basic["metadata"]["annotations"][AUTOUPDATE] = "false"
    basic = store.update("clusterroles", {**basic, "rules": []})
    reconcile_bootstrap_policy(store)
    assert store.get("clusterroles", "", "system:basic-user")["rules"] == []


def test_index_follows_the_store_and_denials_wait_for_it(store: SqlStore) -> None:
    authz = Authorization(store).start()
    try:
        alice = User("alice", groups=("system:authenticated",))
        attrs = Attributes(alice, "get", True, "ns1", "", "v1", "pods", "", "p")
        assert not authz.decide(attrs).allowed
        store.create("rolebindings", {
            "apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": {"name": "b", "namespace": "ns1"},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "view"},
            "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "alice"}]})
        # decide_current reads every write made before it: no wait in the caller.
        assert authz.decide_current(attrs).allowed
        view = wait_for(lambda: store.get("clusterroles", "", "view")["rules"], "view to be aggregated", 30)
        assert not any("secrets" in r.get("resources", []) for r in view)
        store.delete("rolebindings", "ns1", "b")
        wait_for(lambda: not authz.decide(attrs).allowed, "the deleted binding to stop applying", 30)
    finally:
        authz.close()
