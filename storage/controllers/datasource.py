"""A claim's ``dataSource``/``dataSourceRef`` resolved into ``provisioners.base.DataSource`` (SEMANTICS DS10-DS29).

``resolve_data_source`` is pure: it reads objects through a ``Cache`` and says what the provisioning
controller should do: provision from a source (``Resolved``), wait for the source with an event
(``Wait``: the source's change requeues the claim), or refuse until the claim changes (``Refuse``).
The messages follow the external-provisioner's where it has one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from provisioners.base import DataSource, Provisioner, Snapshotter
from storage.api.quantity import format_quantity, parse_quantity
from storage.controllers.base import Cache
from storage.controllers.snapshot import (
    ANN_DELETION_SECRET_NAME, ANN_DELETION_SECRET_NAMESPACE, PARAM_SECRET_NAME, PARAM_SECRET_NAMESPACE,
)

Obj = dict[str, Any]
SNAPSHOT_GROUP = "snapshot.storage.k8s.io"
GATEWAY_GROUP = "gateway.networking.k8s.io"


@dataclass(frozen=True)
class Resolved:
    source: DataSource
    # The snapshot or claim the data comes from (for events).
    origin: str


@dataclass(frozen=True)
class Wait:
    reason: str
    message: str
    type: Literal["Normal", "Warning"] = "Warning"


@dataclass(frozen=True)
class Refuse:
    reason: str
    message: str


Outcome = Resolved | Wait | Refuse | None


def _meta(obj: Obj | None) -> Obj:
    return (obj or {}).get("metadata") or {}


def data_source_ref(claim: Obj) -> Obj | None:
    """DS10: ``dataSourceRef`` wins over ``dataSource`` (the API server keeps them equal when both are local)."""
    spec = claim.get("spec") or {}
    ref = spec.get("dataSourceRef") or spec.get("dataSource")
    return ref if isinstance(ref, dict) and (ref.get("name") or ref.get("kind")) else None


def has_data_source(claim: Obj) -> bool:
    return data_source_ref(claim) is not None


def source_namespace(claim: Obj) -> str:
    ref = data_source_ref(claim) or {}
    return ref.get("namespace") or _meta(claim).get("namespace") or ""


def grant_allows(grants: list[Obj], claim_namespace: str, group: str, kind: str, name: str) -> bool:
    """DS14: a ReferenceGrant in the source's namespace lets PersistentVolumeClaims of the claim's
    namespace use ``group/kind`` objects (all of them, or the one named)."""
    for grant in grants:
        spec = grant.get("spec") or {}
        froms = spec.get("from") or []
        tos = spec.get("to") or []
        if not any((f.get("group") or "") == "" and f.get("kind") == "PersistentVolumeClaim"
                   and f.get("namespace") == claim_namespace for f in froms):
            continue
        if any((t.get("group") or "") == group and t.get("kind") == kind and (not t.get("name") or t.get("name") == name)
               for t in tos):
            return True
    return False


def _bytes(text: Any) -> int:
    try:
        value = parse_quantity(text)
    except (TypeError, ValueError):
        return 0
    return int(value) if value == int(value) else int(value) + 1


def _quantity(n: int) -> str:
    return format_quantity(n, prefer_binary=True)


def resolve_data_source(claim: Obj, storage_class: Obj, provisioner: Provisioner | None, cache: Cache,
                        requested: int) -> Outcome:
    """What to provision ``claim`` from; None when it names no data source."""
    ref = data_source_ref(claim)
    if ref is None:
        return None
    cmeta = _meta(claim)
    claim_ns = cmeta.get("namespace") or ""
    claim_key = f"{claim_ns}/{cmeta.get('name')}"
    kind, group, name = ref.get("kind") or "", ref.get("apiGroup") or "", ref.get("name") or ""
    namespace = ref.get("namespace") or claim_ns
    if (group, kind) not in (("", "PersistentVolumeClaim"), (SNAPSHOT_GROUP, "VolumeSnapshot")):
        # DS11: a populator may exist elsewhere; Stowage provisions nothing for it, and says so.
        shown = f"{group}/{kind}" if group else kind
        return Wait("ProvisioningFailed",
                    f'data source kind "{shown}" is not supported: Stowage fills a new volume only from a '
                    f"VolumeSnapshot ({SNAPSHOT_GROUP}) or a PersistentVolumeClaim; the claim stays Pending")
    if not name:
        return Refuse("ProvisioningFailed", f"the data source {kind} has no name")
    if namespace != claim_ns:  # DS13, DS14
        grants = [g for g in cache.list("referencegrants", namespace)]
        if not grant_allows(grants, claim_ns, group, kind, name):
            return Wait("ProvisioningFailed",
                        f"accessing {namespace}/{name} of {kind} dataSource from {claim_key} isn't allowed: "
                        f"no ReferenceGrant in namespace {namespace} allows it")
    if isinstance(provisioner, Provisioner) and not isinstance(provisioner, Snapshotter):
        return Refuse("ProvisioningFailed",
                      f"provisioner {provisioner.name} cannot fill a new volume from a data source ({kind} {name})")
    if kind == "VolumeSnapshot":
        return _from_snapshot(namespace, name, cache, requested)
    return _from_claim(claim, storage_class, provisioner, namespace, name, cache, requested)


def _from_snapshot(namespace: str, name: str, cache: Cache, requested: int) -> Outcome:
    snapshot = cache.get("volumesnapshots", namespace, name)
    if snapshot is None:  # DS15
        return Wait("ProvisioningFailed", f'error getting handle for DataSource Type VolumeSnapshot by Name {name}: '
                                          f'volumesnapshot.snapshot.storage.k8s.io "{name}" not found in namespace {namespace}')
    if _meta(snapshot).get("deletionTimestamp"):
        return Wait("ProvisioningFailed", f"snapshot {name} is currently being deleted")
    status = snapshot.get("status") or {}
    content_name = status.get("boundVolumeSnapshotContentName")
    if status.get("readyToUse") is not True or not content_name:
        return Wait("ProvisioningFailed", f"snapshot {name} is not Ready; waiting for it to be ready to use")
    content = cache.get("volumesnapshotcontents", "", content_name)
    ref = ((content or {}).get("spec") or {}).get("volumeSnapshotRef") or {}
    if content is None or ref.get("name") != name or (ref.get("namespace") or "") != namespace \
            or ref.get("uid") != _meta(snapshot).get("uid"):
        return Wait("ProvisioningFailed", f"snapshot content {content_name} is not bound to snapshot {namespace}/{name}")
    cstatus = content.get("status") or {}
    handle = cstatus.get("snapshotHandle") or ((content.get("spec") or {}).get("source") or {}).get("snapshotHandle")
    if not handle:
        return Wait("ProvisioningFailed", f"snapshot content {content_name} has no snapshot handle yet")
    restore_size = int(cstatus.get("restoreSize") or 0) or _bytes(status.get("restoreSize"))
    if requested < restore_size:  # DS16
        return Refuse("ProvisioningFailed",
                      f"requested volume size {requested} ({_quantity(requested)}) is less than the size "
                      f"{restore_size} ({_quantity(restore_size)}) for the source snapshot {name}")
    class_name = (content.get("spec") or {}).get("volumeSnapshotClassName")
    klass = cache.get("volumesnapshotclasses", "", class_name) if class_name else None
    parameters = dict((klass or {}).get("parameters") or {})
    annotations = (content.get("metadata") or {}).get("annotations") or {}
    if annotations.get(ANN_DELETION_SECRET_NAME):
        # The snapshot's Secret as resolved when it was cut (templates filled in; the class may be gone).
        parameters[PARAM_SECRET_NAME] = annotations[ANN_DELETION_SECRET_NAME]
        parameters[PARAM_SECRET_NAMESPACE] = annotations.get(ANN_DELETION_SECRET_NAMESPACE, "")
    return Resolved(DataSource(kind="VolumeSnapshot", driver=(content.get("spec") or {}).get("driver") or "",
                               snapshot_handle=handle, restore_size=restore_size, snapshot_parameters=parameters),
                    f"VolumeSnapshot {namespace}/{name}")


def _from_claim(claim: Obj, storage_class: Obj, provisioner: Provisioner | None, namespace: str, name: str,
                cache: Cache, requested: int) -> Outcome:
    source = cache.get("persistentvolumeclaims", namespace, name)
    if source is None:  # DS17
        return Wait("ProvisioningFailed", f'error getting PVC {namespace}/{name}: persistentvolumeclaim "{name}" not found')
    if _meta(source).get("deletionTimestamp"):
        return Wait("ProvisioningFailed", f"the PVC {name} is being deleted and cannot be cloned")
    if (source.get("status") or {}).get("phase") != "Bound" or not (source.get("spec") or {}).get("volumeName"):
        return Wait("ProvisioningFailed", f"the PVC {name} is not yet bound; waiting to clone it")
    volume = cache.get("persistentvolumes", "", source["spec"]["volumeName"])
    if volume is None or ((volume.get("spec") or {}).get("claimRef") or {}).get("uid") != _meta(source).get("uid"):
        return Wait("ProvisioningFailed", f"the volume of PVC {name} is not bound to it yet")
    source_class = cache.get("storageclasses", "", (source.get("spec") or {}).get("storageClassName") or "")
    source_provisioner = (source_class or {}).get("provisioner") or \
        ((volume.get("metadata") or {}).get("annotations") or {}).get("pv.kubernetes.io/provisioned-by") or ""
    target_provisioner = storage_class.get("provisioner") or ""
    names = provisioner.names() if provisioner is not None else frozenset({target_provisioner})
    if source_provisioner not in names:  # DS18
        return Refuse("ProvisioningFailed",
                      f"the source PVC and destination PVCs must use the same provisioner for cloning: the source "
                      f"{name} is provisioned by {source_provisioner or 'none'}, the new PVC by {target_provisioner}")
    source_mode = (source.get("spec") or {}).get("volumeMode") or "Filesystem"
    mode = (claim.get("spec") or {}).get("volumeMode") or "Filesystem"
    if source_mode != mode:
        return Refuse("ProvisioningFailed", f"the source PVC and destination PVCs must have the same volume mode for "
                                            f"cloning. Source is {source_mode}, but new PVC is {mode}")
    if provisioner is not None and not getattr(provisioner, "supports_clone", False):
        return Refuse("ProvisioningFailed", f"provisioner {provisioner.name} cannot clone volumes")
    capacity = _bytes(((volume.get("spec") or {}).get("capacity") or {}).get("storage"))
    if requested < capacity:  # DS16
        return Refuse("ProvisioningFailed",
                      f"requested volume size {requested} ({_quantity(requested)}) is less than the size "
                      f"{capacity} ({_quantity(capacity)}) for the source PVC {name}")
    return Resolved(DataSource(kind="PersistentVolumeClaim", driver=source_provisioner, source_pv=volume,
                               restore_size=capacity), f"PersistentVolumeClaim {namespace}/{name}")
