"""PodDisruptionBudgets and the pods/eviction subresource over the real API server with the controllers
(rules E1-E16), and ``kubectl cordon``/``uncordon`` with the real kubectl.

No node agents: a stand-in kubelet writes pod status through the store, and pods carry a finalizer of
their own so that a graceful delete only marks them, as the agent's finalizer does on a real node.
"""
from __future__ import annotations

import copy
import os
import secrets
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator

import httpx
import pytest

from storage.apiserver.auth import TOKEN_FILE, User, append_token, ensure_admin_token
from storage.apiserver.server import RunningServer, start_in_thread
from storage.client import Client
from storage.controllers.base import ControllerOptions
from storage.errors import Conflict, Invalid, NotFound
from storage.store import open_store
from support import kubectl_binary, running_controllers, wait_for

Obj = dict[str, Any]
HOLD = "example.com/hold"  # keeps a deleted pod visible (deletionTimestamp set), as the agent's finalizer does
USERS = {"erin": (), "val": (), "system:node:n1": ("system:nodes",)}
EVICTION_REFUSED = "Cannot evict pod as it would violate the pod's disruption budget."


@dataclass
class Env:
    server: RunningServer
    admin: Client
    tokens: dict[str, str]

    def http(self, user: str, method: str, path: str, body: Any = None, **params: str) -> httpx.Response:
        token = self.server.token if user == "admin" else self.tokens[user]
        return httpx.request(method, self.server.url + path, params=params, json=body, timeout=30,
                             headers={"Authorization": f"Bearer {token}"}, verify=self.server.verify())

    def evict(self, name: str, user: str = "admin", body: Obj | None = None, version: str = "policy/v1",
              **params: str) -> httpx.Response:
        sent = body if body is not None else {"apiVersion": version, "kind": "Eviction",
                                              "metadata": {"name": name, "namespace": "default"}}
        return self.http(user, "POST", f"/api/v1/namespaces/default/pods/{name}/eviction", sent, **params)

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        env["KUBECONFIG"] = str(self.server.kubeconfig)
        return subprocess.run([kubectl_binary(), *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    data_dir = tmp_path_factory.mktemp("disruption") / "apiserver"
    data_dir.mkdir(parents=True)
    ensure_admin_token(data_dir)
    tokens = {}
    for name, groups in USERS.items():
        tokens[name] = secrets.token_urlsafe(24)
        append_token(data_dir / TOKEN_FILE, tokens[name], User(name, f"uid-{name}", groups))
    store = open_store(str(data_dir / "stowage.db"))
    try:
        server = start_in_thread(store, data_dir=data_dir, kubeconfig=data_dir / "kubeconfig")
        try:
            # The nodes here have no agent and their health is not under test: the node lifecycle
            # controller must not find them silent (and taint them) while a test is still running.
            quiet = ControllerOptions(node_monitor_grace_period=3600.0)
            with running_controllers(store, options=quiet), server.client() as admin:
                for user, role in (("erin", "edit"), ("val", "view")):
                    admin.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                                  "metadata": {"name": f"{user}-{role}", "namespace": "default"},
                                  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                              "name": role},
                                  "subjects": [{"kind": "User", "name": user}]})
                yield Env(server, admin, tokens)
        finally:
            server.stop()
    finally:
        store.close()


def running_pod(env: Env, name: str, app: str, *, ready: bool = True, phase: str = "Running",
                node: str = "n1", owner: Obj | None = None) -> Obj:
    """A pod as a node agent leaves it: bound, Running and (un)ready, with a finalizer."""
    meta: Obj = {"name": name, "namespace": "default", "labels": {"app": app}, "finalizers": [HOLD]}
    if owner is not None:
        meta["ownerReferences"] = [{**owner, "controller": True}]
    env.admin.create({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                      "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}})
    store = env.server.store
    for _ in range(20):
        pod = store.get("pods", "default", name)
        pod["status"] = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
        try:
            return store.update("pods", pod)
        except Conflict:
            continue
    raise AssertionError(f"could not set the status of {name}")


def budget(env: Env, name: str, app: str, **spec: Any) -> Obj:
    return env.admin.create({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                             "metadata": {"name": name, "namespace": "default"},
                             "spec": {"selector": {"matchLabels": {"app": app}}, **spec}})


def status_of(env: Env, name: str, **wanted: Any) -> Obj:
    """The budget's status once the controller wrote ``wanted`` into it."""
    def check() -> Obj | None:
        status = env.admin.get("poddisruptionbudgets", name, "default").get("status") or {}
        return status if all(status.get(k) == v for k, v in wanted.items()) else None
    return wait_for(check, f"PDB {name} status {wanted}", 30)


def marked(env: Env, name: str) -> Obj:
    pod = env.admin.get("pods", name, "default")
    assert pod["metadata"].get("deletionTimestamp"), f"{name} is not being deleted"
    return pod


def release(env: Env, *names: str) -> None:
    """Let marked pods go (the finalizer's owner would)."""
    for name in names:
        for _ in range(20):
            try:
                pod = env.admin.get("pods", name, "default")
            except NotFound:
                break
            pod["metadata"]["finalizers"] = []
            try:
                env.admin.update(pod)
                break
            except Conflict:
                continue


def test_E4_E5_E8_the_controller_keeps_status_and_kubectl_prints_its_columns(env: Env) -> None:
    for i in range(3):
        running_pod(env, f"cols-{i}", "cols", ready=i < 2)
    budget(env, "cols", "cols", minAvailable=1)
    status = status_of(env, "cols", disruptionsAllowed=1)
    assert (status["currentHealthy"], status["desiredHealthy"], status["expectedPods"]) == (2, 1, 3)
    assert status["observedGeneration"] == 1
    [cond] = status["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("DisruptionAllowed", "True", "SufficientPods")

    out = env.kubectl("get", "pdb", "cols")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0].split() == ["NAME", "MIN", "AVAILABLE", "MAX", "UNAVAILABLE", "ALLOWED",
                                                  "DISRUPTIONS", "AGE"]
    assert out.stdout.split("\n")[1].split()[:4] == ["cols", "1", "N/A", "1"]

    # A spec change is seen (observedGeneration) and counted again. A percentage counts the replicas of the
    # pods' controllers: these pods have none, so no pod is expected and nothing may go (and a warning
    # says so, as Kubernetes' UnmanagedPods event).
    env.admin.patch("poddisruptionbudgets", "cols", {"spec": {"minAvailable": None, "maxUnavailable": "50%"}},
                    "default")
    status = status_of(env, "cols", observedGeneration=2)
    assert (status["expectedPods"], status["disruptionsAllowed"]) == (0, 0)
    assert status["conditions"][0]["reason"] == "InsufficientPods"

    def reasons() -> set[str]:
        return {e.get("reason") for e in env.admin.list("events", "default")[0]
                if (e.get("involvedObject") or {}).get("name") == "cols"}
    # The event is written after the status it explains: wait for it, do not race it.
    wait_for(lambda: "UnmanagedPods" in reasons(), "the UnmanagedPods event", 30)


def test_E9_E12_an_eviction_spends_the_budget_then_is_refused_with_429(env: Env) -> None:
    for i in range(3):
        running_pod(env, f"web-{i}", "web")
    budget(env, "web", "web", minAvailable=2)
    status_of(env, "web", disruptionsAllowed=1)

    done = env.evict("web-0")
    assert done.status_code == 201, done.text
    assert done.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
    evicted = marked(env, "web-0")  # a graceful delete: the pod is marked, its finalizer still holds it
    [target] = [c for c in evicted["status"]["conditions"] if c["type"] == "DisruptionTarget"]
    assert (target["status"], target["reason"], target["message"]) == ("True", "EvictionByEvictionAPI",
                                                                        "Eviction API: evicting")

    refused = env.evict("web-1")
    assert refused.status_code == 429 and "Retry-After" not in refused.headers  # clients must see it, not retry
    body = refused.json()
    assert (body["reason"], body["message"]) == ("TooManyRequests", EVICTION_REFUSED)
    assert body["details"]["causes"] == [{"reason": "DisruptionBudget", "message":
                                          "The disruption budget web needs 2 healthy pods and has 2 currently"}]
    assert not env.admin.get("pods", "web-1", "default")["metadata"].get("deletionTimestamp")
    # The controller confirmed the eviction: the deleting pod left disruptedPods and the healthy count.
    status = status_of(env, "web", currentHealthy=2, disruptionsAllowed=0)
    assert "disruptedPods" not in status and status["conditions"][0]["reason"] == "InsufficientPods"

    release(env, "web-0")  # gone; a replacement becomes ready, and the budget allows one again
    running_pod(env, "web-3", "web")
    status_of(env, "web", currentHealthy=3, disruptionsAllowed=1)
    assert env.evict("web-1").status_code == 201


def test_E9_evictions_racing_for_the_last_disruption_take_it_once(env: Env) -> None:
    """Both read the budget with one disruption left; the budget's resourceVersion lets one decrement win,
    and the other, re-reading, is refused, long before the controller could count the pods again."""
    for i in range(4):
        running_pod(env, f"race-{i}", "race")
    budget(env, "race", "race", minAvailable=3)
    status_of(env, "race", disruptionsAllowed=1)
    with ThreadPoolExecutor(4) as pool:
        codes = sorted(pool.map(lambda i: env.evict(f"race-{i}").status_code, range(4)))
    assert codes == [201, 429, 429, 429]


def test_E3_E11_pods_that_disrupt_nothing_go_without_spending_the_budget(env: Env) -> None:
    running_pod(env, "calm-0", "calm")
    running_pod(env, "calm-1", "calm")
    running_pod(env, "calm-pending", "calm", phase="Pending", ready=False)
    running_pod(env, "calm-sick", "calm", ready=False)
    budget(env, "calm", "calm", minAvailable=2)
    status_of(env, "calm", currentHealthy=2, desiredHealthy=2, disruptionsAllowed=0)
    # E3: Pending is not a disruption; E11: an unready pod may go while the application has its healthy pods.
    assert env.evict("calm-pending").status_code == 201
    assert env.evict("calm-sick").status_code == 201
    marked(env, "calm-pending"), marked(env, "calm-sick")
    assert env.admin.get("poddisruptionbudgets", "calm", "default")["status"]["disruptionsAllowed"] == 0
    # A healthy one may not.
    assert env.evict("calm-0").status_code == 429


def test_E11_unhealthy_pods_need_a_healthy_budget_unless_always_allowed(env: Env) -> None:
    running_pod(env, "frail-0", "frail", ready=False)
    running_pod(env, "frail-1", "frail", ready=False)
    budget(env, "frail", "frail", minAvailable=1)
    status_of(env, "frail", currentHealthy=0, desiredHealthy=1)
    refused = env.evict("frail-0")
    assert refused.status_code == 429
    assert refused.json()["details"]["causes"][0]["message"] == (
        "The disruption budget frail needs 1 healthy pods and has 0 currently")
    env.admin.patch("poddisruptionbudgets", "frail", {"spec": {"unhealthyPodEvictionPolicy": "AlwaysAllow"}},
                    "default")
    assert env.evict("frail-0").status_code == 201
    marked(env, "frail-0")


def test_E10_a_pod_under_two_budgets_is_a_500(env: Env) -> None:
    running_pod(env, "twice-0", "twice")
    budget(env, "twice-a", "twice", maxUnavailable=1)
    budget(env, "twice-b", "twice", minAvailable=0)
    answer = env.evict("twice-0")
    assert answer.status_code == 500
    assert answer.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 500,
                             "message": "This pod has more than one PodDisruptionBudget, which the eviction "
                                        "subresource does not support."}
    assert not env.admin.get("pods", "twice-0", "default")["metadata"].get("deletionTimestamp")


def test_E1_the_eviction_body_is_checked_and_dry_run_changes_nothing(env: Env) -> None:
    running_pod(env, "body-0", "body")
    running_pod(env, "body-1", "body")
    budget(env, "body", "body", minAvailable=1)
    status_of(env, "body", disruptionsAllowed=1)
    mismatch = env.evict("body-0", body={"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "x"}})
    assert mismatch.status_code == 400
    assert mismatch.json()["message"] == "name in URL does not match name in Eviction object"
    wrong = env.evict("body-0", body={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "body-0"}})
    assert wrong.status_code == 400
    bad = env.evict("body-0", body={"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "body-0"},
                                    "deleteOptions": {"propagationPolicy": "Sometimes", "dryRun": ["Some"]}})
    assert bad.status_code == 422
    assert 'propagationPolicy: Unsupported value: "Sometimes"' in bad.json()["message"]
    assert env.evict("nobody").status_code == 404
    assert env.http("admin", "GET", "/api/v1/namespaces/default/pods/body-0/eviction").status_code == 405

    dry = env.evict("body-0", dryRun="All")
    assert dry.status_code == 201
    assert not env.admin.get("pods", "body-0", "default")["metadata"].get("deletionTimestamp")
    assert env.admin.get("poddisruptionbudgets", "body", "default")["status"]["disruptionsAllowed"] == 1

    # A precondition that cannot hold is a 409 before the budget is touched; kubectl 1.20 posts
    # policy/v1beta1 Evictions.
    stale = env.evict("body-0", body={"apiVersion": "policy/v1beta1", "kind": "Eviction",
                                      "metadata": {"name": "body-0"},
                                      "deleteOptions": {"preconditions": {"uid": "not-this-one"}}})
    assert stale.status_code == 409
    assert env.admin.get("poddisruptionbudgets", "body", "default")["status"]["disruptionsAllowed"] == 1
    assert env.evict("body-0", version="policy/v1beta1").status_code == 201
    marked(env, "body-0")


def test_E15_edit_may_evict_view_may_read_budgets_nodes_evict_only_their_own_pods(env: Env) -> None:
    running_pod(env, "rbac-0", "rbac", node="n1")
    running_pod(env, "rbac-1", "rbac", node="n2")
    running_pod(env, "rbac-2", "rbac", node="n1")
    budget(env, "rbac", "rbac", minAvailable=0)
    status_of(env, "rbac", disruptionsAllowed=3)

    denied = env.evict("rbac-0", user="val")
    assert denied.status_code == 403
    assert denied.json()["message"] == ('pods "rbac-0" is forbidden: User "val" cannot create resource '
                                        '"pods/eviction" in API group "" in the namespace "default"')
    assert env.http("val", "GET", "/apis/policy/v1/namespaces/default/poddisruptionbudgets/rbac").status_code == 200
    assert env.http("val", "GET",
                    "/apis/policy/v1/namespaces/default/poddisruptionbudgets/rbac/status").status_code == 200

    other = env.evict("rbac-1", user="system:node:n1")
    assert other.status_code == 403
    assert "can only evict pods with spec.nodeName set to itself" in other.json()["message"]
    assert env.evict("rbac-2", user="system:node:n1").status_code == 201
    assert env.evict("rbac-0", user="erin").status_code == 201
    marked(env, "rbac-0"), marked(env, "rbac-2")


def test_E16_budget_status_is_the_controllers_alone(env: Env) -> None:
    with pytest.raises(Invalid) as both:
        budget(env, "both", "both", minAvailable=1, maxUnavailable=1)
    assert "minAvailable and maxUnavailable cannot be both set" in both.value.message
    forged = env.admin.create({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                               "metadata": {"name": "forged", "namespace": "default"},
                               "spec": {"minAvailable": 5, "selector": {"matchLabels": {"app": "forged"}}},
                               "status": {"disruptionsAllowed": 100, "observedGeneration": 1}})
    assert forged.get("status", {}).get("disruptionsAllowed") is None
    status_of(env, "forged", disruptionsAllowed=0, expectedPods=0)
    negative = copy.deepcopy(env.admin.get("poddisruptionbudgets", "forged", "default"))
    negative["status"]["disruptionsAllowed"] = -1
    with pytest.raises(Invalid) as below:
        env.admin.update_status(negative)
    assert "status.disruptionsAllowed" in below.value.message


def test_E13_E14_kubectl_cordon_taints_the_node_and_the_scheduler_passes_it_by(env: Env) -> None:
    env.admin.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "lone"}})
    store = env.server.store
    node = store.get("nodes", "", "lone")
    node["status"] = {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2099-01-01T00:00:00Z"}]}
    store.update("nodes", node)

    out = env.kubectl("cordon", "lone")
    assert out.returncode == 0 and out.stdout.strip() == "node/lone cordoned", out.stderr
    # Compared without timeAdded, which the taint carries as in Kubernetes.
    wait_for(lambda: [(t["key"], t["effect"]) for t in env.admin.get("nodes", "lone")["spec"].get("taints") or []] ==
             [("node.kubernetes.io/unschedulable", "NoSchedule")], "the unschedulable taint", 30)
    env.admin.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "homeless", "namespace": "default"},
                      "spec": {"containers": [{"name": "c", "image": "busybox"}]}})

    def unschedulable() -> str | None:
        conds = env.admin.get("pods", "homeless", "default").get("status", {}).get("conditions") or []
        return next((c.get("message") for c in conds if c.get("type") == "PodScheduled"
                     and c.get("status") == "False"), None)
    assert "1 node(s) were unschedulable" in wait_for(unschedulable, "PodScheduled=False", 30)

    out = env.kubectl("uncordon", "lone")
    assert out.returncode == 0 and out.stdout.strip() == "node/lone uncordoned", out.stderr
    wait_for(lambda: env.admin.get("pods", "homeless", "default")["spec"].get("nodeName") == "lone",
             "the pod placed on the uncordoned node", 30)
    assert not env.admin.get("nodes", "lone")["spec"].get("taints")
