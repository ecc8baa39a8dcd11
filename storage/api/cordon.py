"""What cordoning a node means (rules E13-E14): ``spec.unschedulable`` and its NoSchedule taint.

``kubectl cordon`` only patches ``spec.unschedulable``; as in Kubernetes, a controller then mirrors
it as the ``node.kubernetes.io/unschedulable:NoSchedule`` taint, and the scheduler places no pod
that does not tolerate that taint on the node. Pure functions, so any controller that manages a
node's taints (the unschedulable one here, the condition taints elsewhere) can apply them.
"""
from __future__ import annotations

from typing import Any

from storage.api.taints import UNSCHEDULABLE, pod_tolerations, tolerates_all

Obj = dict[str, Any]

UNSCHEDULABLE_TAINT_KEY = UNSCHEDULABLE
UNSCHEDULABLE_TAINT: Obj = {"key": UNSCHEDULABLE_TAINT_KEY, "effect": "NoSchedule"}


def is_unschedulable(node: Obj) -> bool:
    return bool((node.get("spec") or {}).get("unschedulable"))


def _is_unschedulable_taint(taint: Any) -> bool:
    return isinstance(taint, dict) and taint.get("key") == UNSCHEDULABLE_TAINT_KEY and taint.get("effect") == "NoSchedule"


def cordon_taints(node: Obj) -> list[Obj] | None:
    """E13: the node's taints with the unschedulable taint present exactly when ``spec.unschedulable``
    is true; None when they already are. Other taints stay as they are, in order."""
    taints = list((node.get("spec") or {}).get("taints") or [])
    has = any(_is_unschedulable_taint(t) for t in taints)
    if is_unschedulable(node) == has:
        return None
    if has:
        return [t for t in taints if not _is_unschedulable_taint(t)]
    return [*taints, dict(UNSCHEDULABLE_TAINT)]


def admits_pod(node: Obj, pod: Obj) -> bool:
    """E14: a cordoned node takes only pods that tolerate the unschedulable taint (the NodeUnschedulable plugin)."""
    return not is_unschedulable(node) or tolerates_all(pod_tolerations(pod), [UNSCHEDULABLE_TAINT])


__all__ = ["UNSCHEDULABLE_TAINT", "UNSCHEDULABLE_TAINT_KEY", "admits_pod", "cordon_taints", "is_unschedulable"]
