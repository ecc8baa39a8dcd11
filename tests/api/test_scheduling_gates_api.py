"""Pod scheduling readiness (SEMANTICS SG1, SG2) through the real API server and the real kubectl, with the
manifests of Kubernetes' own task page (content/en/examples/pods/pod-with-scheduling-gates.yaml and
pod-without-scheduling-gates.yaml)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from storage.apiserver.server import RunningServer
from support import kubectl_binary

WITH_GATES = """apiVersion: v1
kind: Pod
metadata:
  name: test-pod
spec:
  schedulingGates:
  - name: example.com/foo
  - name: example.com/bar
  containers:
  - name: pause
    image: registry.k8s.io/pause:3.6
"""
WITHOUT_GATES = """apiVersion: v1
kind: Pod
metadata:
  name: test-pod
spec:
  containers:
  - name: pause
    image: registry.k8s.io/pause:3.6
"""
PODS = "/api/v1/namespaces/default/pods"


def _causes(resp: httpx.Response) -> list[tuple[str, str]]:
    return [(c["field"], c["message"]) for c in resp.json()["details"]["causes"]]


def test_sg1_sg2_kubectl_gates_a_pod_and_lifts_the_gates(module_server: RunningServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl_binary(), "--kubeconfig", str(module_server.kubeconfig), "--cache-dir",
                               str(tmp_path / "cache"), *args], capture_output=True, text=True, timeout=120, env=env)

    (tmp_path / "with.yaml").write_text(WITH_GATES)
    (tmp_path / "without.yaml").write_text(WITHOUT_GATES)
    try:
        created = kubectl("apply", "-f", str(tmp_path / "with.yaml"))
        assert created.returncode == 0, created.stderr
        listed = kubectl("get", "pod", "test-pod", "--no-headers")
        assert listed.stdout.split()[:3] == ["test-pod", "0/1", "SchedulingGated"], listed.stdout
        gates = kubectl("get", "pod", "test-pod", "-o", "jsonpath={.spec.schedulingGates}")
        assert gates.stdout == '[{"name":"example.com/foo"},{"name":"example.com/bar"}]'
        condition = kubectl("get", "pod", "test-pod", "-o",
                            "jsonpath={.status.conditions[?(@.type=='PodScheduled')].reason}")
        assert condition.stdout == "SchedulingGated"

        added = kubectl("patch", "pod", "test-pod", "--type=json",
                        "-p", '[{"op": "add", "path": "/spec/schedulingGates/-", "value": {"name": "example.com/baz"}}]')
        assert added.returncode != 0
        assert ("spec.schedulingGates[2].name: Forbidden: only deletion is allowed, but found new scheduling gate "
                "'example.com/baz'") in added.stderr
        placed = kubectl("patch", "pod", "test-pod", "--type=merge", "-p", '{"spec": {"nodeName": "n1"}}')
        assert placed.returncode != 0
        assert "spec.nodeName: Forbidden: cannot be set until all schedulingGates have been cleared" in placed.stderr
        # While gated, the node selector may gain entries (mutable scheduling directives), not lose them.
        narrowed = kubectl("patch", "pod", "test-pod", "--type=merge", "-p",
                           '{"spec": {"nodeSelector": {"disk": "ssd"}}}')
        assert narrowed.returncode == 0, narrowed.stderr
        widened = kubectl("patch", "pod", "test-pod", "--type=json", "-p",
                          '[{"op": "remove", "path": "/spec/nodeSelector/disk"}]')
        assert widened.returncode != 0
        assert "only additions to spec.nodeSelector are allowed (no mutations or deletions)" in widened.stderr

        # The task page's next step: one gate removed with a JSON patch, then the rest by applying the manifest
        # without gates.
        removed = kubectl("patch", "pod", "test-pod", "--type=json",
                          "-p", '[{"op": "remove", "path": "/spec/schedulingGates/0"}]')
        assert removed.returncode == 0, removed.stderr
        cleared = kubectl("apply", "-f", str(tmp_path / "without.yaml"))
        assert cleared.returncode == 0, cleared.stderr
        gates = kubectl("get", "pod", "test-pod", "-o", "jsonpath={.spec.schedulingGates}")
        assert gates.returncode == 0 and gates.stdout == "", gates.stdout
    finally:
        kubectl("delete", "pod", "test-pod", "--ignore-not-found", "--wait=false", "--grace-period=0", "--force")


def test_sg1_gate_names_are_checked(http: httpx.Client) -> None:
    def pod(name: str, **spec: object) -> dict[str, object]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}

    resp = http.post(PODS, json=pod("sg-bad", schedulingGates=[{"name": "a/b/c"}, {"name": "x"}, {"name": "x"}]))
    assert resp.status_code == 422
    causes = _causes(resp)
    assert causes[0][0] == "spec.schedulingGates[0]" and "qualified name" in causes[0][1]
    assert causes[1] == ("spec.schedulingGates[2]", 'Duplicate value: "x"')
    resp = http.post(PODS, json=pod("sg-placed", nodeName="n1", schedulingGates=[{"name": "x"}]))
    assert resp.status_code == 422
    assert _causes(resp) == [("spec.nodeName", "Forbidden: cannot be set until all schedulingGates have been cleared")]
    # Without gates the pod is created as before: no PodScheduled condition from the API server.
    resp = http.post(PODS, json=pod("sg-none"), params={"dryRun": "All"})
    assert resp.status_code == 201 and "conditions" not in resp.json()["status"]
