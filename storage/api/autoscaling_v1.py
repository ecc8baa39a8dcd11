"""``autoscaling/v1`` HorizontalPodAutoscalers to and from the stored ``autoscaling/v2`` form (SEMANTICS HPA8).

v1 has room for one target, the CPU utilization. As Kubernetes' conversion does, everything v2 says beyond
it travels in four annotations of the v1 object: the other metrics, the current metrics, the conditions and
the behavior, JSON-encoded in v1's (autoscaling/v2beta1-shaped) metric form. A client that reads a v1 object
and writes it back (kubectl edit, a client-side apply's patch) therefore keeps what it cannot see; on the
way in the annotations are read back and dropped.
"""
from __future__ import annotations

import json
from typing import Any

__all__ = ["ROUND_TRIP_ANNOTATIONS", "V1", "from_v2", "to_v2"]

V1 = "autoscaling/v1"
METRICS = "autoscaling.alpha.kubernetes.io/metrics"
CURRENT_METRICS = "autoscaling.alpha.kubernetes.io/current-metrics"
CONDITIONS = "autoscaling.alpha.kubernetes.io/conditions"
BEHAVIOR = "autoscaling.alpha.kubernetes.io/behavior"
ROUND_TRIP_ANNOTATIONS = (METRICS, CURRENT_METRICS, CONDITIONS, BEHAVIOR)

Obj = dict[str, Any]


def _present(**fields: Any) -> Obj:
    """The fields that are set, in the given order (Go's omitempty on pointers)."""
    return {k: v for k, v in fields.items() if v is not None}


def _d(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def _is_cpu_utilization(metric: Obj) -> bool:
    resource = _d(metric.get("resource"))
    return (metric.get("type") == "Resource" and resource.get("name") == "cpu"
            and _d(resource.get("target")).get("averageUtilization") is not None)


def _encode(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# --- v2 -> v1 --------------------------------------------------------------------------------------------

def _metric_spec_to_v1(m: Obj) -> Obj:
    """One v2 MetricSpec in v1's form. v1's required quantities (``targetValue`` of an object metric,
    ``targetAverageValue`` of a pods metric) read "0" when v2 leaves them out, as Go writes a zero Quantity."""
    out: Obj = {"type": m.get("type")}
    if isinstance(m.get("object"), dict):
        src, target, metric = m["object"], _d(m["object"].get("target")), _d(m["object"].get("metric"))
        out["object"] = _present(target=src.get("describedObject") or {}, metricName=metric.get("name") or "",
                                 targetValue=target.get("value") or "0", selector=metric.get("selector"),
                                 averageValue=target.get("averageValue"))
    if isinstance(m.get("pods"), dict):
        target, metric = _d(m["pods"].get("target")), _d(m["pods"].get("metric"))
        out["pods"] = _present(metricName=metric.get("name") or "",
                               targetAverageValue=target.get("averageValue") or "0", selector=metric.get("selector"))
    if isinstance(m.get("resource"), dict):
        target = _d(m["resource"].get("target"))
        out["resource"] = _present(name=m["resource"].get("name") or "",
                                   targetAverageUtilization=target.get("averageUtilization"),
                                   targetAverageValue=target.get("averageValue"))
    if isinstance(m.get("containerResource"), dict):
        src, target = m["containerResource"], _d(m["containerResource"].get("target"))
        out["containerResource"] = _present(name=src.get("name") or "",
                                            targetAverageUtilization=target.get("averageUtilization"),
                                            targetAverageValue=target.get("averageValue"),
                                            container=src.get("container") or "")
    if isinstance(m.get("external"), dict):
        target, metric = _d(m["external"].get("target")), _d(m["external"].get("metric"))
        out["external"] = _present(metricName=metric.get("name") or "", metricSelector=metric.get("selector"),
                                   targetValue=target.get("value"), targetAverageValue=target.get("averageValue"))
    return out


def _metric_status_to_v1(m: Obj) -> Obj:
    out: Obj = {"type": m.get("type")}
    if isinstance(m.get("object"), dict):
        src, current, metric = m["object"], _d(m["object"].get("current")), _d(m["object"].get("metric"))
        out["object"] = _present(target=src.get("describedObject") or {}, metricName=metric.get("name") or "",
                                 currentValue=current.get("value") or "0", selector=metric.get("selector"),
                                 averageValue=current.get("averageValue"))
    if isinstance(m.get("pods"), dict):
        current, metric = _d(m["pods"].get("current")), _d(m["pods"].get("metric"))
        out["pods"] = _present(metricName=metric.get("name") or "",
                               currentAverageValue=current.get("averageValue") or "0", selector=metric.get("selector"))
    if isinstance(m.get("resource"), dict):
        current = _d(m["resource"].get("current"))
        out["resource"] = _present(name=m["resource"].get("name") or "",
                                   currentAverageUtilization=current.get("averageUtilization"),
                                   currentAverageValue=current.get("averageValue") or "0")
    if isinstance(m.get("containerResource"), dict):
        src, current = m["containerResource"], _d(m["containerResource"].get("current"))
        out["containerResource"] = _present(name=src.get("name") or "",
                                            currentAverageUtilization=current.get("averageUtilization"),
                                            currentAverageValue=current.get("averageValue") or "0",
                                            container=src.get("container") or "")
    if isinstance(m.get("external"), dict):
        current, metric = _d(m["external"].get("current")), _d(m["external"].get("metric"))
        out["external"] = _present(metricName=metric.get("name") or "", metricSelector=metric.get("selector"),
                                   currentValue=current.get("value") or "0",
                                   currentAverageValue=current.get("averageValue"))
    return out


def from_v2(obj: Obj) -> Obj:
    """A stored (v2) autoscaler as autoscaling/v1 shows it. Never mutates ``obj``.

    As Kubernetes: the first CPU utilization metric is ``targetCPUUtilizationPercentage``; every metric that
    is not a CPU utilization goes to the metrics annotation; the current metrics (all of them, the CPU one
    too), the conditions and the behavior go to theirs. Annotations of those names that were already there
    are replaced, so only what this conversion wrote comes back in."""
    out = {k: v for k, v in obj.items() if k not in ("spec", "status")}
    out["apiVersion"] = V1
    meta = dict(_d(obj.get("metadata")))
    annotations = {k: v for k, v in _d(meta.get("annotations")).items() if k not in ROUND_TRIP_ANNOTATIONS}
    spec, status = _d(obj.get("spec")), obj.get("status")

    v1_spec = {k: spec[k] for k in ("scaleTargetRef", "minReplicas", "maxReplicas") if k in spec}
    metrics = [m for m in spec.get("metrics") or [] if isinstance(m, dict)]
    cpu = next((m for m in metrics if _is_cpu_utilization(m)), None)
    if cpu is not None:
        v1_spec["targetCPUUtilizationPercentage"] = cpu["resource"]["target"]["averageUtilization"]
    others = [_metric_spec_to_v1(m) for m in metrics if not _is_cpu_utilization(m)]
    if others:
        annotations[METRICS] = _encode(others)
    if isinstance(spec.get("behavior"), dict):
        annotations[BEHAVIOR] = _encode(spec["behavior"])

    status = _d(status)
    # v1's currentReplicas and desiredReplicas are plain int32s: Go writes them even when zero.
    v1_status: Obj = {k: status[k] for k in ("observedGeneration", "lastScaleTime") if k in status}
    v1_status["currentReplicas"] = status.get("currentReplicas") or 0
    v1_status["desiredReplicas"] = status.get("desiredReplicas") or 0
    current = [m for m in status.get("currentMetrics") or [] if isinstance(m, dict)]
    for m in current:
        resource = _d(m.get("resource"))
        utilization = _d(resource.get("current")).get("averageUtilization")
        if m.get("type") == "Resource" and resource.get("name") == "cpu" and utilization is not None:
            v1_status["currentCPUUtilizationPercentage"] = utilization
            break
    if current:
        annotations[CURRENT_METRICS] = _encode([_metric_status_to_v1(m) for m in current])
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    if conditions:
        annotations[CONDITIONS] = _encode(conditions)

    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    out["metadata"] = meta
    out["spec"] = v1_spec
    out["status"] = v1_status
    return out


# --- v1 -> v2 --------------------------------------------------------------------------------------------

def _metric_spec_from_v1(m: Obj) -> Obj:
    out: Obj = {"type": m.get("type")}
    if isinstance(m.get("object"), dict):
        src = m["object"]
        average = src.get("averageValue")
        target = _present(type="Value" if average is None else "AverageValue",
                          value=src.get("targetValue") if average is None or src.get("targetValue") not in (None, "0", 0)
                          else None,
                          averageValue=average)
        out["object"] = _present(describedObject=src.get("target"), target=target,
                                 metric=_present(name=src.get("metricName"), selector=src.get("selector")))
    if isinstance(m.get("pods"), dict):
        src = m["pods"]
        out["pods"] = {"metric": _present(name=src.get("metricName"), selector=src.get("selector")),
                       "target": _present(type="AverageValue", averageValue=src.get("targetAverageValue"))}
    for member in ("resource", "containerResource"):
        if isinstance(m.get(member), dict):
            src = m[member]
            utilization = src.get("targetAverageUtilization")
            out[member] = _present(name=src.get("name"), target=_present(
                type="AverageValue" if utilization is None else "Utilization",
                averageUtilization=utilization, averageValue=src.get("targetAverageValue")),
                container=src.get("container") if member == "containerResource" else None)
    if isinstance(m.get("external"), dict):
        src = m["external"]
        value = src.get("targetValue")
        out["external"] = {"metric": _present(name=src.get("metricName"), selector=src.get("metricSelector")),
                           "target": _present(type="AverageValue" if value is None else "Value", value=value,
                                              averageValue=src.get("targetAverageValue"))}
    return out


def _metric_status_from_v1(m: Obj) -> Obj:
    out: Obj = {"type": m.get("type")}
    if isinstance(m.get("object"), dict):
        src = m["object"]
        out["object"] = _present(describedObject=src.get("target"),
                                 metric=_present(name=src.get("metricName"), selector=src.get("selector")),
                                 current=_present(value=src.get("currentValue"), averageValue=src.get("averageValue")))
    if isinstance(m.get("pods"), dict):
        src = m["pods"]
        out["pods"] = {"metric": _present(name=src.get("metricName"), selector=src.get("selector")),
                       "current": _present(averageValue=src.get("currentAverageValue"))}
    for member in ("resource", "containerResource"):
        if isinstance(m.get(member), dict):
            src = m[member]
            out[member] = _present(name=src.get("name"), current=_present(
                averageValue=src.get("currentAverageValue"), averageUtilization=src.get("currentAverageUtilization")),
                container=src.get("container") if member == "containerResource" else None)
    if isinstance(m.get("external"), dict):
        src = m["external"]
        out["external"] = {"metric": _present(name=src.get("metricName"), selector=src.get("metricSelector")),
                           "current": _present(value=src.get("currentValue"),
                                               averageValue=src.get("currentAverageValue"))}
    return out


def _decoded(annotations: Obj, key: str) -> Any:
    """An annotation's JSON; None when absent or unreadable (Kubernetes ignores those). A client's annotation
    can nest deeper than the parser's recursion limit: that is unreadable too, never a server error."""
    try:
        return json.loads(annotations[key])
    except (KeyError, TypeError, ValueError, RecursionError):
        return None


def _decoded_list(annotations: Obj, key: str) -> list[Obj] | None:
    value = _decoded(annotations, key)
    return value if isinstance(value, list) and all(isinstance(v, dict) for v in value) else None


def to_v2(obj: Obj) -> Obj:
    """An autoscaling/v1 autoscaler (already a private shallow copy with apiVersion set to v2) in v2's form.

    ``targetCPUUtilizationPercentage`` becomes a cpu Utilization metric, after the metrics of the annotation;
    the annotations' current metrics, conditions and behavior are restored, and the four annotations dropped.
    Without any target v1 meant "the default policy", which v2's defaulting fills in (cpu at 80%). A spec,
    status or metadata that is not an object is left as it is, for validation to refuse."""
    if any(obj.get(k) is not None and not isinstance(obj.get(k), dict) for k in ("spec", "status", "metadata")):
        return obj
    spec = dict(_d(obj.get("spec")))
    meta = dict(_d(obj.get("metadata")))
    annotations = _d(meta.get("annotations"))
    metrics: list[Obj] = []
    for m in _decoded_list(annotations, METRICS) or []:
        metrics.append(_metric_spec_from_v1(m))
    percent = spec.pop("targetCPUUtilizationPercentage", None)
    if percent is not None:
        metrics.append({"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": percent}}})
    if metrics and not spec.get("metrics"):
        spec["metrics"] = metrics
    behavior = _decoded(annotations, BEHAVIOR)
    if isinstance(behavior, dict) and "behavior" not in spec:
        spec["behavior"] = behavior
    out = {**obj, "spec": spec}

    if isinstance(obj.get("status"), dict):
        status = dict(obj["status"])
        percent = status.pop("currentCPUUtilizationPercentage", None)
        current = _decoded_list(annotations, CURRENT_METRICS)
        if current is not None:
            status["currentMetrics"] = [_metric_status_from_v1(m) for m in current]
        elif percent is not None and not status.get("currentMetrics"):
            status["currentMetrics"] = [{"type": "Resource", "resource": {
                "name": "cpu", "current": {"averageUtilization": percent}}}]
        conditions = _decoded_list(annotations, CONDITIONS)
        if conditions is not None:
            status["conditions"] = conditions
        out["status"] = status

    if any(k in annotations for k in ROUND_TRIP_ANNOTATIONS):
        kept = {k: v for k, v in annotations.items() if k not in ROUND_TRIP_ANNOTATIONS}
        if kept:
            meta["annotations"] = kept
        else:
            meta.pop("annotations", None)
        out["metadata"] = meta
    return out
