"""Node authorization and NodeRestriction through the real API server, with token-file node users.

The issue-8 attack "a node credential touching another node's pods, Secrets or
Node" reproduced at the API: each attempt must be a 403, while what the agent
of that node needs keeps working. SEMANTICS R6 (proposed with this change).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from sec_authz_util import AuthzServer, authz_server, config_map, namespace, pod, secret, until
from storage.client import Client
from storage.errors import Forbidden

Obj = dict[str, Any]
N1, N2 = "system:node:n1", "system:node:n2"
USERS = {N1: ("system:nodes",), N2: ("system:nodes",), "system:node:n3": ()}


def claim(name: str, ns: str, volume: str = "") -> Obj:
    spec: Obj = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": ""}
    if volume:
        spec["volumeName"] = volume
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def volume(name: str, node: str | None = None) -> Obj:
    spec: Obj = {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": f"/tmp/{name}"}}
    if node:
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name}, "spec": spec}


def node(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[AuthzServer]:
    with authz_server(tmp_path, USERS) as s:
        admin = s.admin()
        admin.create(namespace("ns"))
        for name in ("s1", "s2", "s-env", "s-unused"):
            admin.create(secret(name, "ns"))
        for name in ("cm1", "cm2"):
            admin.create(config_map(name, "ns"))
        admin.create(volume("pv1"))
        admin.create(volume("pv2"))
        admin.create(volume("pv-local-n1", node="n1"))
        admin.create(claim("c1", "ns", "pv1"))
        admin.create(claim("c2", "ns", "pv2"))
        admin.create(node("n2"))
        admin.create(pod("p1", "ns", "n1", volumes=[
            {"name": "s", "secret": {"secretName": "s1"}},
            {"name": "c", "persistentVolumeClaim": {"claimName": "c1"}},
        ], containers=[{"name": "c", "image": "busybox",
                        "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s-env", "key": "key"}}}],
                        "envFrom": [{"configMapRef": {"name": "cm1"}}]}]))
        admin.create(pod("p2", "ns", "n2", volumes=[
            {"name": "s", "secret": {"secretName": "s2"}},
            {"name": "cm", "configMap": {"name": "cm2"}},
            {"name": "c", "persistentVolumeClaim": {"claimName": "c2"}},
        ]))
        yield s


def test_node_reads_only_what_its_pods_use(srv: AuthzServer) -> None:
    n1 = srv.client(N1)
    for name in ("s1", "s-env"):
        assert n1.get("secrets", name, "ns")["data"] == {"key": "c2VjcmV0"}
    assert n1.get("configmaps", "cm1", "ns")["data"] == {"k": "v"}
    assert n1.get("persistentvolumeclaims", "c1", "ns")["spec"]["volumeName"] == "pv1"
    assert n1.get("persistentvolumes", "pv1")["metadata"]["name"] == "pv1"
    assert n1.get("persistentvolumes", "pv-local-n1")["metadata"]["name"] == "pv-local-n1"
    for path in ("/api/v1/namespaces/ns/secrets/s2", "/api/v1/namespaces/ns/secrets/s-unused",
                 "/api/v1/namespaces/ns/configmaps/cm2", "/api/v1/namespaces/ns/persistentvolumeclaims/c2",
                 "/api/v1/persistentvolumes/pv2"):
        resp = srv.http(N1, "GET", path)
        assert resp.status_code == 403, path
        assert "c2VjcmV0" not in resp.text
    resp = srv.http(N1, "GET", "/api/v1/namespaces/ns/secrets/s2")
    assert resp.json()["message"] == (
        'secrets "s2" is forbidden: User "system:node:n1" cannot get resource "secrets" in API group "" in the '
        "namespace \"ns\": no relationship found between node 'n1' and this object")
    # Secrets and ConfigMaps may be listed and watched (the agent retries a waiting pod when one
    # appears), showing only what the node's pods use: never another pod's Secret.
    for path in ("/api/v1/namespaces/ns/secrets", "/api/v1/secrets"):
        listed = srv.http(N1, "GET", path)
        assert listed.status_code == 200, path
        assert sorted(s["metadata"]["name"] for s in listed.json()["items"]) == ["s-env", "s1"]
    assert sorted(c["metadata"]["name"] for c in n1.list("configmaps")[0]) == ["cm1"]
    # A single object by field selector is a read of that object (as the kubelet's secret watches).
    one = srv.http(N1, "GET", "/api/v1/namespaces/ns/secrets?fieldSelector=metadata.name%3Ds1")
    assert one.status_code == 200 and [s["metadata"]["name"] for s in one.json()["items"]] == ["s1"]
    assert srv.http(N1, "GET", "/api/v1/namespaces/ns/secrets?fieldSelector=metadata.name%3Ds2").status_code == 403
    # Claims and volumes may be listed and watched, showing only the node's own.
    assert [c["metadata"]["name"] for c in n1.list("persistentvolumeclaims")[0]] == ["c1"]
    assert sorted(v["metadata"]["name"] for v in n1.list("persistentvolumes")[0]) == ["pv-local-n1", "pv1"]


def test_node_sees_only_its_pods(srv: AuthzServer) -> None:
    n1 = srv.client(N1)
    items, _ = n1.list("pods", field_selector="spec.nodeName=n1")
    assert [p["metadata"]["name"] for p in items] == ["p1"]
    assert n1.get("pods", "p1", "ns")["spec"]["nodeName"] == "n1"
    assert srv.http(N1, "GET", "/api/v1/namespaces/ns/pods/p2").status_code == 403
    assert srv.http(N1, "GET", "/api/v1/pods").status_code == 403
    assert srv.http(N1, "GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn2").status_code == 403


def test_the_graph_follows_pods_as_they_come_and_go(srv: AuthzServer) -> None:
    admin, n2 = srv.admin(), srv.client(N2)
    with pytest.raises(Forbidden):
        n2.get("secrets", "s-unused", "ns")
    admin.create(pod("p3", "ns", "n2", volumes=[{"name": "s", "secret": {"secretName": "s-unused"}}]))
    assert n2.get("secrets", "s-unused", "ns")["metadata"]["name"] == "s-unused"  # at once: read-your-writes
    admin.delete("pods", "p3", "ns")
    until(lambda: srv.http(N2, "GET", "/api/v1/namespaces/ns/secrets/s-unused").status_code == 403,
          "n2 to lose s-unused with its pod")


def test_node_writes_only_its_own_node_pods_and_claims(srv: AuthzServer) -> None:
    admin, n1 = srv.admin(), srv.client(N1)
    created = n1.create(node("n1"))
    created["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
    assert n1.update_status(created)["status"]["conditions"][0]["type"] == "Ready"
    with pytest.raises(Forbidden, match='node "n1" is not allowed to modify node "n9"'):
        n1.create(node("n9"))
    other = admin.get("nodes", "n2")
    with pytest.raises(Forbidden):
        n1.update({**other, "metadata": {**other["metadata"], "labels": {"evil": "1"}}})
    with pytest.raises(Forbidden):
        n1.update_status({**other, "status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    assert srv.http(N1, "DELETE", "/api/v1/nodes/n2").status_code == 403
    mine = n1.get("nodes", "n1")
    with pytest.raises(Forbidden, match="not allowed to modify labels: node-role.kubernetes.io/control-plane"):
        n1.update({**mine, "metadata": {**mine["metadata"], "labels": {
            **mine["metadata"]["labels"], "node-role.kubernetes.io/control-plane": ""}}})
    # Pod status: its own pods only.
    p1 = n1.get("pods", "p1", "ns")
    assert n1.update_status({**p1, "status": {"phase": "Running"}})["status"]["phase"] == "Running"
    p2 = admin.get("pods", "p2", "ns")
    with pytest.raises(Forbidden):
        srv.client(N1).update_status({**p2, "status": {"phase": "Failed"}})
    # A pod's spec and labels stay the scheduler's and the user's: only the agent's finalizer may change.
    p1 = n1.get("pods", "p1", "ns")
    with_finalizer = {**p1, "metadata": {**p1["metadata"], "finalizers": ["stowage.io/node-agent"]}}
    assert n1.update(with_finalizer)["metadata"]["finalizers"] == ["stowage.io/node-agent"]
    p1 = n1.get("pods", "p1", "ns")
    with pytest.raises(Forbidden, match="may only add or remove the stowage.io/node-agent finalizer"):
        n1.update({**p1, "metadata": {**p1["metadata"], "labels": {"app": "moved"}}})
    with pytest.raises(Forbidden):
        n1.update({**p2, "metadata": {**p2["metadata"], "finalizers": ["stowage.io/node-agent"]}})
    with pytest.raises(Forbidden):
        n1.create(pod("mine", "ns", "n1"))
    # Claim status: capacity and conditions of its own claims only.
    c1 = n1.get("persistentvolumeclaims", "c1", "ns")
    grown = {**c1, "status": {**(c1.get("status") or {}), "capacity": {"storage": "2Gi"}}}
    assert n1.update_status(grown)["status"]["capacity"] == {"storage": "2Gi"}
    c1 = n1.get("persistentvolumeclaims", "c1", "ns")
    with pytest.raises(Forbidden, match="not allowed to update fields other than status.capacity"):
        n1.update_status({**c1, "status": {**c1["status"], "phase": "Lost"}})
    c2 = admin.get("persistentvolumeclaims", "c2", "ns")
    with pytest.raises(Forbidden):
        n1.update_status({**c2, "status": {"capacity": {"storage": "9Gi"}}})


def test_node_cannot_do_cluster_admin_things(srv: AuthzServer) -> None:
    for method, path, body in (
        ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles", None),
        ("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
         {"metadata": {"name": "own"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                                  "name": "cluster-admin"},
          "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": N1}]}),
        ("POST", "/api/v1/namespaces", namespace("mine")),
        ("DELETE", "/api/v1/namespaces/ns/pods/p2", None),
        ("POST", "/api/v1/namespaces/ns/secrets", secret("planted", "ns")),
        ("PUT", "/api/v1/namespaces/ns/secrets/s1", secret("s1", "ns", "b3ducmVk")),
        ("GET", "/api/v1/namespaces/ns/pods/p1/log", None),
    ):
        resp = srv.http(N1, method, path, **({"json": body} if body is not None else {}))
        assert resp.status_code == 403, (method, path, resp.text)


def test_a_node_name_without_the_nodes_group_is_no_node(srv: AuthzServer) -> None:
    # "system:node:n3" lacks group system:nodes: the node authorizer ignores it, RBAC grants it nothing.
    assert srv.http("system:node:n3", "GET", "/api/v1/namespaces/ns/pods/p1").status_code == 403
    assert srv.http("system:node:n3", "GET", "/api/v1/nodes").status_code == 403


def test_node_watch_of_claims_shows_a_claim_once_its_pod_is_bound(srv: AuthzServer) -> None:
    admin = srv.admin()
    n2: Client = srv.client(N2)
    items, rv = n2.list("persistentvolumeclaims")
    assert [c["metadata"]["name"] for c in items] == ["c2"]
    admin.create(claim("c-new", "ns"))
    seen: list[tuple[str, str]] = []
    done = threading.Event()

    def watch() -> None:
        for event in n2.watch("persistentvolumeclaims", resource_version=rv, timeout=20):
            seen.append((event["type"], event["object"]["metadata"]["name"]))
            if event["object"]["metadata"]["name"] == "c-new":
                done.set()
                return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    admin.create(pod("p-new", "ns", "n2", volumes=[{"name": "c", "persistentVolumeClaim": {"claimName": "c-new"}}]))
    until(lambda: srv.http(N2, "GET", "/api/v1/namespaces/ns/persistentvolumeclaims/c-new").status_code == 200,
          "n2 to be allowed c-new")
    c_new = admin.get("persistentvolumeclaims", "c-new", "ns")
    admin.update({**c_new, "metadata": {**c_new["metadata"], "labels": {"touched": "yes"}}})
    assert done.wait(30), f"the claim never reached the node's watch: {seen}"
    thread.join(timeout=5)
    assert ("ADDED", "c-new") in seen or ("MODIFIED", "c-new") in seen


def test_node_may_request_tokens_only_for_its_pods_service_accounts(srv: AuthzServer) -> None:
    def review(user: str, sa: str) -> bool:
        body = {"kind": "SubjectAccessReview", "spec": {
            "user": user, "groups": ["system:nodes", "system:authenticated"],
            "resourceAttributes": {"namespace": "ns", "verb": "create", "resource": "serviceaccounts",
                                   "subresource": "token", "name": sa}}}
        return bool(srv.http("admin", "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                             json=body).json()["status"]["allowed"])

    srv.admin().create(pod("with-sa", "ns", "n2", serviceAccountName="robot"))
    assert review(N1, "default") and not review(N1, "robot")
    assert review(N2, "robot")


def _lease(name: str) -> Obj:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40}}


def test_node_uses_only_its_own_heartbeat_lease(srv: AuthzServer) -> None:
    """SEMANTICS N4 with R6: a node renews its own Lease in kube-node-lease and no other."""
    base = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
    created = srv.http(N1, "POST", base, json=_lease("n1"))
    assert created.status_code == 201, created.text
    own = srv.http(N1, "GET", f"{base}/n1").json()
    own["spec"]["renewTime"] = "2026-01-01T00:00:00.000000Z"
    assert srv.http(N1, "PUT", f"{base}/n1", json=own).status_code == 200
    assert srv.http(N2, "POST", base, json=_lease("n2")).status_code == 201
    assert srv.http(N1, "GET", f"{base}/n2").status_code == 403
    stolen = srv.http(N2, "GET", f"{base}/n2").json()
    assert srv.http(N1, "PUT", f"{base}/n2", json=stolen).status_code == 403
    assert srv.http(N1, "POST", base, json=_lease("n3")).status_code == 403
    assert srv.http(N1, "DELETE", f"{base}/n1").status_code == 403
    other_ns = "/apis/coordination.k8s.io/v1/namespaces/ns/leases"
    assert srv.http(N1, "POST", other_ns, json={**_lease("n1"), "metadata": {"name": "n1", "namespace": "ns"}}).status_code == 403
