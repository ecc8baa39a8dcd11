"""Ephemeral containers through the real API server (SEMANTICS EC1-EC5): ``pods/ephemeralcontainers`` as
``kubectl debug`` writes it, what Kubernetes' validation refuses there, and who may write it (RBAC, the node
authorizer, Pod Security)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from sec_authz_util import AuthzServer, authz_server, namespace, pod, role_binding

N1 = "system:node:n1"
USERS = {"dev": (), "debugger": (), N1: ("system:nodes",)}
SUB = "/api/v1/namespaces/ns/pods/p/ephemeralcontainers"
SMP = {"Content-Type": "application/strategic-merge-patch+json"}


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[AuthzServer]:
    with authz_server(tmp_path, USERS) as s:
        admin = s.admin()
        admin.create(namespace("ns"))
        admin.create(pod("p", "ns", "n1", containers=[
            {"name": "app", "image": "debian:12", "command": ["sleep", "1000"]},
            {"name": "side", "image": "debian:12", "command": ["sleep", "1000"]}]))
        admin.create(role_binding("dev-edit", "ns", "edit", user="dev"))
        yield s


def debugger(name: str = "debugger", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "command": ["sh"], "stdin": True, "targetContainerName": "app", **extra}


def add(srv: AuthzServer, *containers: dict[str, Any], user: str = "admin") -> Any:
    return srv.http(user, "PATCH", SUB, headers=SMP, content=json.dumps({"spec": {"ephemeralContainers": list(containers)}}))


def causes(resp: Any) -> list[tuple[str, str]]:
    return [(c["field"], c["message"]) for c in resp.json()["details"]["causes"]]


def test_ec1_kubectl_debugs_patch_adds_a_container_defaulted_and_get_returns_the_pod(srv: AuthzServer) -> None:
    got = srv.http("admin", "GET", SUB)
    assert got.status_code == 200 and got.json()["kind"] == "Pod" and got.json()["metadata"]["name"] == "p"

    resp = add(srv, debugger())

    assert resp.status_code == 200, resp.text
    stored = srv.admin().get("pods", "p", "ns")["spec"]["ephemeralContainers"]
    assert [c["name"] for c in stored] == ["debugger"]
    assert stored[0]["targetContainerName"] == "app"
    assert stored[0]["terminationMessagePath"] == "/dev/termination-log"  # defaulted as a container is
    assert stored[0]["imagePullPolicy"] == "Always"
    # A second one is added beside it; the first stays as it was.
    assert add(srv, debugger("second")).status_code == 200
    assert [c["name"] for c in srv.admin().get("pods", "p", "ns")["spec"]["ephemeralContainers"]] == ["debugger", "second"]
    # Discovery names the subresource, as kubectl debug looks for it.
    resources = srv.http("admin", "GET", "/api/v1").json()["resources"]
    entry = next(r for r in resources if r["name"] == "pods/ephemeralcontainers")
    assert entry["kind"] == "Pod" and sorted(entry["verbs"]) == ["get", "patch", "update"]
    # Nothing else the request sends is taken: the labels and the containers stay as stored.
    resp = srv.http("admin", "PATCH", SUB, headers=SMP, content=json.dumps(
        {"metadata": {"labels": {"sneaky": "yes"}}, "spec": {"containers": [{"name": "app", "image": "evil"}]}}))
    assert resp.status_code == 200
    after = srv.admin().get("pods", "p", "ns")
    assert "sneaky" not in (after["metadata"].get("labels") or {})
    assert after["spec"]["containers"][0]["image"] == "debian:12"
    assert srv.http("admin", "DELETE", SUB).status_code == 405


def test_ec2_existing_ephemeral_containers_may_not_be_changed_or_removed(srv: AuthzServer) -> None:
    assert add(srv, debugger()).status_code == 200
    current = srv.http("admin", "GET", SUB).json()

    changed = json.loads(json.dumps(current))
    changed["spec"]["ephemeralContainers"][0]["command"] = ["sh", "-c", "other"]
    resp = srv.http("admin", "PUT", SUB, json=changed)
    assert resp.status_code == 422
    assert causes(resp) == [("spec.ephemeralContainers[0]", 'Forbidden: existing ephemeral containers "debugger" may not be changed')]

    removed = json.loads(json.dumps(current))
    removed["spec"]["ephemeralContainers"] = []
    resp = srv.http("admin", "PUT", SUB, json=removed)
    assert resp.status_code == 422
    assert causes(resp) == [("spec.ephemeralContainers", 'Forbidden: existing ephemeral containers "debugger" may not be removed')]
    assert [c["command"] for c in srv.admin().get("pods", "p", "ns")["spec"]["ephemeralContainers"]] == [["sh"]]


def test_ec2_what_an_ephemeral_container_may_not_have(srv: AuthzServer) -> None:
    resp = add(srv, debugger("bad", ports=[{"containerPort": 80}], resources={"limits": {"cpu": "1"}},
                             readinessProbe={"exec": {"command": ["true"]}}, lifecycle={"preStop": {"exec": {"command": ["true"]}}},
                             targetContainerName="nope",
                             volumeMounts=[{"name": "v", "mountPath": "/v", "subPath": "x"}]))
    assert resp.status_code == 422
    found = dict(causes(resp))
    for field in ("ports", "resources", "readinessProbe", "lifecycle"):
        assert found[f"spec.ephemeralContainers[0].{field}"] == "Forbidden: cannot be set for an Ephemeral Container"
    assert found["spec.ephemeralContainers[0].targetContainerName"] == 'Not found: "nope"'
    assert found["spec.ephemeralContainers[0].volumeMounts[0].subPath"] == "Forbidden: cannot be set for an Ephemeral Container"
    assert found["spec.ephemeralContainers[0].volumeMounts[0].name"] == 'Not found: "v"'
    # A name another container of the pod has, and no image.
    resp = add(srv, {"name": "side", "command": ["sh"]})
    assert resp.status_code == 422
    assert ("spec.ephemeralContainers[0].name", 'Duplicate value: "side"') in causes(resp)
    assert ("spec.ephemeralContainers[0].image", "Required value") in causes(resp)
    assert "ephemeralContainers" not in srv.admin().get("pods", "p", "ns")["spec"]


def test_ec3_a_pod_or_template_may_not_bring_them_and_the_pod_write_keeps_them(srv: AuthzServer) -> None:
    body = pod("born-with", "ns", "n1")
    body["spec"]["ephemeralContainers"] = [debugger(targetContainerName="c")]
    resp = srv.http("admin", "POST", "/api/v1/namespaces/ns/pods", json=body)
    assert resp.status_code == 422
    assert causes(resp) == [("spec.ephemeralContainers", "Forbidden: cannot be set on create")]
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "ns"},
              "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
                  "metadata": {"labels": {"a": "b"}},
                  "spec": {"containers": [{"name": "c", "image": "x"}], "ephemeralContainers": [debugger(targetContainerName="c")]}}}}
    resp = srv.http("admin", "POST", "/apis/apps/v1/namespaces/ns/deployments", json=deploy)
    assert resp.status_code == 422
    assert ("spec.template.spec.ephemeralContainers", "Forbidden: ephemeral containers not allowed in pod template") in causes(resp)

    assert add(srv, debugger()).status_code == 200
    # The pod's own write says nothing of them (an edited label): they stay; one that tries to add one: ignored.
    live = srv.admin().get("pods", "p", "ns")
    live["metadata"].setdefault("labels", {})["edited"] = "yes"
    live["spec"]["ephemeralContainers"] = [*live["spec"]["ephemeralContainers"], debugger("via-update")]
    resp = srv.http("admin", "PUT", "/api/v1/namespaces/ns/pods/p", json=live)
    assert resp.status_code == 200, resp.text
    saved = srv.admin().get("pods", "p", "ns")
    assert saved["metadata"]["labels"]["edited"] == "yes"
    assert [c["name"] for c in saved["spec"]["ephemeralContainers"]] == ["debugger"]


def test_ec4_who_may_add_one(srv: AuthzServer) -> None:
    # edit grants pods, pods/exec and pods/attach, not pods/ephemeralcontainers (Kubernetes' default roles).
    resp = add(srv, debugger(), user="dev")
    assert resp.status_code == 403
    assert resp.json()["message"] == ('pods "p" is forbidden: User "dev" cannot patch resource "pods/ephemeralcontainers" '
                                      'in API group "" in the namespace "ns"')
    # The node the pod runs on may not either: the node authorizer gives it pods and pods/status only.
    assert add(srv, debugger(), user=N1).status_code == 403
    admin = srv.admin()
    admin.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                  "metadata": {"name": "debug", "namespace": "ns"},
                  "rules": [{"apiGroups": [""], "resources": ["pods/ephemeralcontainers"], "verbs": ["patch"]}]})
    admin.create(role_binding("debugger-debug", "ns", "debug", user="debugger", kind="Role"))
    for _ in range(100):  # the authorizer's index follows the store's watch
        resp = add(srv, debugger(), user="debugger")
        if resp.status_code != 403:
            break
    assert resp.status_code == 200, resp.text
    assert "ephemeralContainers" in admin.get("pods", "p", "ns")["spec"]


def test_ec5_pod_security_checks_the_new_container(srv: AuthzServer) -> None:
    # kubectl debug's default profile ("general") adds SYS_PTRACE with --target: baseline refuses it, as Kubernetes.
    resp = add(srv, debugger(securityContext={"capabilities": {"add": ["SYS_PTRACE"]}}))
    assert resp.status_code == 403
    assert resp.json()["message"] == ('pods "p" is forbidden: violates PodSecurity "baseline:latest": non-default '
                                      'capabilities (container "debugger" must not include "SYS_PTRACE" in '
                                      "securityContext.capabilities.add)")
    resp = add(srv, debugger(securityContext={"privileged": True}))
    assert resp.status_code == 403 and "privileged" in resp.json()["message"]
    assert "ephemeralContainers" not in srv.admin().get("pods", "p", "ns")["spec"]
