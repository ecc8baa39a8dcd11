"""What cordoning a node means (rules E13-E14): ``spec.unschedulable`` and its NoSchedule taint.

``kubectl cordon`` only patches ``spec.unschedulable``; as in Kubernetes, the node lifecycle
controller then mirrors it as the ``node.kubernetes.io/unschedulable:NoSchedule`` taint (L3), and
the scheduler places no pod that does not tolerate that taint on the node.
"""
from __future__ import annotations

from typing import Any

from storage.api.taints import UNSCHEDULABLE, pod_tolerations, tolerates_all

Obj = dict[str, Any]

UNSCHEDULABLE_TAINT_KEY = UNSCHEDULABLE
UNSCHEDULABLE_TAINT: Obj = {"key": UNSCHEDULABLE_TAINT_KEY, "effect": "NoSchedule"}


def is_unschedulable(node: Obj) -> bool:
    return bool((node.get("spec") or {}).get("unschedulable"))


def admits_pod(node: Obj, pod: Obj) -> bool:
    """E14: a cordoned node takes only pods that tolerate the unschedulable taint (the NodeUnschedulable plugin)."""
    return not is_unschedulable(node) or tolerates_all(pod_tolerations(pod), [UNSCHEDULABLE_TAINT])


__all__ = ["UNSCHEDULABLE_TAINT", "UNSCHEDULABLE_TAINT_KEY", "admits_pod", "is_unschedulable"]
