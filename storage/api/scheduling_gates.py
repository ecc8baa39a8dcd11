"""Pod scheduling readiness (SEMANTICS SG1-SG3): a pod with ``spec.schedulingGates`` is not placed until
whoever owns each gate removes it (Kubernetes 1.30's PodSchedulingReadiness)."""
from __future__ import annotations

from typing import Any

SCHEDULING_GATED = "SchedulingGated"
GATED_MESSAGE = "Scheduling is blocked due to non-empty scheduling gates"


def gated(pod: dict[str, Any]) -> bool:
    return bool((pod.get("spec") or {}).get("schedulingGates"))


def on_create(pod: dict[str, Any]) -> None:
    """As kube-apiserver's pod strategy: a gated pod is created with PodScheduled False, reason
    SchedulingGated, so `kubectl get pods` and `describe` say why it waits."""
    if not gated(pod):
        return
    conditions = pod.setdefault("status", {}).setdefault("conditions", [])
    if not any(c.get("type") == "PodScheduled" for c in conditions if isinstance(c, dict)):
        conditions.append({"type": "PodScheduled", "status": "False", "reason": SCHEDULING_GATED,
                           "message": GATED_MESSAGE})
