"""HorizontalPodAutoscaler (SEMANTICS HPA1, HPA2) through the real API server and the real kubectl, with no
controller: served as autoscaling/v2 (kubectl autoscale posts it in protobuf), defaulted as Kubernetes'
SetDefaults_HorizontalPodAutoscaler, an autoscaling/v1 body converted to v2 metrics, printed with kubectl's
columns, and validated as Kubernetes' ValidateHorizontalPodAutoscaler in its words."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from storage.apiserver.server import RunningServer
from support import kubectl_binary

HPAS = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers"
CPU_80 = [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                       "averageUtilization": 80}}}]

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def kubectl(module_server: RunningServer, tmp_path: Path) -> Kubectl:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl_binary(), "--kubeconfig", str(module_server.kubeconfig), "--cache-dir",
                               str(tmp_path / "cache"), *args], capture_output=True, text=True, timeout=120, env=env)

    return run


def _hpa(name: str, api_version: str = "autoscaling/v2", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "maxReplicas": 3, **spec}}


def _causes(resp: httpx.Response) -> list[tuple[str, str]]:
    return [(c["field"], c["message"]) for c in resp.json()["details"]["causes"]]


def test_hpa1_kubectl_autoscale_posts_protobuf_and_gets_kubectls_columns(kubectl: Kubectl) -> None:
    """HPA1: kubectl autoscale creates an autoscaling/v2 object in protobuf; the defaults fill minReplicas only
    where kubectl left it out; kubectl get prints REFERENCE, TARGETS (``cpu: <unknown>/60%`` before any
    status), MINPODS, MAXPODS, REPLICAS."""
    created = kubectl("create", "deployment", "web", "--image=nginx")
    assert created.returncode == 0, created.stderr
    try:
        scaled = kubectl("autoscale", "deployment", "web", "--min", "2", "--max", "5", "--cpu-percent", "60", "-v=8")
        assert scaled.returncode == 0, scaled.stderr
        assert scaled.stdout.strip() == "horizontalpodautoscaler.autoscaling/web autoscaled"
        assert "Content-Type: application/vnd.kubernetes.protobuf" in scaled.stderr
        assert 'verb="POST"' in scaled.stderr
        assert "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers?fieldManager=kubectl-autoscale" \
            in scaled.stderr

        listed = kubectl("get", "hpa")
        assert listed.returncode == 0, listed.stderr
        header, row = listed.stdout.splitlines()
        assert header.split() == ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"]
        assert row.split()[:7] == ["web", "Deployment/web", "cpu:", "<unknown>/60%", "2", "5", "0"]

        got = kubectl("get", "hpa", "web", "-o", "json")
        assert got.returncode == 0, got.stderr
        obj = json.loads(got.stdout)
        assert obj["apiVersion"] == "autoscaling/v2" and obj["metadata"]["generation"] == 1
        assert obj["spec"] == {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2, "maxReplicas": 5,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": 60}}}]}
        assert "status" not in obj or not obj["status"]

        deleted = kubectl("delete", "hpa", "web")
        assert deleted.returncode == 0 and deleted.stdout.startswith(
            'horizontalpodautoscaler.autoscaling "web" deleted'), deleted.stderr
        gone = kubectl("get", "hpa", "web")
        assert gone.returncode != 0 and 'horizontalpodautoscalers.autoscaling "web" not found' in gone.stderr
    finally:
        kubectl("delete", "deployment", "web", "--ignore-not-found")
        kubectl("delete", "hpa", "web", "--ignore-not-found")


# An autoscaling/v1 object, posted to the v2 collection: converted. (v1's own paths: test_hpa_v1_api.py.)
V1_OBJECT = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "v1-cpu"},
             "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "php-apache"},
                      "minReplicas": 1, "maxReplicas": 10, "targetCPUUtilizationPercentage": 50}}

# The HPA walkthrough's autoscaler on several metrics (kubernetes.io, "HorizontalPodAutoscaler Walkthrough").
V2_DOCS_MANIFEST = """apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: php-apache
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: php-apache
  minReplicas: 1
  maxReplicas: 10
  metrics:
  - type: Resource
    resource:
      name: cpu
      target:
        type: Utilization
        averageUtilization: 50
  - type: Pods
    pods:
      metric:
        name: packets-per-second
      target:
        type: AverageValue
        averageValue: 1k
  - type: Object
    object:
      metric:
        name: requests-per-second
      describedObject:
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        name: main-route
      target:
        type: Value
        value: 10k
"""


def test_hpa1_v1_bodies_are_stored_as_v2_and_docs_v2_manifests_unchanged(kubectl: Kubectl, tmp_path: Path) -> None:
    """HPA1: an autoscaling/v1 targetCPUUtilizationPercentage becomes v2's Resource cpu Utilization metric (and
    is gone); the walkthrough's v2 manifest applies as written; kubectl explain describes the kind."""
    (tmp_path / "v1.json").write_text(json.dumps(V1_OBJECT))
    (tmp_path / "v2.yaml").write_text(V2_DOCS_MANIFEST)
    try:
        posted = kubectl("create", "--raw", HPAS, "-f", str(tmp_path / "v1.json"))
        assert posted.returncode == 0, posted.stderr
        applied = kubectl("apply", "-f", str(tmp_path / "v2.yaml"))
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.strip() == "horizontalpodautoscaler.autoscaling/php-apache created"
        v1 = json.loads(kubectl("get", "hpa", "v1-cpu", "-o", "json").stdout)
        assert v1["apiVersion"] == "autoscaling/v2"
        assert "targetCPUUtilizationPercentage" not in v1["spec"]
        assert v1["spec"]["metrics"] == [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": 50}}}]
        docs = json.loads(kubectl("get", "hpa", "php-apache", "-o", "json").stdout)
        assert [m["type"] for m in docs["spec"]["metrics"]] == ["Resource", "Pods", "Object"]
        assert docs["spec"]["metrics"][2]["object"]["target"] == {"type": "Value", "value": "10k"}
        assert "behavior" not in docs["spec"]  # Kubernetes defaults a behavior only when one is given
        diffed = kubectl("diff", "-f", str(tmp_path / "v2.yaml"))
        assert diffed.returncode == 0, diffed.stdout + diffed.stderr

        listed = kubectl("get", "hpa", "php-apache")
        row = listed.stdout.splitlines()[1]
        assert "cpu: <unknown>/50%, <unknown>/1k + 1 more..." in row, row

        explained = kubectl("explain", "hpa.spec")
        assert explained.returncode == 0, explained.stderr
        assert "KIND:       HorizontalPodAutoscaler" in explained.stdout and "VERSION:    v2" in explained.stdout
        for field in ("scaleTargetRef", "minReplicas", "maxReplicas", "metrics", "behavior"):
            assert f"  {field}\t" in explained.stdout, explained.stdout
        resources = kubectl("api-resources", "--api-group=autoscaling", "-o", "wide")
        assert resources.returncode == 0 and "hpa" in resources.stdout.split(), resources.stdout
    finally:
        kubectl("delete", "hpa", "v1-cpu", "php-apache", "--ignore-not-found")


def test_hpa1_behavior_defaults_generation_and_status(http: httpx.Client) -> None:
    """HPA1: metrics default to cpu at 80%; a given behavior gets Kubernetes' rules for each missing field of
    scaleUp and scaleDown; a v1 body without a CPU target gets the v2 default; the status of a create is
    dropped; the generation counts spec changes only."""
    try:
        resp = http.post(HPAS, json=_hpa("hpa-behavior", behavior={"scaleDown": {"stabilizationWindowSeconds": 60}}))
        assert resp.status_code == 201, resp.text
        spec = resp.json()["spec"]
        assert spec["minReplicas"] == 1 and spec["metrics"] == CPU_80
        assert spec["behavior"] == {
            "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
                {"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]},
            "scaleDown": {"stabilizationWindowSeconds": 60, "selectPolicy": "Max", "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 15}]}}

        resp = http.post(HPAS, json={**_hpa("hpa-v1-default", "autoscaling/v1"), "status": {"currentReplicas": 4}})
        assert resp.status_code == 201, resp.text
        stored = resp.json()
        assert stored["apiVersion"] == "autoscaling/v2" and stored["spec"]["metrics"] == CPU_80
        assert not stored.get("status") and stored["metadata"]["generation"] == 1

        labelled = http.put(f"{HPAS}/hpa-v1-default", json={**stored, "metadata": {**stored["metadata"],
                                                                                     "labels": {"a": "b"}}})
        assert labelled.status_code == 200 and labelled.json()["metadata"]["generation"] == 1
        changed = labelled.json()
        changed["spec"]["maxReplicas"] = 7
        resp = http.put(f"{HPAS}/hpa-v1-default", json=changed)
        assert resp.status_code == 200 and resp.json()["metadata"]["generation"] == 2

        # The status subresource is where a controller writes what it measured.
        status = {**resp.json(), "status": {"currentReplicas": 2, "desiredReplicas": 3, "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 12}}}]}}
        resp = http.put(f"{HPAS}/hpa-v1-default/status", json=status)
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"]["currentMetrics"][0]["resource"]["current"] == {"averageUtilization": 12}
        table = http.get(f"{HPAS}/hpa-v1-default",
                         headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}).json()
        assert table["rows"][0]["cells"][2:6] == ["cpu: 12%/80%", "1", "7", "2"]
        # An autoscaling/v1 status says its one CPU reading in a field of its own.
        v1_status = {**resp.json(), "apiVersion": "autoscaling/v1",
                     "status": {"currentReplicas": 2, "currentCPUUtilizationPercentage": 30}}
        resp = http.put(f"{HPAS}/hpa-v1-default/status", json=v1_status)
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"]["currentMetrics"] == [
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 30}}}]
        bad = {**resp.json(), "status": {"currentReplicas": -1}}
        resp = http.put(f"{HPAS}/hpa-v1-default/status", json=bad)
        assert resp.status_code == 422 and _causes(resp) == [
            ("status.currentReplicas", "Invalid value: -1: must be greater than or equal to 0")]
    finally:
        for name in ("hpa-behavior", "hpa-v1-default"):
            http.delete(f"{HPAS}/{name}")


REFUSALS: list[tuple[dict[str, Any], list[tuple[str, str]]]] = [
    ({"minReplicas": 4, "maxReplicas": 3},
     [("spec.maxReplicas", "Invalid value: 3: must be greater than or equal to `minReplicas`")]),
    ({"minReplicas": 0},  # only the alpha HPAScaleToZero gate allows 0
     [("spec.minReplicas", "Invalid value: 0: must be greater than or equal to 1")]),
    ({"maxReplicas": 0}, [("spec.maxReplicas", "Invalid value: 0: must be greater than 0"),
                          ("spec.maxReplicas", "Invalid value: 0: must be greater than or equal to `minReplicas`")]),
    ({"scaleTargetRef": {"name": "a/b"}},
     [("spec.scaleTargetRef.kind", "Required value"),
      ("spec.scaleTargetRef.name", "Invalid value: \"a/b\": may not contain '/'")]),
    ({"metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}}]},
     [("spec.metrics[0].resource.target.averageUtilization",
       "Required value: must set either a target raw value or a target utilization")]),
    ({"metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                             "averageUtilization": 0}}}]},
     [("spec.metrics[0].resource.target.averageUtilization", "Invalid value: 0: must be greater than 0")]),
    ({"metrics": [{"type": "Resource", "resource": {"name": "memory", "target": {"type": "Value", "value": "1Gi"}}}]},
     [("spec.metrics[0].resource.target.averageUtilization",
       "Required value: must set either a target raw value or a target utilization")]),
    ({"metrics": [{"type": "Cpu", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                        "averageUtilization": 50}}}]},
     [("spec.metrics[0].type", 'Unsupported value: "Cpu": supported values: "ContainerResource", "External", '
                               '"Object", "Pods", "Resource"')]),
    ({"metrics": [{"type": "Pods", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                         "averageUtilization": 50}}}]},
     [("spec.metrics[0].pods", "Required value: must populate information for the given metric source")]),
    ({"metrics": [{"type": "Resource",
                   "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
                   "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1"}}}]},
     [("spec.metrics[0].pods", "Forbidden: must populate the given metric source only")]),
    ({"metrics": [{"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "Average"}}}]},
     [("spec.metrics[0].pods.target.type", 'Invalid value: "Average": must be either Utilization, Value, or '
                                           'AverageValue'),
      ("spec.metrics[0].pods.target.averageValue", "Required value: must specify a positive target averageValue")]),
    ({"behavior": {"scaleUp": {"stabilizationWindowSeconds": 3601, "selectPolicy": "Fastest",
                               "policies": [{"type": "Nodes", "value": 0, "periodSeconds": 1801}]},
                   "scaleDown": {"policies": []}}},
     [("spec.behavior.scaleUp.stabilizationWindowSeconds", "Invalid value: 3601: must be less than or equal to 3600"),
      ("spec.behavior.scaleUp.selectPolicy",
       'Unsupported value: "Fastest": supported values: "Disabled", "Max", "Min"'),
      ("spec.behavior.scaleUp.policies[0].type", 'Unsupported value: "Nodes": supported values: "Percent", "Pods"'),
      ("spec.behavior.scaleUp.policies[0].value", "Invalid value: 0: must be greater than zero"),
      ("spec.behavior.scaleUp.policies[0].periodSeconds", "Invalid value: 1801: must be less than or equal to 1800"),
      ("spec.behavior.scaleDown.policies", "Required value: must specify at least one Policy")]),
]


@pytest.mark.parametrize("spec,causes", REFUSALS)
def test_hpa2_refusals_name_the_field_in_kubernetes_words(http: httpx.Client, spec: dict[str, Any],
                                                          causes: list[tuple[str, str]]) -> None:
    """HPA2: Kubernetes' ValidateHorizontalPodAutoscaler, each refusal a 422 naming the field."""
    body = _hpa("hpa-refused")
    body["spec"].update(spec)
    resp = http.post(HPAS, json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["reason"] == "Invalid"
    assert _causes(resp) == causes
    assert http.get(f"{HPAS}/hpa-refused").status_code == 404


def test_hpa2_kubectl_apply_of_a_refused_manifest_names_the_field(kubectl: Kubectl, tmp_path: Path) -> None:
    """HPA2: kubectl shows the refusal as Kubernetes words it."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(V2_DOCS_MANIFEST.replace("name: php-apache\nspec", "name: inverted\nspec")
                   .replace("minReplicas: 1", "minReplicas: 11"))
    refused = kubectl("apply", "-f", str(bad))
    assert refused.returncode != 0
    assert ('HorizontalPodAutoscaler "inverted" is invalid: spec.maxReplicas: Invalid value: 10: '
            "must be greater than or equal to `minReplicas`") in refused.stderr, refused.stderr
