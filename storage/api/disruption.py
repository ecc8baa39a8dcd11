"""PodDisruptionBudget rules shared by the eviction endpoint and the disruption controller (rules E1-E12).

Pure functions over wire-form dicts, after Kubernetes' ``pkg/controller/disruption`` and
``pkg/registry/core/pod/storage/eviction.go``: which budgets guard a pod, when a pod counts as
healthy, how ``minAvailable``/``maxUnavailable`` scale, and the verify-and-decrement step of an
eviction.
"""
from __future__ import annotations

import copy
import math
from datetime import datetime, timedelta
from typing import Any, Callable

from storage.api.conditions import is_true
from storage.api.selectors import selector_matches
from storage.api.timestamps import format_time, parse_time
from storage.errors import Forbidden, TooManyRequests

Obj = dict[str, Any]

DISRUPTION_ALLOWED = "DisruptionAllowed"
SUFFICIENT_PODS = "SufficientPods"
INSUFFICIENT_PODS = "InsufficientPods"
SYNC_FAILED = "SyncFailed"
DISRUPTION_BUDGET_CAUSE = "DisruptionBudget"
ALWAYS_ALLOW = "AlwaysAllow"
IF_HEALTHY_BUDGET = "IfHealthyBudget"
UNHEALTHY_POD_EVICTION_POLICIES = (ALWAYS_ALLOW, IF_HEALTHY_BUDGET)
# E6: an evicted pod not deleted within this long is healthy again to the controller.
DELETION_TIMEOUT = timedelta(minutes=2)
# E7: evictions refused once this many are unconfirmed by the controller.
MAX_DISRUPTED_PODS = 2000
EVICTION_REFUSED = "Cannot evict pod as it would violate the pod's disruption budget."
MORE_THAN_ONE_BUDGET = "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def _status(obj: Obj) -> Obj:
    return obj.get("status") or {}


def pod_ready(pod: Obj) -> bool:
    """E4: healthy means the Ready condition is True (Kubernetes' IsPodReady)."""
    return is_true(pod, "Ready")


def can_ignore_budget(pod: Obj) -> bool:
    """E3: a pod that is Pending, finished or already being deleted disrupts nothing: evicting it only deletes it."""
    phase = _status(pod).get("phase")
    return phase in ("Succeeded", "Failed", "Pending") or bool(_meta(pod).get("deletionTimestamp"))


def enforces_resource_version(pod: Obj) -> bool:
    """Whether a delete that skipped the budget must name the pod's resourceVersion (it might turn Ready meanwhile)."""
    phase = _status(pod).get("phase")
    return not (phase in ("Succeeded", "Failed") or _meta(pod).get("deletionTimestamp"))


def selects_for_status(pdb: Obj, pod: Obj) -> bool:
    """The controller's reading of ``spec.selector`` (policy/v1): absent selects no pod, ``{}`` every pod."""
    if _meta(pdb).get("namespace") != _meta(pod).get("namespace"):
        return False
    selector = _spec(pdb).get("selector")
    if selector is None:
        return False
    return selector_matches(selector, _meta(pod).get("labels") or {})


def guards_for_eviction(pdb: Obj, pod: Obj) -> bool:
    """E2: the eviction endpoint's reading: a budget with no or an empty selector guards nothing."""
    if _meta(pdb).get("namespace") != _meta(pod).get("namespace"):
        return False
    selector = _spec(pdb).get("selector")
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        return False
    return selector_matches(selector, _meta(pod).get("labels") or {})


def scaled(value: int | str, total: int) -> int:
    """An int, or a percentage of ``total`` rounded up (Kubernetes' GetScaledValueFromIntOrPercent, roundUp)."""
    if isinstance(value, str):
        return math.ceil(int(value.rstrip("%")) * total / 100)
    return int(value)


class BudgetError(Exception):
    """The status cannot be computed (a selected pod's controller is missing); the budget allows nothing."""


ScaleOf = Callable[[Obj], "int | None"]  # a pod's controller -> its replicas; None: no such controller


def expected_and_desired(pdb: Obj, pods: list[Obj], scale_of: ScaleOf) -> tuple[int, int, list[str]]:
    """(expectedPods, desiredHealthy, unmanaged pod names), E5.

    An integer ``minAvailable`` counts the selected pods; a percentage or ``maxUnavailable`` counts
    the replicas of the pods' controllers (each once), as Kubernetes does.
    """
    spec = _spec(pdb)
    min_available, max_unavailable = spec.get("minAvailable"), spec.get("maxUnavailable")
    if max_unavailable is not None:
        expected, unmanaged = _expected_scale(pods, scale_of)
        return expected, max(0, expected - scaled(max_unavailable, expected)), unmanaged
    if isinstance(min_available, int):
        return len(pods), min_available, []
    if isinstance(min_available, str):
        expected, unmanaged = _expected_scale(pods, scale_of)
        return expected, scaled(min_available, expected), unmanaged
    return 0, 0, []


def _expected_scale(pods: list[Obj], scale_of: ScaleOf) -> tuple[int, list[str]]:
    scales: dict[str, int] = {}
    unmanaged: list[str] = []
    for pod in pods:
        ref = next((r for r in _meta(pod).get("ownerReferences") or [] if r.get("controller")), None)
        if ref is None:
            unmanaged.append(str(_meta(pod).get("name")))
            continue
        if ref.get("uid") in scales:
            continue
        replicas = scale_of(ref)
        if replicas is None:
            raise BudgetError(f'found no controllers for pod "{_meta(pod).get("name")}"')
        scales[str(ref.get("uid"))] = replicas
    return sum(scales.values()), unmanaged


def disrupted_pods(pdb: Obj, pods: list[Obj], now: datetime) -> tuple[dict[str, str], datetime | None, list[str]]:
    """E6: (entries still pending, when the earliest of them expires, names that expired).

    An entry goes once its pod is gone or being deleted; one older than ``DELETION_TIMEOUT`` goes
    too (the deletion evidently did not happen).
    """
    by_name = {_meta(p).get("name"): p for p in pods}
    kept: dict[str, str] = {}
    recheck: datetime | None = None
    expired: list[str] = []
    for name, stamp in sorted((_status(pdb).get("disruptedPods") or {}).items()):
        pod = by_name.get(name)
        if pod is None or _meta(pod).get("deletionTimestamp"):
            continue
        at = parse_time(stamp)
        if at is None or at + DELETION_TIMEOUT < now:
            expired.append(name)
            continue
        kept[name] = stamp
        due = at + DELETION_TIMEOUT
        recheck = due if recheck is None or due < recheck else recheck
    return kept, recheck, expired


def count_healthy(pods: list[Obj], disrupted: dict[str, str], now: datetime) -> int:
    """E4: Ready pods that are neither being deleted nor just evicted."""
    healthy = 0
    for pod in pods:
        if _meta(pod).get("deletionTimestamp"):
            continue
        at = parse_time(disrupted.get(str(_meta(pod).get("name")), ""))
        if at is not None and at + DELETION_TIMEOUT > now:
            continue
        if pod_ready(pod):
            healthy += 1
    return healthy


def set_condition(status: Obj, cond_type: str, value: str, reason: str, message: str, now: datetime) -> None:
    """Kubernetes' meta.SetStatusCondition: the transition time moves only when the status does."""
    conditions = status.setdefault("conditions", [])
    observed = status.get("observedGeneration")
    for cond in conditions:
        if cond.get("type") == cond_type:
            if cond.get("status") != value:
                cond["lastTransitionTime"] = format_time(now)
            cond.update(status=value, reason=reason, message=message)
            if observed is not None:
                cond["observedGeneration"] = observed
            return
    cond = {"type": cond_type, "status": value, "reason": reason, "message": message,
            "lastTransitionTime": format_time(now)}
    if observed is not None:
        cond["observedGeneration"] = observed
    conditions.append(cond)


def update_allowed_condition(status: Obj, now: datetime) -> None:
    """E8: DisruptionAllowed is True (SufficientPods) while disruptionsAllowed > 0, else False (InsufficientPods)."""
    if int(status.get("disruptionsAllowed") or 0) > 0:
        set_condition(status, DISRUPTION_ALLOWED, "True", SUFFICIENT_PODS, "", now)
    else:
        set_condition(status, DISRUPTION_ALLOWED, "False", INSUFFICIENT_PODS, "", now)


def refused(message: str) -> TooManyRequests:
    """E9: the 429 an eviction gets while the budget allows no disruption (no Retry-After, so clients see it)."""
    return TooManyRequests(EVICTION_REFUSED, retry_after=0,
                           causes=[{"reason": DISRUPTION_BUDGET_CAUSE, "message": message}])


def decremented(pdb: Obj, pod_name: str, now: datetime, dry_run: bool) -> Obj:
    """E7/E9: the budget after letting ``pod_name`` go, or the refusal.

    Refused while the controller has not seen the latest spec, when no disruption is allowed, or
    when too many evictions await the controller's confirmation.
    """
    name = str(_meta(pdb).get("name"))
    status = _status(pdb)
    if int(status.get("observedGeneration") or 0) < int(_meta(pdb).get("generation") or 0):
        raise refused(f"The disruption budget {name} is still being processed by the server.")
    allowed = int(status.get("disruptionsAllowed") or 0)
    if allowed < 0:
        raise Forbidden(f'poddisruptionbudget.policy "{name}" is forbidden: pdb disruptions allowed is negative',
                        kind="poddisruptionbudgets", name=name)
    if len(status.get("disruptedPods") or {}) > MAX_DISRUPTED_PODS:
        raise Forbidden(f'poddisruptionbudget.policy "{name}" is forbidden: DisruptedPods map too big - too many '
                        "evictions not confirmed by PDB controller", kind="poddisruptionbudgets", name=name)
    if allowed == 0:
        raise refused(f"The disruption budget {name} needs {int(status.get('desiredHealthy') or 0)} healthy pods "
                      f"and has {int(status.get('currentHealthy') or 0)} currently")
    out = copy.deepcopy(pdb)
    new_status = out.setdefault("status", {})
    new_status["disruptionsAllowed"] = allowed - 1
    if allowed - 1 == 0:
        update_allowed_condition(new_status, now)
    if not dry_run:
        new_status.setdefault("disruptedPods", {})[pod_name] = format_time(now)
    return out


__all__ = [
    "ALWAYS_ALLOW", "BudgetError", "DELETION_TIMEOUT", "DISRUPTION_ALLOWED", "EVICTION_REFUSED", "IF_HEALTHY_BUDGET",
    "MORE_THAN_ONE_BUDGET", "UNHEALTHY_POD_EVICTION_POLICIES", "can_ignore_budget", "count_healthy", "decremented",
    "disrupted_pods", "enforces_resource_version", "expected_and_desired", "guards_for_eviction", "pod_ready",
    "refused", "scaled", "selects_for_status", "set_condition", "update_allowed_condition",
]
