"""Admission: rules on writes that need objects other than the one written.

Validation (``storage.api.validation``) checks an object's shape, alone or
against its previous version; the plugins here look at the rest of the
cluster (StorageClasses) or add what Kubernetes' admission chain adds
(protection finalizers). They run after defaulting and validation and
before the store, on the main resource only (never on ``/status``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, Sequence

from storage.api.quantity import parse_quantity
from storage.api.registry import ResourceInfo
from storage.errors import FieldError, Invalid, NotFound
from storage.store.base import Store

Operation = Literal["CREATE", "UPDATE"]

DEFAULT_CLASS_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)
BETA_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"
PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"
RESIZE_FORBIDDEN = (
    "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"
)


@dataclass(frozen=True)
class AdmissionRequest:
    operation: Operation
    resource: ResourceInfo
    obj: dict[str, Any]
    old: dict[str, Any] | None
    store: Store
    user: str = ""


class AdmissionPlugin(Protocol):
    def admit(self, req: AdmissionRequest) -> dict[str, Any]:
        """Return the (possibly changed) object or raise a StowageError."""


class Admission:
    """An ordered chain of plugins; each sees the previous one's output."""

    def __init__(self, plugins: Sequence[AdmissionPlugin]) -> None:
        self.plugins = list(plugins)

    def admit(self, req: AdmissionRequest) -> dict[str, Any]:
        obj = req.obj
        for plugin in self.plugins:
            obj = plugin.admit(
                AdmissionRequest(req.operation, req.resource, obj, req.old, req.store, req.user)
            )
        return obj


def claim_class(obj: dict[str, Any]) -> str | None:
    """SEMANTICS B1: the beta annotation wins (even empty); None when neither is set."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if BETA_CLASS_ANNOTATION in annotations:
        return str(annotations[BETA_CLASS_ANNOTATION])
    spec = obj.get("spec") or {}
    if spec.get("storageClassName") is not None:
        return str(spec["storageClassName"])
    return None


def is_default_class(sc: dict[str, Any]) -> bool:
    annotations = (sc.get("metadata") or {}).get("annotations") or {}
    return any(annotations.get(a) == "true" for a in DEFAULT_CLASS_ANNOTATIONS)


def pick_default_class(classes: list[dict[str, Any]]) -> str | None:
    """SEMANTICS P3: newest creationTimestamp among defaults, ties to the smallest name."""
    defaults = [c for c in classes if is_default_class(c)]
    if not defaults:
        return None
    # RFC 3339 UTC timestamps of one format order as strings; negate by sorting twice (stable).
    defaults.sort(key=lambda c: c["metadata"]["name"])
    defaults.sort(key=lambda c: c["metadata"].get("creationTimestamp") or "", reverse=True)
    newest = defaults[0]["metadata"].get("creationTimestamp") or ""
    tied = [c["metadata"]["name"] for c in defaults if (c["metadata"].get("creationTimestamp") or "") == newest]
    return min(tied)


class DefaultStorageClass:
    """SEMANTICS P3, on create only: a claim without any class gets the default class."""

    def admit(self, req: AdmissionRequest) -> dict[str, Any]:
        if req.operation != "CREATE" or req.resource.plural != "persistentvolumeclaims":
            return req.obj
        if claim_class(req.obj) is not None:  # explicit "" opts out
            return req.obj
        classes, _ = req.store.list("storageclasses")
        name = pick_default_class(classes)
        if name is None:
            return req.obj
        obj = dict(req.obj)
        obj["spec"] = {**(obj.get("spec") or {}), "storageClassName": name}
        return obj


class ProtectionFinalizers:
    """SEMANTICS B11: claims and volumes carry a protection finalizer from birth."""

    _BY_RESOURCE = {"persistentvolumeclaims": PVC_PROTECTION, "persistentvolumes": PV_PROTECTION}

    def admit(self, req: AdmissionRequest) -> dict[str, Any]:
        finalizer = self._BY_RESOURCE.get(req.resource.plural)
        if req.operation != "CREATE" or finalizer is None:
            return req.obj
        meta = req.obj.get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        if finalizer in finalizers:
            return req.obj
        return {**req.obj, "metadata": {**meta, "finalizers": [*finalizers, finalizer]}}


def _requested_storage(obj: dict[str, Any]) -> str | None:
    return (((obj.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")


class ClaimResize:
    """SEMANTICS P4: a claim may grow only if its class has ``allowVolumeExpansion: true``.

    Validation already rejects any change of a Pending claim's spec and any
    shrinking (rules on the claim alone); this adds the rule that needs the class.
    """

    FIELD = "spec.resources.requests.storage"

    def admit(self, req: AdmissionRequest) -> dict[str, Any]:
        if req.operation != "UPDATE" or req.resource.plural != "persistentvolumeclaims" or req.old is None:
            return req.obj
        new_raw, old_raw = _requested_storage(req.obj), _requested_storage(req.old)
        if new_raw is None or old_raw is None or parse_quantity(new_raw) <= parse_quantity(old_raw):
            return req.obj
        class_name = claim_class(req.old) or ""
        allowed = False
        if class_name:
            try:
                allowed = req.store.get("storageclasses", "", class_name).get("allowVolumeExpansion") is True
            except NotFound:  # a missing class cannot allow expansion
                allowed = False
        if not allowed:
            name = (req.obj.get("metadata") or {}).get("name", "")
            raise Invalid([FieldError(self.FIELD, "Forbidden", RESIZE_FORBIDDEN)], kind=req.resource.kind, name=name)
        return req.obj


def default_admission() -> Admission:
    from storage.apiserver.sa_admission import ServiceAccountAdmission

    return Admission([DefaultStorageClass(), ProtectionFinalizers(), ClaimResize(), ServiceAccountAdmission()])
