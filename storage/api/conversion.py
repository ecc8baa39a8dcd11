"""Legacy apiVersions (``apps/v1beta1``, ``extensions/v1beta1``, ``autoscaling/v1``, ...) to the served one.

Older versions implied things the served version states explicitly: a
missing selector meant "the template's labels", and the update strategy of
``apps/v1beta1`` StatefulSets and ``extensions/v1beta1`` DaemonSets was
``OnDelete``. Those are filled here, because after conversion the source
version is gone.
"""
from __future__ import annotations

from typing import Any

from storage.api.registry import by_kind

__all__ = ["convert"]

_SELECTOR_FROM_TEMPLATE = {"StatefulSet", "DaemonSet", "ReplicaSet", "Deployment"}
_ON_DELETE_BY_DEFAULT = {("StatefulSet", "apps/v1beta1"), ("DaemonSet", "extensions/v1beta1")}


def convert(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` in the served apiVersion; ``obj`` itself when nothing changes.

    Never mutates ``obj``: changed levels are shallow-copied. A missing
    apiVersion is taken to mean the served one.
    """
    kind = obj.get("kind")
    info = by_kind(kind) if isinstance(kind, str) else None
    if info is None:
        return obj
    version = obj.get("apiVersion")
    if version == info.api_version:
        return obj
    out = dict(obj)
    out["apiVersion"] = info.api_version
    if not version or version not in info.legacy_api_versions:
        return out
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return out
    spec = dict(spec)
    out["spec"] = spec
    if (kind, version) == ("HorizontalPodAutoscaler", "autoscaling/v1"):
        _hpa_from_v1(spec)
        if isinstance(obj.get("status"), dict):
            out["status"] = _hpa_status_from_v1(dict(obj["status"]))
    if kind in _SELECTOR_FROM_TEMPLATE and not spec.get("selector"):
        template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
        labels = (template.get("metadata") or {}).get("labels") if isinstance(template.get("metadata"), dict) else None
        if isinstance(labels, dict) and labels:
            spec["selector"] = {"matchLabels": dict(labels)}
    if (kind, version) in _ON_DELETE_BY_DEFAULT and not spec.get("updateStrategy"):
        spec["updateStrategy"] = {"type": "OnDelete"}
    return out


def _hpa_from_v1(spec: dict[str, Any]) -> None:
    """HPA1: autoscaling/v1's one CPU target is v2's Resource metric (Kubernetes' conversion). Without it v1
    meant "the default policy", which v2's defaulting fills in (cpu at 80%)."""
    percent = spec.pop("targetCPUUtilizationPercentage", None)
    if percent is not None and not spec.get("metrics"):
        spec["metrics"] = [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": percent}}}]


def _hpa_status_from_v1(status: dict[str, Any]) -> dict[str, Any]:
    percent = status.pop("currentCPUUtilizationPercentage", None)
    if percent is not None and not status.get("currentMetrics"):
        status["currentMetrics"] = [{"type": "Resource", "resource": {
            "name": "cpu", "current": {"averageUtilization": percent}}}]
    return status
