"""``autoscaling/v2`` kinds: the HorizontalPodAutoscaler (SEMANTICS HPA1); its controller is
``storage.controllers.hpa``.

Field names and nesting are Kubernetes' autoscaling/v2 types; an autoscaling/v1 body is converted to this
form on input (``storage.api.conversion``).
"""
from __future__ import annotations

from storage.api.modelbase import WireModel
from storage.api.models.meta import Resource
from storage.api.quantity import Quantity
from storage.api.selectors import LabelSelector

# Each metric type (of a MetricSpec and a MetricStatus) and the member of that name, in the order
# Kubernetes' validateMetricSpec looks at them.
METRIC_SOURCE_MEMBERS = {"Object": "object", "External": "external", "Pods": "pods", "Resource": "resource",
                         "ContainerResource": "containerResource"}


class CrossVersionObjectReference(WireModel):
    kind: str | None = None
    name: str | None = None
    api_version: str | None = None


class MetricIdentifier(WireModel):
    name: str | None = None
    selector: LabelSelector | None = None


class MetricTarget(WireModel):
    type: str | None = None
    value: Quantity | None = None
    average_value: Quantity | None = None
    average_utilization: int | None = None


class ResourceMetricSource(WireModel):
    name: str | None = None
    target: MetricTarget | None = None


class ContainerResourceMetricSource(WireModel):
    name: str | None = None
    target: MetricTarget | None = None
    container: str | None = None


class PodsMetricSource(WireModel):
    metric: MetricIdentifier | None = None
    target: MetricTarget | None = None


class ObjectMetricSource(WireModel):
    described_object: CrossVersionObjectReference | None = None
    target: MetricTarget | None = None
    metric: MetricIdentifier | None = None


class ExternalMetricSource(WireModel):
    metric: MetricIdentifier | None = None
    target: MetricTarget | None = None


class MetricSpec(WireModel):
    type: str | None = None
    object: ObjectMetricSource | None = None
    pods: PodsMetricSource | None = None
    resource: ResourceMetricSource | None = None
    container_resource: ContainerResourceMetricSource | None = None
    external: ExternalMetricSource | None = None


class HPAScalingPolicy(WireModel):
    type: str | None = None
    value: int | None = None
    period_seconds: int | None = None


class HPAScalingRules(WireModel):
    stabilization_window_seconds: int | None = None
    select_policy: str | None = None
    policies: list[HPAScalingPolicy] | None = None
    tolerance: Quantity | None = None


class HorizontalPodAutoscalerBehavior(WireModel):
    scale_up: HPAScalingRules | None = None
    scale_down: HPAScalingRules | None = None


class HorizontalPodAutoscalerSpec(WireModel):
    scale_target_ref: CrossVersionObjectReference | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    metrics: list[MetricSpec] | None = None
    behavior: HorizontalPodAutoscalerBehavior | None = None


class MetricValueStatus(WireModel):
    value: Quantity | None = None
    average_value: Quantity | None = None
    average_utilization: int | None = None


class ObjectMetricStatus(WireModel):
    metric: MetricIdentifier | None = None
    current: MetricValueStatus | None = None
    described_object: CrossVersionObjectReference | None = None


class PodsMetricStatus(WireModel):
    metric: MetricIdentifier | None = None
    current: MetricValueStatus | None = None


class ResourceMetricStatus(WireModel):
    name: str | None = None
    current: MetricValueStatus | None = None


class ContainerResourceMetricStatus(WireModel):
    name: str | None = None
    current: MetricValueStatus | None = None
    container: str | None = None


class ExternalMetricStatus(WireModel):
    metric: MetricIdentifier | None = None
    current: MetricValueStatus | None = None


class MetricStatus(WireModel):
    type: str | None = None
    object: ObjectMetricStatus | None = None
    pods: PodsMetricStatus | None = None
    resource: ResourceMetricStatus | None = None
    container_resource: ContainerResourceMetricStatus | None = None
    external: ExternalMetricStatus | None = None


class HorizontalPodAutoscalerCondition(WireModel):
    type: str | None = None
    status: str | None = None
    last_transition_time: str | None = None
    reason: str | None = None
    message: str | None = None


class HorizontalPodAutoscalerStatus(WireModel):
    observed_generation: int | None = None
    last_scale_time: str | None = None
    current_replicas: int | None = None
    desired_replicas: int | None = None
    current_metrics: list[MetricStatus] | None = None
    conditions: list[HorizontalPodAutoscalerCondition] | None = None


class HorizontalPodAutoscaler(Resource):
    spec: HorizontalPodAutoscalerSpec | None = None
    status: HorizontalPodAutoscalerStatus | None = None


__all__ = [
    "METRIC_SOURCE_MEMBERS", "ContainerResourceMetricSource", "CrossVersionObjectReference", "ExternalMetricSource", "HPAScalingPolicy",
    "HPAScalingRules", "HorizontalPodAutoscaler", "HorizontalPodAutoscalerBehavior",
    "HorizontalPodAutoscalerCondition", "HorizontalPodAutoscalerSpec", "HorizontalPodAutoscalerStatus",
    "MetricIdentifier", "MetricSpec", "MetricStatus", "MetricTarget", "MetricValueStatus", "ObjectMetricSource",
    "PodsMetricSource", "ResourceMetricSource",
]
