"""``apps/v1`` kinds."""
from __future__ import annotations

from typing import Any

from storage.api.modelbase import WireModel
from storage.api.models.core import PersistentVolumeClaim, ReplicatedPodsSpec, ReplicationControllerStatus
from storage.api.models.meta import Condition, Resource
from storage.api.models.pod import PodTemplateSpec
from storage.api.selectors import LabelSelector


class RollingUpdateStatefulSetStrategy(WireModel):
    partition: int | None = None
    max_unavailable: int | str | None = None


class StatefulSetUpdateStrategy(WireModel):
    type: str | None = None
    rolling_update: RollingUpdateStatefulSetStrategy | None = None


class StatefulSetPersistentVolumeClaimRetentionPolicy(WireModel):
    when_deleted: str | None = None
    when_scaled: str | None = None


class StatefulSetOrdinals(WireModel):
    start: int | None = None


class StatefulSetSpec(WireModel):
    replicas: int | None = None
    selector: LabelSelector | None = None
    template: PodTemplateSpec | None = None
    volume_claim_templates: list[PersistentVolumeClaim] | None = None
    service_name: str | None = None
    pod_management_policy: str | None = None
    update_strategy: StatefulSetUpdateStrategy | None = None
    revision_history_limit: int | None = None
    min_ready_seconds: int | None = None
    persistent_volume_claim_retention_policy: StatefulSetPersistentVolumeClaimRetentionPolicy | None = None
    ordinals: StatefulSetOrdinals | None = None


class StatefulSetStatus(WireModel):
    observed_generation: int | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    current_replicas: int | None = None
    updated_replicas: int | None = None
    available_replicas: int | None = None
    current_revision: str | None = None
    update_revision: str | None = None
    collision_count: int | None = None
    conditions: list[Condition] | None = None


class StatefulSet(Resource):
    spec: StatefulSetSpec | None = None
    status: StatefulSetStatus | None = None


class RollingUpdateDaemonSet(WireModel):
    max_unavailable: int | str | None = None
    max_surge: int | str | None = None


class DaemonSetUpdateStrategy(WireModel):
    type: str | None = None
    rolling_update: RollingUpdateDaemonSet | None = None


class DaemonSetSpec(WireModel):
    selector: LabelSelector | None = None
    template: PodTemplateSpec | None = None
    update_strategy: DaemonSetUpdateStrategy | None = None
    min_ready_seconds: int | None = None
    revision_history_limit: int | None = None
    # extensions/v1beta1 only; kept so an old manifest round-trips.
    template_generation: int | None = None


class DaemonSetStatus(WireModel):
    current_number_scheduled: int | None = None
    number_misscheduled: int | None = None
    desired_number_scheduled: int | None = None
    number_ready: int | None = None
    observed_generation: int | None = None
    updated_number_scheduled: int | None = None
    number_available: int | None = None
    number_unavailable: int | None = None
    collision_count: int | None = None
    conditions: list[Condition] | None = None


class DaemonSet(Resource):
    spec: DaemonSetSpec | None = None
    status: DaemonSetStatus | None = None


class ReplicaSetSpec(ReplicatedPodsSpec):
    selector: LabelSelector | None = None


class ReplicaSetStatus(ReplicationControllerStatus):
    """apps/v1 kept the core/v1 ReplicationController status unchanged."""


class ReplicaSet(Resource):
    spec: ReplicaSetSpec | None = None
    status: ReplicaSetStatus | None = None


class RollingUpdateDeployment(WireModel):
    max_unavailable: int | str | None = None
    max_surge: int | str | None = None


class DeploymentStrategy(WireModel):
    type: str | None = None
    rolling_update: RollingUpdateDeployment | None = None


class DeploymentSpec(WireModel):
    replicas: int | None = None
    selector: LabelSelector | None = None
    template: PodTemplateSpec | None = None
    strategy: DeploymentStrategy | None = None
    min_ready_seconds: int | None = None
    revision_history_limit: int | None = None
    paused: bool | None = None
    progress_deadline_seconds: int | None = None
    # extensions/v1beta1 and apps/v1beta1 only; kept so an old manifest round-trips.
    rollback_to: dict[str, Any] | None = None


class DeploymentStatus(WireModel):
    observed_generation: int | None = None
    replicas: int | None = None
    updated_replicas: int | None = None
    ready_replicas: int | None = None
    available_replicas: int | None = None
    unavailable_replicas: int | None = None
    conditions: list[Condition] | None = None
    collision_count: int | None = None


class Deployment(Resource):
    spec: DeploymentSpec | None = None
    status: DeploymentStatus | None = None


class ControllerRevision(Resource):
    data: Any = None
    revision: int | None = None


__all__ = ["ControllerRevision", "DaemonSet", "Deployment", "ReplicaSet", "StatefulSet", "StatefulSetSpec"]
