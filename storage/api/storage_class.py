"""The storage class an object (a claim or a volume) belongs to, by Kubernetes' rule."""
from __future__ import annotations

from typing import Any

ANN_STORAGE_CLASS = "volume.beta.kubernetes.io/storage-class"


def explicit_class(obj: dict[str, Any]) -> str | None:
    """B1: the beta annotation wins, even when empty; None when neither it nor the field is set."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if ANN_STORAGE_CLASS in annotations:
        return str(annotations[ANN_STORAGE_CLASS] or "")
    name = (obj.get("spec") or {}).get("storageClassName")
    return None if name is None else str(name)


def object_class(obj: dict[str, Any]) -> str:
    """B1: missing and empty are the same class (no class)."""
    return explicit_class(obj) or ""
