"""The capacity controller (SEMANTICS SCAP2): external-provisioner's ``--enable-capacity`` for every provisioner that
reports capacity (CSI drivers with GET_CAPACITY). For each WaitForFirstConsumer class of such a driver and each
topology segment its nodes registered, one CSIStorageCapacity in kube-system holds what GetCapacity answers; they are
refreshed every minute and whenever a volume of the class comes or goes.

``plan_capacities`` pairs what exists with what the driver reported; the reconciler only reads and writes.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Iterable

import structlog

from provisioners import registry as provisioner_registry
from provisioners.base import CapacityReport
from storage.api.quantity import format_quantity
from storage.api.storage_capacity import (
    CAPACITY_NAMESPACE, LABEL_DRIVER, LABEL_MANAGED_BY, MANAGED_BY, driver_segments, segment_of,
)
from storage.api.storage_class import object_class
from storage.controllers.base import Reconciler, Result
from storage.errors import AlreadyExists, NotFound

log = structlog.get_logger(__name__)

CAPACITIES, CLASSES, CSINODES, NODES, PVS = (
    "csistoragecapacities", "storageclasses", "csinodes", "nodes", "persistentvolumes")
# external-provisioner's --capacity-poll-interval default.
POLL_SECONDS = 60.0


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _bytes(value: int) -> str:
    return format_quantity(Fraction(value), prefer_binary=True)


def desired_capacity(storage_class: dict[str, Any], driver: str, segment: dict[str, str],
                     report: CapacityReport) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "storage.k8s.io/v1", "kind": "CSIStorageCapacity",
        "metadata": {"generateName": "csisc-", "namespace": CAPACITY_NAMESPACE,
                     "labels": {LABEL_DRIVER: driver, LABEL_MANAGED_BY: MANAGED_BY}},
        "nodeTopology": {"matchLabels": dict(segment)},
        "storageClassName": _meta(storage_class)["name"],
        "capacity": _bytes(report.available),
    }
    if report.maximum_volume_size is not None:
        obj["maximumVolumeSize"] = _bytes(report.maximum_volume_size)
    return obj


@dataclass
class CapacityPlan:
    create: list[dict[str, Any]] = field(default_factory=list)
    update: list[dict[str, Any]] = field(default_factory=list)
    delete: list[dict[str, Any]] = field(default_factory=list)


def plan_capacities(existing: Iterable[dict[str, Any]], desired: Iterable[dict[str, Any]]) -> CapacityPlan:
    """Pair objects by topology segment: a reported segment without an object is created, one whose figures
    changed is updated (keeping its name and resourceVersion), an object no segment wants is deleted, and a
    second object for one segment too."""
    plan = CapacityPlan()
    wanted = {tuple(sorted((segment_of(d) or {}).items())): d for d in desired}
    kept: set[tuple[tuple[str, str], ...]] = set()
    for obj in sorted(existing, key=lambda o: str(_meta(o).get("name"))):
        segment = segment_of(obj)
        key = tuple(sorted(segment.items())) if segment is not None else None
        if key is None or key not in wanted or key in kept:
            plan.delete.append(obj)
            continue
        kept.add(key)
        want = wanted[key]
        if (obj.get("capacity"), obj.get("maximumVolumeSize")) != (want.get("capacity"), want.get("maximumVolumeSize")):
            updated = copy.deepcopy(obj)
            updated["capacity"] = want["capacity"]
            if "maximumVolumeSize" in want:
                updated["maximumVolumeSize"] = want["maximumVolumeSize"]
            else:
                updated.pop("maximumVolumeSize", None)
            plan.update.append(updated)
    plan.create = [d for k, d in sorted(wanted.items()) if k not in kept]
    return plan


class StorageCapacityController(Reconciler):
    """SCAP2: one key per StorageClass."""

    name = "csi-storage-capacity"
    primary = CLASSES

    def watches(self) -> dict[str, Callable[[dict[str, Any]], Iterable[str]]]:
        return {CSINODES: self._all_classes, NODES: self._all_classes, PVS: self._class_of,
                CAPACITIES: lambda c: [str(c.get("storageClassName") or "")]}

    def relevant(self, resource: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
        # A node's heartbeat changes its status every few seconds; only its labels place segments.
        if resource == NODES and old is not None and new is not None:
            return _meta(old).get("labels") != _meta(new).get("labels")
        if resource == PVS:
            # Only CSI drivers report capacity, and a volume moves it when it is made or deleted, not bound.
            volume = new if new is not None else old
            return (old is None or new is None) and bool(((volume or {}).get("spec") or {}).get("csi"))
        return True

    def _all_classes(self, _obj: dict[str, Any]) -> list[str]:
        return [str(_meta(c).get("name")) for c in self.ctx.cache.list(CLASSES)]

    @staticmethod
    def _class_of(volume: dict[str, Any]) -> list[str]:
        return [object_class(volume)] if object_class(volume) else []

    def _ours(self, class_name: str) -> list[dict[str, Any]]:
        return [c for c in self.ctx.cache.list(CAPACITIES, CAPACITY_NAMESPACE)
                if c.get("storageClassName") == class_name
                and (_meta(c).get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY]

    def reconcile(self, key: str) -> Result:
        storage_class = self.ctx.cache.get(CLASSES, "", key)
        existing = self._ours(key)
        desired: list[dict[str, Any]] = []
        driver = str((storage_class or {}).get("provisioner") or "")
        provisioner = provisioner_registry.get(driver) if driver else None
        if storage_class is not None and driver and provisioner is None:
            return Result()  # the driver is unreachable: its last figures stand, as when external-provisioner is down
        if provisioner is not None and storage_class.get("volumeBindingMode") == "WaitForFirstConsumer":  # type: ignore[union-attr]
            nodes = {str(_meta(n).get("name")): n for n in self.ctx.cache.list(NODES)}
            for segment in driver_segments(driver, self.ctx.cache.list(CSINODES), nodes):
                report = provisioner.get_capacity(storage_class, segment)  # type: ignore[arg-type]
                if report is None:  # this provisioner reports no capacity at all
                    desired = []
                    break
                desired.append(desired_capacity(storage_class, driver, segment, report))  # type: ignore[arg-type]
        plan = plan_capacities(existing, desired)
        for obj in plan.delete:
            try:
                self.ctx.store.delete(CAPACITIES, CAPACITY_NAMESPACE, _meta(obj)["name"])
            except NotFound:
                pass
        for obj in plan.update:
            self.ctx.store.update(CAPACITIES, obj)  # a Conflict re-reads and retries (the manager)
        for obj in plan.create:
            try:
                made = self.ctx.store.create(CAPACITIES, obj)
            except AlreadyExists:  # a generated name taken: the next pass makes another
                continue
            log.info("csi_storage_capacity_created", storage_class=key, name=_meta(made).get("name"),
                     capacity=obj["capacity"])
        return Result(requeue_after=POLL_SECONDS) if desired else Result()


RECONCILERS: list[type[Reconciler]] = [StorageCapacityController]
