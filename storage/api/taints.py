"""Taints and tolerations as Kubernetes matches them (``ToleratesTaint``), and the well-known keys.

Shared by the scheduler (NoSchedule/NoExecute filter), the node lifecycle
controller (NoExecute evictions), admission (DefaultTolerationSeconds) and the
workload controllers (the tolerations Kubernetes gives the pods they make).
"""
from __future__ import annotations

import copy
from typing import Any

Obj = dict[str, Any]

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"
MEMORY_PRESSURE = "node.kubernetes.io/memory-pressure"
DISK_PRESSURE = "node.kubernetes.io/disk-pressure"
PID_PRESSURE = "node.kubernetes.io/pid-pressure"
NETWORK_UNAVAILABLE = "node.kubernetes.io/network-unavailable"

NO_SCHEDULE = "NoSchedule"
NO_EXECUTE = "NoExecute"
PREFER_NO_SCHEDULE = "PreferNoSchedule"

DEFAULT_TOLERATION_SECONDS = 300


def tolerates(toleration: Obj, taint: Obj) -> bool:
    """Kubernetes' ``Toleration.ToleratesTaint``: empty effect matches every effect, an empty key with
    ``Exists`` matches every key, ``Equal`` (the default operator) compares values."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    if operator == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def first_toleration(tolerations: list[Obj], taint: Obj) -> Obj | None:
    """The first toleration that tolerates ``taint`` (Kubernetes' ``GetMatchingTolerations`` takes the first)."""
    for toleration in tolerations:
        if tolerates(toleration, taint):
            return toleration
    return None


def tolerates_all(tolerations: list[Obj], taints: list[Obj], effects: tuple[str, ...] = (NO_SCHEDULE, NO_EXECUTE)) -> bool:
    """True when every taint with one of ``effects`` is tolerated (the scheduler's TaintToleration filter)."""
    return all(first_toleration(tolerations, t) is not None for t in taints if t.get("effect") in effects)


def pod_tolerations(pod: Obj) -> list[Obj]:
    return [t for t in ((pod.get("spec") or {}).get("tolerations") or []) if isinstance(t, dict)]


def node_taints(node: Obj) -> list[Obj]:
    return [t for t in ((node.get("spec") or {}).get("taints") or []) if isinstance(t, dict)]


def with_default_toleration_seconds(spec: Obj, not_ready_seconds: int = DEFAULT_TOLERATION_SECONDS,
                                    unreachable_seconds: int = DEFAULT_TOLERATION_SECONDS) -> Obj:
    """A pod spec with Kubernetes' DefaultTolerationSeconds added: a pod that tolerates neither the
    not-ready nor the unreachable NoExecute taint (by key or by an empty key, effect NoExecute or
    empty) stays ``*_seconds`` on such a node before it is evicted. ``spec`` itself is not changed."""
    tolerations = [t for t in (spec.get("tolerations") or []) if isinstance(t, dict)]

    def covered(key: str) -> bool:
        return any((t.get("key") or "") in ("", key) and (t.get("effect") or "") in ("", NO_EXECUTE) for t in tolerations)

    added = []
    if not covered(NOT_READY):
        added.append({"key": NOT_READY, "operator": "Exists", "effect": NO_EXECUTE, "tolerationSeconds": not_ready_seconds})
    if not covered(UNREACHABLE):
        added.append({"key": UNREACHABLE, "operator": "Exists", "effect": NO_EXECUTE, "tolerationSeconds": unreachable_seconds})
    if not added:
        return spec
    out = dict(spec)
    out["tolerations"] = [*copy.deepcopy(spec.get("tolerations") or []), *added]
    return out


# What Kubernetes' DaemonSet controller adds to every daemon pod (AddOrUpdateDaemonPodTolerations):
# a daemon stays on its node through not-ready, unreachable, pressure and cordoning.
_DAEMON_TOLERATIONS = (
    (NOT_READY, NO_EXECUTE), (UNREACHABLE, NO_EXECUTE), (DISK_PRESSURE, NO_SCHEDULE),
    (MEMORY_PRESSURE, NO_SCHEDULE), (PID_PRESSURE, NO_SCHEDULE), (UNSCHEDULABLE, NO_SCHEDULE),
)


def with_daemon_tolerations(spec: Obj) -> Obj:
    wanted = list(_DAEMON_TOLERATIONS)
    if spec.get("hostNetwork"):
        wanted.append((NETWORK_UNAVAILABLE, NO_SCHEDULE))
    tolerations = copy.deepcopy([t for t in (spec.get("tolerations") or []) if isinstance(t, dict)])
    for key, effect in wanted:
        toleration = {"key": key, "operator": "Exists", "effect": effect}
        # Kubernetes replaces a toleration of the same key and effect (e.g. one with seconds).
        tolerations = [t for t in tolerations if not (t.get("key") == key and t.get("effect") == effect)]
        tolerations.append(toleration)
    return {**spec, "tolerations": tolerations}
