"""The storage class an object (a claim or a volume) belongs to, by Kubernetes' rule."""
from __future__ import annotations

from typing import Any

ANN_STORAGE_CLASS = "volume.beta.kubernetes.io/storage-class"


def object_class(obj: dict[str, Any]) -> str:
    """B1: the beta annotation wins even when empty; missing and empty are the same class."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if ANN_STORAGE_CLASS in annotations:
        return annotations[ANN_STORAGE_CLASS] or ""
    return (obj.get("spec") or {}).get("storageClassName") or ""
