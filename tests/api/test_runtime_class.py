"""RuntimeClass (SEMANTICS RC1-RC2) through the real API server: Kubernetes' validation of the class, and its
RuntimeClass admission of the pods that name one (overhead, node selector and tolerations copied in; an
unknown class, a mismatched overhead or a conflicting selector refused with its words). Also the real
kubectl on the Kubernetes documentation's RuntimeClass."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import httpx

from storage.apiserver.server import RunningServer
from support import kubectl_binary

RCS = "/apis/node.k8s.io/v1/runtimeclasses"
PODS = "/api/v1/namespaces/default/pods"


def _class(name: str, handler: Any = "runc", **rest: Any) -> dict[str, Any]:
    return {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": name}, "handler": handler, **rest}


def _pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


def _causes(resp: httpx.Response) -> list[tuple[str, str]]:
    return [(c["field"], c["message"]) for c in resp.json()["details"]["causes"]]


def test_rc1_a_class_needs_a_dns_label_handler_that_never_changes(http: httpx.Client) -> None:
    resp = http.post(RCS, json={"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "rc-none"}})
    assert resp.status_code == 422 and _causes(resp) == [("handler", "Required value")]
    resp = http.post(RCS, json=_class("rc-bad", "Not_A_Label"))
    assert resp.status_code == 422 and _causes(resp)[0][0] == "handler"
    assert "a lowercase RFC 1123 label" in _causes(resp)[0][1]
    resp = http.post(RCS, json=_class("rc-neg", overhead={"podFixed": {"cpu": "-1"}}))
    assert _causes(resp) == [("overhead.podFixed.cpu", 'Invalid value: "-1": must be greater than or equal to 0')]
    # As a container's limits: a resource's name is a qualified name (Kubernetes' ValidateOverhead).
    resp = http.post(RCS, json=_class("rc-name", overhead={"podFixed": {"not a name!": "1"}}))
    assert resp.status_code == 422 and _causes(resp)[0][0] == "overhead.podFixed.not a name!"
    assert "name part must consist of" in _causes(resp)[0][1]
    resp = http.post(RCS, json=_class("rc-tol", scheduling={"tolerations": [{"operator": "Equal"}]}))
    assert resp.status_code == 422 and _causes(resp)[0][0] == "scheduling.tolerations[0].operator"

    assert http.post(RCS, json=_class("rc-one")).status_code == 201
    live = http.get(f"{RCS}/rc-one").json()
    resp = http.put(f"{RCS}/rc-one", json={**live, "handler": "kata"})
    assert resp.status_code == 422 and _causes(resp) == [("handler", 'Invalid value: "kata": field is immutable')]
    assert http.put(f"{RCS}/rc-one", json={**live, "metadata": {**live["metadata"], "labels": {"a": "b"}}}).status_code == 200


def test_rc2_admission_copies_overhead_and_scheduling_into_the_pod(http: httpx.Client) -> None:
    assert http.post(RCS, json=_class("rc-full", overhead={"podFixed": {"cpu": "250m", "memory": "120Mi"}},
                                      scheduling={"nodeSelector": {"runtime": "runc"},
                                                  "tolerations": [{"key": "sandboxed", "operator": "Exists",
                                                                   "effect": "NoSchedule"}]})).status_code == 201
    resp = http.post(PODS, json=_pod("rc-pod", runtimeClassName="rc-full", nodeSelector={"disk": "ssd"},
                                     tolerations=[{"key": "own", "operator": "Exists"}]))
    assert resp.status_code == 201, resp.text
    spec = resp.json()["spec"]
    assert spec["overhead"] == {"cpu": "250m", "memory": "120Mi"}
    assert spec["nodeSelector"] == {"disk": "ssd", "runtime": "runc"}
    keys = [t.get("key") for t in spec["tolerations"]]
    # The pod's own first; the class's after DefaultTolerationSeconds' two, in Kubernetes' plugin order.
    assert keys[0] == "own" and keys[-1] == "sandboxed" and "node.kubernetes.io/not-ready" in keys
    # The same overhead, written otherwise (0.25 CPU), is accepted; another is not.
    same = http.post(PODS, json=_pod("rc-same", runtimeClassName="rc-full", overhead={"cpu": "0.25", "memory": "120Mi"}))
    assert same.status_code == 201, same.text
    resp = http.post(PODS, json=_pod("rc-more", runtimeClassName="rc-full", overhead={"cpu": "1"}))
    assert resp.status_code == 403
    assert resp.json()["message"] == ('pods "rc-more" is forbidden: pod rejected: Pod\'s Overhead doesn\'t match '
                                      "RuntimeClass's defined Overhead")
    resp = http.post(PODS, json=_pod("rc-clash", runtimeClassName="rc-full", nodeSelector={"runtime": "kata"}))
    assert resp.status_code == 403
    assert resp.json()["message"] == ('pods "rc-clash" is forbidden: conflict: runtimeClass.scheduling.nodeSelector'
                                      "[runtime] = runc; pod.spec.nodeSelector[runtime] = kata")


def test_rc2_an_unknown_class_or_an_overhead_without_one_is_refused(http: httpx.Client) -> None:
    resp = http.post(PODS, json=_pod("rc-missing", runtimeClassName="gvisor"))
    assert resp.status_code == 403
    assert resp.json()["message"] == 'pods "rc-missing" is forbidden: pod rejected: RuntimeClass "gvisor" not found'
    resp = http.post(PODS, json=_pod("rc-free", overhead={"cpu": "1"}))
    assert resp.status_code == 403
    assert resp.json()["message"] == ('pods "rc-free" is forbidden: pod rejected: Pod Overhead set without '
                                      "corresponding RuntimeClass defined Overhead")
    for name in ("rc-missing", "rc-free"):
        assert http.get(f"{PODS}/{name}").status_code == 404


def test_rc1_kubectl_applies_the_documentations_runtime_class(module_server: RunningServer, tmp_path: Path) -> None:
    # The example of the Kubernetes documentation's "Runtime Class" page, unchanged.
    manifest = tmp_path / "rc.yaml"
    manifest.write_text("""apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  # The name the RuntimeClass will be referenced by.
  # RuntimeClass is a non-namespaced resource.
  name: myclass
# The name of the corresponding CRI configuration
handler: myconfiguration
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl_binary(), "--kubeconfig", str(module_server.kubeconfig), "--cache-dir",
                               str(tmp_path / "cache"), *args], capture_output=True, text=True, timeout=120, env=env)

    applied = kubectl("apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    listed = kubectl("get", "runtimeclass", "myclass")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "HANDLER", "AGE"] and row.split()[:2] == ["myclass", "myconfiguration"]
    assert kubectl("delete", "-f", str(manifest)).returncode == 0
