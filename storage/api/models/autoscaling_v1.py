"""``autoscaling/v1``'s HorizontalPodAutoscaler: the form an older version's path shows (SEMANTICS HPA8).

Only the OpenAPI documents (``kubectl explain hpa --api-version=autoscaling/v1``) read these models; objects
are stored, defaulted and validated as ``autoscaling/v2`` (``storage.api.models.autoscaling``) and converted
to and from this form by ``storage.api.autoscaling_v1``.
"""
from __future__ import annotations

from storage.api.modelbase import WireModel
from storage.api.models.meta import Resource, alias


class CrossVersionObjectReference(WireModel):
    kind: str | None = None
    name: str | None = None
    api_version: str | None = None


class HorizontalPodAutoscalerSpec(WireModel):
    scale_target_ref: CrossVersionObjectReference | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_cpu_utilization_percentage: int | None = alias("targetCPUUtilizationPercentage")


class HorizontalPodAutoscalerStatus(WireModel):
    observed_generation: int | None = None
    last_scale_time: str | None = None
    current_replicas: int | None = None
    desired_replicas: int | None = None
    current_cpu_utilization_percentage: int | None = alias("currentCPUUtilizationPercentage")


class HorizontalPodAutoscaler(Resource):
    spec: HorizontalPodAutoscalerSpec | None = None
    status: HorizontalPodAutoscalerStatus | None = None


__all__ = ["CrossVersionObjectReference", "HorizontalPodAutoscaler", "HorizontalPodAutoscalerSpec",
           "HorizontalPodAutoscalerStatus"]
