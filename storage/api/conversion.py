"""Legacy apiVersions (``apps/v1beta1``, ``extensions/v1beta1``, ``autoscaling/v1``, ...) to the served one.

Older versions implied things the served version states explicitly: a
missing selector meant "the template's labels", and the update strategy of
``apps/v1beta1`` StatefulSets and ``extensions/v1beta1`` DaemonSets was
``OnDelete``. Those are filled here, because after conversion the source
version is gone.
"""
from __future__ import annotations

from typing import Any

from storage.api import autoscaling_v1, events_v1
from storage.api.registry import by_kind

__all__ = ["convert", "to_version"]

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
    if (kind, version) == ("HorizontalPodAutoscaler", autoscaling_v1.V1):
        return autoscaling_v1.to_v2(out)
    if (kind, version) == ("Event", events_v1.V1):
        return events_v1.to_core(obj)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return out
    spec = dict(spec)
    out["spec"] = spec
    if kind in _SELECTOR_FROM_TEMPLATE and not spec.get("selector"):
        template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
        labels = (template.get("metadata") or {}).get("labels") if isinstance(template.get("metadata"), dict) else None
        if isinstance(labels, dict) and labels:
            spec["selector"] = {"matchLabels": dict(labels)}
    if (kind, version) in _ON_DELETE_BY_DEFAULT and not spec.get("updateStrategy"):
        spec["updateStrategy"] = {"type": "OnDelete"}
    return out


def to_version(obj: dict[str, Any], api_version: str) -> dict[str, Any]:
    """A stored object (in the served version) as ``api_version``, one of the versions its kind is also
    served at, shows it. Never mutates ``obj``."""
    if obj.get("apiVersion") == api_version:
        return obj
    if obj.get("kind") == "HorizontalPodAutoscaler" and api_version == autoscaling_v1.V1:
        return autoscaling_v1.from_v2(obj)
    if obj.get("kind") == "Event" and api_version == events_v1.V1:
        return events_v1.from_core(obj)
    return {**obj, "apiVersion": api_version}
