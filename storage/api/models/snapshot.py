"""``snapshot.storage.k8s.io/v1`` kinds (the external-snapshotter's CRDs) and ``gateway.networking.k8s.io``'s
ReferenceGrant, which lets a claim in one namespace use a snapshot or claim in another as its data source."""
from __future__ import annotations

from storage.api.modelbase import WireModel
from storage.api.models.meta import ObjectReference, Resource, alias


class VolumeSnapshotSource(WireModel):
    persistent_volume_claim_name: str | None = None
    volume_snapshot_content_name: str | None = None


class VolumeSnapshotSpec(WireModel):
    source: VolumeSnapshotSource | None = None
    volume_snapshot_class_name: str | None = None


class VolumeSnapshotError(WireModel):
    time: str | None = None
    message: str | None = None


class VolumeSnapshotStatus(WireModel):
    bound_volume_snapshot_content_name: str | None = None
    creation_time: str | None = None
    ready_to_use: bool | None = None
    # x-kubernetes-int-or-string in the CRD: a quantity ("1Gi") or a plain byte count.
    restore_size: int | str | None = None
    error: VolumeSnapshotError | None = None
    volume_group_snapshot_name: str | None = None


class VolumeSnapshot(Resource):
    spec: VolumeSnapshotSpec | None = None
    status: VolumeSnapshotStatus | None = None


class VolumeSnapshotContentSource(WireModel):
    volume_handle: str | None = None
    snapshot_handle: str | None = None


class VolumeSnapshotContentSpec(WireModel):
    volume_snapshot_ref: ObjectReference | None = None
    deletion_policy: str | None = None
    driver: str | None = None
    volume_snapshot_class_name: str | None = None
    source: VolumeSnapshotContentSource | None = None
    source_volume_mode: str | None = None


class VolumeSnapshotContentStatus(WireModel):
    snapshot_handle: str | None = None
    # Nanoseconds since the epoch, as the external-snapshotter stores it.
    creation_time: int | None = None
    restore_size: int | None = None
    ready_to_use: bool | None = None
    error: VolumeSnapshotError | None = None
    volume_group_snapshot_handle: str | None = None


class VolumeSnapshotContent(Resource):
    spec: VolumeSnapshotContentSpec | None = None
    status: VolumeSnapshotContentStatus | None = None


class VolumeSnapshotClass(Resource):
    # Like a StorageClass, its fields sit at the top level.
    driver: str | None = None
    parameters: dict[str, str] | None = None
    deletion_policy: str | None = None


class ReferenceGrantFrom(WireModel):
    group: str | None = None
    kind: str | None = None
    namespace: str | None = None


class ReferenceGrantTo(WireModel):
    group: str | None = None
    kind: str | None = None
    name: str | None = None


class ReferenceGrantSpec(WireModel):
    from_: list[ReferenceGrantFrom] | None = alias("from")
    to: list[ReferenceGrantTo] | None = None


class ReferenceGrant(Resource):
    spec: ReferenceGrantSpec | None = None


__all__ = ["ReferenceGrant", "VolumeSnapshot", "VolumeSnapshotClass", "VolumeSnapshotContent"]
