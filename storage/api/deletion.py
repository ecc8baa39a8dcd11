"""What a DELETE does to an object (rules G1-G5): Kubernetes' ``rest.BeforeDelete`` with the pod
strategy's ``CheckGracefulDelete``, plus the one thing Stowage adds, the node agent's finalizer.

Pods are deleted gracefully: the object stays, with ``deletionTimestamp`` (the moment the grace
period ends) and ``deletionGracePeriodSeconds``, until the node agent has stopped its containers
and removed its finalizer ``stowage.io/node-agent`` (Kubernetes' kubelet makes the final delete
instead). A grace of 0 does not wait for the agent: its finalizer is dropped and, unless another
finalizer holds the object, it is gone at once; the agent stops the containers of a pod it no
longer finds. Every other kind is removed at once, or only marked while finalizers remain.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from storage.api.names import NODE_AGENT_FINALIZER
from storage.api.timestamps import format_time, parse_time

Obj = dict[str, Any]

DEFAULT_TERMINATION_GRACE_SECONDS = 30
# The kubelet's minimumGracePeriodInSeconds: a container always gets this long between SIGTERM and
# SIGKILL, even after a force deletion, so it can at least flush what it was writing.
MINIMUM_KILL_WINDOW_SECONDS = 2.0


@dataclass(frozen=True)
class DeletionPlan:
    """``remove``: the object goes now (``obj`` is its last state, for the DELETED event);
    ``mark``: ``obj`` is stored (deletion metadata set or shortened, finalizers pruned);
    ``keep``: nothing changes."""

    action: Literal["remove", "mark", "keep"]
    obj: Obj


def requested_grace(value: Any) -> int | None:
    """``gracePeriodSeconds`` of a DeleteOptions body or query (None: not given). G1: a negative
    value means 1 second, as in Kubernetes."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("gracePeriodSeconds must be an integer")
    if isinstance(value, str):
        value = value.strip()
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"gracePeriodSeconds must be an integer, not {value!r}") from None
    if isinstance(value, float) and value != number:
        raise ValueError(f"gracePeriodSeconds must be an integer, not {value!r}")
    return max(number, 1) if number < 0 else number


def pod_grace_seconds(pod: Obj, requested: int | None) -> int:
    """G1: the pod strategy's CheckGracefulDelete. The request's value, else the pod's
    ``terminationGracePeriodSeconds``; 0 for a pod on no node or in a final phase (no container
    runs, nothing to wait for)."""
    spec = pod.get("spec") or {}
    if requested is not None:
        period = requested
    else:
        own = spec.get("terminationGracePeriodSeconds")
        period = DEFAULT_TERMINATION_GRACE_SECONDS if own is None else int(own)
    if not spec.get("nodeName"):
        period = 0
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        period = 0
    return 1 if period < 0 else period


def plan_deletion(resource: str, current: Obj, requested: int | None, now: datetime) -> DeletionPlan:
    """The store's decision for one DELETE of ``current`` (a private copy may be changed)."""
    meta = current.setdefault("metadata", {})
    finalizers = list(meta.get("finalizers") or [])
    if resource != "pods":
        if meta.get("deletionTimestamp"):
            return DeletionPlan("keep", current)
        if not finalizers:
            return DeletionPlan("remove", current)
        meta["deletionTimestamp"] = format_time(now)
        meta["deletionGracePeriodSeconds"] = 0
        return DeletionPlan("mark", current)

    if meta.get("deletionTimestamp"):
        grace = meta.get("deletionGracePeriodSeconds")
        if grace and requested is not None and requested < grace:
            # G3: a terminating pod's grace may be shortened, never lengthened; the end moves
            # back by the difference, as Kubernetes computes it.
            marked = parse_time(meta["deletionTimestamp"]) or now
            meta["deletionTimestamp"] = format_time(marked - timedelta(seconds=grace) + timedelta(seconds=requested))
            meta["deletionGracePeriodSeconds"] = requested
            return _settle(current, finalizers, requested)
        if requested == 0 and NODE_AGENT_FINALIZER in finalizers:
            return _settle(current, finalizers, 0)  # a force delete of a pod marked before with 0
        return DeletionPlan("keep", current)

    grace = pod_grace_seconds(current, requested)
    meta["deletionTimestamp"] = format_time(now + timedelta(seconds=grace))
    meta["deletionGracePeriodSeconds"] = grace
    return _settle(current, finalizers, grace)


def _settle(current: Obj, finalizers: list[str], grace: int) -> DeletionPlan:
    """G2: with no grace left nobody waits for the agent; the object stays only for other finalizers."""
    meta = current["metadata"]
    if grace == 0 and NODE_AGENT_FINALIZER in finalizers:
        finalizers = [f for f in finalizers if f != NODE_AGENT_FINALIZER]
        if finalizers:
            meta["finalizers"] = finalizers
        else:
            meta.pop("finalizers", None)
    # Nothing holds a pod without finalizers: no agent has started it, so it goes at once.
    return DeletionPlan("mark" if finalizers else "remove", current)


def stop_window(pod: Obj, now: datetime) -> float | None:
    """G4: the SIGTERM-to-SIGKILL window the agent grants a pod marked for deletion:
    ``deletionGracePeriodSeconds``, less what has passed of it (so a restarted agent does not
    grant it again). The stored end is in whole seconds, truncated: up to a second is added back
    so a fresh deletion gets its full period. Never under the kubelet's 2 s minimum, even after a
    force deletion. None when the pod is not marked."""
    meta = pod.get("metadata") or {}
    end = parse_time(meta.get("deletionTimestamp"))
    if end is None:
        return None
    grace = meta.get("deletionGracePeriodSeconds")
    if grace is None:
        own = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        grace = DEFAULT_TERMINATION_GRACE_SECONDS if own is None else own
    left = (end - now).total_seconds() + 1.0
    return max(MINIMUM_KILL_WINDOW_SECONDS, min(float(grace), left))
