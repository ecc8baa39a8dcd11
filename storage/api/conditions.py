"""Reading ``status.conditions`` of any object (Node Ready, Pod Ready, PodScheduled, ...)."""
from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def condition(obj: Obj, kind: str) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


def is_true(obj: Obj, kind: str) -> bool:
    cond = condition(obj, kind)
    return cond is not None and cond.get("status") == "True"
