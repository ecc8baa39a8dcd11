"""SEMANTICS HPA8: autoscaling/v2 HorizontalPodAutoscalers to autoscaling/v1 and back, as Kubernetes converts
them (k8s.io/kubernetes pkg/apis/autoscaling/v1/conversion.go): the CPU utilization in v1's own field,
everything else in the four round-trip annotations, in v1's metric form."""
from __future__ import annotations

import copy
import json
from typing import Any

from storage.api import autoscaling_v1
from storage.api.conversion import convert, to_version

REF = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
BEHAVIOR = {"scaleDown": {"stabilizationWindowSeconds": 60, "selectPolicy": "Max",
                          "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}}
CONDITIONS = [{"type": "AbleToScale", "status": "True", "lastTransitionTime": "2026-12-06T10:00:00Z",
               "reason": "ReadyForNewScale", "message": "recommended size matches current size"}]

# Every metric type, each target type v1 can say, and a cpu Utilization metric among them.
V2_METRICS: list[dict[str, Any]] = [
    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}},
    {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
    {"type": "Object", "object": {
        "describedObject": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "main"},
        "metric": {"name": "rps"}, "target": {"type": "Value", "value": "10k"}}},
    {"type": "External", "external": {"metric": {"name": "queue", "selector": {"matchLabels": {"q": "a"}}},
                                      "target": {"type": "AverageValue", "averageValue": "30"}}},
    {"type": "ContainerResource", "containerResource": {
        "name": "cpu", "container": "app", "target": {"type": "AverageValue", "averageValue": "500m"}}},
]
# The same, as Kubernetes writes them into the metrics annotation (without the cpu Utilization one).
V1_OTHER_METRICS = [
    {"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "100Mi"}},
    {"type": "Pods", "pods": {"metricName": "qps", "targetAverageValue": "10"}},
    {"type": "Object", "object": {"target": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "main"},
                                  "metricName": "rps", "targetValue": "10k"}},
    {"type": "External", "external": {"metricName": "queue", "metricSelector": {"matchLabels": {"q": "a"}},
                                      "targetAverageValue": "30"}},
    {"type": "ContainerResource", "containerResource": {"name": "cpu", "targetAverageValue": "500m",
                                                        "container": "app"}},
]
V2_CURRENT = [
    {"type": "Resource", "resource": {"name": "cpu", "current": {"averageValue": "200m", "averageUtilization": 40}}},
    {"type": "Pods", "pods": {"metric": {"name": "qps"}, "current": {"averageValue": "7"}}},
]


def _v2(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default", "annotations": {"team": "a"}},
            "spec": {"scaleTargetRef": REF, "minReplicas": 2, "maxReplicas": 9, **spec}}


def test_hpa8_v2_to_v1_puts_cpu_in_its_field_and_the_rest_in_kubernetes_annotations() -> None:
    obj = _v2(metrics=V2_METRICS, behavior=BEHAVIOR)
    obj["status"] = {"observedGeneration": 3, "currentReplicas": 2, "desiredReplicas": 4,
                     "currentMetrics": V2_CURRENT, "conditions": CONDITIONS}
    before = copy.deepcopy(obj)
    v1 = to_version(obj, "autoscaling/v1")
    assert obj == before  # never mutated
    assert v1["apiVersion"] == "autoscaling/v1" and v1["kind"] == "HorizontalPodAutoscaler"
    assert v1["spec"] == {"scaleTargetRef": REF, "minReplicas": 2, "maxReplicas": 9,
                          "targetCPUUtilizationPercentage": 60}
    assert v1["status"] == {"observedGeneration": 3, "currentReplicas": 2, "desiredReplicas": 4,
                            "currentCPUUtilizationPercentage": 40}
    annotations = v1["metadata"]["annotations"]
    assert annotations["team"] == "a"
    assert json.loads(annotations[autoscaling_v1.METRICS]) == V1_OTHER_METRICS
    assert json.loads(annotations[autoscaling_v1.BEHAVIOR]) == BEHAVIOR
    assert json.loads(annotations[autoscaling_v1.CONDITIONS]) == CONDITIONS
    # All current metrics, the CPU one too (its raw value is kept that way), in v1's form; Go writes a
    # zero Quantity for v1's required currentAverageValue.
    assert json.loads(annotations[autoscaling_v1.CURRENT_METRICS]) == [
        {"type": "Resource", "resource": {"name": "cpu", "currentAverageUtilization": 40,
                                          "currentAverageValue": "200m"}},
        {"type": "Pods", "pods": {"metricName": "qps", "currentAverageValue": "7"}}]
    # Go's compact JSON, as Kubernetes writes the annotation.
    assert annotations[autoscaling_v1.METRICS].startswith('[{"type":"Resource","resource":{"name":"memory",')


def test_hpa8_v1_back_to_v2_restores_everything_and_drops_the_annotations() -> None:
    obj = _v2(metrics=V2_METRICS, behavior=BEHAVIOR)
    obj["status"] = {"currentReplicas": 2, "desiredReplicas": 4, "currentMetrics": V2_CURRENT,
                     "conditions": CONDITIONS}
    back = convert(to_version(obj, "autoscaling/v1"))
    assert back["apiVersion"] == "autoscaling/v2"
    assert back["metadata"]["annotations"] == {"team": "a"}
    # Kubernetes' order: the annotation's metrics, then the one from targetCPUUtilizationPercentage.
    cpu = V2_METRICS[1]
    assert back["spec"]["metrics"] == [m for m in V2_METRICS if m is not cpu] + [cpu]
    assert back["spec"]["behavior"] == BEHAVIOR
    assert back["status"]["currentMetrics"] == V2_CURRENT
    assert back["status"]["conditions"] == CONDITIONS
    assert "targetCPUUtilizationPercentage" not in back["spec"]
    assert "currentCPUUtilizationPercentage" not in back["status"]


def test_hpa8_a_v2_object_without_status_or_cpu_metric() -> None:
    """No cpu Utilization metric: no targetCPUUtilizationPercentage (an AverageValue cpu target is another
    metric); no status: v1's required replica counts read 0; no annotations made from nothing."""
    cpu_value = {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "AverageValue",
                                                                            "averageValue": "300m"}}}
    obj = _v2(metrics=[cpu_value])
    del obj["metadata"]["annotations"]
    v1 = to_version(obj, "autoscaling/v1")
    assert "targetCPUUtilizationPercentage" not in v1["spec"]
    assert v1["status"] == {"currentReplicas": 0, "desiredReplicas": 0}
    assert v1["metadata"]["annotations"] == {autoscaling_v1.METRICS: json.dumps(
        [{"type": "Resource", "resource": {"name": "cpu", "targetAverageValue": "300m"}}], separators=(",", ":"))}
    assert convert(v1)["spec"]["metrics"] == [cpu_value]
    assert "annotations" not in convert(v1)["metadata"]


def test_hpa8_annotations_are_only_what_the_conversion_wrote() -> None:
    """Round-trip annotations already on a stored object are not shown through v1 (Kubernetes drops them
    before it writes its own); unreadable ones sent to v1 are ignored and dropped, not an error."""
    obj = _v2(metrics=[V2_METRICS[1]])
    obj["metadata"]["annotations"][autoscaling_v1.METRICS] = '[{"type":"Pods"}]'
    v1 = to_version(obj, "autoscaling/v1")
    assert v1["metadata"]["annotations"] == {"team": "a"}

    sent = {**v1, "metadata": {**v1["metadata"], "annotations": {
        "team": "a", autoscaling_v1.METRICS: "not json", autoscaling_v1.BEHAVIOR: "[1]",
        # deeper than Python's parser recurses: unreadable, not a server error
        autoscaling_v1.CONDITIONS: "[" * 200_000}}, "status": {"currentReplicas": 1}}
    back = convert(sent)
    assert back["metadata"]["annotations"] == {"team": "a"}
    assert back["spec"]["metrics"] == [V2_METRICS[1]] and "behavior" not in back["spec"]
    assert "conditions" not in back["status"]


def test_hpa8_a_malformed_v1_body_is_left_for_validation() -> None:
    """A spec that is not an object is not turned into an empty one: validation refuses it, naming it."""
    sent = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "x"},
            "spec": "everything"}
    assert convert(sent)["spec"] == "everything"


def test_hpa8_v1_target_kinds_read_as_kubernetes_reads_them() -> None:
    """v1's metric form names no target type: an object metric with an averageValue is AverageValue, else
    Value; an external one with a targetValue is Value, else AverageValue; a resource one with a utilization
    is Utilization, else AverageValue."""
    v1 = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "x", "annotations": {
        autoscaling_v1.METRICS: json.dumps([
            {"type": "Object", "object": {"target": {"kind": "Service", "name": "s"}, "metricName": "m",
                                          "targetValue": "0", "averageValue": "5"}},
            {"type": "External", "external": {"metricName": "e", "targetValue": "3"}},
            {"type": "Resource", "resource": {"name": "memory", "targetAverageUtilization": 70}}])}},
        "spec": {"scaleTargetRef": REF, "maxReplicas": 3}}
    assert convert(v1)["spec"]["metrics"] == [
        {"type": "Object", "object": {"describedObject": {"kind": "Service", "name": "s"},
                                      "target": {"type": "AverageValue", "averageValue": "5"}, "metric": {"name": "m"}}},
        {"type": "External", "external": {"metric": {"name": "e"}, "target": {"type": "Value", "value": "3"}}},
        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization",
                                                                        "averageUtilization": 70}}}]


def test_hpa8_other_kinds_only_change_their_api_version() -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 1}}
    assert to_version(deployment, "apps/v1") is deployment
    assert to_version(deployment, "apps/v1beta2") == {**deployment, "apiVersion": "apps/v1beta2"}
