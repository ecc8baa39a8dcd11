"""VolumeAttributesClass (``storage.k8s.io/v1``, SEMANTICS VAC1–VAC6): the names a claim and a volume carry, and
the claim's modify-volume status, read the same way by the binder, the provisioning and modify controllers and the
protection controller."""
from __future__ import annotations

from typing import Any

# Kubernetes' VACProtectionFinalizer: a class stays while any claim or volume names it (VAC6).
VAC_PROTECTION = "kubernetes.io/vac-protection"

# status.modifyVolumeStatus.status values (PersistentVolumeClaimModifyVolumeStatus).
MODIFY_PENDING = "Pending"
MODIFY_IN_PROGRESS = "InProgress"
MODIFY_INFEASIBLE = "Infeasible"

# The claim conditions the external-resizer's modify controller sets.
COND_MODIFYING = "ModifyingVolume"
COND_MODIFY_ERROR = "ModifyVolumeError"


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def requested_class(claim: dict[str, Any]) -> str:
    """The class a claim asks for; missing and empty are the same (no class), as for storage classes."""
    value = _d(claim.get("spec")).get("volumeAttributesClassName")
    return value if isinstance(value, str) else ""


def volume_class(volume: dict[str, Any]) -> str:
    value = _d(volume.get("spec")).get("volumeAttributesClassName")
    return value if isinstance(value, str) else ""


def current_class(claim: dict[str, Any]) -> str | None:
    """``status.currentVolumeAttributesClassName``: None until a class was applied (or bound with one)."""
    value = _d(claim.get("status")).get("currentVolumeAttributesClassName")
    return value if isinstance(value, str) else None


def modify_status(claim: dict[str, Any]) -> dict[str, Any]:
    return _d(_d(claim.get("status")).get("modifyVolumeStatus"))


def claim_referenced_classes(claim: dict[str, Any]) -> set[str]:
    """Every class a claim names: the requested one, the applied one and the one being applied (VAC6)."""
    names = {requested_class(claim), current_class(claim) or "",
             str(modify_status(claim).get("targetVolumeAttributesClassName") or "")}
    names.discard("")
    return names


def volume_referenced_classes(volume: dict[str, Any]) -> set[str]:
    name = volume_class(volume)
    return {name} if name else set()

