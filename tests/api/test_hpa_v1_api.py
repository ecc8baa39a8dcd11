"""SEMANTICS HPA8: autoscaling/v1 HorizontalPodAutoscalers served beside v2, through the real API server and
the real kubectl (1.37 and Debian's 1.20): discovery, apply of a v1 manifest and its changes, kubectl 1.20's
autoscale (which writes v1), v1 reads, lists and watches, patches in the v1 form that keep what only v2 can
say, protobuf v1 bodies, field validation in v1's terms and explain."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from k8s_protobuf_writer import Writer
from storage.api.autoscaling_v1 import BEHAVIOR, METRICS
from storage.apiserver.server import RunningServer
from support import kubectl_binary

V1_PATH = "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers"
V2_PATH = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers"
V1_RESOURCE = "horizontalpodautoscalers.v1.autoscaling"

Kubectl = Callable[..., subprocess.CompletedProcess[str]]

# The walkthrough's autoscaler as the Kubernetes documentation wrote it for autoscaling/v1.
V1_MANIFEST = """apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata:
  name: {name}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: php-apache
  minReplicas: 1
  maxReplicas: {max}
  targetCPUUtilizationPercentage: {cpu}
"""

MEMORY = {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue",
                                                                        "averageValue": "100Mi"}}}


def _cpu(percent: int) -> dict[str, Any]:
    return {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                       "averageUtilization": percent}}}


@pytest.fixture
def kubectl(module_server: RunningServer, kubectl_version: str, tmp_path: Path) -> Kubectl:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env["HOME"] = str(tmp_path)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl_binary(kubectl_version), "--kubeconfig", str(module_server.kubeconfig),
                               "--cache-dir", str(tmp_path / "cache"), *args],
                              capture_output=True, text=True, timeout=120, env=env)

    return run


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_hpa8_discovery_lists_both_versions_v2_preferred(http: httpx.Client, kubectl: Kubectl) -> None:
    group = http.get("/apis/autoscaling").json()
    assert [v["version"] for v in group["versions"]] == ["v2", "v1"]
    assert group["preferredVersion"]["version"] == "v2"
    names = {r["name"]: r["kind"] for r in http.get("/apis/autoscaling/v1").json()["resources"]}
    assert names == {"horizontalpodautoscalers": "HorizontalPodAutoscaler",
                     "horizontalpodautoscalers/status": "HorizontalPodAutoscaler"}
    versions = kubectl("api-versions")
    assert versions.returncode == 0, versions.stderr
    assert {"autoscaling/v1", "autoscaling/v2"} <= set(versions.stdout.split())


def test_hpa8_kubectl_applies_a_v1_manifest_and_its_changes(kubectl: Kubectl, kubectl_version: str,
                                                            tmp_path: Path) -> None:
    """A v1 manifest applies (client-side: a GET and a strategic merge patch on the v1 path), reads back in v1
    and in v2, and a changed manifest re-applies; kubectl diff then finds nothing."""
    name = f"v1-apply-{kubectl_version.replace('.', '-')}"
    manifest = tmp_path / "hpa.yaml"
    manifest.write_text(V1_MANIFEST.format(name=name, max=10, cpu=50))
    try:
        applied = kubectl("apply", "-f", str(manifest))
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.strip() == f"horizontalpodautoscaler.autoscaling/{name} created"
        v1 = _json(kubectl("get", V1_RESOURCE, name, "-o", "json"))
        assert v1["apiVersion"] == "autoscaling/v1"
        assert v1["spec"]["targetCPUUtilizationPercentage"] == 50 and v1["spec"]["maxReplicas"] == 10
        assert v1["status"] == {"currentReplicas": 0, "desiredReplicas": 0}
        v2 = _json(kubectl("get", "horizontalpodautoscalers.v2.autoscaling", name, "-o", "json"))
        assert v2["apiVersion"] == "autoscaling/v2" and v2["spec"]["metrics"] == [_cpu(50)]

        manifest.write_text(V1_MANIFEST.format(name=name, max=8, cpu=70))
        reapplied = kubectl("apply", "-f", str(manifest), "-v=6")
        assert reapplied.returncode == 0, reapplied.stderr
        assert f"horizontalpodautoscaler.autoscaling/{name} configured" in reapplied.stdout
        assert "PATCH https://" in reapplied.stderr or 'verb="PATCH"' in reapplied.stderr, reapplied.stderr
        assert f"/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/{name}" in reapplied.stderr
        v2 = _json(kubectl("get", "horizontalpodautoscalers.v2.autoscaling", name, "-o", "json"))
        assert v2["spec"]["metrics"] == [_cpu(70)] and v2["spec"]["maxReplicas"] == 8
        assert v2["metadata"]["generation"] == 2
        diffed = kubectl("diff", "-f", str(manifest))
        assert diffed.returncode == 0, diffed.stdout + diffed.stderr
        table = kubectl("get", "hpa", name)
        assert "cpu: <unknown>/70%" in table.stdout, table.stdout
        described = kubectl("describe", "hpa", name)
        assert described.returncode == 0, described.stderr
        if kubectl_version == "1.20":  # it knows autoscaling/v1 and v2beta2, not v2: it describes the v1 form
            assert re.search(r"Target CPU utilization:\s+70%", described.stdout), described.stdout
        else:
            assert re.search(r"resource cpu on pods\s+\(as a percentage of request\):\s+<unknown> / 70%",
                             described.stdout), described.stdout
    finally:
        kubectl("delete", "-f", str(manifest), "--ignore-not-found")


def test_hpa8_kubectl_1_20_autoscale_writes_v1(kubectl: Kubectl, kubectl_version: str) -> None:
    """kubectl 1.20's autoscale creates an autoscaling/v1 object (1.37's writes v2, see test_hpa_api.py)."""
    if kubectl_version != "1.20":
        pytest.skip("kubectl 1.37's autoscale writes autoscaling/v2; its test is in test_hpa_api.py")
    created = kubectl("create", "deployment", "web-v1", "--image=nginx")
    assert created.returncode == 0, created.stderr
    try:
        scaled = kubectl("autoscale", "deployment", "web-v1", "--max", "4", "--cpu-percent", "30", "-v=6")
        assert scaled.returncode == 0, scaled.stderr
        assert scaled.stdout.strip() == "horizontalpodautoscaler.autoscaling/web-v1 autoscaled"
        assert "POST https://" in scaled.stderr and "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers" \
            in scaled.stderr, scaled.stderr
        v2 = _json(kubectl("get", "horizontalpodautoscalers.v2.autoscaling", "web-v1", "-o", "json"))
        assert v2["spec"]["metrics"] == [_cpu(30)]
        assert v2["spec"]["minReplicas"] == 1 and v2["spec"]["maxReplicas"] == 4
    finally:
        kubectl("delete", "hpa", "web-v1", "--ignore-not-found")
        kubectl("delete", "deployment", "web-v1", "--ignore-not-found")


def test_hpa8_v1_writes_keep_what_only_v2_says(http: httpx.Client, kubectl: Kubectl, kubectl_version: str,
                                               tmp_path: Path) -> None:
    """An autoscaler with a memory metric and a behavior, read through v1: they are in the annotations; a
    merge patch, a JSON patch and a kubectl replace of the v1 form change what they name and keep the rest."""
    name = f"v1-keeps-{kubectl_version.replace('.', '-')}"
    body = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "maxReplicas": 5, "metrics": [MEMORY, _cpu(60)],
                     "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}
    created = http.post(V2_PATH, json=body)
    assert created.status_code == 201, created.text
    behavior = created.json()["spec"]["behavior"]
    try:
        v1 = _json(kubectl("get", V1_RESOURCE, name, "-o", "json"))
        assert v1["spec"]["targetCPUUtilizationPercentage"] == 60
        annotations = v1["metadata"]["annotations"]
        assert json.loads(annotations[METRICS]) == [{"type": "Resource", "resource": {
            "name": "memory", "targetAverageValue": "100Mi"}}]
        assert json.loads(annotations[BEHAVIOR]) == behavior

        patched = kubectl("patch", V1_RESOURCE, name, "--type", "merge", "-p",
                          '{"spec":{"maxReplicas":7,"targetCPUUtilizationPercentage":65}}')
        assert patched.returncode == 0, patched.stderr
        stored = http.get(f"{V2_PATH}/{name}").json()
        assert stored["spec"]["metrics"] == [MEMORY, _cpu(65)] and stored["spec"]["maxReplicas"] == 7
        assert stored["spec"]["behavior"] == behavior
        assert METRICS not in stored["metadata"].get("annotations", {})

        json_patched = http.patch(f"{V1_PATH}/{name}", content=json.dumps(
            [{"op": "replace", "path": "/spec/targetCPUUtilizationPercentage", "value": 40}]),
            headers={"Content-Type": "application/json-patch+json"})
        assert json_patched.status_code == 200, json_patched.text
        assert json_patched.json()["apiVersion"] == "autoscaling/v1"
        assert json_patched.json()["spec"]["targetCPUUtilizationPercentage"] == 40
        assert http.get(f"{V2_PATH}/{name}").json()["spec"]["metrics"] == [MEMORY, _cpu(40)]

        v1 = _json(kubectl("get", V1_RESOURCE, name, "-o", "json"))
        v1["spec"]["minReplicas"] = 2
        (tmp_path / "v1.json").write_text(json.dumps(v1))
        replaced = kubectl("replace", "-f", str(tmp_path / "v1.json"))
        assert replaced.returncode == 0, replaced.stderr
        stored = http.get(f"{V2_PATH}/{name}").json()
        assert stored["spec"]["minReplicas"] == 2 and stored["spec"]["metrics"] == [MEMORY, _cpu(40)]
        assert stored["spec"]["behavior"] == behavior and stored["metadata"]["labels"] == {"app": "web"}
    finally:
        http.delete(f"{V2_PATH}/{name}")


def test_hpa8_v1_reads_lists_watches_status_and_dry_runs(http: httpx.Client) -> None:
    name = "v1-views"
    created = http.post(V1_PATH, params={"dryRun": "All"}, json={
        "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "maxReplicas": 3, "targetCPUUtilizationPercentage": 55}})
    assert created.status_code == 201, created.text
    assert created.json()["apiVersion"] == "autoscaling/v1" and created.json()["spec"]["targetCPUUtilizationPercentage"] == 55
    assert http.get(f"{V2_PATH}/{name}").status_code == 404  # a dry run stores nothing

    # Without an apiVersion a body is in its path's version.
    created = http.post(V1_PATH, json={"kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
                                       "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
                                                "maxReplicas": 3, "targetCPUUtilizationPercentage": 55}})
    assert created.status_code == 201, created.text
    try:
        assert http.get(f"{V2_PATH}/{name}").json()["spec"]["metrics"] == [_cpu(55)]
        listed = http.get(V1_PATH).json()
        assert listed["kind"] == "HorizontalPodAutoscalerList" and listed["apiVersion"] == "autoscaling/v1"
        item = next(i for i in listed["items"] if i["metadata"]["name"] == name)
        assert item["apiVersion"] == "autoscaling/v1" and item["spec"]["targetCPUUtilizationPercentage"] == 55

        # The controller's v2 status, read through v1's status subresource.
        v2 = http.get(f"{V2_PATH}/{name}").json()
        v2["status"] = {"currentReplicas": 2, "desiredReplicas": 2, "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 33}}}]}
        assert http.put(f"{V2_PATH}/{name}/status", json=v2).status_code == 200
        status = http.get(f"{V1_PATH}/{name}/status").json()
        assert status["status"] == {"currentReplicas": 2, "desiredReplicas": 2, "currentCPUUtilizationPercentage": 33}

        rv = listed["metadata"]["resourceVersion"]
        with http.stream("GET", V1_PATH, params={"watch": "1", "resourceVersion": rv, "timeoutSeconds": "2",
                                                 "fieldSelector": f"metadata.name={name}"}) as watch:
            events = [json.loads(line) for line in watch.iter_lines() if line]
        assert events and all(e["object"]["apiVersion"] == "autoscaling/v1" for e in events)
        assert events[-1]["object"]["status"]["currentCPUUtilizationPercentage"] == 33
    finally:
        http.delete(f"{V1_PATH}/{name}")
    assert http.get(f"{V2_PATH}/{name}").status_code == 404


def test_hpa8_v1_protobuf_bodies_and_field_validation(http: httpx.Client) -> None:
    """A v1 protobuf body is read with v1's message; unknown fields are judged in the body's version, so v2's
    spec.metrics is unknown to v1 (strict: refused naming it, as Kubernetes words it)."""
    name = "v1-protobuf"
    body = Writer().object({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
                            "metadata": {"name": name},
                            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "w"},
                                     "minReplicas": 2, "maxReplicas": 4, "targetCPUUtilizationPercentage": 45}})
    created = http.post(V1_PATH, content=body, headers={"Content-Type": "application/vnd.kubernetes.protobuf"})
    assert created.status_code == 201, created.text
    try:
        assert created.json()["spec"] == {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "w"},
                                          "minReplicas": 2, "maxReplicas": 4, "targetCPUUtilizationPercentage": 45}
        assert http.get(f"{V2_PATH}/{name}").json()["spec"]["metrics"] == [_cpu(45)]

        strict = http.patch(f"{V1_PATH}/{name}", params={"fieldValidation": "Strict"},
                            content=json.dumps({"spec": {"metrics": [MEMORY]}}),
                            headers={"Content-Type": "application/merge-patch+json"})
        assert strict.status_code == 400, strict.text
        assert strict.json()["message"] == ('HorizontalPodAutoscaler in version "v1" cannot be handled as a '
                                            'HorizontalPodAutoscaler: strict decoding error: unknown field '
                                            '"spec.metrics"')
        warned = http.patch(f"{V1_PATH}/{name}", params={"fieldValidation": "Warn"},
                            content=json.dumps({"spec": {"metrics": [MEMORY], "maxReplicas": 6}}),
                            headers={"Content-Type": "application/merge-patch+json"})
        assert warned.status_code == 200, warned.text
        assert 'unknown field \\"spec.metrics\\"' in warned.headers["Warning"], warned.headers
        assert http.get(f"{V2_PATH}/{name}").json()["spec"]["metrics"] == [_cpu(45)]
    finally:
        http.delete(f"{V2_PATH}/{name}")


def test_hpa8_explain_describes_v1(kubectl: Kubectl) -> None:
    explained = kubectl("explain", "hpa.spec", "--api-version=autoscaling/v1")
    assert explained.returncode == 0, explained.stderr
    assert "HorizontalPodAutoscaler" in explained.stdout and "v1" in explained.stdout
    for field in ("scaleTargetRef", "minReplicas", "maxReplicas", "targetCPUUtilizationPercentage"):
        assert f"  {field}\t" in explained.stdout, explained.stdout
    assert "  metrics\t" not in explained.stdout and "  behavior\t" not in explained.stdout
