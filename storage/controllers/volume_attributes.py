"""VolumeAttributesClasses at work (SEMANTICS VAC4–VAC6): the external-resizer's modify controller, which applies a
bound claim's new class to its CSI volume with ControllerModifyVolume, and kube-controller-manager's VAC protection
controller, which keeps a class while a claim or volume names it.

``plan_modify`` decides from the claim, its volume and the class alone; the reconcilers only read the cache, call
the driver and write what the plan says.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Literal

import structlog

from provisioners import registry as provisioner_registry
from provisioners.base import ANN_PROVISIONED_BY, secrets_available
from storage.api.conditions import condition
from storage.api.timestamps import now as _now
from storage.api.timestamps import parse_time
from storage.api.volume_attributes import (
    COND_MODIFY_ERROR, COND_MODIFYING, MODIFY_IN_PROGRESS, MODIFY_INFEASIBLE, MODIFY_PENDING, VAC_PROTECTION,
    claim_referenced_classes, current_class, modify_status, requested_class, volume_referenced_classes,
)
from storage.controllers.base import Reconciler, Result, object_key, split_key
from storage.controllers.binder import PVCS, PVS, VACS, _Base
from storage.controllers.binder_index import claim_ref, is_deleting
from storage.controllers.secrets import store_config_map_reader, store_secret_reader
from storage.errors import InfeasibleError, NotFound

log = structlog.get_logger(__name__)

# external-resizer's slow set: an Infeasible class is tried again this much later unless the claim asks for another
# class first. The wait is read from the claim (its ModifyingVolume condition's time), not kept in memory: the
# controller's own status write is a change of the claim too, and must not start the next attempt.
INFEASIBLE_RETRY_SECONDS = 300.0


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


@dataclass(frozen=True)
class ModifyPlan:
    """What the modify controller does for one claim.

    ``none``: nothing to do; ``clear``: the claim asks again for the applied class, so a Pending or Infeasible
    change is dropped (Kubernetes' roll-back); ``pending``: the class does not exist yet; ``infeasible``: the class
    cannot apply to this volume (``message`` says why); ``wait``: the driver refused this class as infeasible less
    than ``INFEASIBLE_RETRY_SECONDS`` ago, try again in ``retry_after`` seconds; ``modify``: call the driver with
    ``parameters``."""

    action: Literal["none", "clear", "pending", "infeasible", "wait", "modify"]
    target: str = ""
    parameters: dict[str, str] | None = None
    message: str = ""
    retry_after: float = 0.0


def _infeasible_for(claim: dict[str, Any], target: str, now: datetime) -> float:
    """Seconds left of the slow set's wait when ``target`` was found Infeasible for this claim; else 0."""
    status = modify_status(claim)
    if status.get("status") != MODIFY_INFEASIBLE or status.get("targetVolumeAttributesClassName") != target:
        return 0.0
    modifying = condition(claim, COND_MODIFYING)
    since = parse_time(modifying.get("lastTransitionTime")) if modifying is not None else None
    if since is None:
        return 0.0
    return max(0.0, INFEASIBLE_RETRY_SECONDS - (now - since).total_seconds())


def plan_modify(claim: dict[str, Any], volume: dict[str, Any] | None, vac: dict[str, Any] | None,
                driver: str, supports_modify: bool, now: datetime | None = None) -> ModifyPlan:
    """VAC4/VAC5 for a Bound claim and its volume; ``driver`` is the volume's CSI driver ("" for others)."""
    if volume is None or (claim.get("status") or {}).get("phase") != "Bound" or is_deleting(claim):
        return ModifyPlan("none")
    target = requested_class(claim)
    if not target or target == current_class(claim):
        return ModifyPlan("clear") if modify_status(claim) else ModifyPlan("none")
    if vac is None:
        return ModifyPlan("pending", target)
    if not driver:
        return ModifyPlan("infeasible", target, message=(
            f"volume {_meta(volume).get('name')} is not a CSI volume: only CSI volumes take VolumeAttributesClasses"))
    if vac.get("driverName") != driver:
        return ModifyPlan("infeasible", target, message=(
            f"VAC {target} is for driver {vac.get('driverName')} which does not match driver name {driver}"))
    if not supports_modify:
        return ModifyPlan("infeasible", target, message=(
            f"CSI driver {driver} cannot modify volumes (no MODIFY_VOLUME capability)"))
    left = _infeasible_for(claim, target, now or datetime.now(timezone.utc))
    if left > 0:
        return ModifyPlan("wait", target, retry_after=left)
    return ModifyPlan("modify", target, dict(vac.get("parameters") or {}))


def _what_counts(claim: dict[str, Any]) -> tuple[Any, ...]:
    meta, spec, status = _meta(claim), claim.get("spec") or {}, claim.get("status") or {}
    return (meta.get("uid"), meta.get("deletionTimestamp"), requested_class(claim), spec.get("volumeName"),
            status.get("phase"), current_class(claim))


def claim_news(old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    """Whether a claim's change is news to the modify controller. Its own writes (modifyVolumeStatus, the
    conditions) are not: an error whose message differs each time (a cloud's request id) would otherwise be
    written, and the write would start the next attempt at once, ahead of the back-off or the Infeasible wait.
    An unchanged object (a relist) counts, as every level-triggered look does."""
    if old is None or new is None or old == new:
        return True
    return _what_counts(old) != _what_counts(new)


def _condition(kind: str, message: str) -> dict[str, Any]:
    return {"type": kind, "status": "True", "lastTransitionTime": _now(), "message": message}


def _without_modify_conditions(conditions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in conditions if c.get("type") not in (COND_MODIFYING, COND_MODIFY_ERROR)]


def _merge_condition(conditions: Iterable[dict[str, Any]], new: dict[str, Any]) -> list[dict[str, Any]]:
    """external-resizer's MergeModifyVolumeConditionsOfPVC: one condition of each modify type, the newest. A
    condition that says the same again keeps its time: a new time alone would be a write, and the write a new
    reconcile of the claim."""
    conditions = list(conditions)
    if any(c.get("type") == new["type"] and c.get("status") == new["status"] and c.get("message") == new["message"]
           for c in conditions):
        return conditions
    return [*(c for c in conditions if c.get("type") != new["type"]), new]


class VolumeModifyController(_Base):
    """The external-resizer's modify controller for every CSI driver Stowage reaches (VAC4, VAC5)."""

    name = "volume-modify"
    primary = PVCS

    def watches(self) -> dict[str, Callable[[dict[str, Any]], Iterable[str]]]:
        return {VACS: self._keys_for_class}

    def relevant(self, resource: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
        # Only claims that name a class or carry a change's status: a burst of claims without one costs no
        # reconcile (binding writes the claim, so a volume's own changes need no watch).
        if resource == PVCS:
            return (any(o is not None and (requested_class(o) or modify_status(o)) for o in (old, new))
                    and claim_news(old, new))
        return True

    def _keys_for_class(self, vac: dict[str, Any]) -> list[str]:
        """A Pending change goes on once its class exists."""
        name = _meta(vac)["name"]
        return [object_key(c) for c in self.ctx.cache.list(PVCS) if requested_class(c) == name]

    def reconcile(self, key: str) -> Result:
        namespace, name = split_key(key)
        claim = self.ctx.cache.get(PVCS, namespace, name)
        if claim is None or not (requested_class(claim) or modify_status(claim)):
            return Result()
        volume_name = (claim.get("spec") or {}).get("volumeName") or ""
        volume = self.ctx.cache.get(PVS, "", volume_name) if volume_name else None
        if volume is not None and (claim_ref(volume) or {}).get("uid") != _meta(claim).get("uid"):
            volume = None
        target = requested_class(claim)
        vac = self.ctx.cache.get(VACS, "", target) if target else None
        csi = ((volume or {}).get("spec") or {}).get("csi") or {}
        driver = str(csi.get("driver") or "")
        provisioner = provisioner_registry.get(driver or _ann(volume).get(ANN_PROVISIONED_BY, "")) if volume else None
        # Only asked when the plan would call the driver: an unreachable driver must not turn into Infeasible.
        supports = (provisioner is not None and vac is not None and driver != "" and vac.get("driverName") == driver
                    and provisioner.supports_modify())
        plan = plan_modify(claim, volume, vac, driver, supports)
        if plan.action == "none":
            return Result()
        if plan.action == "clear":
            self._set_status(claim, None, _without_modify_conditions)
            return Result()
        if plan.action == "pending":
            self._set_status(claim, {"status": MODIFY_PENDING, "targetVolumeAttributesClassName": plan.target},
                             lambda conditions: list(conditions))  # Pending keeps the conditions, as Kubernetes
            return Result()  # the class's creation requeues the claim (watches)
        if plan.action == "infeasible":
            self._infeasible(claim, plan.target, plan.message)
            return Result(requeue_after=INFEASIBLE_RETRY_SECONDS)
        if plan.action == "wait":
            return Result(requeue_after=plan.retry_after)
        return self._modify(claim, volume, provisioner, plan)  # type: ignore[arg-type]

    def _set_status(self, claim: dict[str, Any], modify: dict[str, Any] | None,
                    conditions: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
                    current: str | None = None) -> dict[str, Any]:
        """Write the claim's modifyVolumeStatus (``None``: drop it), its conditions as ``conditions`` makes them
        and, when given, the ``current`` class applied; no write when nothing changes."""
        updated = copy.deepcopy(claim)
        status = updated.setdefault("status", {})
        if current is not None:
            status["currentVolumeAttributesClassName"] = current
        if modify is None:
            status.pop("modifyVolumeStatus", None)
        else:
            status["modifyVolumeStatus"] = modify
        new_conditions = conditions(list(status.get("conditions") or []))
        if new_conditions:
            status["conditions"] = new_conditions
        else:
            status.pop("conditions", None)
        if updated == claim:
            return claim
        return self._update(PVCS, updated)

    def _infeasible(self, claim: dict[str, Any], target: str, message: str) -> None:
        before = modify_status(claim)
        self._set_status(claim, {"status": MODIFY_INFEASIBLE, "targetVolumeAttributesClassName": target},
                         lambda conds: _merge_condition(conds, _condition(
                             COND_MODIFYING, f"ModifyVolume failed with error: {message}. Waiting for retry.")))
        if before.get("status") != MODIFY_INFEASIBLE or before.get("targetVolumeAttributesClassName") != target:
            self.ctx.events.record(claim, "Warning", "VolumeModifyFailed", message)

    def _modify(self, claim: dict[str, Any], volume: dict[str, Any], provisioner: Any, plan: ModifyPlan) -> Result:
        name = _meta(claim)["name"]
        status = modify_status(claim)
        if status.get("status") != MODIFY_IN_PROGRESS or status.get("targetVolumeAttributesClassName") != plan.target:
            claim = self._set_status(
                claim, {"status": MODIFY_IN_PROGRESS, "targetVolumeAttributesClassName": plan.target},
                lambda conds: _merge_condition(conds, _condition(COND_MODIFYING, "ModifyVolume operation in progress.")))
            self.ctx.events.record(claim, "Normal", "VolumeModify",
                                   f"external resizer is modifying volume {name} with vac {plan.target}")
        try:
            with secrets_available(store_secret_reader(self.ctx.store), store_config_map_reader(self.ctx.store)):
                provisioner.modify(volume, plan.parameters or {})
        except InfeasibleError as exc:
            self._infeasible(claim, plan.target, str(exc))
            return Result(requeue_after=INFEASIBLE_RETRY_SECONDS)
        except Exception as exc:
            # Retried with the manager's back-off; the claim says why meanwhile, as external-resizer's
            # ModifyVolumeError condition does.
            error = _condition(COND_MODIFY_ERROR, f"ModifyVolume failed with error: {exc}. Waiting for retry.")
            self._set_status(claim, modify_status(claim) or None, lambda conds: _merge_condition(conds, error))
            self.ctx.events.record(claim, "Warning", "VolumeModifyFailed", str(exc))
            raise
        # The volume first, as external-resizer: a crash before the claim's write repeats an idempotent call.
        updated_volume = copy.deepcopy(volume)
        updated_volume["spec"]["volumeAttributesClassName"] = plan.target
        if updated_volume != volume:
            self._update(PVS, updated_volume)
        claim = self._set_status(claim, None, _without_modify_conditions, current=plan.target)
        self.ctx.events.record(claim, "Normal", "VolumeModifySuccessful",
                               f"external resizer modified volume {name} with vac {plan.target} successfully")
        log.info("volume_modified", claim=object_key(claim), volume=_meta(volume).get("name"), vac=plan.target)
        return Result()


def _ann(obj: dict[str, Any] | None) -> dict[str, str]:
    return (_meta(obj or {}).get("annotations") or {})


def in_use(name: str, claims: Iterable[dict[str, Any]], volumes: Iterable[dict[str, Any]]) -> bool:
    """VAC6: a claim names the class (requested, applied or being applied) or a volume has it."""
    return (any(name in claim_referenced_classes(c) for c in claims)
            or any(name in volume_referenced_classes(v) for v in volumes))


class VolumeAttributesClassProtection(Reconciler):
    """kube-controller-manager's vac-protection controller (VAC6): the finalizer on every class, removed once a
    class being deleted is named by no claim or volume."""

    name = "vac-protection"
    primary = VACS

    def watches(self) -> dict[str, Callable[[dict[str, Any]], Iterable[str]]]:
        # A claim or volume naming no class maps to no key, so it costs no reconcile.
        return {PVCS: lambda c: sorted(claim_referenced_classes(c)), PVS: lambda v: sorted(volume_referenced_classes(v))}

    def reconcile(self, key: str) -> Result:
        vac = self.ctx.cache.get(VACS, "", key)
        if vac is None:
            return Result()
        finalizers = list(_meta(vac).get("finalizers") or [])
        if not is_deleting(vac):
            if VAC_PROTECTION not in finalizers:
                self._write(vac, [*finalizers, VAC_PROTECTION])
            return Result()
        if VAC_PROTECTION not in finalizers:
            return Result()
        if in_use(key, self.ctx.cache.list(PVCS), self.ctx.cache.list(PVS)):
            return Result()  # the last user's change or deletion requeues the class
        # The cache may not have seen a claim created a moment ago: ask the store before letting it go.
        claims, _ = self.ctx.store.list(PVCS)
        volumes, _ = self.ctx.store.list(PVS)
        if in_use(key, claims, volumes):
            return Result()
        self._write(vac, [f for f in finalizers if f != VAC_PROTECTION])
        return Result()

    def _write(self, vac: dict[str, Any], finalizers: list[str]) -> None:
        updated = copy.deepcopy(vac)
        updated["metadata"]["finalizers"] = finalizers
        try:
            self.ctx.store.update(VACS, updated)
        except NotFound:
            pass


RECONCILERS: list[type[Reconciler]] = [VolumeModifyController, VolumeAttributesClassProtection]
