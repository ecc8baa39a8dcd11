"""Sidecar containers (KEP-753): init containers with ``restartPolicy: Always``.

The pod worker's decisions about them, kept free of runc and threads so that they can be tested alone:
whether an init container is one, when one no longer holds up the pod's start, when a pod's sidecars
must stop because its other containers are done, and in which order they stop.
"""
from __future__ import annotations

from typing import Any, Iterable

# The only value a container's own restartPolicy may take (on an init container), as in Kubernetes 1.33.
SIDECAR_RESTART_POLICY = "Always"


def is_sidecar(spec: dict[str, Any]) -> bool:
    """SD1: an init container with ``restartPolicy: Always`` (a regular container may not set it)."""
    return spec.get("restartPolicy") == SIDECAR_RESTART_POLICY


def init_done(spec: dict[str, Any], status: dict[str, Any]) -> bool:
    """SD2: what the Initialized condition asks of one init container, as the kubelet's
    isInitContainerInitialized: a sidecar has started now (its startupProbe succeeded, if it has one);
    a regular init container completed with exit code 0."""
    if is_sidecar(spec):
        return status.get("started") is True
    terminated = (status.get("state") or {}).get("terminated")
    return terminated is not None and terminated.get("exitCode") == 0


def incomplete_inits(specs: list[dict[str, Any]], statuses: list[dict[str, Any]]) -> list[str]:
    """The names the Initialized condition's message lists (``specs`` and ``statuses`` aligned)."""
    return [str(spec.get("name")) for spec, status in zip(specs, statuses) if not init_done(spec, status)]


def any_regular_started(statuses: Iterable[dict[str, Any]]) -> bool:
    """SD2: a regular container that runs or has ended shows the pod was initialized once: a sidecar that
    restarts afterwards does not make the pod uninitialized again (the kubelet's HasAnyRegularContainerStarted)."""
    return any("running" in (s.get("state") or {}) or "terminated" in (s.get("state") or {}) for s in statuses)


def regular_containers_done(policy: str, init_failed: bool, apps_final: list[bool]) -> bool:
    """SD4: nothing but the sidecars would run again: every regular container has ended and will not be
    restarted (a pod whose restartPolicy is Never or OnFailure, a Job's), or a regular init container failed
    for good (restartPolicy Never). The sidecars then stop: left running, they would keep the pod from
    finishing (the kubelet kills the pod then, sidecars included)."""
    if init_failed:
        return True
    return policy != "Always" and bool(apps_final) and all(apps_final)


def stop_order(sidecars: list[tuple[str, bool]]) -> list[str]:
    """SD5: the running sidecars in the order they stop, the reverse of their order in the spec, so that a
    sidecar a later one uses (a proxy, a log shipper) outlives it. ``sidecars``: (name, running) in the
    spec's order."""
    return [name for name, running in reversed(sidecars) if running]


def next_sidecar_to_stop(sidecars: list[tuple[str, bool]]) -> str | None:
    """SD4, SD5: sidecars stop one at a time, each once the ones declared after it have ended (``stop_order``).
    ``sidecars``: (name, running) in the spec's order; None when none runs."""
    order = stop_order(sidecars)
    return order[0] if order else None
