"""The horizontal pod autoscaler: sets a workload's replicas from its pods' resource use (SEMANTICS HPA3-HPA7).

Every sync period (kube-controller-manager's ``--horizontal-pod-autoscaler-sync-period``, 15 s) each
HorizontalPodAutoscaler is evaluated as Kubernetes' podautoscaler does:

- the target's scale (``spec.replicas`` of a Deployment, ReplicaSet, StatefulSet or ReplicationController)
  and the pods its selector picks;
- for each ``Resource`` or ``ContainerResource`` metric, the pods' usage from the node agents (what
  metrics-server gives Kubernetes), with the ready, unready, missing and ignored pods grouped and the
  10% tolerance applied as in Kubernetes' replica calculator; the largest proposal wins;
- the proposal is stabilized over the recent recommendations (5 minutes down, or the ``behavior``'s
  windows) and limited by the scaling rules (at most 2x or +4 a step, or the ``behavior``'s policies
  over the recent scale events) and by ``minReplicas``/``maxReplicas``;
- the target's replicas are written with its resourceVersion, the status and the AbleToScale,
  ScalingActive and ScalingLimited conditions with the HPA's, and a ``SuccessfulRescale`` event says why.

``Pods``, ``Object`` and ``External`` metrics need a custom or external metrics API, which Stowage does
not serve: such a metric is reported invalid (ScalingActive False) and the others still count, as in
Kubernetes when one metrics API is missing.

``calculate_changes`` is pure: the reconciler reads the objects from the cache and the usage through
``ControllerOptions.pod_usage``, keeps the recommendations and scale events in memory (as Kubernetes
does), and applies the plan.
"""
from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from typing import Any, Callable, Literal

import structlog

from storage.api.conditions import condition as pod_condition
from storage.api.models.autoscaling import METRIC_SOURCE_MEMBERS
from storage.api.quantity import format_quantity, parse_quantity
from storage.api.registry import ResourceInfo, by_kind
from storage.api.scale import SCALABLE
from storage.api.timestamps import format_time, parse_time
from storage.controllers.base import Reconciler, Result, controller_options, split_key
from storage.controllers.owners import labels_of, publish, selector_matches
from storage.errors import Conflict

log = structlog.get_logger(__name__)

Obj = dict[str, Any]
EventSpec = tuple[Literal["Normal", "Warning"], str, str]

RESOURCE = "horizontalpodautoscalers"
# kube-controller-manager's defaults.
TOLERANCE = 0.1
CPU_INITIALIZATION_PERIOD = timedelta(minutes=5)
DELAY_OF_INITIAL_READINESS = timedelta(seconds=30)
SCALE_UP_LIMIT_FACTOR = 2.0
SCALE_UP_LIMIT_MINIMUM = 4.0


@dataclass(frozen=True)
class PodSample:
    """A pod's usage as the resource metrics API gives it: milli-units per container (millicores, and
    bytes x 1000 for memory, as Kubernetes' client reads ``MilliValue``), when it was taken and over what."""
    containers: dict[str, dict[str, int]]
    timestamp: datetime
    window: timedelta = timedelta(seconds=1)


@dataclass
class History:
    """What Kubernetes' controller keeps in memory per autoscaler."""
    recommendations: list[tuple[datetime, int]] = field(default_factory=list)
    scale_up_events: list[tuple[datetime, int]] = field(default_factory=list)
    scale_down_events: list[tuple[datetime, int]] = field(default_factory=list)


@dataclass
class Plan:
    replicas: int | None  # the target's new spec.replicas; None: unchanged
    status: Obj  # the autoscaler's whole new status
    recommendation: int | None  # the pre-normalized proposal to remember (None: no valid metric)
    events: list[EventSpec] = field(default_factory=list)


class MetricError(Exception):
    """A metric that gave no proposal; ``reason`` is the condition and event reason Kubernetes uses (empty
    inside the replica calculator, whose caller knows which kind of metric failed)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


# --- the replica calculator (Kubernetes' replica_calculator.go) -----------------------------------------

def _group_pods(pods: list[Obj], samples: dict[str, int], timestamps: dict[str, PodSample], resource: str,
                now: datetime) -> tuple[int, set[str], set[str], set[str]]:
    """(ready count, unready, missing, ignored) pod names: deleted and finished pods are ignored, Pending
    ones unready; for CPU a pod that is not Ready, or whose sample predates its readiness, is unready while
    it initializes (5 min), and after that only when it has never been Ready since its first 30 s."""
    ready, unready, missing, ignored = 0, set(), set(), set()
    for pod in pods:
        name = _meta(pod).get("name", "")
        phase = (pod.get("status") or {}).get("phase")
        if _meta(pod).get("deletionTimestamp") or phase in ("Failed", "Succeeded"):
            ignored.add(name)
            continue
        if phase == "Pending":
            unready.add(name)
            continue
        if name not in samples:
            missing.add(name)
            continue
        if resource == "cpu":
            cond = pod_condition(pod, "Ready")
            started = parse_time((pod.get("status") or {}).get("startTime"))
            changed = parse_time((cond or {}).get("lastTransitionTime"))
            if cond is None or started is None or changed is None:
                not_ready = True
            elif started + CPU_INITIALIZATION_PERIOD > now:
                sample = timestamps[name]
                not_ready = cond.get("status") == "False" or sample.timestamp < changed + sample.window
            else:
                not_ready = cond.get("status") == "False" and started + DELAY_OF_INITIAL_READINESS > changed
            if not_ready:
                unready.add(name)
                continue
        ready += 1
    return ready, unready, missing, ignored


def _requests(pods: list[Obj], resource: str, container: str) -> dict[str, int]:
    """Each pod's request for ``resource`` in milli-units (one container's when ``container`` is named)."""
    out: dict[str, int] = {}
    for pod in pods:
        total = Fraction(0)
        for c in (pod.get("spec") or {}).get("containers") or []:
            if container and c.get("name") != container:
                continue
            value = ((c.get("resources") or {}).get("requests") or {}).get(resource)
            if value is None:
                raise MetricError("", f"missing request for {resource} in container {c.get('name')} of Pod "
                                  f"{_meta(pod).get('name')}")
            total += parse_quantity(value)
        out[_meta(pod).get("name", "")] = math.ceil(total * 1000)
    return out


def _utilization_ratio(usage: dict[str, int], requests: dict[str, int], target: int) -> tuple[float, int, int]:
    """(usage ratio, utilization in %, raw average in milli-units) over the pods with both figures."""
    used = requested = entries = 0
    for name, value in usage.items():
        if name in requests:
            used += value
            requested += requests[name]
            entries += 1
    if requested == 0:
        raise MetricError("", "no metrics returned matched known pods")
    utilization = used * 100 // requested
    return utilization / target, utilization, used // entries


def _value_ratio(usage: dict[str, int], target: int) -> tuple[float, int]:
    average = sum(usage.values()) // len(usage)
    return average / target, average


def replicas_for_resource(current: int, pods: list[Obj], samples: dict[str, PodSample], resource: str,
                          container: str, target: Obj, now: datetime,
                          tolerance: float = TOLERANCE) -> tuple[int, Obj]:
    """(proposed replicas, the metric's ``current`` status) for a Resource or ContainerResource metric."""
    usage: dict[str, int] = {}
    by_name: dict[str, PodSample] = {}
    for pod in pods:
        name = _meta(pod).get("name", "")
        sample = samples.get(_meta(pod).get("uid", ""))
        if sample is None:
            continue
        by_name[name] = sample
        if container:
            if container not in sample.containers:
                continue
            usage[name] = sample.containers[container].get(resource, 0)
        else:
            usage[name] = sum(c.get(resource, 0) for c in sample.containers.values())
    if not usage:
        raise MetricError("", f"unable to get metrics for resource {resource}: no metrics returned from resource "
                              "metrics API")
    ready, unready, missing, ignored = _group_pods(pods, usage, by_name, resource, now)
    for name in unready | ignored:
        usage.pop(name, None)
    if not usage:
        raise MetricError("", "did not receive metrics for targeted pods (pods might be unready)")
    # As Kubernetes' controller, the field that is set decides, not the target's type; only a utilization
    # needs the pods' requests.
    by_value = target.get("averageValue") is not None
    utilization_target = target.get("averageUtilization")
    if not by_value and not isinstance(utilization_target, int):
        raise MetricError("", "invalid resource metric source: neither an average utilization target nor an "
                              "average value (usage) target was set")
    requests: dict[str, int] = {}
    if not by_value:
        requests = _requests([p for p in pods if _meta(p).get("name", "") not in ignored], resource, container)
        ratio, utilization, raw = _utilization_ratio(usage, requests, int(utilization_target))
        status: Obj = {"averageUtilization": utilization, "averageValue": _milli_text(raw)}
    else:
        target_value = math.ceil(parse_quantity(target.get("averageValue") or 0) * 1000)
        if target_value <= 0:
            raise MetricError("", "invalid resource metric source: neither an average utilization target nor an "
                                  "average value (usage) target was set")
        ratio, raw = _value_ratio(usage, target_value)
        status = {"averageValue": _milli_text(raw)}
    scale_up_with_unready = bool(unready) and ratio > 1.0
    if not scale_up_with_unready and not missing:
        if abs(1.0 - ratio) <= tolerance:
            return current, status
        return math.ceil(ratio * ready), status
    if missing:
        if not by_value:
            # On a scale-down a missing pod is taken to use its request, or the target when that is higher.
            fallback = max(100, int(utilization_target))
            fill = {n: requests.get(n, 0) * fallback // 100 for n in missing}
        else:
            fill = {n: target_value for n in missing}
        for name in missing:
            usage[name] = fill[name] if ratio < 1.0 else 0
    if scale_up_with_unready:
        for name in unready:
            usage[name] = 0
    if not by_value:
        new_ratio, _, _ = _utilization_ratio(usage, requests, int(utilization_target))
    else:
        new_ratio, _ = _value_ratio(usage, target_value)
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current, status
    proposal = math.ceil(new_ratio * len(usage))
    if (new_ratio < 1.0 and proposal > current) or (new_ratio > 1.0 and proposal < current):
        return current, status
    return proposal, status


def _milli_text(milli: int) -> str:
    return format_quantity(Fraction(milli, 1000))


# --- stabilization and rate limits (Kubernetes' horizontal.go) -------------------------------------------

_DEFAULT_UP = {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
               "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                            {"type": "Percent", "value": 100, "periodSeconds": 15}]}
_DEFAULT_DOWN = {"selectPolicy": "Max", "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}


def _changed_in(events: list[tuple[datetime, int]], period: int, now: datetime) -> int:
    cutoff = now - timedelta(seconds=period)
    return sum(change for when, change in events if when > cutoff)


def _rate_limit(current: int, history: History, rules: Obj, now: datetime, up: bool) -> int:
    """The most (``up``) or fewest replicas a behavior's policies allow now, each policy counted from the size
    at the start of its period (the current size less the recent scale events)."""
    if rules.get("selectPolicy") == "Disabled":
        return current
    # "Max" selects the policy allowing the largest change: the highest count up, the lowest down.
    pick = max if (rules.get("selectPolicy") != "Min") == up else min
    result: int | None = None
    for policy in rules.get("policies") or []:
        period = int(policy.get("periodSeconds") or 0)
        start = (current - _changed_in(history.scale_up_events, period, now)
                 + _changed_in(history.scale_down_events, period, now))
        value = int(policy.get("value") or 0)
        if policy.get("type") == "Pods":
            proposed = start + value if up else start - value
        else:
            proposed = math.ceil(start * (1 + value / 100)) if up else int(start * (1 - value / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def normalize(current: int, proposal: int, hpa: Obj, history: History, now: datetime,
              downscale_window: float) -> tuple[int, list[tuple[str, str, str, str]]]:
    """(desired replicas, conditions to set as (type, status, reason, message)) from the metrics' proposal."""
    spec = hpa.get("spec") or {}
    low, high = int(spec.get("minReplicas") or 1), int(spec.get("maxReplicas") or 1)
    behavior = spec.get("behavior")
    conditions: list[tuple[str, str, str, str]] = []
    if behavior is None:
        cutoff = now - timedelta(seconds=downscale_window)
        stabilized = max([proposal] + [r for when, r in history.recommendations if when > cutoff])
        if stabilized != proposal:
            conditions.append(("AbleToScale", "True", "ScaleDownStabilized",
                               "recent recommendations were higher than current one, applying the highest recent "
                               "recommendation"))
        else:
            conditions.append(("AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size"))
        limit = max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM)
        if high > limit:
            allowed, limit_reason, limit_message = int(limit), "ScaleUpLimit", \
                "the desired replica count is increasing faster than the maximum scale rate"
        else:
            allowed, limit_reason, limit_message = high, "TooManyReplicas", \
                "the desired replica count is more than the maximum replica count"
        if stabilized < low:
            desired, reason, message = low, "TooFewReplicas", "the desired replica count is less than the minimum replica count"
        elif stabilized > allowed:
            desired, reason, message = allowed, limit_reason, limit_message
        else:
            desired, reason, message = stabilized, "DesiredWithinRange", "the desired count is within the acceptable range"
        conditions.append(("ScalingLimited", "False" if desired == stabilized else "True", reason, message))
        return desired, conditions
    up_rules = {**_DEFAULT_UP, **(behavior.get("scaleUp") or {})}
    down_rules = {**_DEFAULT_DOWN, "stabilizationWindowSeconds": int(downscale_window), **(behavior.get("scaleDown") or {})}
    up_cutoff = now - timedelta(seconds=int(up_rules.get("stabilizationWindowSeconds") or 0))
    down_cutoff = now - timedelta(seconds=int(down_rules.get("stabilizationWindowSeconds") or 0))
    up_rec = min([proposal] + [r for when, r in history.recommendations if when > up_cutoff])
    down_rec = max([proposal] + [r for when, r in history.recommendations if when > down_cutoff])
    stabilized = min(max(current, up_rec), down_rec)
    if stabilized == proposal:
        conditions.append(("AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size"))
    elif stabilized < proposal:
        conditions.append(("AbleToScale", "True", "ScaleUpStabilized",
                           "recent recommendations were lower than current one, applying the lowest recent "
                           "recommendation"))
    else:
        conditions.append(("AbleToScale", "True", "ScaleDownStabilized",
                           "recent recommendations were higher than current one, applying the highest recent "
                           "recommendation"))
    desired, reason, message = stabilized, "DesiredWithinRange", "the desired count is within the acceptable range"
    if stabilized > current:
        limit = max(_rate_limit(current, history, up_rules, now, up=True), current)
        if limit < high:
            ceiling, ceiling_reason, ceiling_message = limit, "ScaleUpLimit", \
                "the desired replica count is increasing faster than the maximum scale rate"
        else:
            ceiling, ceiling_reason, ceiling_message = high, "TooManyReplicas", \
                "the desired replica count is more than the maximum replica count"
        if stabilized > ceiling:
            desired, reason, message = ceiling, ceiling_reason, ceiling_message
    elif stabilized < current:
        limit = min(_rate_limit(current, history, down_rules, now, up=False), current)
        if limit > low:
            floor, floor_reason, floor_message = limit, "ScaleDownLimit", \
                "the desired replica count is decreasing faster than the maximum scale rate"
        else:
            floor, floor_reason, floor_message = low, "TooFewReplicas", \
                "the desired replica count is less than the minimum replica count"
        if stabilized < floor:
            desired, reason, message = floor, floor_reason, floor_message
    conditions.append(("ScalingLimited", "False" if desired == stabilized else "True", reason, message))
    return desired, conditions


# --- one evaluation --------------------------------------------------------------------------------------

def _metric_name(metric: Obj) -> str:
    kind = metric.get("type")
    member = metric.get(METRIC_SOURCE_MEMBERS.get(str(kind), "")) or {}
    if kind == "Resource":
        return f"{member.get('name')} resource"
    if kind == "ContainerResource":
        return f"{member.get('name')} container resource"
    return f"{str(kind).lower()} metric {(member.get('metric') or {}).get('name')}"


def _utilization_word(metric: Obj) -> str:
    member = metric.get("resource") or metric.get("containerResource") or {}
    target = member.get("target") or {}
    suffix = "" if target.get("averageValue") is not None else " utilization (percentage of request)"
    return f"{_metric_name(metric)}{suffix}"


def _proposal(metric: Obj, current: int, pods: list[Obj], samples: dict[str, PodSample] | None,
              now: datetime) -> tuple[int, Obj]:
    kind = metric.get("type")
    if kind not in ("Resource", "ContainerResource"):
        reason = {"Pods": "FailedGetPodsMetric", "Object": "FailedGetObjectMetric",
                  "External": "FailedGetExternalMetric"}.get(str(kind), "InvalidMetricSourceType")
        api = "external.metrics.k8s.io" if kind == "External" else "custom.metrics.k8s.io"
        raise MetricError(reason, f"unable to get {_metric_name(metric)}: no {api} API is served")
    key = METRIC_SOURCE_MEMBERS[kind]
    member = metric.get(key) or {}
    resource, container = str(member.get("name") or ""), str(member.get("container") or "")
    target = member.get("target") or {}
    reason = "FailedGetResourceMetric" if kind == "Resource" else "FailedGetContainerResourceMetric"
    try:
        if samples is None:
            raise MetricError(reason, f"unable to get metrics for resource {resource}: no metrics returned from "
                                      "resource metrics API")
        proposal, current_status = replicas_for_resource(current, pods, samples, resource, container, target, now)
    except MetricError as exc:
        # Kubernetes' words: the calculator's error wrapped by what was being read.
        what = "usage" if target.get("averageValue") is not None else "utilization"
        raise MetricError(reason, f"failed to get {resource} {what}: {exc}") from None
    status_member: Obj = {"name": resource, "current": current_status}
    if container:
        status_member["container"] = container
    return proposal, {"type": kind, key: status_member}


def _set_condition(status: Obj, old: Obj, kind: str, value: str, reason: str, message: str, now: datetime) -> None:
    conditions = status.setdefault("conditions", [])
    previous = next((c for c in (old.get("conditions") or []) if c.get("type") == kind), None)
    stamp = previous.get("lastTransitionTime") if previous and previous.get("status") == value else format_time(now)
    entry = {"type": kind, "status": value, "lastTransitionTime": stamp, "reason": reason, "message": message}
    for i, c in enumerate(conditions):
        if c.get("type") == kind:
            conditions[i] = entry
            return
    conditions.append(entry)


def calculate_changes(hpa: Obj, target: Obj | None, target_error: str, pods: list[Obj],
                      samples: dict[str, PodSample] | None, history: History, now: datetime,
                      downscale_window: float = 300.0) -> Plan:
    """What one evaluation of ``hpa`` does (HPA3-HPA6): the target's new replicas, the status, the events.

    ``target`` is the scaled workload (None when it cannot be read, ``target_error`` saying why), ``pods``
    the pods its selector picks, ``samples`` their usage by pod uid (None: no usage source at all).
    """
    spec = hpa.get("spec") or {}
    old = hpa.get("status") or {}
    status: Obj = {"conditions": copy.deepcopy(old.get("conditions") or [])}
    if old.get("lastScaleTime"):
        status["lastScaleTime"] = old["lastScaleTime"]
    status["observedGeneration"] = int(_meta(hpa).get("generation") or 0)
    events: list[EventSpec] = []
    if target is None:
        message = f"the HPA controller was unable to get the target's current scale: {target_error}"
        _set_condition(status, old, "AbleToScale", "False", "FailedGetScale", message, now)
        status["currentReplicas"] = int(old.get("currentReplicas") or 0)
        status["desiredReplicas"] = int(old.get("desiredReplicas") or 0)
        if old.get("currentMetrics"):
            status["currentMetrics"] = old["currentMetrics"]
        return Plan(None, status, None, [("Warning", "FailedGetScale", target_error)])
    _set_condition(status, old, "AbleToScale", "True", "SucceededGetScale",
                   "the HPA controller was able to get the target's current scale", now)
    current_spec = (target.get("spec") or {}).get("replicas")
    current = 1 if current_spec is None else int(current_spec)
    low, high = int(spec.get("minReplicas") or 1), int(spec.get("maxReplicas") or 1)
    metric_statuses: list[Obj] = []
    recommendation: int | None = None
    reason_text = ""
    if current == 0 and low != 0:
        desired = 0
        _set_condition(status, old, "ScalingActive", "False", "ScalingDisabled",
                       "scaling is disabled since the replica count of the target is zero", now)
    elif current > high:
        desired, reason_text = high, "Current number of replicas above Spec.MaxReplicas"
    elif current < low:
        desired, reason_text = low, "Current number of replicas below Spec.MinReplicas"
    else:
        proposal, best, errors = -1, "", []
        for metric in spec.get("metrics") or []:
            try:
                replicas, metric_status = _proposal(metric, current, pods, samples, now)
            except MetricError as exc:
                events.append(("Warning", exc.reason, str(exc)))  # every evaluation, as Kubernetes records them
                errors.append(exc)
                # An empty entry keeps the statuses in the metrics' order, which kubectl's columns rely on.
                metric_statuses.append({"type": ""})
                continue
            metric_statuses.append(metric_status)
            if replicas > proposal:
                proposal, best = replicas, _utilization_word(metric)
        total = len(spec.get("metrics") or [])
        if errors and (len(errors) >= total or proposal < current):
            # Kubernetes scales on the valid metrics only when none is invalid or they would scale up.
            first = errors[0]
            _set_condition(status, old, "ScalingActive", "False", first.reason,
                           f"the HPA was unable to compute the replica count: {first}", now)
            events.append(("Warning", "FailedComputeMetricsReplicas",
                           f"invalid metrics ({len(errors)} invalid out of {total}), first error is: {first}"))
            status["currentReplicas"] = current
            status["desiredReplicas"] = int(old.get("desiredReplicas") or 0)
            status["currentMetrics"] = metric_statuses
            return Plan(None, status, None, events)
        if proposal == -1:  # no metrics at all: the API refuses that, and so nothing scales
            return Plan(None, status | {"currentReplicas": current, "desiredReplicas": current}, None, events)
        _set_condition(status, old, "ScalingActive", "True", "ValidMetricFound",
                       f"the HPA was able to successfully calculate a replica count from {best}", now)
        recommendation = proposal
        if proposal > current:
            reason_text = f"{best} above target"
        elif proposal < current:
            reason_text = "All metrics below target"
        desired, conditions = normalize(current, proposal, hpa, history, now, downscale_window)
        for kind, value, reason, message in conditions:
            _set_condition(status, old, kind, value, reason, message, now)
    rescale = desired != current and not (current == 0 and low != 0)
    if rescale:
        _set_condition(status, old, "AbleToScale", "True", "SucceededRescale",
                       f"the HPA controller was able to update the target scale to {desired}", now)
        events.append(("Normal", "SuccessfulRescale", f"New size: {desired}; reason: {reason_text}"))
        status["lastScaleTime"] = format_time(now)
    else:
        desired = current
    status["currentReplicas"] = current
    status["desiredReplicas"] = desired
    if metric_statuses:
        status["currentMetrics"] = metric_statuses
    return Plan(desired if rescale else None, status, recommendation, events)


# --- the reconciler --------------------------------------------------------------------------------------

def _target(ref: Obj) -> ResourceInfo | None:
    """The served resource of a scale target reference, when it has a /scale subresource."""
    api_version = str(ref.get("apiVersion") or "")
    group = api_version.split("/", 1)[0] if "/" in api_version else ""
    if group == "extensions":  # Kubernetes' scale client still maps the old group's workloads to apps
        group = "apps"
    info = by_kind(str(ref.get("kind") or ""))
    return info if info is not None and info.group == group and info.plural in SCALABLE else None


def _samples(raw: dict[str, Any], now: datetime) -> dict[str, PodSample]:
    """``ControllerOptions.pod_usage``'s answer (plain JSON types, as the API server's metrics code gives it)."""
    return {uid: PodSample({str(c): {str(k): int(v) for k, v in figures.items()}
                            for c, figures in (entry.get("containers") or {}).items()},
                           parse_time(entry.get("timestamp")) or now,
                           timedelta(seconds=float(entry.get("window") or 1.0)))
            for uid, entry in raw.items()}


class HorizontalPodAutoscalerReconciler(Reconciler):
    """Evaluates each autoscaler once per sync period, whatever wakes it (HPA3)."""

    name = "horizontal-pod-autoscaler"
    primary = RESOURCE

    def __init__(self, ctx: Any, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(ctx)
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self._lock = threading.Lock()
        self._history: dict[str, History] = {}
        # (uid, generation) -> when it was last evaluated: a change of the spec is evaluated at once, anything
        # else (our own status write, the manager's resync) waits for the period, as Kubernetes' queue does.
        self._evaluated: dict[str, tuple[str, int, datetime]] = {}

    def relevant(self, resource: str, old: Obj | None, new: Obj | None) -> bool:
        if old is None or new is None:
            return True
        return _meta(old).get("generation") != _meta(new).get("generation")

    def reconcile(self, key: str) -> Result:
        namespace, name = split_key(key)
        options = controller_options(self.ctx)
        period = options.hpa_sync_period
        hpa = self.ctx.cache.get(RESOURCE, namespace, name)
        now = self.clock()
        with self._lock:
            if hpa is None:
                self._history.pop(key, None)
                self._evaluated.pop(key, None)
                return Result()
            identity = (str(_meta(hpa).get("uid") or ""), int(_meta(hpa).get("generation") or 0))
            last = self._evaluated.get(key)
            if last is not None and last[:2] == identity and (now - last[2]).total_seconds() < period:
                return Result(requeue_after=period - (now - last[2]).total_seconds())
            if last is not None and last[0] != identity[0]:
                self._history.pop(key, None)  # a new object of the same name starts afresh
            history = self._history.setdefault(key, History())
        ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        info = _target(ref)
        resource: str | None = None
        target: Obj | None = None
        error = ""
        if info is None:
            error = f"unable to determine resource for scale target reference: {ref.get('apiVersion')}, " \
                    f"Kind={ref.get('kind')}"
        else:
            resource = info.plural
            target = self.ctx.cache.get(resource, namespace, str(ref.get("name") or ""))
            if target is None:
                qualified = f"{resource}.{info.group}" if info.group else resource
                error = f'{qualified} "{ref.get("name")}" not found'
        pods: list[Obj] = []
        samples: dict[str, PodSample] | None = None
        if target is not None:
            selector = (target.get("spec") or {}).get("selector")
            if resource == "replicationcontrollers" and isinstance(selector, dict) and "matchLabels" not in selector:
                selector = {"matchLabels": selector}
            pods = [p for p in self.ctx.cache.list("pods", namespace) if selector_matches(selector, labels_of(p))]
            if options.pod_usage is not None:
                samples = _samples(options.pod_usage(pods) if pods else {}, now)
        with self._lock:
            if not history.recommendations and target is not None:
                # Kubernetes records the target's size as the first recommendation it sees.
                replicas = (target.get("spec") or {}).get("replicas")
                history.recommendations.append((now, 1 if replicas is None else int(replicas)))
            plan = calculate_changes(hpa, target, error, pods, samples, history, now,
                                     options.hpa_downscale_stabilization)
        if plan.replicas is not None and target is not None and resource is not None:
            updated = copy.deepcopy(target)
            before = int((target.get("spec") or {}).get("replicas") or 0)
            updated.setdefault("spec", {})["replicas"] = plan.replicas
            try:
                publish(self.ctx.cache, resource, self.ctx.store.update(resource, updated))
            except Conflict:
                raise  # the workload changed meanwhile: evaluate again with it
            except Exception as exc:
                message = f"the HPA controller was unable to update the target scale: {exc}"
                _set_condition(plan.status, hpa.get("status") or {}, "AbleToScale", "False", "FailedUpdateScale",
                               message, now)
                self.ctx.events.record(hpa, "Warning", "FailedRescale",
                                       f"New size: {plan.replicas}; error: {exc}")
                self._write_status(hpa, plan.status)
                raise
            log.info("autoscaler rescaled its target", hpa=key, target=f"{resource}/{ref.get('name')}",
                     replicas_before=before, replicas=plan.replicas)
            with self._lock:
                change = plan.replicas - before
                (history.scale_up_events if change > 0 else history.scale_down_events).append((now, abs(change)))
        with self._lock:
            if plan.recommendation is not None:
                history.recommendations.append((now, plan.recommendation))
            horizon = now - timedelta(seconds=max(options.hpa_downscale_stabilization, 3600.0))
            history.recommendations = [r for r in history.recommendations if r[0] > horizon]
            history.scale_up_events = [e for e in history.scale_up_events if e[0] > now - timedelta(seconds=1800)]
            history.scale_down_events = [e for e in history.scale_down_events if e[0] > now - timedelta(seconds=1800)]
        for kind, reason, message in plan.events:
            self.ctx.events.record(hpa, kind, reason, message)
        if plan.status != (hpa.get("status") or {}):
            self._write_status(hpa, plan.status)
        with self._lock:
            self._evaluated[key] = (*identity, now)
        return Result(requeue_after=period)

    def _write_status(self, hpa: Obj, status: Obj) -> None:
        updated = copy.deepcopy(hpa)
        updated["status"] = status
        publish(self.ctx.cache, RESOURCE, self.ctx.store.update(RESOURCE, updated))


# Picked up by storage.controllers.manager.DEFAULT_RECONCILERS.
RECONCILERS = [HorizontalPodAutoscalerReconciler]
