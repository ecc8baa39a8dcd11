"""``policy/v1`` kinds: the PodDisruptionBudget, and the Eviction body of ``pods/<name>/eviction``."""
from __future__ import annotations

from storage.api.modelbase import WireModel
from storage.api.models.meta import Condition, Resource
from storage.api.selectors import LabelSelector


class PodDisruptionBudgetSpec(WireModel):
    min_available: int | str | None = None
    selector: LabelSelector | None = None
    max_unavailable: int | str | None = None
    unhealthy_pod_eviction_policy: str | None = None


class PodDisruptionBudgetStatus(WireModel):
    observed_generation: int | None = None
    # Pod name -> the time an eviction let it go; the disruption controller forgets it once the pod
    # is gone (or after two minutes, when the deletion evidently did not happen).
    disrupted_pods: dict[str, str] | None = None
    disruptions_allowed: int | None = None
    current_healthy: int | None = None
    desired_healthy: int | None = None
    expected_pods: int | None = None
    conditions: list[Condition] | None = None


class PodDisruptionBudget(Resource):
    spec: PodDisruptionBudgetSpec | None = None
    status: PodDisruptionBudgetStatus | None = None


class Preconditions(WireModel):
    uid: str | None = None
    resource_version: str | None = None


class DeleteOptions(WireModel):
    api_version: str | None = None
    kind: str | None = None
    grace_period_seconds: int | None = None
    preconditions: Preconditions | None = None
    orphan_dependents: bool | None = None
    propagation_policy: str | None = None
    dry_run: list[str] | None = None


class Eviction(Resource):
    """Evicts a pod from its node, subject to the pod's disruption budget."""

    delete_options: DeleteOptions | None = None


__all__ = ["DeleteOptions", "Eviction", "PodDisruptionBudget", "PodDisruptionBudgetSpec",
           "PodDisruptionBudgetStatus", "Preconditions"]
