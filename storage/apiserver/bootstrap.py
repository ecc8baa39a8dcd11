"""The default RBAC policy, reconciled at every server start, and cluster role aggregation.

As kube-apiserver's bootstrap policy: roles and bindings marked
``rbac.authorization.kubernetes.io/autoupdate: "true"`` get back any rule or
subject they lack (nothing a cluster admin added is removed); set the
annotation to ``"false"`` to keep a changed default as it is.
"""
from __future__ import annotations

import copy
import threading
from typing import Any

import structlog

from storage.api.defaults import apply_defaults
from storage.api.selectors import selector_matches
from storage.api.validation import validate
from storage.apiserver.authz_index import AuthzIndex
from storage.apiserver.node_authz import NODE_RULE_DICTS
from storage.apiserver.rbac import AUTHENTICATED, MASTERS, UNAUTHENTICATED
from storage.errors import AlreadyExists, Conflict, NotFound, StowageError
from storage.store.base import Store

log = structlog.get_logger(__name__)

Obj = dict[str, Any]
RBAC = "rbac.authorization.k8s.io"
API_VERSION = f"{RBAC}/v1"
AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"
BOOTSTRAP_LABEL = {"kubernetes.io/bootstrapping": "rbac-defaults"}
AGGREGATE_TO = {level: f"{RBAC}/aggregate-to-{level}" for level in ("admin", "edit", "view")}

_WRITE = ["create", "delete", "deletecollection", "patch", "update"]
_READ = ["get", "list", "watch"]


def _rule(verbs: list[str], groups: list[str], resources: list[str]) -> Obj:
    return {"verbs": verbs, "apiGroups": groups, "resources": resources}


def _urls(verbs: list[str], urls: list[str]) -> Obj:
    return {"verbs": verbs, "nonResourceURLs": urls}


def _role(name: str, rules: list[Obj] | None = None, *, labels: dict[str, str] | None = None,
          aggregate: str | None = None) -> Obj:
    obj: Obj = {
        "apiVersion": API_VERSION, "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {**BOOTSTRAP_LABEL, **(labels or {})},
                     "annotations": {AUTOUPDATE: "true"}},
    }
    if aggregate is not None:
        obj["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": {AGGREGATE_TO[aggregate]: "true"}}]}
        obj["rules"] = []
    else:
        obj["rules"] = rules or []
    return obj


def _binding(name: str, role: str, groups: list[str]) -> Obj:
    return {
        "apiVersion": API_VERSION, "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": dict(BOOTSTRAP_LABEL), "annotations": {AUTOUPDATE: "true"}},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": RBAC, "kind": "Group", "name": g} for g in groups],
    }


def cluster_roles() -> list[Obj]:
    """Kubernetes' default cluster roles, limited to the kinds Stowage serves (and ServiceAccounts, coming)."""
    view_core = ["configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods",
                 "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services",
                 "services/status", "events", "namespaces/status", "pods/log", "pods/status",
                 "replicationcontrollers/status"]
    apps = ["controllerrevisions", "daemonsets", "daemonsets/status", "deployments", "deployments/scale",
            "deployments/status", "replicasets", "replicasets/scale", "replicasets/status", "statefulsets",
            "statefulsets/scale", "statefulsets/status"]
    return [
        _role("cluster-admin", [_rule(["*"], ["*"], ["*"]), _urls(["*"], ["*"])]),
        _role("admin", aggregate="admin"),
        _role("edit", labels={AGGREGATE_TO["admin"]: "true"}, aggregate="edit"),
        _role("view", labels={AGGREGATE_TO["edit"]: "true"}, aggregate="view"),
        _role("system:aggregate-to-admin", [
            _rule(_WRITE + _READ, [RBAC], ["rolebindings", "roles"]),
            _rule(["create"], ["authorization.k8s.io"], ["localsubjectaccessreviews"]),
        ], labels={AGGREGATE_TO["admin"]: "true"}),
        _role("system:aggregate-to-edit", [
            _rule(_WRITE, [""], ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"]),
            _rule(["create"], [""], ["pods/eviction"]),
            _rule(_WRITE, [""], ["configmaps", "endpoints", "persistentvolumeclaims", "replicationcontrollers",
                                 "replicationcontrollers/scale", "secrets", "serviceaccounts", "services",
                                 "services/proxy"]),
            _rule(_READ, [""], ["secrets"]),
            _rule(["impersonate"], [""], ["serviceaccounts"]),
            _rule(["create"], [""], ["serviceaccounts/token"]),
            _rule(_WRITE, ["apps"], [r for r in apps if not r.endswith("/status") and r != "controllerrevisions"]),
            _rule(_WRITE, ["batch"], ["cronjobs", "jobs"]),
            _rule(_WRITE, ["autoscaling"], ["horizontalpodautoscalers"]),
            _rule(_WRITE, ["networking.k8s.io"], ["ingresses", "networkpolicies"]),
            _rule(_WRITE, ["policy"], ["poddisruptionbudgets"]),
            # VS14: a namespace's users take and delete snapshots of their claims; contents and classes are
            # cluster-scoped, for administrators.
            _rule(_WRITE, ["snapshot.storage.k8s.io"], ["volumesnapshots"]),
        ], labels={AGGREGATE_TO["edit"]: "true"}),
        # Never secrets: a view user must not read credentials (as Kubernetes).
        _role("system:aggregate-to-view", [
            _rule(_READ, [""], view_core),
            _rule(_READ, [""], ["namespaces"]),
            # QL1: everyone with view reads the namespace's quotas and limits; only cluster-admin writes them.
            _rule(_READ, [""], ["limitranges", "resourcequotas", "resourcequotas/status"]),
            _rule(_READ, ["apps"], apps),
            _rule(_READ, ["batch"], ["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
            _rule(_READ, ["autoscaling"], ["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
            _rule(_READ, ["networking.k8s.io"], ["ingresses", "ingresses/status", "networkpolicies"]),
            _rule(_READ, ["discovery.k8s.io"], ["endpointslices"]),
            _rule(_READ, ["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
            _rule(_READ, ["snapshot.storage.k8s.io"], ["volumesnapshots", "volumesnapshots/status"]),
        ], labels={AGGREGATE_TO["view"]: "true"}),
        _role("system:discovery", [_urls(["get"], ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                                                  "/openapi", "/openapi/*", "/readyz", "/version", "/version/"])]),
        _role("system:basic-user", [
            _rule(["create"], ["authorization.k8s.io"], ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
            _rule(["create"], ["authentication.k8s.io"], ["selfsubjectreviews"]),
        ]),
        _role("system:public-info-viewer", [_urls(["get"], ["/healthz", "/livez", "/readyz", "/version", "/version/"])]),
        # A new host's bootstrap token may ask for its node certificate, and nothing else.
        _role("system:node-bootstrapper", [
            _rule(["create", "get", "list", "watch"], ["certificates.k8s.io"], ["certificatesigningrequests"]),
        ]),
        # Not bound by default (the Node authorizer grants a node these rules itself), as in Kubernetes.
        _role("system:node", copy.deepcopy(NODE_RULE_DICTS)),
        # CSR3: bind it to let someone approve users' client certificate requests (unbound, as in Kubernetes).
        _role("system:certificates.k8s.io:kube-apiserver-client-approver", [
            {**_rule(["approve"], ["certificates.k8s.io"], ["signers"]),
             "resourceNames": ["kubernetes.io/kube-apiserver-client"]},
        ]),
    ]


def cluster_role_bindings() -> list[Obj]:
    return [
        _binding("cluster-admin", "cluster-admin", [MASTERS]),
        _binding("system:discovery", "system:discovery", [AUTHENTICATED]),
        _binding("system:basic-user", "system:basic-user", [AUTHENTICATED]),
        _binding("system:public-info-viewer", "system:public-info-viewer", [AUTHENTICATED, UNAUTHENTICATED]),
        _binding("system:node-bootstrapper", "system:node-bootstrapper", ["system:bootstrappers"]),
    ]


def _checked(obj: Obj) -> Obj:
    return validate(apply_defaults(copy.deepcopy(obj)))


def _merged(current: Obj, wanted: Obj) -> Obj | None:
    """``current`` with what ``wanted`` adds (labels, annotations, rules, subjects); None when nothing is missing."""
    out = copy.deepcopy(current)
    meta, wanted_meta = out.setdefault("metadata", {}), wanted["metadata"]
    for key in ("labels", "annotations"):
        values = meta.setdefault(key, {})
        for k, v in wanted_meta.get(key, {}).items():
            values.setdefault(k, v)
    if "aggregationRule" in wanted:
        out.setdefault("aggregationRule", wanted["aggregationRule"])
    else:
        for field in ("rules", "subjects"):
            if field in wanted:
                have = out.setdefault(field, [])
                have.extend(item for item in wanted[field] if item not in have)
    return None if out == current else out


def reconcile_bootstrap_policy(store: Store) -> None:
    """Create the default roles and bindings; give back what a changed one lost unless autoupdate is "false"."""
    for resource, objs in (("clusterroles", cluster_roles()), ("clusterrolebindings", cluster_role_bindings())):
        for wanted in objs:
            wanted = _checked(wanted)
            name = wanted["metadata"]["name"]
            for _attempt in range(5):
                try:
                    current = store.get(resource, "", name)
                except NotFound:
                    try:
                        store.create(resource, wanted)
                        break
                    except AlreadyExists:
                        continue
                if ((current.get("metadata") or {}).get("annotations") or {}).get(AUTOUPDATE) == "false":
                    break
                if resource == "clusterrolebindings" and current.get("roleRef") != wanted.get("roleRef"):
                    log.warning("bootstrap binding has another roleRef; left as it is", binding=name)
                    break
                merged = _merged(current, wanted)
                if merged is None:
                    break
                try:
                    store.update(resource, merged)
                    break
                except Conflict:
                    continue


def aggregated_rules(role: Obj, roles: list[Obj]) -> list[Obj] | None:
    """The rules an aggregated cluster role should hold: those of every other role its selectors pick."""
    selectors = (role.get("aggregationRule") or {}).get("clusterRoleSelectors")
    if selectors is None:
        return None
    name = (role.get("metadata") or {}).get("name")
    rules: list[Obj] = []
    for other in sorted(roles, key=lambda r: (r.get("metadata") or {}).get("name") or ""):
        meta = other.get("metadata") or {}
        if meta.get("name") == name:
            continue
        if any(selector_matches(s, meta.get("labels") or {}) for s in selectors if isinstance(s, dict)):
            rules.extend(r for r in other.get("rules") or [] if r not in rules)
    return rules


class AggregationController:
    """Keeps every aggregated cluster role's rules equal to the union of the roles it selects.

    Level-triggered from the authorization index: each change of a cluster
    role wakes it, and it compares every aggregated role with what it should
    hold; a write it loses to another writer is redone on the next change.
    """

    def __init__(self, store: Store, index: AuthzIndex) -> None:
        self.store = store
        self.index = index
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clusterrole-aggregation", daemon=True)
        index.add_listener(self._changed)

    def start(self) -> None:
        self._wake.set()
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def _changed(self, resource: str | None) -> None:
        if resource in (None, "clusterroles"):
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.sync_once()
            except StowageError as exc:
                log.warning("cluster role aggregation failed; retried on the next change", error=str(exc))
                self._stop.wait(1.0)
                self._wake.set()

    def sync_once(self) -> int:
        """One pass; returns how many roles it rewrote."""
        roles = self.index.cluster_roles()
        written = 0
        for role in roles:
            wanted = aggregated_rules(role, roles)
            if wanted is None or wanted == (role.get("rules") or []):
                continue
            try:
                self.store.update("clusterroles", {**role, "rules": wanted})
                written += 1
            except (Conflict, NotFound):
                continue  # a newer version is on its way through the watch and wakes another pass
        return written
