"""The attach/detach controller (SEMANTICS A1-A3) for volumes whose provisioner is also an ``Attacher``.

- A1 A volume is wanted on a node while a pod placed there uses it and is not
  terminated; each (volume, node) is recorded as a ``VolumeAttachment`` (named
  ``stowage-<sha256(volume, attacher, node)>``, as Kubernetes' ``csi-<sha256>``)
  whose ``status.attached`` says the backend did it. Detaches run before attaches.
- A2 A volume whose access modes have neither ReadWriteMany nor ReadOnlyMany is
  attached to one node at a time; a pod on a second node gets Warning
  ``FailedAttachVolume`` ``Multi-Attach error for volume "X" Volume is already
  used by pod(s) a, b`` until the first attachment is gone.
- A3 A volume no longer wanted on a node is detached once the node stops
  listing it in ``status.volumesInUse``; while it does, the detach waits, except
  on a node that is not Ready, where it is forced after ``max_wait_for_unmount``
  (6 minutes), and on a node with the ``node.kubernetes.io/out-of-service``
  NoExecute taint, where it is forced at once. A healthy node never loses a
  mounted volume.

Volumes without an attacher (local pool volumes, hostPath, NFS) are reached by
the node itself and get no VolumeAttachment, as non-attachable volumes in
Kubernetes. ``calculate_changes`` is pure; the reconciler (one key per
PersistentVolume) applies its actions and sleeps until the next deadline.
"""
from __future__ import annotations

import copy
import datetime as dt
import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Mapping

import structlog

from provisioners import registry as provisioner_registry
from provisioners.base import ANN_PROVISIONED_BY, Attacher, secrets_available
from storage.api.conditions import is_true
from storage.api.ephemeral import claim_names
from storage.api.node_affinity import volume_in_use_on
from storage.api.taints import NO_EXECUTE, OUT_OF_SERVICE, node_taints
from storage.api.timestamps import format_time
from storage.controllers.base import Reconciler, Result, controller_options
from storage.controllers.owners import publish
from storage.controllers.secrets import store_config_map_reader, store_secret_reader
from storage.errors import AlreadyExists, Conflict, NotFound

Obj = dict[str, Any]
log = structlog.get_logger(__name__)

DEFAULT_MAX_WAIT_FOR_UNMOUNT = 360.0
_SHARED_MODES = frozenset({"ReadWriteMany", "ReadOnlyMany"})


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


# In-tree attachable volume sources and the plugin (provisioner) name that attaches them, for static
# PVs an administrator wrote by hand (no provisioned-by annotation): Kubernetes' in-tree attachers.
IN_TREE_ATTACHERS: dict[str, str] = {
    "awsElasticBlockStore": "kubernetes.io/aws-ebs",
    "gcePersistentDisk": "kubernetes.io/gce-pd",
    "azureDisk": "kubernetes.io/azure-disk",
    "cinder": "kubernetes.io/cinder",
    "vsphereVolume": "kubernetes.io/vsphere-volume",
    "flexVolume": "kubernetes.io/flexvolume",
}


def attacher_name(pv: Obj) -> str | None:
    """The CSI driver or provisioner that made the volume; for a static in-tree cloud disk, the in-tree
    attacher of its source (AD1)."""
    spec = pv.get("spec") or {}
    candidates = [str(n) for n in ((spec.get("csi") or {}).get("driver"),
                                   (_meta(pv).get("annotations") or {}).get(ANN_PROVISIONED_BY),
                                   next((name for key, name in IN_TREE_ATTACHERS.items() if spec.get(key)), None))
                  if n]
    # The first one installed as an Attacher (a provisioner that only makes volumes does not attach them).
    return next((n for n in candidates if find_attacher(n) is not None), candidates[0] if candidates else None)


def find_attacher(name: str | None) -> Attacher | None:
    found = provisioner_registry.get(name) if name else None
    return found if isinstance(found, Attacher) else None


def attachment_name(pv_name: str, attacher: str, node: str) -> str:
    return "stowage-" + hashlib.sha256(f"{pv_name}{attacher}{node}".encode()).hexdigest()


def _not_running(statuses: list[Obj]) -> bool:
    return all(((s.get("state") or {}).get("terminated") or (s.get("state") or {}).get("waiting")) for s in statuses)


def pod_terminated(pod: Obj) -> bool:
    """Kubernetes' volumeutil.IsPodTerminated: finished, or being deleted with nothing running any more.
    A pod on a dead node keeps its last "running" status, so it keeps its volumes until it is gone."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return True
    return bool(_meta(pod).get("deletionTimestamp")) and all(
        _not_running(status.get(key) or []) for key in ("initContainerStatuses", "containerStatuses",
                                                        "ephemeralContainerStatuses"))


def _out_of_service(node: Obj) -> bool:
    return any(t.get("key") == OUT_OF_SERVICE and t.get("effect") == NO_EXECUTE for t in node_taints(node))


@dataclass(frozen=True)
class Snapshot:
    pv_name: str
    pv: Obj | None
    attacher: str | None  # the volume's attacher when one is installed; None: nothing to attach
    pods: list[Obj]  # pods whose claims are bound to the volume
    nodes: Mapping[str, Obj]
    attachments: list[Obj]  # this volume's VolumeAttachments
    undesired_since: Mapping[str, dt.datetime] = field(default_factory=dict)  # attachment -> since when unwanted


@dataclass(frozen=True)
class Attach:
    name: str
    node: str
    attacher: str


@dataclass(frozen=True)
class Detach:
    attachment: Obj
    reason: Literal["unmounted", "out-of-service", "timeout", "node-gone", "unwanted"]


@dataclass(frozen=True)
class MultiAttach:
    pod: Obj
    message: str


@dataclass
class Changes:
    detaches: list[Detach] = field(default_factory=list)
    attaches: list[Attach] = field(default_factory=list)
    errors: list[MultiAttach] = field(default_factory=list)
    waiting: dict[str, dt.datetime] = field(default_factory=dict)  # attachment -> since when it waits to detach
    next_check: dt.datetime | None = None


def multi_attach_message(pv_name: str, pod: Obj, holders: list[Obj]) -> str:
    """Kubernetes' reportMultiAttachError wording; pods of other namespaces are only counted."""
    namespace = _meta(pod).get("namespace") or "default"
    local = sorted(_meta(p).get("name", "") for p in holders if (_meta(p).get("namespace") or "default") == namespace)
    others = sum(1 for p in holders if (_meta(p).get("namespace") or "default") != namespace)
    if local and others:
        detail = f"Volume is already used by pod(s) {', '.join(local)} and {others} pod(s) in different namespaces"
    elif local:
        detail = f"Volume is already used by pod(s) {', '.join(local)}"
    elif others:
        detail = f"Volume is already used by {others} pod(s) in different namespaces"
    else:
        detail = "Volume is already exclusively attached to one node and can't be attached to another"
    return f'Multi-Attach error for volume "{pv_name}" {detail}'


def calculate_changes(snap: Snapshot, now: dt.datetime, max_wait: float) -> Changes:
    out = Changes()
    attacher = snap.attacher if snap.pv is not None else None
    wanted: dict[str, list[Obj]] = {}  # node -> pods there that use the volume
    for pod in snap.pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and not pod_terminated(pod):
            wanted.setdefault(node, []).append(pod)
    by_node = {(va.get("spec") or {}).get("nodeName", ""): va for va in snap.attachments}

    # A3 first: what is no longer wanted goes, as soon as it is safe (or forced).
    staying: dict[str, Obj] = {}
    for node_name, va in sorted(by_node.items()):
        name = _meta(va).get("name", "")
        if node_name in wanted and (va.get("spec") or {}).get("attacher") == attacher:
            staying[node_name] = va
            continue
        node = snap.nodes.get(node_name)
        since = snap.undesired_since.get(name, now)
        if node is None:
            out.detaches.append(Detach(va, "node-gone"))
        elif not volume_in_use_on(node, snap.pv_name):
            out.detaches.append(Detach(va, "unmounted" if node_name not in wanted else "unwanted"))
        elif _out_of_service(node):
            out.detaches.append(Detach(va, "out-of-service"))
        elif not is_true(node, "Ready") and (now - since).total_seconds() >= max_wait:
            out.detaches.append(Detach(va, "timeout"))
        else:
            staying[node_name] = va
            out.waiting[name] = since
            if not is_true(node, "Ready"):
                deadline = since + dt.timedelta(seconds=max_wait)
                out.next_check = deadline if out.next_check is None else min(out.next_check, deadline)
            # A healthy node that still mounts it: its next volumesInUse report brings the next look.

    if snap.pv is None or attacher is None:
        return out
    exclusive = not (_SHARED_MODES & set((snap.pv.get("spec") or {}).get("accessModes") or []))
    holders = set(staying)
    for node_name in sorted(wanted):
        va = staying.get(node_name)
        if va is not None:
            if not (va.get("status") or {}).get("attached"):
                out.attaches.append(Attach(_meta(va)["name"], node_name, attacher))  # finish or retry
            continue
        if exclusive and holders - {node_name}:
            users = [p for n in holders - {node_name} for p in wanted.get(n, [])]
            for pod in wanted[node_name]:
                out.errors.append(MultiAttach(pod, multi_attach_message(snap.pv_name, pod, users)))
            continue
        out.attaches.append(Attach(attachment_name(snap.pv_name, attacher, node_name), node_name, attacher))
        holders.add(node_name)
    return out


class AttachDetachReconciler(Reconciler):
    name = "attachdetach"
    primary = "persistentvolumes"
    # Each attach or detach waits on a cloud API for seconds; with 2 workers a burst of pods queues
    # behind them. Safe in parallel: a key is one PV (never on two workers at once), calculate_changes is
    # pure, the shared maps below are behind self._lock, and the attachers serialise per instance.
    workers = 8

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        options = controller_options(ctx)
        self.max_wait = options.max_wait_for_unmount
        self._lock = threading.Lock()
        self._undesired: dict[str, dt.datetime] = {}
        self._reported: set[tuple[str, str]] = set()  # (pod uid, message) already told

    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        return {"pods": self._pod_volumes, "persistentvolumeclaims": self._claim_volume,
                "volumeattachments": self._attachment_volume, "nodes": self._node_volumes}

    # -- keys
    def _pod_volumes(self, pod: Obj) -> list[str]:
        namespace = _meta(pod).get("namespace") or "default"
        names = []
        for claim_name in claim_names(pod):
            claim = self.ctx.cache.get("persistentvolumeclaims", namespace, claim_name)
            volume = ((claim or {}).get("spec") or {}).get("volumeName")
            if volume and self._attachable(volume):
                names.append(volume)
        return names

    def _claim_volume(self, claim: Obj) -> list[str]:
        volume = (claim.get("spec") or {}).get("volumeName")
        return [volume] if volume and self._attachable(volume) else []

    @staticmethod
    def _attachment_volume(va: Obj) -> list[str]:
        name = (((va.get("spec") or {}).get("source") or {}).get("persistentVolumeName"))
        return [name] if name else []

    def _node_volumes(self, node: Obj) -> list[str]:
        node_name = _meta(node).get("name")
        return [n for va in self.ctx.cache.list("volumeattachments") if (va.get("spec") or {}).get("nodeName") == node_name
                for n in self._attachment_volume(va)]

    def _attachable(self, pv_name: str) -> bool:
        pv = self.ctx.cache.get("persistentvolumes", "", pv_name)
        return pv is not None and find_attacher(attacher_name(pv)) is not None and self._attach_required(pv)

    def _attach_required(self, pv: Obj) -> bool:
        """A CSI volume whose driver's CSIDriver says ``attachRequired: false`` is never attached (CS7)."""
        driver = ((pv.get("spec") or {}).get("csi") or {}).get("driver")
        csi_driver = self.ctx.cache.get("csidrivers", "", driver) if driver else None
        return ((csi_driver or {}).get("spec") or {}).get("attachRequired") is not False

    # -- reconcile
    def _snapshot(self, pv_name: str) -> Snapshot | None:
        cache = self.ctx.cache
        pv = cache.get("persistentvolumes", "", pv_name)
        attacher = attacher_name(pv) if pv is not None else None
        if find_attacher(attacher) is None or (pv is not None and not self._attach_required(pv)):
            attacher = None
        attachments = [va for va in cache.list("volumeattachments")
                       if ((va.get("spec") or {}).get("source") or {}).get("persistentVolumeName") == pv_name
                       and find_attacher((va.get("spec") or {}).get("attacher")) is not None]
        if attacher is None and not attachments:
            return None  # the common case: a volume the node reaches by itself
        ref = ((pv or {}).get("spec") or {}).get("claimRef") or {}
        pods = []
        if ref.get("name"):
            for pod in cache.list("pods", ref.get("namespace") or "default"):
                if ref["name"] in claim_names(pod):
                    claim = cache.get("persistentvolumeclaims", ref.get("namespace") or "default", ref["name"])
                    if ((claim or {}).get("spec") or {}).get("volumeName") == pv_name:
                        pods.append(pod)
        nodes = {_meta(n)["name"]: n for n in cache.list("nodes")}
        with self._lock:
            undesired = dict(self._undesired)
        return Snapshot(pv_name, pv, attacher, pods, nodes, attachments, undesired)

    def reconcile(self, key: str) -> Result:
        now = dt.datetime.now(dt.timezone.utc)
        snap = self._snapshot(key)
        if snap is None:
            return Result()
        changes = calculate_changes(snap, now, self.max_wait)
        with self._lock:
            for va in snap.attachments:
                name = _meta(va)["name"]
                if name not in changes.waiting:
                    self._undesired.pop(name, None)
            self._undesired.update(changes.waiting)
        pv = snap.pv or {"metadata": {"name": key}}
        for detach in changes.detaches:  # A1: detach before attach
            self._detach(pv, detach)
        for attach in changes.attaches:
            self._attach(pv, attach, snap)
        for error in changes.errors:
            self._report(error)
        if changes.next_check is None:
            return Result()
        return Result(requeue_after=max(0.05, (changes.next_check - now).total_seconds() + 0.05))

    def _detach(self, pv: Obj, detach: Detach) -> None:
        va = detach.attachment
        spec = va.get("spec") or {}
        attacher = find_attacher(spec.get("attacher"))
        if attacher is None:
            return
        node = spec.get("nodeName", "")
        try:
            with secrets_available(store_secret_reader(self.ctx.store), store_config_map_reader(self.ctx.store)):
                attacher.detach(pv, node)
        except Exception as exc:
            self._set_status(va, detachError={"time": format_time(dt.datetime.now(dt.timezone.utc)), "message": str(exc)})
            raise
        try:
            self.ctx.store.delete("volumeattachments", "", _meta(va)["name"])
        except NotFound:
            pass
        forget = getattr(self.ctx.cache, "forget", None)
        if forget is not None:  # the next pass must not detach it again before its DELETED event arrives
            forget("volumeattachments", "", _meta(va)["name"])
        forced = detach.reason in ("out-of-service", "timeout")
        (log.warning if forced else log.info)("attachdetach.detached", volume=_meta(pv).get("name"), node=node,
                                              reason=detach.reason, forced=forced)

    def _attach(self, pv: Obj, attach: Attach, snap: Snapshot) -> None:
        attacher = find_attacher(attach.attacher)
        node = snap.nodes.get(attach.node)
        if attacher is None or node is None:
            return
        pv_name = _meta(pv)["name"]
        try:
            va = self.ctx.store.create("volumeattachments", {
                "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment", "metadata": {"name": attach.name},
                "spec": {"attacher": attach.attacher, "nodeName": attach.node,
                         "source": {"persistentVolumeName": pv_name}},
            })
        except AlreadyExists:
            va = self.ctx.store.get("volumeattachments", "", attach.name)
        publish(self.ctx.cache, "volumeattachments", va)
        users = [p for p in snap.pods if (p.get("spec") or {}).get("nodeName") == attach.node]
        try:
            with secrets_available(store_secret_reader(self.ctx.store), store_config_map_reader(self.ctx.store)):
                metadata = attacher.attach(pv, node)
        except Exception as exc:
            self._set_status(va, attached=False,
                             attachError={"time": format_time(dt.datetime.now(dt.timezone.utc)), "message": str(exc)})
            for pod in users:
                self.ctx.events.record(pod, "Warning", "FailedAttachVolume",
                                       f'AttachVolume.Attach failed for volume "{pv_name}" : {exc}')
            raise
        self._set_status(va, attached=True, attachmentMetadata=dict(metadata or {}), attachError=None)
        log.info("attachdetach.attached", volume=pv_name, node=attach.node)
        for pod in users:
            self.ctx.events.record(pod, "Normal", "SuccessfulAttachVolume",
                                   f'AttachVolume.Attach succeeded for volume "{pv_name}"')

    def _set_status(self, va: Obj, **fields: Any) -> None:
        for _attempt in range(5):
            try:
                current = copy.deepcopy(self.ctx.store.get("volumeattachments", "", _meta(va)["name"]))
            except NotFound:
                return
            status = current.setdefault("status", {})
            for key, value in fields.items():
                if value is None:
                    status.pop(key, None)
                else:
                    status[key] = value
            status.setdefault("attached", False)
            try:
                publish(self.ctx.cache, "volumeattachments", self.ctx.store.update("volumeattachments", current))
                return
            except Conflict:
                continue

    def _report(self, error: MultiAttach) -> None:
        key = (_meta(error.pod).get("uid", ""), error.message)
        with self._lock:
            if key in self._reported:
                return
            self._reported.add(key)
            if len(self._reported) > 10_000:
                self._reported.clear()
        self.ctx.events.record(error.pod, "Warning", "FailedAttachVolume", error.message)


RECONCILERS = [AttachDetachReconciler]
