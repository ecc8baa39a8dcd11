"""The claim binder, provisioning, reclaim, expansion and protection (SEMANTICS B, P).

A port of Kubernetes' PersistentVolume controller (syncClaim / syncVolume)
onto the Stowage reconciler contract, with two changes for speed: the
``VolumeIndex`` replaces the per-claim scan, and a free volume wakes only the
pending claims of its class in one batched sweep (no periodic resync).

Every write carries the resourceVersion it was computed from; a Conflict
refreshes the cache entry and the manager retries at once. The volume is
written before the claim (B6), so a crash between the two leaves a volume
pre-bound to the claim, which the next pass completes.
"""
from __future__ import annotations

import copy
import threading
import weakref
import zlib
from fractions import Fraction
from typing import Any, Callable, Iterable

import structlog

from provisioners import registry as provisioner_registry
from provisioners.base import ANN_PROVISIONED_BY, ANN_PROVISIONED_OBJECTS, ProvisionRequest, secrets_available
from storage.api.conditions import is_true
from storage.api.ephemeral import claim_names, owned_by
from storage.api.names import PV_PROTECTION, PVC_PROTECTION
from storage.api.node_affinity import affinity_hostnames, volume_in_use_on
from storage.api.quantity import format_quantity
from storage.api.storage_class import ANN_STORAGE_CLASS
from storage.api.timestamps import now as _now
from storage.api.volume_attributes import requested_class as requested_attributes_class
from storage.api.volume_attributes import volume_class as volume_attributes_class
from storage.controllers.base import Cache, ControllerContext, Reconciler, Result, split_key
from storage.controllers.binder_index import (
    VolumeIndex, access_modes, claim_ref, claim_request, contains_all_modes,
    find_best_volume, find_best_volume_linear, is_deleting, is_volume_bound_to_claim, match_candidates, object_class,
    volume_capacity, volume_mode, volume_phase,
)
from storage.controllers.datasource import Refuse, Resolved, Wait, data_source_ref, resolve_data_source, source_namespace
from storage.controllers.faults import fault_point
from storage.controllers.secrets import store_config_map_reader, store_secret_reader
from storage.controllers.volume_objects import delete_objects, ensure_objects
from storage.errors import AlreadyExists, BackendConflict, Conflict, NotFound, StowageError, TemporaryError

log = structlog.get_logger(__name__)

PVS, PVCS, SCS, PODS, NODES = "persistentvolumes", "persistentvolumeclaims", "storageclasses", "pods", "nodes"
VACS = "volumeattributesclasses"

ANN_BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
ANN_BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
ANN_SELECTED_NODE = "volume.kubernetes.io/selected-node"
ANN_STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
ANN_BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
ANN_DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
ANN_BETA_DEFAULT_CLASS = "storageclass.beta.kubernetes.io/is-default-class"
# DS20: on a claim while another claim is being cloned from it (the external-provisioner's finalizer).
CLONE_PROTECTION = "provisioner.storage.kubernetes.io/cloning-protection"

MSG_NO_CLASS = "no persistent volumes available for this claim and no storage class is set"
MSG_WAIT_FIRST_CONSUMER = "waiting for first consumer to be created before binding"
MSG_CLAIM_LOST = "Bound claim has lost its PersistentVolume. Data on the volume is lost!"
MSG_CLAIM_LOST_REF = "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!"
MSG_CLAIM_MISBOUND = "Two claims are bound to the same volume, this one is bound incorrectly"
MSG_NO_RECYCLER = "No recycler plugin found for the volume!"
MSG_FS_RESIZE = "Waiting for user to (re-)start a pod to finish file system resize of volume on node."

SWEEP_FREE = "~free:"  # a volume of this class became free: try the class's pending claims
SWEEP_CLASS = "~class:"  # a StorageClass changed: retry claims that may depend on it
_CLAIM_LOCK_STRIPES = 64


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _ann(obj: dict[str, Any]) -> dict[str, str]:
    return _meta(obj).get("annotations") or {}


def _key(obj: dict[str, Any]) -> str:
    meta = _meta(obj)
    return f"{meta.get('namespace')}/{meta['name']}" if meta.get("namespace") else meta["name"]


def is_free(volume: dict[str, Any]) -> bool:
    return claim_ref(volume) is None and volume_phase(volume) == "Available" and not is_deleting(volume)


def is_pending_claim(claim: dict[str, Any]) -> bool:
    return (ANN_BIND_COMPLETED not in _ann(claim) and not (claim.get("spec") or {}).get("volumeName")
            and not is_deleting(claim))


def default_class(classes: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """P3: annotated exactly "true"; the newest wins, ties to the smallest name."""
    defaults = [c for c in classes
                if _ann(c).get(ANN_DEFAULT_CLASS) == "true" or _ann(c).get(ANN_BETA_DEFAULT_CLASS) == "true"]
    if not defaults:
        return None
    defaults.sort(key=lambda c: _meta(c)["name"])
    defaults.sort(key=lambda c: _meta(c).get("creationTimestamp") or "", reverse=True)
    return defaults[0]


def check_volume_satisfy_claim(volume: dict[str, Any], claim: dict[str, Any]) -> str | None:
    """B5: why a requested free volume cannot serve the claim (Kubernetes' checkVolumeSatisfyClaim)."""
    if is_deleting(volume):
        return f'the volume is marked for deletion "{_meta(volume)["name"]}"'
    if volume_capacity(volume) < claim_request(claim):
        return "requested PV is too small"
    if object_class(volume) != object_class(claim):
        return "storageClassName does not match"
    if volume_attributes_class(volume) != requested_attributes_class(claim):
        return "volumeAttributesClassName does not match"
    if volume_mode(volume) != volume_mode(claim):
        return "incompatible volumeMode"
    if not contains_all_modes(access_modes(volume), access_modes(claim)):
        return "incompatible accessMode"
    return None


# ------------------------------------------------------------ shared state

class BinderState:
    """The volume index and pending-claim sets, kept current by cache change handlers."""

    def __init__(self, cache: Cache) -> None:
        self.lock = threading.Lock()
        self.cache = cache
        self.index = VolumeIndex()
        self.pending_by_class: dict[str, set[str]] = {}
        self.claims_by_volume_name: dict[str, set[str]] = {}
        self._claim_facts: dict[str, tuple[str | None, str | None]] = {}
        # DS: pending claims filled from a data source, by (kind, source namespace, source name), so the
        # source's change (a snapshot becoming ready, a ReferenceGrant) wakes exactly them.
        self.claims_by_source: dict[tuple[str, str, str], set[str]] = {}
        self._source_facts: dict[str, tuple[str, str, str]] = {}
        # B12: the last refusal told about each claim naming its volume, by claim uid, so a sync that finds the
        # same refusal (a resync, a sweep, an unrelated change) records nothing more.
        self.refusals_told: dict[str, tuple[str, str]] = {}
        self.live = hasattr(cache, "add_handler")
        # A claim is synced under its own key and by the sweeps of its class (other keys, so other workers):
        # one of these locks per claim keeps two of them from provisioning or binding it at once.
        self._claim_locks = [threading.Lock() for _ in range(_CLAIM_LOCK_STRIPES)]
        if self.live:
            cache.add_handler(PVS, self._on_volume)  # type: ignore[attr-defined]
            cache.add_handler(PVCS, self._on_claim)  # type: ignore[attr-defined]

    def claim_lock(self, key: str) -> threading.Lock:
        return self._claim_locks[zlib.crc32(key.encode()) % _CLAIM_LOCK_STRIPES]

    def _on_volume(self, _resource: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        with self.lock:
            if new is None:
                if old is not None:
                    self.index.remove(_meta(old)["name"])
            else:
                self.index.add(new)

    def _on_claim(self, _resource: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        with self.lock:
            if old is not None:
                key = _key(old)
                if new is None:
                    self.refusals_told.pop(_meta(old).get("uid", ""), None)
                pending_class, volume_name = self._claim_facts.pop(key, (None, None))
                if pending_class is not None:
                    self.pending_by_class.get(pending_class, set()).discard(key)
                if volume_name:
                    self.claims_by_volume_name.get(volume_name, set()).discard(key)
                source = self._source_facts.pop(key, None)
                if source is not None:
                    self.claims_by_source.get(source, set()).discard(key)
            if new is not None:
                key = _key(new)
                pending_class = object_class(new) if is_pending_claim(new) else None
                volume_name = (new.get("spec") or {}).get("volumeName") or None
                self._claim_facts[key] = (pending_class, volume_name)
                if pending_class is not None:
                    self.pending_by_class.setdefault(pending_class, set()).add(key)
                if volume_name:
                    self.claims_by_volume_name.setdefault(volume_name, set()).add(key)
                ref = data_source_ref(new)
                if ref is not None and pending_class is not None:
                    source = (str(ref.get("kind") or ""), source_namespace(new), str(ref.get("name") or ""))
                    self._source_facts[key] = source
                    self.claims_by_source.setdefault(source, set()).add(key)

    def claims_from(self, kind: str, namespace: str, name: str | None = None) -> list[str]:
        """Pending claims filled from the ``kind`` object ``namespace/name`` (any name when None)."""
        if not self.live:
            out = []
            for c in self.cache.list(PVCS):
                ref = data_source_ref(c)
                if ref is not None and is_pending_claim(c) and ref.get("kind") == kind and \
                        source_namespace(c) == namespace and (name is None or ref.get("name") == name):
                    out.append(_key(c))
            return out
        with self.lock:
            if name is not None:
                return sorted(self.claims_by_source.get((kind, namespace, name), ()))
            return sorted(k for (kd, ns, _n), keys in self.claims_by_source.items() if kd == kind and ns == namespace
                          for k in keys)

    def find(self, claim: dict[str, Any], delay_binding: bool) -> dict[str, Any] | None:
        if not self.live:
            volumes = sorted(self.cache.list(PVS), key=lambda v: _meta(v)["name"])
            return find_best_volume_linear(claim, volumes, delay_binding)
        with self.lock:
            return find_best_volume(claim, self.index, delay_binding=delay_binding)

    def pending(self, klass: str) -> list[str]:
        if not self.live:
            return [_key(c) for c in self.cache.list(PVCS) if is_pending_claim(c) and object_class(c) == klass]
        with self.lock:
            return sorted(self.pending_by_class.get(klass, ()))

    def claims_naming(self, volume_name: str) -> list[str]:
        if not self.live:
            return [_key(c) for c in self.cache.list(PVCS) if (c.get("spec") or {}).get("volumeName") == volume_name]
        with self.lock:
            return list(self.claims_by_volume_name.get(volume_name, ()))


_STATES: "weakref.WeakKeyDictionary[Any, BinderState]" = weakref.WeakKeyDictionary()
_STATES_LOCK = threading.Lock()


def binder_state(ctx: ControllerContext) -> BinderState:
    with _STATES_LOCK:
        state = _STATES.get(ctx.cache)
        if state is None:
            state = BinderState(ctx.cache)
            _STATES[ctx.cache] = state
        return state


# ------------------------------------------------------------ common writes

class _Base(Reconciler):
    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.state = binder_state(ctx)

    def _update(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = _meta(obj)
        try:
            new = self.ctx.store.update(resource, obj)
        except Conflict:
            # Refresh the cache so the immediate retry computes from the newest version.
            try:
                fresh = self.ctx.store.get(resource, meta.get("namespace") or "", meta["name"])
                self._write_through(resource, fresh)
            except NotFound:
                pass
            raise
        self._write_through(resource, new)
        return new

    def _write_through(self, resource: str, obj: dict[str, Any]) -> None:
        write_through: Callable[[str, dict[str, Any]], None] | None = getattr(self.ctx.cache, "write_through", None)
        if write_through is not None:
            write_through(resource, obj)

    def _get_live(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The store's copy: used before irreversible steps where a lagging cache would mislead."""
        try:
            obj = self.ctx.store.get(resource, namespace, name)
        except NotFound:
            return None
        self._write_through(resource, obj)
        return obj

    def _set_claim_phase(self, claim: dict[str, Any], phase: str, volume: dict[str, Any] | None,
                         event: tuple[str, str, str] | None = None) -> dict[str, Any]:
        """Kubernetes' updateClaimStatus(WithEvent): the event only when the phase changes."""
        status = claim.get("status") or {}
        new_status = dict(status)
        new_status["phase"] = phase
        if volume is None:
            new_status.pop("accessModes", None)
            new_status.pop("capacity", None)
            new_status.pop("currentVolumeAttributesClassName", None)
        else:
            new_status["accessModes"] = list((volume.get("spec") or {}).get("accessModes") or [])
            if status.get("phase") != phase:
                new_status["capacity"] = dict((volume.get("spec") or {}).get("capacity") or {})
        if new_status == status:
            return claim
        updated = {**claim, "status": new_status}
        result = self._update(PVCS, updated)
        if event is not None and status.get("phase") != phase:
            self.ctx.events.record(result, event[0], event[1], event[2])  # type: ignore[arg-type]
        return result

    def _set_volume_phase(self, volume: dict[str, Any], phase: str, message: str = "",
                          event: tuple[str, str] | None = None) -> dict[str, Any]:
        status = volume.get("status") or {}
        if status.get("phase") == phase and (status.get("message") or "") == message:
            return volume
        new_status = {**status, "phase": phase}
        if message:
            new_status["message"] = message
        else:
            new_status.pop("message", None)
        result = self._update(PVS, {**volume, "status": new_status})
        if event is not None and status.get("phase") != phase:
            self.ctx.events.record(result, "Warning", event[0], event[1])
        return result

    def _bind(self, volume: dict[str, Any], claim: dict[str, Any], also_annotate: dict[str, str] | None = None) -> None:
        """B6: the volume first (claimRef with uid, Bound), then the claim, with ``also_annotate`` (PF89) in the
        same write."""
        cmeta = _meta(claim)
        vol = copy.deepcopy(volume)
        vmeta = vol.setdefault("metadata", {})
        spec = vol.setdefault("spec", {})
        changed = False
        ref = spec.get("claimRef") or {}
        if (ref.get("name") != cmeta["name"] or (ref.get("namespace") or "") != (cmeta.get("namespace") or "")
                or ref.get("uid") != cmeta.get("uid")):
            if not is_volume_bound_to_claim(volume, claim):
                vmeta.setdefault("annotations", {})[ANN_BOUND_BY_CONTROLLER] = "yes"
            spec["claimRef"] = {
                "kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": cmeta.get("namespace") or "",
                "name": cmeta["name"], "uid": cmeta.get("uid"), "resourceVersion": cmeta.get("resourceVersion"),
            }
            changed = True
        if volume_phase(vol) != "Bound":
            status = vol.setdefault("status", {})
            status["phase"] = "Bound"
            status.pop("message", None)
            changed = True
        if not is_deleting(vol) and PV_PROTECTION not in (vmeta.get("finalizers") or []):
            vmeta["finalizers"] = [*(vmeta.get("finalizers") or []), PV_PROTECTION]
            changed = True
        if changed:
            vol = self._update(PVS, vol)
            fault_point("bind:after-volume-write")

        c = copy.deepcopy(claim)
        meta = c.setdefault("metadata", {})
        cspec = c.setdefault("spec", {})
        annotations = meta.setdefault("annotations", {})
        old_status = claim.get("status") or {}
        changed = False
        if cspec.get("volumeName") != vmeta["name"]:
            cspec["volumeName"] = vmeta["name"]
            annotations[ANN_BOUND_BY_CONTROLLER] = "yes"
            changed = True
        if annotations.get(ANN_BIND_COMPLETED) != "yes":
            annotations[ANN_BIND_COMPLETED] = "yes"
            changed = True
        for key, value in (also_annotate or {}).items():
            if annotations.get(key) != value:
                annotations[key] = value
                changed = True
        status = c.setdefault("status", {})
        vspec = vol.get("spec") or {}
        if old_status.get("phase") != "Bound":
            status["phase"] = "Bound"
            status["capacity"] = dict(vspec.get("capacity") or {})
            # VAC2: only while binding; afterwards the modify controller owns the field (Kubernetes' rule).
            if vspec.get("volumeAttributesClassName"):
                status["currentVolumeAttributesClassName"] = vspec["volumeAttributesClassName"]
            else:
                status.pop("currentVolumeAttributesClassName", None)
            changed = True
        if status.get("accessModes") != list(vspec.get("accessModes") or []):
            status["accessModes"] = list(vspec.get("accessModes") or [])
            changed = True
        if not is_deleting(c) and PVC_PROTECTION not in (meta.get("finalizers") or []):
            meta["finalizers"] = [*(meta.get("finalizers") or []), PVC_PROTECTION]
            changed = True
        if changed:
            self._update(PVCS, c)
            fault_point("bind:after-claim-write")
            log.debug("bound", claim=_key(claim), volume=vmeta["name"])


# ------------------------------------------------------------ claims

class ClaimBinder(_Base):
    """syncClaim: binds, provisions (P1–P3), marks Lost (B5–B9)."""
    # Provisioning blocks on the backend (a node agent's mkfs, a cloud API): several at once.
    workers = 8

    name = "persistentvolume-binder-claims"
    primary = PVCS

    def watches(self) -> dict[str, Callable[[dict[str, Any]], Iterable[str]]]:
        return {PVS: self._keys_for_volume, SCS: self._keys_for_class, PVCS: self._keys_for_source_claim,
                "volumesnapshots": self._keys_for_snapshot, "volumesnapshotcontents": self._keys_for_content,
                "referencegrants": self._keys_for_grant, VACS: self._keys_for_attributes_class}

    def _keys_for_attributes_class(self, vac: dict[str, Any]) -> list[str]:
        """VAC3: a claim waiting for its VolumeAttributesClass to exist provisions once it does."""
        name = _meta(vac)["name"]
        return [_key(c) for c in self.ctx.cache.list(PVCS)
                if is_pending_claim(c) and requested_attributes_class(c) == name]

    # DS: a data source's change wakes the claims waiting for it.
    def _keys_for_source_claim(self, claim: dict[str, Any]) -> list[str]:
        meta = _meta(claim)
        keys = self.state.claims_from("PersistentVolumeClaim", meta.get("namespace") or "", meta["name"])
        ref = data_source_ref(claim)
        if ref is not None and ref.get("kind") == "PersistentVolumeClaim" and ref.get("name"):
            keys.append(f"{source_namespace(claim)}/{ref['name']}")  # DS20: the source may drop its protection
        return keys

    def _keys_for_snapshot(self, snapshot: dict[str, Any]) -> list[str]:
        meta = _meta(snapshot)
        return self.state.claims_from("VolumeSnapshot", meta.get("namespace") or "", meta["name"])

    def _keys_for_content(self, content: dict[str, Any]) -> list[str]:
        ref = (content.get("spec") or {}).get("volumeSnapshotRef") or {}
        if not ref.get("name"):
            return []
        return self.state.claims_from("VolumeSnapshot", ref.get("namespace") or "", ref["name"])

    def _keys_for_grant(self, grant: dict[str, Any]) -> list[str]:
        namespace = _meta(grant).get("namespace") or ""
        return self.state.claims_from("VolumeSnapshot", namespace) + \
            self.state.claims_from("PersistentVolumeClaim", namespace)

    def _keys_for_volume(self, volume: dict[str, Any]) -> list[str]:
        keys: list[str] = []
        ref = claim_ref(volume)
        if ref is not None and ref.get("name"):
            ns = ref.get("namespace") or ""
            keys.append(f"{ns}/{ref['name']}" if ns else ref["name"])
        keys.extend(self.state.claims_naming(_meta(volume)["name"]))
        if is_free(volume):
            keys.append(SWEEP_FREE + object_class(volume))
        return keys

    def _keys_for_class(self, storage_class: dict[str, Any]) -> list[str]:
        return [SWEEP_CLASS + _meta(storage_class)["name"]]

    def reconcile(self, key: str) -> Result:
        if key.startswith(SWEEP_FREE):
            return self._sweep(key[len(SWEEP_FREE):], only_matching=True)
        if key.startswith(SWEEP_CLASS):
            return self._sweep_class(key[len(SWEEP_CLASS):])
        namespace, name = split_key(key)
        with self.state.claim_lock(key):  # read under the lock: a sweep that just bound it wrote through the cache
            claim = self.ctx.cache.get(PVCS, namespace, name)
            if claim is None:
                return Result()
            return self.sync_claim(claim)

    def _sweep(self, klass: str, *, only_matching: bool) -> Result:
        """Bind the pending claims of a class in one pass (oldest name first)."""
        conflicts = 0
        for key in self.state.pending(klass):
            namespace, name = split_key(key)
            with self.state.claim_lock(key):
                claim = self.ctx.cache.get(PVCS, namespace, name)
                if claim is None or not is_pending_claim(claim):
                    continue
                if only_matching and self.state.find(claim, self._delay_binding(claim)[0]) is None:
                    continue
                try:
                    self.sync_claim(claim)
                except Conflict:
                    conflicts += 1
        if conflicts:
            raise Conflict(f"{conflicts} claim(s) of class {klass!r} changed during the sweep")
        return Result()

    def _sweep_class(self, class_name: str) -> Result:
        storage_class = self.ctx.cache.get(SCS, "", class_name)
        self._sweep(class_name, only_matching=False)
        if storage_class is not None and default_class([storage_class]) is not None:
            self._sweep("", only_matching=False)  # class-less claims may now get the default (P3)
        return Result()

    def _delay_binding(self, claim: dict[str, Any]) -> tuple[bool, str]:
        klass = object_class(claim)
        if not klass:
            return False, ""
        storage_class = self.ctx.cache.get(SCS, "", klass)
        delay = storage_class is not None and storage_class.get("volumeBindingMode") == "WaitForFirstConsumer"
        return delay, _ann(claim).get(ANN_SELECTED_NODE, "")

    def sync_claim(self, claim: dict[str, Any]) -> Result:
        if CLONE_PROTECTION in (_meta(claim).get("finalizers") or []):
            claim = self._release_clone_protection(claim)
        if ANN_BIND_COMPLETED not in _ann(claim):
            return self._sync_unbound(claim)
        return self._sync_bound(claim)

    def _sync_unbound(self, claim: dict[str, Any]) -> Result:
        if is_deleting(claim):
            return Result()  # never start a binding for a claim on its way out
        volume_name = (claim.get("spec") or {}).get("volumeName") or ""
        if not volume_name:
            delay, selected_node = self._delay_binding(claim)
            if data_source_ref(claim) is not None:
                volume = None  # DS10: a claim filled from a source is always provisioned, never bound to a free volume
            elif delay and selected_node:
                node = self.ctx.cache.get(NODES, "", selected_node) or {"metadata": {"name": selected_node, "labels": {
                    "kubernetes.io/hostname": selected_node}}}
                # Only the few volumes this claim could take are sorted, not every volume per claim.
                volumes = sorted(match_candidates(claim, self.state.index.volumes() if self.state.live
                                                  else self.ctx.cache.list(PVS)), key=lambda v: _meta(v)["name"])
                volume = find_best_volume_linear(claim, volumes, True, node)
            else:
                volume = self.state.find(claim, delay)
            if volume is not None:
                self._bind(volume, claim)
                return Result()
            if self._assign_default_class(claim):
                return Result()
            klass = object_class(claim)
            if delay and not selected_node:
                self.ctx.events.record(claim, "Normal", "WaitForFirstConsumer", MSG_WAIT_FIRST_CONSUMER)
            elif klass:
                return self._provision(claim, klass)
            else:
                self.ctx.events.record(claim, "Normal", "FailedBinding", MSG_NO_CLASS)
            self._set_claim_phase(claim, "Pending", None)
            return Result()

        volume = self.ctx.cache.get(PVS, "", volume_name)
        if volume is None:
            self._forget_refusal(claim)  # a volume made again under that name is a change worth telling about
            self._set_claim_phase(claim, "Pending", None)
            return Result()
        if claim_ref(volume) is None:
            why = check_volume_satisfy_claim(volume, claim)
            if why is not None:
                self._tell_refusal(claim, "VolumeMismatch", f'Cannot bind to requested volume "{volume_name}": {why}')
                self._set_claim_phase(claim, "Pending", None)
                return Result()
            self._forget_refusal(claim)
            self._bind(volume, claim)
            return Result()
        if is_volume_bound_to_claim(volume, claim):
            self._forget_refusal(claim)
            self._bind(volume, claim)
            return Result()
        self._tell_refusal(claim, "FailedBinding", f'volume "{volume_name}" already bound to a different claim.')
        self._set_claim_phase(claim, "Pending", None)
        return Result()

    def _tell_refusal(self, claim: dict[str, Any], reason: str, message: str) -> None:
        """B5, B12: a Warning when the volume the claim names refuses it, once per distinct refusal. Kubernetes
        records it on every sync and its correlator folds the repeats into one event's count; here each sync
        (a resync, a sweep of the class, any change of the claim or the volume) would add one more."""
        uid = _meta(claim).get("uid", "")
        with self.state.lock:
            if self.state.refusals_told.get(uid) == (reason, message):
                return
            self.state.refusals_told[uid] = (reason, message)
        self.ctx.events.record(claim, "Warning", reason, message)

    def _forget_refusal(self, claim: dict[str, Any]) -> None:
        with self.state.lock:
            self.state.refusals_told.pop(_meta(claim).get("uid", ""), None)

    def _sync_bound(self, claim: dict[str, Any]) -> Result:
        meta = _meta(claim)
        volume_name = (claim.get("spec") or {}).get("volumeName") or ""
        if not volume_name:
            self._set_claim_phase(claim, "Lost", None, ("Warning", "ClaimLost", MSG_CLAIM_LOST_REF))
            return Result()
        volume = self.ctx.cache.get(PVS, "", volume_name) or self._get_live(PVS, "", volume_name)
        if volume is None:
            self._set_claim_phase(claim, "Lost", None, ("Warning", "ClaimLost", MSG_CLAIM_LOST))
            return Result()
        ref = claim_ref(volume)
        if ref is None or ref.get("uid") == meta.get("uid"):
            self._bind(volume, claim)
            return Result()
        live = self._get_live(PVS, "", volume_name)
        if live is not None and (claim_ref(live) or {}).get("uid") in (None, "", meta.get("uid")):
            return Result()  # the cache lagged; the watch event requeues us
        self._set_claim_phase(claim, "Lost", None, ("Warning", "ClaimMisbound", MSG_CLAIM_MISBOUND))
        return Result()

    def _release_clone_protection(self, claim: dict[str, Any]) -> dict[str, Any]:
        """DS20: drop the cloning protection once no claim is still being cloned from this one."""
        meta = _meta(claim)
        if self.state.claims_from("PersistentVolumeClaim", meta.get("namespace") or "", meta["name"]):
            return claim
        updated = copy.deepcopy(claim)
        updated["metadata"]["finalizers"] = [f for f in updated["metadata"]["finalizers"] if f != CLONE_PROTECTION]
        return self._update(PVCS, updated)

    def _protect_clone_source(self, source: dict[str, Any] | None) -> None:
        """DS20: before copying, the source claim gets the cloning protection (unless it is already going)."""
        if source is None or is_deleting(source) or CLONE_PROTECTION in (_meta(source).get("finalizers") or []):
            return
        updated = copy.deepcopy(source)
        updated["metadata"]["finalizers"] = [*(updated["metadata"].get("finalizers") or []), CLONE_PROTECTION]
        self._update(PVCS, updated)

    def _assign_default_class(self, claim: dict[str, Any]) -> bool:
        """P3, retroactively: a claim with neither class field nor beta annotation gets the default."""
        spec = claim.get("spec") or {}
        if spec.get("storageClassName") is not None or ANN_STORAGE_CLASS in _ann(claim):
            return False
        chosen = default_class(self.ctx.cache.list(SCS))
        if chosen is None:
            return False
        updated = copy.deepcopy(claim)
        updated["spec"]["storageClassName"] = _meta(chosen)["name"]
        self._update(PVCS, updated)
        log.info("default_class_assigned", claim=_key(claim), storage_class=_meta(chosen)["name"])
        return True

    # -- provisioning (P1, P2)
    def _provision(self, claim: dict[str, Any], class_name: str) -> Result:
        storage_class = self.ctx.cache.get(SCS, "", class_name)
        if storage_class is None:
            self.ctx.events.record(claim, "Warning", "ProvisioningFailed", f'storageclass.storage.k8s.io "{class_name}" not found')
            self._set_claim_phase(claim, "Pending", None)
            return Result()
        provisioner_name = storage_class.get("provisioner") or ""
        annotations = _ann(claim)
        naming = {ANN_STORAGE_PROVISIONER: provisioner_name, ANN_BETA_STORAGE_PROVISIONER: provisioner_name}
        unnamed = any(annotations.get(k) != v for k, v in naming.items())
        provisioner = provisioner_registry.get(provisioner_name)

        def named() -> dict[str, Any]:
            """P1: the claim naming its provisioner, written now. PF89: an in-tree provisioner that finishes at
            once gets it in the binding's write instead; every other outcome leaves the claim Pending, and
            this write comes first."""
            nonlocal claim, unnamed
            if unnamed:
                updated = copy.deepcopy(claim)
                updated["metadata"].setdefault("annotations", {}).update(naming)
                claim = self._update(PVCS, updated)
                unnamed = False
            return claim

        if provisioner is None:
            claim = named()
            self.ctx.events.record(
                claim, "Normal", "ExternalProvisioning",
                f"Waiting for a volume to be created either by the external provisioner '{provisioner_name}' or manually "
                "by the system administrator. If volume creation is delayed, please verify that the provisioner is "
                "running and correctly registered.",
            )
            self._set_claim_phase(claim, "Pending", None)
            return Result()

        meta = _meta(claim)
        pv_name = f"pvc-{meta['uid']}"
        vac_name = requested_attributes_class(claim)
        mutable: dict[str, str] = {}
        if vac_name:
            vac = self.ctx.cache.get(VACS, "", vac_name)
            refusal = _attributes_refusal(vac_name, vac, provisioner_name, provisioner.supports_modify())
            if refusal is not None:
                claim = named()
                self.ctx.events.record(claim, "Warning", "ProvisioningFailed",
                                       f'failed to provision volume with StorageClass "{class_name}": {refusal}')
                self._set_claim_phase(claim, "Pending", None)
                return Result()  # the class's creation (watches above) or the claim's change retries it
            mutable = dict((vac or {}).get("parameters") or {})
        existing = self.ctx.cache.get(PVS, "", pv_name) or self._get_live(PVS, "", pv_name)
        if existing is not None:
            # Saved before a crash or by another replica: just finish the binding.
            if is_volume_bound_to_claim(existing, claim):
                self._bind(existing, claim, naming)
            return Result()

        requested = claim_request(claim)
        outcome = resolve_data_source(claim, storage_class, provisioner, self.ctx.cache,
                                      int(requested) if requested == int(requested) else int(requested) + 1)
        if isinstance(outcome, (Wait, Refuse)):
            # DS: Pending with an event; the source's change (watches above) or the claim's own brings the retry.
            claim = named()
            self.ctx.events.record(claim, outcome.type if isinstance(outcome, Wait) else "Warning",
                                   outcome.reason, outcome.message)
            self._set_claim_phase(claim, "Pending", None)
            return Result()
        data_source = outcome.source if isinstance(outcome, Resolved) else None
        if data_source is not None and data_source.kind == "PersistentVolumeClaim":
            ref = data_source_ref(claim) or {}
            self._protect_clone_source(self.ctx.cache.get(PVCS, source_namespace(claim), ref.get("name") or ""))
        selected = annotations.get(ANN_SELECTED_NODE, "")
        node = self.ctx.cache.get(NODES, "", selected) if selected else None
        request = ProvisionRequest(volume_name=pv_name, claim=claim, storage_class=storage_class, selected_node=node,
                                   secrets=store_secret_reader(self.ctx.store),
                                   config_maps=store_config_map_reader(self.ctx.store), data_source=data_source,
                                   mutable_parameters=mutable)
        fault_point("provision:before-backend")
        try:
            result = provisioner.provision(request)
        except TemporaryError as exc:
            # As the external-provisioner: every failed attempt is an event on the claim (an unreachable
            # backend is what the user must see), and the claim waits, Pending, for the retry.
            self.ctx.events.record(claim, "Warning", "ProvisioningFailed",
                                   f'failed to provision volume with StorageClass "{class_name}": {exc}')
            named()
            raise
        except Exception as exc:
            self.ctx.events.record(claim, "Warning", "ProvisioningFailed",
                                   f'failed to provision volume with StorageClass "{class_name}": {exc}')
            self._set_claim_phase(named(), "Pending", None)
            raise
        if result.status == "in_progress":
            self._set_claim_phase(named(), "Pending", None)
            return Result(requeue_after=result.retry_after)
        if result.status == "reschedule":
            claim = named()
            self.ctx.events.record(claim, "Warning", "ProvisioningFailed",
                                   f'failed to provision volume with StorageClass "{class_name}": {result.message}')
            if selected:
                updated = copy.deepcopy(claim)
                updated["metadata"]["annotations"].pop(ANN_SELECTED_NODE, None)
                self._update(PVCS, updated)  # the scheduler picks another node
            return Result()
        fault_point("provision:after-backend")
        try:
            objects_annotation = ensure_objects(self.ctx.store, pv_name, result.objects)
        except Exception as exc:
            self.ctx.events.record(claim, "Warning", "ProvisioningFailed",
                                   f'failed to provision volume with StorageClass "{class_name}": {exc}')
            named()
            raise

        spec: dict[str, Any] = {
            "capacity": {"storage": result.capacity},
            "accessModes": list((claim.get("spec") or {}).get("accessModes") or []),
            "persistentVolumeReclaimPolicy": storage_class.get("reclaimPolicy") or "Delete",
            "storageClassName": class_name,
            "volumeMode": volume_mode(claim),
            "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": meta.get("namespace") or "",
                         "name": meta["name"], "uid": meta["uid"], "resourceVersion": meta.get("resourceVersion")},
            **result.source,
        }
        if storage_class.get("mountOptions"):
            spec["mountOptions"] = list(storage_class["mountOptions"])
        if result.node_affinity:
            spec["nodeAffinity"] = result.node_affinity
        if vac_name:
            spec["volumeAttributesClassName"] = vac_name
        extra_annotations = {ANN_PROVISIONED_OBJECTS: objects_annotation} if objects_annotation else {}
        pv = {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "annotations": {**result.annotations, **extra_annotations,
                                                          ANN_PROVISIONED_BY: provisioner_name,
                                                          ANN_BOUND_BY_CONTROLLER: "yes"},
                         "finalizers": [PV_PROTECTION]},
            "spec": spec,
            "status": {"phase": "Bound"},
        }
        try:
            saved = self.ctx.store.create(PVS, pv)
        except AlreadyExists:
            saved = self.ctx.store.get(PVS, "", pv_name)
        self._write_through(PVS, saved)
        fault_point("provision:after-volume-save")
        self.ctx.events.record(claim, "Normal", "ProvisioningSucceeded",
                               f"Successfully provisioned volume {pv_name} using {provisioner_name}")
        log.info("provisioned", claim=_key(claim), volume=pv_name, provisioner=provisioner_name)
        self._bind(saved, claim, naming)
        return Result()


def _attributes_refusal(name: str, vac: dict[str, Any] | None, provisioner_name: str, supports: bool) -> str | None:
    """VAC3: why a claim naming VolumeAttributesClass ``name`` cannot be provisioned now (external-provisioner's
    words where it has them), or None."""
    if vac is None:
        return f'volumeattributesclass.storage.k8s.io "{name}" not found'
    driver = str(vac.get("driverName") or "")
    if driver != provisioner_name:
        return f"VAC {name} referenced in PVC is for driver {driver} which does not match driver name {provisioner_name}"
    if not supports:
        return (f"provisioner {provisioner_name} does not support VolumeAttributesClasses (only CSI drivers with the "
                "MODIFY_VOLUME capability do)")
    return None


# ------------------------------------------------------------ volumes

class VolumeBinder(_Base):
    """syncVolume: phases, unbinding, and reclaim (B9, B10)."""

    name = "persistentvolume-binder-volumes"
    primary = PVS

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self._held_lock = threading.Lock()
        # node name -> released volumes on it whose deletion its agent refused (in use) or could not take
        # (unreachable): L11 retries them on the node's news, not at the back-off's next step.
        self._held: dict[str, set[str]] = {}

    def watches(self) -> dict[str, Callable[[dict[str, Any]], Iterable[str]]]:
        return {PVCS: self._keys_for_claim, NODES: self._keys_for_node}

    def _keys_for_node(self, node: dict[str, Any]) -> list[str]:
        """L11: a Ready node that no longer lists a held volume in ``status.volumesInUse`` has let it go."""
        name = _meta(node).get("name", "")
        with self._held_lock:
            held = sorted(self._held.get(name, ()))
        if not held or not is_true(node, "Ready"):
            return []
        return [pv for pv in held if not volume_in_use_on(node, pv)]

    def _hold(self, pv_name: str, nodes: list[str]) -> None:
        with self._held_lock:
            for node in nodes:
                self._held.setdefault(node, set()).add(pv_name)

    def _release_hold(self, pv_name: str) -> None:
        with self._held_lock:
            for node in [n for n, held in self._held.items() if pv_name in held]:
                self._held[node].discard(pv_name)
                if not self._held[node]:
                    del self._held[node]

    def _keys_for_claim(self, claim: dict[str, Any]) -> list[str]:
        keys = []
        volume_name = (claim.get("spec") or {}).get("volumeName")
        if volume_name:
            keys.append(volume_name)
        meta = _meta(claim)
        if self.state.live:
            with self.state.lock:
                keys.extend(self.state.index._prebound.get((meta.get("namespace") or "", meta["name"]), {}))
        return keys

    def reconcile(self, key: str) -> Result:
        volume = self.ctx.cache.get(PVS, "", key)
        if volume is None:
            self._release_hold(key)
            return Result()
        return self.sync_volume(volume)

    def sync_volume(self, volume: dict[str, Any]) -> Result:
        name = _meta(volume)["name"]
        ref = claim_ref(volume)
        if ref is None or not ref.get("uid"):
            self._set_volume_phase(volume, "Available")
            return Result()
        namespace = ref.get("namespace") or ""
        claim = self.ctx.cache.get(PVCS, namespace, ref.get("name") or "")
        phase = volume_phase(volume)
        if claim is None and phase not in ("Released", "Failed"):
            claim = self._get_live(PVCS, namespace, ref.get("name") or "")  # never release on a lagging cache
        if claim is not None and _meta(claim).get("uid") != ref.get("uid"):
            claim = self._get_live(PVCS, namespace, ref.get("name") or "")
            if claim is not None and _meta(claim).get("uid") != ref.get("uid"):
                claim = None
        if claim is None:
            if phase not in ("Released", "Failed"):
                volume = self._set_volume_phase(volume, "Released")
            return self._reclaim(volume)
        claim_volume = (claim.get("spec") or {}).get("volumeName") or ""
        if not claim_volume:
            if volume_mode(claim) != volume_mode(volume):
                self.ctx.events.record(volume, "Warning", "VolumeMismatch",
                                       f'Cannot bind PersistentVolume to requested PersistentVolumeClaim "{_meta(claim)["name"]}" due to incompatible volumeMode.')
                self.ctx.events.record(claim, "Warning", "VolumeMismatch",
                                       f'Cannot bind PersistentVolume "{name}" to requested PersistentVolumeClaim due to incompatible volumeMode.')
            return Result()  # the claim's sync finishes the binding
        if claim_volume == name:
            self._set_volume_phase(volume, "Bound")
            return Result()
        # The claim is bound to another volume.
        annotations = _ann(volume)
        if ANN_PROVISIONED_BY in annotations and (volume.get("spec") or {}).get("persistentVolumeReclaimPolicy") == "Delete":
            if phase not in ("Released", "Failed"):
                volume = self._set_volume_phase(volume, "Released")
            return self._reclaim(volume)
        self._unbind(volume)
        return Result()

    def _unbind(self, volume: dict[str, Any]) -> dict[str, Any]:
        """Kubernetes' unbindVolume: forget a claimRef the binder set; keep a user's pre-binding by name."""
        updated = copy.deepcopy(volume)
        annotations = updated["metadata"].get("annotations") or {}
        if ANN_BOUND_BY_CONTROLLER in annotations:
            updated["spec"].pop("claimRef", None)
            annotations.pop(ANN_BOUND_BY_CONTROLLER, None)
        else:
            updated["spec"]["claimRef"] = {k: v for k, v in updated["spec"]["claimRef"].items() if k != "uid"}
        status = updated.setdefault("status", {})
        status["phase"] = "Available"
        status.pop("message", None)
        return self._update(PVS, updated)

    def _reclaim(self, volume: dict[str, Any]) -> Result:
        policy = (volume.get("spec") or {}).get("persistentVolumeReclaimPolicy") or "Retain"
        if policy == "Retain":
            return Result()
        if policy == "Recycle":
            return self._recycle(volume)
        if policy == "Delete":
            return self._delete(volume)
        self._set_volume_phase(volume, "Failed", "Volume has unrecognized PersistentVolumeReclaimPolicy",
                               ("VolumeUnknownReclaimPolicy", "Volume has unrecognized PersistentVolumeReclaimPolicy"))
        return Result()

    def _still_released(self, volume: dict[str, Any]) -> dict[str, Any] | None:
        """Re-read before destroying data: the claim may have come back, the volume may be rebound."""
        name = _meta(volume)["name"]
        live = self._get_live(PVS, "", name)
        if live is None or volume_phase(live) not in ("Released", "Failed"):
            return None
        ref = claim_ref(live)
        if ref is not None and ref.get("uid"):
            claim = self._get_live(PVCS, ref.get("namespace") or "", ref.get("name") or "")
            if claim is not None and _meta(claim).get("uid") == ref.get("uid") and \
                    (claim.get("spec") or {}).get("volumeName") in ("", None, name):
                return None
        return live

    def _recycle(self, volume: dict[str, Any]) -> Result:
        recycler = provisioner_registry.find_recycler(volume)
        if recycler is None:
            self._set_volume_phase(volume, "Failed", MSG_NO_RECYCLER, ("VolumeFailedRecycle", MSG_NO_RECYCLER))
            return Result()
        live = self._still_released(volume)
        if live is None:
            return Result()
        try:
            recycler.recycle(live)
        except Exception as exc:
            message = f"Recycle failed: {exc}"
            self._set_volume_phase(live, "Failed", message)
            self.ctx.events.record(live, "Warning", "VolumeFailedRecycle", message)
            raise
        self.ctx.events.record(live, "Normal", "VolumeRecycled", "Volume recycled")
        self._unbind(live)
        return Result()

    def _delete(self, volume: dict[str, Any]) -> Result:
        name = _meta(volume)["name"]
        provisioner_name = _ann(volume).get(ANN_PROVISIONED_BY, "")
        if not provisioner_name:
            message = f'error getting deleter volume plugin for volume "{name}": no deletable volume plugin matched'
            self._set_volume_phase(volume, "Failed", message, ("VolumeFailedDelete", message))
            return Result()
        provisioner = provisioner_registry.get(provisioner_name)
        if provisioner is None:
            log.info("waiting_for_external_deleter", volume=name, provisioner=provisioner_name)
            return Result()
        live = self._still_released(volume)
        if live is None or is_deleting(live):
            self._release_hold(name)
            return Result()  # marked for deletion by us: the backend asset is already gone
        try:
            with secrets_available(store_secret_reader(self.ctx.store), store_config_map_reader(self.ctx.store)):
                provisioner.delete(live)
        except TemporaryError:
            self._hold(name, affinity_hostnames(live))
            raise
        except Exception as exc:
            live = self._set_volume_phase(live, "Failed", str(exc))
            self.ctx.events.record(live, "Warning", "VolumeFailedDelete", str(exc))
            if isinstance(exc, (BackendConflict, Conflict)):
                # The backend's "in use" (a pod on the node still has it mounted), not a write race in the
                # store, which the manager retries at once: this one waits with back-off like any failure,
                # or less: until its node reports it no longer in use (L11).
                self._hold(name, affinity_hostnames(live))
                raise StowageError(str(exc)) from exc
            raise
        self._release_hold(name)
        delete_objects(self.ctx.store, live)
        try:
            self.ctx.store.delete(PVS, "", name, resource_version=_meta(live).get("resourceVersion"))
        except NotFound:
            pass
        log.info("volume_deleted", volume=name, provisioner=provisioner_name)
        return Result()


# ------------------------------------------------------------ protection (B11)

def _pod_uses_claim(pod: dict[str, Any], claim: dict[str, Any]) -> bool:
    """B11: the pod's object exists and names the claim: whatever its phase, placed on a node or
    not (Stowage waits for the object to be gone, see the README). An ephemeral volume's claim
    counts only when this pod owns it, as Kubernetes' ``VolumeIsForPod`` decides."""
    name = _meta(claim).get("name", "")
    named = any((v.get("persistentVolumeClaim") or {}).get("claimName") == name
                for v in (pod.get("spec") or {}).get("volumes") or [])
    return named or (name in claim_names(pod) and owned_by(claim, pod))


class ClaimProtection(_Base):
    name = "pvc-protection"
    primary = PVCS

    def watches(self) -> dict[str, Callable[[dict[str, Any]], Iterable[str]]]:
        return {PODS: self._keys_for_pod}

    def _keys_for_pod(self, pod: dict[str, Any]) -> list[str]:
        namespace = _meta(pod).get("namespace") or ""
        return [f"{namespace}/{name}" for name in claim_names(pod)]

    def in_use(self, pods: Iterable[dict[str, Any]], claim: dict[str, Any]) -> bool:
        return any(_pod_uses_claim(p, claim) for p in pods)

    def reconcile(self, key: str) -> Result:
        namespace, name = split_key(key)
        claim = self.ctx.cache.get(PVCS, namespace, name)
        if claim is None or not is_deleting(claim) or PVC_PROTECTION not in (_meta(claim).get("finalizers") or []):
            return Result()
        if self.in_use(self.ctx.cache.list(PODS, namespace), claim):
            return Result()  # the pod's change (its deletion included) requeues us
        # The cache may not have seen a pod created a moment ago: ask the store too.
        pods, _ = self.ctx.store.list(PODS, namespace)
        if self.in_use(pods, claim):
            return Result()
        updated = copy.deepcopy(claim)
        updated["metadata"]["finalizers"] = [f for f in updated["metadata"]["finalizers"] if f != PVC_PROTECTION]
        self._update(PVCS, updated)
        return Result()


class VolumeProtection(_Base):
    name = "pv-protection"
    primary = PVS

    def reconcile(self, key: str) -> Result:
        volume = self.ctx.cache.get(PVS, "", key)
        if volume is None or not is_deleting(volume) or PV_PROTECTION not in (_meta(volume).get("finalizers") or []):
            return Result()
        if volume_phase(volume) == "Bound":
            return Result()
        updated = copy.deepcopy(volume)
        updated["metadata"]["finalizers"] = [f for f in updated["metadata"]["finalizers"] if f != PV_PROTECTION]
        self._update(PVS, updated)
        return Result()


# ------------------------------------------------------------ expansion (P4)

class ExpansionController(_Base):
    name = "volume-expand"
    primary = PVCS

    def watches(self) -> dict[str, Callable[[dict[str, Any]], Iterable[str]]]:
        return {PVS: self._keys_for_volume}

    def _keys_for_volume(self, volume: dict[str, Any]) -> list[str]:
        ref = claim_ref(volume)
        if ref is None or not ref.get("name"):
            return []
        ns = ref.get("namespace") or ""
        return [f"{ns}/{ref['name']}" if ns else ref["name"]]

    def reconcile(self, key: str) -> Result:
        namespace, name = split_key(key)
        claim = self.ctx.cache.get(PVCS, namespace, name)
        if claim is None or is_deleting(claim) or (claim.get("status") or {}).get("phase") != "Bound":
            return Result()
        volume_name = (claim.get("spec") or {}).get("volumeName") or ""
        volume = self.ctx.cache.get(PVS, "", volume_name)
        if volume is None or (claim_ref(volume) or {}).get("uid") != _meta(claim).get("uid"):
            return Result()
        requested = claim_request(claim)
        if volume_capacity(volume) >= requested:
            return Result()
        storage_class = self.ctx.cache.get(SCS, "", object_class(claim))
        if storage_class is None or storage_class.get("allowVolumeExpansion") is not True:
            return Result()  # the API server refuses such a change; nothing to do for an old one
        provisioner_name = _ann(volume).get(ANN_PROVISIONED_BY) or storage_class.get("provisioner") or ""
        provisioner = provisioner_registry.get(provisioner_name)
        if provisioner is None:
            self.ctx.events.record(claim, "Normal", "ExternalExpanding",
                                   "waiting for an external controller to expand this PVC")
            return Result()
        request_text = (claim["spec"]["resources"]["requests"])["storage"]
        target = int(requested) if requested == int(requested) else int(requested) + 1
        try:
            with secrets_available(store_secret_reader(self.ctx.store), store_config_map_reader(self.ctx.store)):
                new_bytes = provisioner.expand(volume, target)
        except Exception as exc:
            # Retried (a TemporaryError with its back-off) or not, the claim says why it has not grown,
            # as the external-resizer does; repeats are aggregated into one event with a count.
            self.ctx.events.record(claim, "Warning", "VolumeResizeFailed", f"resize volume \"{volume_name}\" by resizer \"{provisioner_name}\" failed: {exc}")
            raise
        new_capacity = format_quantity(Fraction(max(new_bytes, target)), prefer_binary=True)
        updated_volume = copy.deepcopy(volume)
        updated_volume["spec"]["capacity"]["storage"] = new_capacity
        self._update(PVS, updated_volume)

        updated = copy.deepcopy(claim)
        status = updated.setdefault("status", {})
        status["allocatedResources"] = {**(status.get("allocatedResources") or {}), "storage": request_text}
        conditions = [c for c in status.get("conditions") or [] if c.get("type") not in ("Resizing", "FileSystemResizePending")]
        if volume_mode(claim) == "Filesystem":
            # No null lastProbeTime: the API drops null fields on every write, so a stored null would
            # read back differently after the next one (and kubectl diff would show it).
            conditions.append({"type": "FileSystemResizePending", "status": "True",
                               "lastTransitionTime": _now(), "message": MSG_FS_RESIZE})
            status["allocatedResourceStatuses"] = {"storage": "NodeResizePending"}
        else:
            status["capacity"] = {**(status.get("capacity") or {}), "storage": new_capacity}
            status.pop("allocatedResourceStatuses", None)
        status["conditions"] = conditions
        self._update(PVCS, updated)
        if volume_mode(claim) == "Filesystem":
            self.ctx.events.record(claim, "Normal", "FileSystemResizeRequired", "Require file system resize of volume on node")
        else:
            self.ctx.events.record(claim, "Normal", "VolumeResizeSuccessful", f"resize volume \"{volume_name}\" by resizer \"{provisioner_name}\" succeeded")
        return Result()


BINDER_RECONCILERS: list[type[Reconciler]] = [ClaimBinder, VolumeBinder]
ALL_RECONCILERS: list[type[Reconciler]] = [ClaimBinder, VolumeBinder, ClaimProtection, VolumeProtection, ExpansionController]
