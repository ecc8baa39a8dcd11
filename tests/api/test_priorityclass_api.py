"""scheduling.k8s.io/v1 PriorityClasses and Kubernetes' Priority admission (SEMANTICS PC1–PC5): the system
classes, ValidatePriorityClass in Kubernetes' words, one global default, and each new pod's
``spec.priority``, through the API server, through a controller, and with the real kubectl."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from serverutil import running_server
from storage.apiserver.server import RunningServer
from storage.controllers.workloads import ReplicaSetReconciler
from support import KUBECTL_VERSIONS, run_kubectl, running_controllers, wait_for

PCS = "/apis/scheduling.k8s.io/v1/priorityclasses"
PODS = "/api/v1/namespaces/default/pods"


def a_class(name: str, value: int, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
            "value": value, **fields}


def a_pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


def message(response: httpx.Response, code: int) -> str:
    assert response.status_code == code, response.text
    return str(response.json()["message"])


@pytest.fixture
def http(tmp_path: Path) -> Iterator[httpx.Client]:
    # A server of its own: the global default class would leak into other tests' pods.
    with running_server(tmp_path) as server:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=60,
                          verify=server.verify()) as client:
            yield client


def test_pc2_the_system_classes_exist_and_cannot_be_deleted(http: httpx.Client) -> None:
    classes = {c["metadata"]["name"]: c for c in http.get(PCS).json()["items"]}
    assert {n: (c["value"], c["preemptionPolicy"]) for n, c in classes.items()} == {
        "system-cluster-critical": (2000000000, "PreemptLowerPriority"),
        "system-node-critical": (2000001000, "PreemptLowerPriority")}
    assert message(http.delete(f"{PCS}/system-node-critical"), 403) == (
        'priorityclasses.scheduling.k8s.io "system-node-critical" is forbidden: this is a system priority class '
        "and cannot be deleted")
    # A collection delete keeps them too.
    assert http.post(PCS, json=a_class("batch", 10)).status_code == 201
    assert http.delete(PCS).status_code == 200
    assert sorted(c["metadata"]["name"] for c in http.get(PCS).json()["items"]) == [
        "system-cluster-critical", "system-node-critical"]


@pytest.mark.parametrize("body, wanted", [
    (a_class("system-mine", 5), "metadata.name: Forbidden: priority class names with 'system-' prefix are reserved "
                                "for system use only. error: system-mine is not a known system priority class"),
    (a_class("huge", 1000000001), "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"),
    (a_class("odd", 5, preemptionPolicy="Sometimes"),
     'preemptionPolicy: Unsupported value: "Sometimes": supported values: "Never", "PreemptLowerPriority"'),
])
def test_pc1_invalid_classes_are_refused_in_kubernetes_words(http: httpx.Client, body: dict[str, Any],
                                                             wanted: str) -> None:
    assert wanted in message(http.post(PCS, json=body), 422)


def test_pc1_value_and_policy_cannot_change(http: httpx.Client) -> None:
    made = http.post(PCS, json=a_class("steady", 100))
    assert made.status_code == 201 and made.json()["preemptionPolicy"] == "PreemptLowerPriority"
    changed = {**made.json(), "value": 101, "preemptionPolicy": "Never"}
    text = message(http.put(f"{PCS}/steady", json=changed), 422)
    assert "value: Forbidden: may not be changed in an update." in text
    assert 'preemptionPolicy: Invalid value: "Never": field is immutable' in text
    described = {**made.json(), "description": "now described"}
    assert http.put(f"{PCS}/steady", json=described).status_code == 200


def test_pc3_a_pod_gets_its_class_priority_and_policy(http: httpx.Client) -> None:
    assert http.post(PCS, json=a_class("never", 500, preemptionPolicy="Never")).status_code == 201
    made = http.post(PODS, json=a_pod("critical", priorityClassName="system-node-critical"))
    assert made.status_code == 201, made.text
    assert (made.json()["spec"]["priority"], made.json()["spec"]["preemptionPolicy"]) == (2000001000,
                                                                                         "PreemptLowerPriority")
    never = http.post(PODS, json=a_pod("polite", priorityClassName="never")).json()["spec"]
    assert (never["priority"], never["preemptionPolicy"]) == (500, "Never")
    plain = http.post(PODS, json=a_pod("plain")).json()["spec"]
    assert (plain["priority"], plain["preemptionPolicy"], plain.get("priorityClassName")) == (
        0, "PreemptLowerPriority", None)
    # An update that leaves the priority out keeps it.
    current = http.get(f"{PODS}/polite").json()
    del current["spec"]["priority"]
    assert http.put(f"{PODS}/polite", json=current).json()["spec"]["priority"] == 500


def test_pc3_refusals_name_the_pod(http: httpx.Client) -> None:
    assert message(http.post(PODS, json=a_pod("lost", priorityClassName="nope")), 403) == (
        'pods "lost" is forbidden: no PriorityClass with name nope was found')
    assert message(http.post(PODS, json=a_pod("bold", priority=7)), 403) == (
        'pods "bold" is forbidden: the integer value of priority (7) must not be provided in pod spec; priority '
        "admission controller computed 0 from the given PriorityClass name")
    assert http.get(PODS).json()["items"] == []


def test_pc4_one_global_default_and_it_applies_to_pods_naming_none(http: httpx.Client) -> None:
    assert http.post(PCS, json=a_class("normal", 1000, globalDefault=True)).status_code == 201
    assert message(http.post(PCS, json=a_class("other", 10, globalDefault=True)), 403) == (
        'priorityclasses.scheduling.k8s.io "other" is forbidden: PriorityClass normal is already marked as '
        "default. Only one default can exist")
    plain = http.post(PODS, json=a_pod("plain")).json()["spec"]
    assert (plain["priority"], plain["priorityClassName"]) == (1000, "normal")
    # The default class itself may be updated while it stays the default.
    current = http.get(f"{PCS}/normal").json()
    assert http.put(f"{PCS}/normal", json={**current, "description": "the usual"}).status_code == 200


def test_pc3_a_controllers_pods_get_their_priority_too(tmp_path: Path) -> None:
    with running_server(tmp_path) as server, running_controllers(server.store, reconcilers=[ReplicaSetReconciler]):
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=60,
                          verify=server.verify()) as http:
            assert http.post(PCS, json=a_class("web-tier", 300)).status_code == 201
            for name, klass in (("good", "web-tier"), ("bad", "missing")):
                rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
                      "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                               "template": {"metadata": {"labels": {"app": name}},
                                            "spec": {"priorityClassName": klass,
                                                     "containers": [{"name": "c", "image": "busybox"}]}}}}
                made = http.post("/apis/apps/v1/namespaces/default/replicasets", json=rs)
                assert made.status_code == 201, made.text
            pod = wait_for(lambda: next((p for p in server.store.list("pods", "default")[0]
                                         if p["metadata"]["name"].startswith("good-")), None), "the ReplicaSet's pod")
            assert pod["spec"]["priority"] == 300
            refused = wait_for(lambda: [e["message"] for e in server.store.list("events", "default")[0]
                                        if e.get("reason") == "FailedCreate"] or None, "the refusal")
            assert any("is forbidden: no PriorityClass with name missing was found" in m for m in refused), refused
            assert not [p for p in server.store.list("pods", "default")[0] if p["metadata"]["name"].startswith("bad-")]


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_pc1_kubectl_creates_and_lists_priority_classes(module_server: RunningServer, tmp_path: Path,
                                                        version: str) -> None:
    name = f"kc-{version.replace('.', '')}"

    def kubectl(*args: str) -> str:
        done = run_kubectl(version, module_server.kubeconfig, tmp_path / "cache", *args)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    made = kubectl("create", "priorityclass", name, "--value=4242", "--description=batch work",
                   "--preemption-policy=Never")
    assert made.strip() == f"priorityclass.scheduling.k8s.io/{name} created"
    rows = {line.split()[0]: line.split() for line in kubectl("get", "pc").strip().splitlines()[1:]}
    assert kubectl("get", "pc").splitlines()[0].split() == ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE"]
    assert rows[name][1:3] == ["4242", "false"] and rows["system-node-critical"][1:3] == ["2000001000", "false"]
    wide = {line.split()[0]: line.split() for line in kubectl("get", "pc", "-o", "wide").strip().splitlines()[1:]}
    assert wide[name][-1] == "Never"
    kubectl("delete", "pc", name)
