"""Pod health as the StatefulSet controller judges it, and why a member is not healthy (S2, S7)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from statefulset.identity import meta, spec
from storage.api.conditions import condition
from storage.api.timestamps import parse_time

Obj = dict[str, Any]


def phase(pod: Obj) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def is_terminating(pod: Obj) -> bool:
    return bool(meta(pod).get("deletionTimestamp"))


def is_failed(pod: Obj) -> bool:
    return phase(pod) == "Failed"


def is_succeeded(pod: Obj) -> bool:
    return phase(pod) == "Succeeded"


def is_ready(pod: Obj) -> bool:
    cond = condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def is_running_and_ready(pod: Obj) -> bool:
    return phase(pod) == "Running" and is_ready(pod)


def available_in(pod: Obj, min_ready_seconds: int, now: datetime) -> float:
    """Seconds until a Running and Ready pod counts as available (0 when it already does)."""
    if min_ready_seconds <= 0:
        return 0.0
    since = parse_time((condition(pod, "Ready") or {}).get("lastTransitionTime"))
    if since is None:
        return 0.0  # no transition time recorded: cannot wait on it, count it available
    remaining = min_ready_seconds - (now - since).total_seconds()
    return max(0.0, remaining)


def is_running_and_available(pod: Obj, min_ready_seconds: int, now: datetime) -> bool:
    return is_running_and_ready(pod) and available_in(pod, min_ready_seconds, now) == 0.0


def is_healthy(pod: Obj) -> bool:
    return is_running_and_ready(pod) and not is_terminating(pod)


def min_ready_seconds(sts: Obj) -> int:
    return int(spec(sts).get("minReadySeconds") or 0)


def why_unhealthy(pod: Obj, min_ready: int, now: datetime) -> str:
    """A short human reason a member is not Running, Ready and available, best evidence first."""
    if is_terminating(pod):
        return "pod is terminating"
    current = phase(pod)
    if current in ("Failed", "Succeeded"):
        return f"pod has phase {current} and will be recreated"
    status = pod.get("status") or {}
    scheduled = condition(pod, "PodScheduled")
    if not spec(pod).get("nodeName"):
        if scheduled is not None and scheduled.get("status") == "False" and scheduled.get("message"):
            return f"pod is not scheduled: {scheduled['message']}"
        return "pod is not scheduled yet"
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            detail = f": {waiting['message']}" if waiting.get("message") else ""
            return f"container {cs.get('name', '')} is waiting: {waiting['reason']}{detail}"
    ready = condition(pod, "Ready")
    if current == "Running" and is_ready(pod):
        remaining = available_in(pod, min_ready, now)
        if remaining > 0:
            return f"pod is Ready but not yet available for minReadySeconds ({min_ready}s)"
        return "pod is healthy"
    if ready is not None and ready.get("status") != "True":
        return ready.get("message") or ready.get("reason") or f"pod is not Ready (phase {current})"
    return f"pod phase is {current}"
