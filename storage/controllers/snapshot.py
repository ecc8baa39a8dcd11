"""The snapshot controller (SEMANTICS VS20-VS49): Kubernetes' common snapshot-controller and the
csi-snapshotter sidecar of kubernetes-csi/external-snapshotter v8 in one process.

Two reconcilers share this module:

- ``SnapshotReconciler`` (key: a VolumeSnapshot) binds a snapshot to its content: it creates the
  content ``snapcontent-<snapshot uid>`` of a dynamic snapshot (class given, or the default class whose
  driver matches the volume's), binds a pre-provisioned one, copies the content's status up
  (boundVolumeSnapshotContentName, creationTime, readyToUse, restoreSize, error), keeps the
  protection finalizers, and on deletion hands the content over to its deletionPolicy.
- ``SnapshotContentReconciler`` (key: a VolumeSnapshotContent) is the sidecar: it asks the
  ``Snapshotter`` whose names contain the content's driver to cut, check or delete the backend
  snapshot and writes what it said into the content's status.

Each decision is a pure ``calculate_*_changes(view) -> list[action]`` (tested on its own); the
reconcilers only read the cache into a view and apply the actions with resourceVersion
preconditions, so two replicas running at once merely conflict and retry.
"""
from __future__ import annotations

import copy
import datetime as dt
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Iterable, Literal

import structlog

from provisioners import registry as provisioner_registry
from provisioners.base import (
    ANN_PROVISIONED_BY, BACKUP_DRIVER, SecretReader, SnapshotRequest, SnapshotResult, Snapshotter, secrets_available,
)
from storage.api.quantity import format_quantity
from storage.api.timestamps import format_time
from storage.controllers.base import Reconciler, Result, split_key
from storage.controllers.owners import publish
from storage.controllers.secrets import store_config_map_reader, store_secret_reader
from storage.errors import AlreadyExists, Conflict, NotFound, PermanentError, TemporaryError

Obj = dict[str, Any]
log = structlog.get_logger(__name__)

GROUP = "snapshot.storage.k8s.io"
VS, VSC, VSCLASS = "volumesnapshots", "volumesnapshotcontents", "volumesnapshotclasses"
PVCS, PVS = "persistentvolumeclaims", "persistentvolumes"

ANN_DEFAULT_SNAPSHOT_CLASS = "snapshot.storage.kubernetes.io/is-default-class"
FIN_AS_SOURCE = "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection"
FIN_BOUND = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection"
FIN_CONTENT = "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection"
FIN_PVC = "snapshot.storage.kubernetes.io/pvc-as-source-protection"
ANN_BEING_DELETED = "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted"
ANN_BEING_CREATED = "snapshot.storage.kubernetes.io/volumesnapshot-being-created"
ANN_DELETION_SECRET_NAME = "snapshot.storage.kubernetes.io/deletion-secret-name"
ANN_DELETION_SECRET_NAMESPACE = "snapshot.storage.kubernetes.io/deletion-secret-namespace"
PARAM_SECRET_NAME = "csi.storage.k8s.io/snapshotter-secret-name"
PARAM_SECRET_NAMESPACE = "csi.storage.k8s.io/snapshotter-secret-namespace"

# Back-off of a snapshotter's TemporaryError per content (as the sidecar's exponential back-off).
BACKOFF_BASE, BACKOFF_MAX = 1.0, 300.0


def _meta(obj: Obj | None) -> Obj:
    return (obj or {}).get("metadata") or {}


def _ann(obj: Obj | None) -> dict[str, str]:
    return _meta(obj).get("annotations") or {}


def _finalizers(obj: Obj | None) -> list[str]:
    return list(_meta(obj).get("finalizers") or [])


def _deleting(obj: Obj | None) -> bool:
    return bool(_meta(obj).get("deletionTimestamp"))


def snapshot_key(snapshot: Obj) -> str:
    meta = _meta(snapshot)
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def dynamic_content_name(snapshot: Obj) -> str:
    """VS21: the content of a dynamic snapshot is named after the snapshot's uid."""
    return f"snapcontent-{_meta(snapshot).get('uid', '')}"


def snapshot_source(snapshot: Obj) -> tuple[str | None, str | None]:
    source = (snapshot.get("spec") or {}).get("source") or {}
    return source.get("persistentVolumeClaimName") or None, source.get("volumeSnapshotContentName") or None


def is_ready(snapshot: Obj | None) -> bool:
    return ((snapshot or {}).get("status") or {}).get("readyToUse") is True


def expected_content_name(snapshot: Obj) -> str | None:
    """The content this snapshot is (or will be) bound to."""
    bound = ((snapshot.get("status") or {}).get("boundVolumeSnapshotContentName")) or None
    claim, content = snapshot_source(snapshot)
    if content:
        return content
    if bound:
        return bound
    return dynamic_content_name(snapshot) if claim else None


def ref_matches(snapshot: Obj, content: Obj, *, allow_empty_uid: bool) -> bool:
    ref = (content.get("spec") or {}).get("volumeSnapshotRef") or {}
    meta = _meta(snapshot)
    if ref.get("name") != meta.get("name") or (ref.get("namespace") or "") != (meta.get("namespace") or ""):
        return False
    uid = ref.get("uid") or ""
    return uid == meta.get("uid") or (allow_empty_uid and not uid)


def claim_data_source(claim: Obj) -> Obj | None:
    """``dataSourceRef`` (which may name another namespace) or else ``dataSource``."""
    spec = claim.get("spec") or {}
    ref = spec.get("dataSourceRef") or spec.get("dataSource")
    return ref if isinstance(ref, dict) and ref.get("name") else None


def claim_restores_from(claim: Obj, namespace: str, name: str) -> bool:
    """The claim is still being provisioned from the VolumeSnapshot ``namespace/name`` (VS33)."""
    ref = claim_data_source(claim)
    if ref is None or ref.get("kind") != "VolumeSnapshot" or (ref.get("apiGroup") or "") != GROUP:
        return False
    source_ns = ref.get("namespace") or _meta(claim).get("namespace") or ""
    if ref.get("name") != name or source_ns != namespace or _deleting(claim):
        return False
    return ((claim.get("status") or {}).get("phase") or "Pending") == "Pending" and \
        not (claim.get("spec") or {}).get("volumeName")


def volume_drivers(pv: Obj | None) -> frozenset[str]:
    """The names a volume's driver goes by: its CSI driver, the provisioner that made it, and that
    provisioner's aliases (an in-tree name and its CSI name are one driver)."""
    if pv is None:
        return frozenset()
    names = {n for n in (((pv.get("spec") or {}).get("csi") or {}).get("driver"), _ann(pv).get(ANN_PROVISIONED_BY)) if n}
    for name in list(names):
        found = provisioner_registry.get(name)
        if found is not None:
            names |= set(found.names())
    return frozenset(names)


def volume_handle(pv: Obj) -> str:
    """VS21: a CSI volume's handle; other volumes are known by their PV name."""
    return ((pv.get("spec") or {}).get("csi") or {}).get("volumeHandle") or _meta(pv).get("name", "")


def resolve_secret_ref(parameters: dict[str, str], content_name: str, snapshot: Obj | None) -> tuple[str, str] | None:
    """The snapshotter Secret a class names, with the external-snapshotter's templates resolved.
    Both parameters or neither (VS40)."""
    name, namespace = parameters.get(PARAM_SECRET_NAME), parameters.get(PARAM_SECRET_NAMESPACE)
    if not name and not namespace:
        return None
    if not name or not namespace:
        raise PermanentError(f"either {PARAM_SECRET_NAME} and {PARAM_SECRET_NAMESPACE} both, or neither, "
                             "must be set in the VolumeSnapshotClass parameters")
    values = {"${volumesnapshotcontent.name}": content_name}
    if snapshot is not None:
        values["${volumesnapshot.namespace}"] = _meta(snapshot).get("namespace") or ""
        values["${volumesnapshot.name}"] = _meta(snapshot).get("name") or ""
    for token, value in values.items():
        name, namespace = name.replace(token, value), namespace.replace(token, value)
    if "${" in name or "${" in namespace:
        raise PermanentError("the snapshotter secret parameters use a template this controller does not know")
    return namespace, name


def restricted_secret_reader(reader: SecretReader, allowed: tuple[str, str] | None,
                             seen: list[str] | None = None) -> SecretReader:
    """A reader that hands out only the one Secret the class names (least privilege); the values it
    returned are collected in ``seen`` so error messages can be scrubbed of them (VS41)."""
    def read(namespace: str, name: str) -> dict[str, str] | None:
        if allowed is None or (namespace, name) != allowed:
            return None
        data = reader(namespace, name)
        if data is not None and seen is not None:
            seen.extend(v for v in data.values() if v and len(v) >= 4)
        return data

    return read


def scrub(message: str, secrets: Iterable[str]) -> str:
    for value in secrets:
        message = message.replace(value, "***")
    return message


def _rfc3339_from_ns(ns: int) -> str:
    return format_time(dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc))


# ============================================================== actions

@dataclass(frozen=True)
class Emit:
    target: Literal["snapshot", "content", "claim"]
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class SetSnapshotClass:
    name: str


@dataclass(frozen=True)
class EditFinalizers:
    target: Literal["snapshot", "content", "claim"]
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class CreateContent:
    body: Obj = field(compare=False)
    name: str = ""


@dataclass(frozen=True)
class BindContent:
    """Pre-provisioned: write the snapshot's uid (and class) into the content's volumeSnapshotRef."""
    uid: str
    class_name: str | None


@dataclass(frozen=True)
class SetSnapshotStatus:
    status: Obj = field(compare=False)


@dataclass(frozen=True)
class SnapshotError:
    """status.error + readyToUse false + a Warning event; nothing when the same message is already set."""
    reason: str
    message: str


@dataclass(frozen=True)
class AnnotateContent:
    key: str
    value: str | None  # None: remove


@dataclass(frozen=True)
class DeleteContent:
    name: str


@dataclass(frozen=True)
class CutSnapshot:
    """Call ``create_snapshot`` (dynamic content), again until ready."""


@dataclass(frozen=True)
class CheckSnapshot:
    """Call ``snapshot_status`` (pre-provisioned content)."""


@dataclass(frozen=True)
class DeleteBackendSnapshot:
    handle: str


Action = (Emit | SetSnapshotClass | EditFinalizers | CreateContent | BindContent | SetSnapshotStatus | SnapshotError
          | AnnotateContent | DeleteContent | CutSnapshot | CheckSnapshot | DeleteBackendSnapshot)


# ============================================================== the VolumeSnapshot side (pure)

@dataclass(frozen=True)
class SnapshotView:
    snapshot: Obj
    content: Obj | None = None  # the content named by expected_content_name, if it exists
    claim: Obj | None = None  # the source claim of a dynamic snapshot
    volume: Obj | None = None  # the PV that claim is bound to
    drivers: frozenset[str] = frozenset()  # volume_drivers(volume)
    classes: tuple[Obj, ...] = ()
    siblings: tuple[Obj, ...] = ()  # every VolumeSnapshot of the same namespace (this one included)
    restoring_claims: tuple[str, ...] = ()  # claims (ns/name) being provisioned from this snapshot


def default_snapshot_class(classes: Iterable[Obj], drivers: frozenset[str]) -> tuple[Obj | None, str]:
    """VS22: the one class annotated as default whose driver is the volume's; else why not."""
    found = [c for c in classes if _ann(c).get(ANN_DEFAULT_SNAPSHOT_CLASS) == "true" and c.get("driver") in drivers]
    if not found:
        return None, "cannot find default snapshot class"
    if len(found) > 1:
        return None, f"{len(found)} default snapshot classes were found"
    return found[0], ""


def status_from_content(snapshot: Obj, content: Obj) -> tuple[Obj, list[Emit]]:
    """VS26: the snapshot's status as the content's status says, and the events of the changes."""
    old = dict(snapshot.get("status") or {})
    new = dict(old)
    key = snapshot_key(snapshot)
    cstatus = content.get("status") or {}
    new["boundVolumeSnapshotContentName"] = _meta(content).get("name")
    if cstatus.get("creationTime") is not None:
        new["creationTime"] = _rfc3339_from_ns(int(cstatus["creationTime"]))
    new["readyToUse"] = cstatus.get("readyToUse") is True
    if cstatus.get("restoreSize") is not None:
        new["restoreSize"] = format_quantity(Fraction(int(cstatus["restoreSize"])), prefer_binary=True)
    events: list[Emit] = []
    if cstatus.get("error"):
        new["error"] = dict(cstatus["error"])
        if (old.get("error") or {}).get("message") != cstatus["error"].get("message"):
            events.append(Emit("snapshot", "Warning", "SnapshotCreationFailed", str(cstatus["error"].get("message") or "")))
    else:
        new.pop("error", None)
    if not old.get("creationTime") and new.get("creationTime"):
        events.append(Emit("snapshot", "Normal", "SnapshotCreated",
                           f"Snapshot {key} was successfully created by the CSI driver."))
    if old.get("readyToUse") is not True and new["readyToUse"]:
        events.append(Emit("snapshot", "Normal", "SnapshotReady", f"Snapshot {key} is ready to use."))
    return new, events


def _pvc_finalizer_changes(view: SnapshotView) -> list[Action]:
    """VS30: the source claim keeps pvc-as-source-protection while a snapshot of it is being cut."""
    claim_name, _ = snapshot_source(view.snapshot)
    if not claim_name or view.claim is None or FIN_PVC not in _finalizers(view.claim):
        return []
    busy = any(snapshot_source(s)[0] == claim_name and not is_ready(s) and not _deleting(s)
               and not ((s.get("status") or {}).get("error") and not (s.get("status") or {}).get("boundVolumeSnapshotContentName"))
               for s in view.siblings)
    return [] if busy else [EditFinalizers("claim", remove=(FIN_PVC,))]


def calculate_snapshot_changes(view: SnapshotView) -> list[Action]:
    snapshot = view.snapshot
    meta = _meta(snapshot)
    status = snapshot.get("status") or {}
    finalizers = _finalizers(snapshot)
    claim_name, static_name = snapshot_source(snapshot)
    content = view.content
    bound = content is not None and ref_matches(snapshot, content, allow_empty_uid=False)
    out: list[Action] = _pvc_finalizer_changes(view)

    if _deleting(snapshot):  # VS31-VS33
        if view.restoring_claims and bound:
            out.append(Emit("snapshot", "Warning", "SnapshotDeletePending", "Snapshot is being used to restore a PVC"))
            return out
        delete_content = bound and (content.get("spec") or {}).get("deletionPolicy") == "Delete"  # type: ignore[union-attr]
        if bound and _ann(content).get(ANN_BEING_DELETED) != "yes":
            out.append(AnnotateContent(ANN_BEING_DELETED, "yes"))
        if delete_content and not _deleting(content):
            out.append(DeleteContent(_meta(content)["name"]))  # type: ignore[index]
        remove = [FIN_AS_SOURCE] + ([] if delete_content else [FIN_BOUND])
        remove = [f for f in remove if f in finalizers]
        if remove:
            out.append(EditFinalizers("snapshot", remove=tuple(remove)))
        return out

    if bool(claim_name) == bool(static_name):
        out.append(SnapshotError("SnapshotValidationError",
                                 "Exactly one of PersistentVolumeClaimName and VolumeSnapshotContentName should be specified"))
        return out

    add = []
    if FIN_AS_SOURCE not in finalizers:
        add.append(FIN_AS_SOURCE)
    if bound and (content.get("spec") or {}).get("deletionPolicy") == "Delete" and FIN_BOUND not in finalizers:  # type: ignore[union-attr]
        add.append(FIN_BOUND)
    if add:
        out.append(EditFinalizers("snapshot", add=tuple(add)))

    if static_name:  # VS27, VS28: pre-provisioned
        if content is None:
            out.append(SnapshotError("SnapshotContentMissing", "VolumeSnapshotContent is missing"))
            return out
        if not ((content.get("spec") or {}).get("source") or {}).get("snapshotHandle"):
            out.append(SnapshotError("SnapshotContentMismatch",
                                     "VolumeSnapshotContent is dynamically provisioned while expecting a pre-provisioned one"))
            return out
        if not ref_matches(snapshot, content, allow_empty_uid=True):
            out.append(SnapshotError("SnapshotContentMisbound", f"VolumeSnapshotContent [{static_name}] is bound to a different snapshot"))
            return out
        if not bound:
            class_name = (snapshot.get("spec") or {}).get("volumeSnapshotClassName")
            out.append(BindContent(meta.get("uid", ""), class_name))
            content = copy.deepcopy(content)
            content["spec"]["volumeSnapshotRef"]["uid"] = meta.get("uid")
        return out + _status_actions(snapshot, content)

    # Dynamic (VS20-VS26).
    if content is not None:
        if ((content.get("spec") or {}).get("source") or {}).get("snapshotHandle"):
            out.append(SnapshotError("SnapshotHandleSet", f"Snapshot handle should not be set in content {snapshot_key(snapshot)} for dynamic provisioning"))
            return out
        if not bound:
            out.append(SnapshotError("SnapshotContentMisbound", f"VolumeSnapshotContent [{_meta(content)['name']}] is bound to a different snapshot"))
            return out
        return out + _status_actions(snapshot, content)
    if status.get("boundVolumeSnapshotContentName") and is_ready(snapshot):
        out.append(SnapshotError("SnapshotContentMissing", "VolumeSnapshotContent is missing"))
        return out

    fail = "SnapshotContentCreationFailed"
    prefix = "Failed to create snapshot content with error "
    claim = view.claim
    if claim is None:
        out.append(SnapshotError(fail, prefix + f'persistentvolumeclaim "{claim_name}" not found'))
        return out
    if _deleting(claim):
        out.append(SnapshotError(fail, prefix + f"cannot take a snapshot of claim {claim_name}: it is being deleted"))
        return out
    volume = view.volume
    if (claim.get("status") or {}).get("phase") != "Bound" or volume is None or \
            ((volume.get("spec") or {}).get("claimRef") or {}).get("uid") != _meta(claim).get("uid"):
        out.append(SnapshotError(fail, prefix + f"the PVC {claim_name} is not yet bound to a PV, will not attempt to take a snapshot"))
        return out
    class_name = (snapshot.get("spec") or {}).get("volumeSnapshotClassName")
    if not class_name:
        chosen, why = default_snapshot_class(view.classes, view.drivers)
        if chosen is None:
            out.append(SnapshotError(fail, prefix + f"failed to take snapshot {meta.get('name')} without a snapshot class: {why}"))
            return out
        out.append(SetSnapshotClass(_meta(chosen)["name"]))  # VS22; the write requeues us
        return out
    klass = next((c for c in view.classes if _meta(c).get("name") == class_name), None)
    if klass is None:
        out.append(SnapshotError(fail, prefix + f'volumesnapshotclass.snapshot.storage.k8s.io "{class_name}" not found'))
        return out
    driver = klass.get("driver") or ""
    if driver != BACKUP_DRIVER and driver not in view.drivers:
        out.append(SnapshotError(fail, prefix + f'the driver "{driver}" of VolumeSnapshotClass "{class_name}" does not '
                                 f"handle the volume {_meta(volume).get('name')} (its driver: "
                                 f"{', '.join(sorted(view.drivers)) or 'none'})"))
        return out
    if FIN_PVC not in _finalizers(claim):
        out.append(EditFinalizers("claim", add=(FIN_PVC,)))  # VS30: before anything is cut
    name = dynamic_content_name(snapshot)
    body: Obj = {
        "apiVersion": f"{GROUP}/v1", "kind": "VolumeSnapshotContent",
        "metadata": {"name": name},
        "spec": {
            "volumeSnapshotRef": {"kind": "VolumeSnapshot", "apiVersion": f"{GROUP}/v1",
                                  "namespace": meta.get("namespace") or "", "name": meta.get("name"),
                                  "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")},
            "deletionPolicy": klass.get("deletionPolicy") or "Delete",
            "driver": driver,
            "volumeSnapshotClassName": class_name,
            "source": {"volumeHandle": volume_handle(volume)},
            "sourceVolumeMode": (volume.get("spec") or {}).get("volumeMode") or "Filesystem",
        },
    }
    try:
        secret = resolve_secret_ref(dict(klass.get("parameters") or {}), name, snapshot)
    except PermanentError as exc:
        out.append(SnapshotError(fail, prefix + str(exc)))
        return out
    if secret is not None:  # VS40: so deletion finds the credentials even after the class is gone
        body["metadata"]["annotations"] = {ANN_DELETION_SECRET_NAMESPACE: secret[0], ANN_DELETION_SECRET_NAME: secret[1]}
    out.append(CreateContent(body, name))
    out.append(Emit("snapshot", "Normal", "CreatingSnapshot",
                    f"Waiting for a snapshot {snapshot_key(snapshot)} to be created by the CSI driver."))
    out += _status_actions(snapshot, body)
    return out


def _status_actions(snapshot: Obj, content: Obj) -> list[Action]:
    new, events = status_from_content(snapshot, content)
    out: list[Action] = []
    if new != (snapshot.get("status") or {}):
        out.append(SetSnapshotStatus(new))
        out += events
    return out


# ============================================================== the VolumeSnapshotContent side (pure)

@dataclass(frozen=True)
class ContentView:
    content: Obj
    snapshot: Obj | None = None  # the VolumeSnapshot its volumeSnapshotRef names (same name and namespace)


def _bound_snapshot_alive(view: ContentView) -> bool:
    ref = (view.content.get("spec") or {}).get("volumeSnapshotRef") or {}
    return view.snapshot is not None and bool(ref.get("uid")) and _meta(view.snapshot).get("uid") == ref.get("uid") \
        and not _deleting(view.snapshot)


def should_delete(view: ContentView) -> bool:
    """VS34: a content being deleted goes once nothing bound still needs it: its snapshot is being (or
    has been) deleted, or it was never bound."""
    content = view.content
    if not _deleting(content):
        return False
    ref = (content.get("spec") or {}).get("volumeSnapshotRef") or {}
    if not ref.get("uid") or _ann(content).get(ANN_BEING_DELETED) == "yes":
        return True
    return not _bound_snapshot_alive(view)


def calculate_content_changes(view: ContentView) -> list[Action]:
    content = view.content
    spec = content.get("spec") or {}
    source = spec.get("source") or {}
    status = content.get("status") or {}
    ref = spec.get("volumeSnapshotRef") or {}
    out: list[Action] = []
    if bool(source.get("volumeHandle")) == bool(source.get("snapshotHandle")):
        return [Emit("content", "Warning", "ContentValidationError",
                     "Exactly one of VolumeHandle and SnapshotHandle should be specified")]
    if _deleting(content):
        if not should_delete(view):
            return out  # VS35: a bound snapshot still uses it; its deletion brings us back
        if spec.get("deletionPolicy") == "Delete" and not status.get("snapshotHandle") and source.get("volumeHandle") \
                and _ann(content).get(ANN_BEING_CREATED) == "yes" and not status.get("error"):
            # VS37: asked for, never answered: ask again (by the same name) to learn the handle, so the
            # backend snapshot is deleted instead of leaked.
            return [CutSnapshot()]
        if spec.get("deletionPolicy") == "Delete" and status.get("snapshotHandle"):
            out.append(DeleteBackendSnapshot(status["snapshotHandle"]))
        if FIN_CONTENT in _finalizers(content):
            out.append(EditFinalizers("content", remove=(FIN_CONTENT,)))
        return out
    if ref.get("uid") and FIN_CONTENT not in _finalizers(content):
        out.append(EditFinalizers("content", add=(FIN_CONTENT,)))
    snapshot = view.snapshot
    if snapshot is not None and _meta(snapshot).get("uid") == ref.get("uid") and _deleting(snapshot) \
            and _ann(content).get(ANN_BEING_DELETED) != "yes":
        out.append(AnnotateContent(ANN_BEING_DELETED, "yes"))
    if status.get("readyToUse") is True or status.get("error"):
        return out  # VS38: ready, or failed for good (a new snapshot object is the retry)
    if source.get("volumeHandle"):
        if ref.get("uid"):
            out.append(CutSnapshot())
    else:
        out.append(CheckSnapshot())
    return out


# ============================================================== effects

class _Effects:
    def _write(self, resource: str, obj: Obj) -> Obj:
        try:
            saved = self.ctx.store.update(resource, obj)  # type: ignore[attr-defined]
        except Conflict:
            meta = _meta(obj)
            try:
                publish(self.ctx.cache, resource, self.ctx.store.get(resource, meta.get("namespace") or "", meta["name"]))  # type: ignore[attr-defined]
            except NotFound:
                pass
            raise
        return publish(self.ctx.cache, resource, saved)  # type: ignore[attr-defined]

    def _edit_finalizers(self, resource: str, obj: Obj, add: tuple[str, ...], remove: tuple[str, ...]) -> Obj:
        updated = copy.deepcopy(obj)
        meta = updated.setdefault("metadata", {})
        current = [f for f in meta.get("finalizers") or [] if f not in remove]
        current += [f for f in add if f not in current]
        if current == list(meta.get("finalizers") or []):
            return obj
        meta["finalizers"] = current
        return self._write(resource, updated)

    def _annotate(self, resource: str, obj: Obj, key: str, value: str | None) -> Obj:
        updated = copy.deepcopy(obj)
        annotations = updated.setdefault("metadata", {}).setdefault("annotations", {})
        if annotations.get(key) == value:
            return obj
        if value is None:
            if key not in annotations:
                return obj
            annotations.pop(key)
        else:
            annotations[key] = value
        return self._write(resource, updated)


def _cache_list(cache: Any, resource: str, namespace: str | None = None) -> list[Obj]:
    return list(cache.list(resource, namespace))


class SnapshotReconciler(_Effects, Reconciler):
    """The common snapshot controller: one key per VolumeSnapshot."""

    name = "snapshot-controller"
    primary = VS

    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        return {VSC: self._keys_for_content, PVCS: self._keys_for_claim, VSCLASS: self._keys_for_class,
                PVS: self._keys_for_volume}

    @staticmethod
    def _keys_for_content(content: Obj) -> list[str]:
        ref = (content.get("spec") or {}).get("volumeSnapshotRef") or {}
        return [f"{ref.get('namespace') or ''}/{ref['name']}"] if ref.get("name") else []

    def _keys_for_claim(self, claim: Obj) -> list[str]:
        namespace = _meta(claim).get("namespace") or ""
        keys = [snapshot_key(s) for s in _cache_list(self.ctx.cache, VS, namespace)
                if snapshot_source(s)[0] == _meta(claim).get("name")]
        ref = claim_data_source(claim)
        if ref is not None and ref.get("kind") == "VolumeSnapshot":
            keys.append(f"{ref.get('namespace') or namespace}/{ref['name']}")
        return keys

    def _keys_for_class(self, _klass: Obj) -> list[str]:
        return [snapshot_key(s) for s in _cache_list(self.ctx.cache, VS) if not is_ready(s)]

    def _keys_for_volume(self, volume: Obj) -> list[str]:
        ref = (volume.get("spec") or {}).get("claimRef") or {}
        if not ref.get("name"):
            return []
        return [snapshot_key(s) for s in _cache_list(self.ctx.cache, VS, ref.get("namespace") or "")
                if snapshot_source(s)[0] == ref["name"] and not is_ready(s)]

    def view(self, snapshot: Obj) -> SnapshotView:
        cache = self.ctx.cache
        namespace = _meta(snapshot).get("namespace") or ""
        content_name = expected_content_name(snapshot)
        content = cache.get(VSC, "", content_name) if content_name else None
        claim_name, _ = snapshot_source(snapshot)
        claim = cache.get(PVCS, namespace, claim_name) if claim_name else None
        volume_name = ((claim or {}).get("spec") or {}).get("volumeName")
        volume = cache.get(PVS, "", volume_name) if volume_name else None
        name = _meta(snapshot).get("name") or ""
        restoring = tuple(sorted(f"{_meta(c).get('namespace')}/{_meta(c).get('name')}" for c in _cache_list(cache, PVCS)
                                 if claim_restores_from(c, namespace, name)))
        return SnapshotView(snapshot=snapshot, content=content, claim=claim, volume=volume,
                            drivers=volume_drivers(volume), classes=tuple(_cache_list(cache, VSCLASS)),
                            siblings=tuple(_cache_list(cache, VS, namespace)), restoring_claims=restoring)

    def reconcile(self, key: str) -> Result:
        namespace, name = split_key(key)
        snapshot = self.ctx.cache.get(VS, namespace, name)
        if snapshot is None:
            return Result()
        view = self.view(snapshot)
        actions = calculate_snapshot_changes(view)
        self.apply(view, actions)
        return Result()

    def apply(self, view: SnapshotView, actions: list[Action]) -> None:
        snapshot, claim = view.snapshot, view.claim
        content = view.content
        for action in actions:
            if isinstance(action, EditFinalizers):
                if action.target == "snapshot":
                    snapshot = self._edit_finalizers(VS, snapshot, action.add, action.remove)
                elif action.target == "claim" and claim is not None:
                    claim = self._edit_finalizers(PVCS, claim, action.add, action.remove)
            elif isinstance(action, SetSnapshotClass):
                updated = copy.deepcopy(snapshot)
                updated.setdefault("spec", {})["volumeSnapshotClassName"] = action.name
                snapshot = self._write(VS, updated)
            elif isinstance(action, CreateContent):
                content = self._create_content(action.body)
            elif isinstance(action, BindContent) and content is not None:
                updated = copy.deepcopy(content)
                updated["spec"]["volumeSnapshotRef"]["uid"] = action.uid
                if action.class_name and not updated["spec"].get("volumeSnapshotClassName"):
                    updated["spec"]["volumeSnapshotClassName"] = action.class_name
                content = self._write(VSC, updated)
            elif isinstance(action, SetSnapshotStatus):
                updated = copy.deepcopy(snapshot)
                updated["status"] = action.status
                snapshot = self._write(VS, updated)
            elif isinstance(action, SnapshotError):
                snapshot = self._set_error(snapshot, action)
            elif isinstance(action, AnnotateContent) and content is not None:
                content = self._annotate(VSC, content, action.key, action.value)
            elif isinstance(action, DeleteContent):
                try:
                    self.ctx.store.delete(VSC, "", action.name)
                except NotFound:
                    pass
            elif isinstance(action, Emit):
                target = {"snapshot": snapshot, "content": content, "claim": claim}[action.target]
                if target is not None:
                    self.ctx.events.record(target, action.type, action.reason, action.message)

    def _create_content(self, body: Obj) -> Obj:
        try:
            created = self.ctx.store.create(VSC, body)
        except AlreadyExists:
            created = self.ctx.store.get(VSC, "", body["metadata"]["name"])  # another replica, or a retry
        log.info("snapshot_content_created", content=body["metadata"]["name"],
                 snapshot=f"{body['spec']['volumeSnapshotRef']['namespace']}/{body['spec']['volumeSnapshotRef']['name']}")
        return publish(self.ctx.cache, VSC, created)

    def _set_error(self, snapshot: Obj, action: SnapshotError) -> Obj:
        status = snapshot.get("status") or {}
        if (status.get("error") or {}).get("message") == action.message and status.get("readyToUse") is False:
            return snapshot
        updated = copy.deepcopy(snapshot)
        new_status = updated.setdefault("status", {})
        new_status["error"] = {"time": format_time(dt.datetime.now(dt.timezone.utc)), "message": action.message}
        new_status["readyToUse"] = False
        saved = self._write(VS, updated)
        self.ctx.events.record(saved, "Warning", action.reason, action.message)
        log.info("snapshot_error", snapshot=snapshot_key(snapshot), reason=action.reason, message=action.message)
        return saved


class SnapshotContentReconciler(_Effects, Reconciler):
    """The sidecar: one key per VolumeSnapshotContent; calls the backend."""

    name = "snapshot-content-controller"
    primary = VSC
    # Cutting a snapshot copies data or waits on a cloud API: several at once.
    workers = 4

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}

    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        return {VS: self._keys_for_snapshot}

    @staticmethod
    def _keys_for_snapshot(snapshot: Obj) -> list[str]:
        names = {expected_content_name(snapshot), (snapshot.get("status") or {}).get("boundVolumeSnapshotContentName")}
        return sorted(n for n in names if n)

    def view(self, content: Obj) -> ContentView:
        ref = (content.get("spec") or {}).get("volumeSnapshotRef") or {}
        snapshot = self.ctx.cache.get(VS, ref.get("namespace") or "", ref["name"]) if ref.get("name") else None
        return ContentView(content=content, snapshot=snapshot)

    def reconcile(self, key: str) -> Result:
        content = self.ctx.cache.get(VSC, "", key)
        if content is None:
            with self._lock:
                self._failures.pop(key, None)
            return Result()
        view = self.view(content)
        result = Result()
        for action in calculate_content_changes(view):
            if isinstance(action, EditFinalizers):
                content = self._edit_finalizers(VSC, content, action.add, action.remove)
            elif isinstance(action, AnnotateContent):
                content = self._annotate(VSC, content, action.key, action.value)
            elif isinstance(action, Emit):
                self.ctx.events.record(content, action.type, action.reason, action.message)
            elif isinstance(action, DeleteBackendSnapshot):
                content = self._delete_backend(content, action.handle)
            elif isinstance(action, CutSnapshot):
                content, result = self._cut(content, view.snapshot)
            elif isinstance(action, CheckSnapshot):
                content, result = self._check(content)
        return result

    # -- the backend
    def _snapshotter(self, driver: str) -> Snapshotter | None:
        found = provisioner_registry.get(driver)
        if isinstance(found, Snapshotter):
            return found
        if driver == BACKUP_DRIVER:
            return _backup_snapshotter()
        return None

    def _class_parameters(self, content: Obj) -> dict[str, str] | None:
        class_name = (content.get("spec") or {}).get("volumeSnapshotClassName")
        if not class_name:
            return {}
        klass = self.ctx.cache.get(VSCLASS, "", class_name)
        return dict(klass.get("parameters") or {}) if klass is not None else None

    def _secrets_for(self, content: Obj, parameters: dict[str, str], snapshot: Obj | None,
                     seen: list[str]) -> tuple[SecretReader, dict[str, str]]:
        """The reader of the class's one Secret, and the parameters with its templates resolved (what a
        driver passes to the reader)."""
        if _ann(content).get(ANN_DELETION_SECRET_NAME):  # resolved when the content was made (VS40)
            allowed: tuple[str, str] | None = (_ann(content).get(ANN_DELETION_SECRET_NAMESPACE, ""),
                                               _ann(content)[ANN_DELETION_SECRET_NAME])
        else:
            allowed = resolve_secret_ref(parameters, _meta(content)["name"], snapshot)
        if allowed is not None:
            parameters = {**parameters, PARAM_SECRET_NAMESPACE: allowed[0], PARAM_SECRET_NAME: allowed[1]}
        return restricted_secret_reader(store_secret_reader(self.ctx.store), allowed, seen), parameters

    def _backoff(self, key: str) -> float:
        with self._lock:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        return min(BACKOFF_MAX, BACKOFF_BASE * 2 ** n)

    def _forget(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _find_volume(self, content: Obj) -> Obj | None:
        handle = (((content.get("spec") or {}).get("source") or {}).get("volumeHandle")) or ""
        volume = self.ctx.cache.get(PVS, "", handle)
        if volume is not None and not ((volume.get("spec") or {}).get("csi") or {}).get("volumeHandle"):
            return volume
        driver = (content.get("spec") or {}).get("driver")
        for pv in _cache_list(self.ctx.cache, PVS):
            csi = (pv.get("spec") or {}).get("csi") or {}
            if csi.get("volumeHandle") == handle and (driver == BACKUP_DRIVER or csi.get("driver") == driver):
                return pv
        return volume

    def _set_content_status(self, content: Obj, **fields: Any) -> Obj:
        updated = copy.deepcopy(content)
        status = updated.setdefault("status", {})
        for key, value in fields.items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = value
        if updated == content:
            return content
        return self._write(VSC, updated)

    def _fail(self, content: Obj, message: str) -> Obj:
        """VS38: a permanent failure: status.error on the content (the snapshot copies it) and an event."""
        saved = self._set_content_status(content, error={"time": format_time(dt.datetime.now(dt.timezone.utc)),
                                                         "message": message}, readyToUse=False)
        saved = self._annotate(VSC, saved, ANN_BEING_CREATED, None)
        self.ctx.events.record(saved, "Warning", "SnapshotCreationFailed", message)
        log.warning("snapshot_failed", content=_meta(content)["name"], message=message)
        return saved

    def _record(self, content: Obj, result: SnapshotResult) -> tuple[Obj, Result]:
        saved = self._set_content_status(
            content, snapshotHandle=result.handle, creationTime=int(result.creation_time * 1e9) if result.creation_time
            else int(dt.datetime.now(dt.timezone.utc).timestamp() * 1e9), restoreSize=int(result.restore_size),
            readyToUse=bool(result.ready), error=None)
        # The backend answered: the snapshot it cut is recorded by its handle, nothing can leak now.
        saved = self._annotate(VSC, saved, ANN_BEING_CREATED, None)
        self._forget(_meta(content)["name"])
        if not result.ready:
            return saved, Result(requeue_after=max(0.1, result.retry_after))
        log.info("snapshot_ready", content=_meta(content)["name"], handle=result.handle)
        return saved, Result()

    def _call(self, content: Obj, snapshot: Obj | None, what: str,
              call: Callable[[Snapshotter, dict[str, str], SecretReader], SnapshotResult | None]) -> tuple[Obj, Result, SnapshotResult | None, bool]:
        """Run one backend call with the class's Secret; (content, result, answer, answered)."""
        name = _meta(content)["name"]
        driver = (content.get("spec") or {}).get("driver") or ""
        snapshotter = self._snapshotter(driver)
        if snapshotter is None:
            delay = self._backoff(name)
            self.ctx.events.record(content, "Warning", "SnapshotCreationFailed",
                                   f'no snapshotter is installed for driver "{driver}"; retrying in {delay:.0f}s')
            return content, Result(requeue_after=delay), None, False
        parameters = self._class_parameters(content)
        if parameters is None:
            return self._fail(content, f"Failed to {what}: volumesnapshotclass "
                                       f'"{content["spec"].get("volumeSnapshotClassName")}" not found'), Result(), None, False
        seen: list[str] = []
        try:
            reader, parameters = self._secrets_for(content, parameters, snapshot, seen)
            with secrets_available(reader, store_config_map_reader(self.ctx.store)):
                answer = call(snapshotter, parameters, reader)
        except TemporaryError as exc:
            delay = max(exc.delay, self._backoff(name))
            message = scrub(f"Failed to {what}: {exc}", seen)
            self.ctx.events.record(content, "Warning", "SnapshotCreationFailed", message)
            log.info("snapshot_retry", content=name, delay=delay, error=message)
            return content, Result(requeue_after=delay), None, False
        except PermanentError as exc:
            return self._fail(content, scrub(f"Failed to {what}: {exc}", seen)), Result(), None, False
        except Exception as exc:  # noqa: BLE001 -- scrubbed here, so no Secret reaches the manager's log
            # Neither temporary nor permanent by its type (a host command failed, a 4xx from a cloud, a
            # driver's bug): retried with back-off like the sidecar's non-final errors, and said so in an event.
            delay = self._backoff(name)
            message = scrub(f"Failed to {what}: {exc}", seen)
            self.ctx.events.record(content, "Warning", "SnapshotCreationFailed", message)
            return content, Result(requeue_after=delay), None, False
        return content, Result(), answer, True

    def _cut(self, content: Obj, snapshot: Obj | None) -> tuple[Obj, Result]:
        volume = self._find_volume(content)
        if volume is None:
            handle = content["spec"]["source"]["volumeHandle"]
            return self._fail(content, f"Failed to take snapshot of the volume {handle}: no such volume"), Result()
        if _ann(content).get(ANN_BEING_CREATED) != "yes":
            # Before the call: a crash while the backend works must not forget a snapshot was asked for.
            content = self._annotate(VSC, content, ANN_BEING_CREATED, "yes")
        name = _meta(content)["name"]

        def cut(snapshotter: Snapshotter, parameters: dict[str, str], reader: SecretReader) -> SnapshotResult:
            return snapshotter.create_snapshot(SnapshotRequest(
                name=name, pv=volume, parameters=parameters, secrets=reader,
                config_maps=store_config_map_reader(self.ctx.store)))

        content, result, answer, answered = self._call(content, snapshot, f"take snapshot of the volume {_meta(volume)['name']}", cut)
        if not answered or answer is None:
            return content, result
        return self._record(content, answer)

    def _check(self, content: Obj) -> tuple[Obj, Result]:
        handle = content["spec"]["source"]["snapshotHandle"]

        def check(snapshotter: Snapshotter, parameters: dict[str, str], _reader: SecretReader) -> SnapshotResult | None:
            return snapshotter.snapshot_status(handle, parameters)

        content, result, answer, answered = self._call(content, None, "check and update snapshot content", check)
        if not answered:
            return content, result
        if answer is None:
            return self._fail(content, f"Failed to check and update snapshot content: snapshot {handle} does not exist"), Result()
        return self._record(content, answer)

    def _delete_backend(self, content: Obj, handle: str) -> Obj:
        name = _meta(content)["name"]
        driver = (content.get("spec") or {}).get("driver") or ""
        snapshotter = self._snapshotter(driver)
        if snapshotter is None:
            raise TemporaryError(f'no snapshotter is installed for driver "{driver}" to delete {name}', delay=self._backoff(name))
        parameters = self._class_parameters(content) or {}
        if not parameters and _ann(content).get(ANN_DELETION_SECRET_NAME):
            parameters = {PARAM_SECRET_NAME: _ann(content)[ANN_DELETION_SECRET_NAME],
                          PARAM_SECRET_NAMESPACE: _ann(content).get(ANN_DELETION_SECRET_NAMESPACE, "")}
        seen: list[str] = []
        try:
            reader, parameters = self._secrets_for(content, parameters, None, seen)
            with secrets_available(reader, store_config_map_reader(self.ctx.store)):
                snapshotter.delete_snapshot(handle, parameters)
        except Exception as exc:  # noqa: BLE001 -- scrubbed before it is logged or recorded
            message = scrub(f"Failed to delete snapshot: {exc}", seen)
            self.ctx.events.record(content, "Warning", "SnapshotDeleteError", message)
            raise TemporaryError(message, delay=self._backoff(name)) from None
        self._forget(name)
        log.info("snapshot_deleted", content=name, handle=handle)
        # As the sidecar: the handle goes first, so a crash before the finalizer is removed never
        # deletes twice and never leaks.
        return self._set_content_status(content, snapshotHandle=None, readyToUse=None)


_backup_lock = threading.Lock()
_backup_instance: list[Snapshotter] = []


def _backup_snapshotter() -> Snapshotter | None:
    """provisioners/backup.py's BackupSnapshotter (SPEC14), made once, when it is installed."""
    with _backup_lock:
        if _backup_instance:
            return _backup_instance[0]
        try:
            from provisioners.backup import BackupSnapshotter  # type: ignore[import-not-found]
        except ImportError:
            return None
        instance = BackupSnapshotter()
        _backup_instance.append(instance)
        return instance


RECONCILERS: list[type[Reconciler]] = [SnapshotReconciler, SnapshotContentReconciler]
