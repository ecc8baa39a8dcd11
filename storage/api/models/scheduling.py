"""``scheduling.k8s.io/v1`` PriorityClass (SEMANTICS PC1–PC5): a name for a pod priority, resolved into each
new pod's ``spec.priority`` by the Priority admission (storage/api/priority.py)."""
from __future__ import annotations

from storage.api.models.meta import Resource


class PriorityClass(Resource):
    value: int | None = None
    global_default: bool | None = None
    description: str | None = None
    preemption_policy: str | None = None
