"""RBD snapshots, restores and clones against the real one-node Ceph (docs/semantics.md RS1-RS10):
the SnapshotterContract with data written and read through the image, in both class spellings."""
from __future__ import annotations

import struct
import uuid
from typing import Any, Callable, Iterator

import pytest

from ceph_service import CephCluster
from provisioners.base import BACKUP_DRIVER, DataSource, ProvisionRequest, SnapshotRequest, secrets_available
from provisioners.rbd import (CLONE_SNAP_PREFIX, META_RETIRED, RbdProvisioner, image_name, parse_handle,
                              retired_name)
from provisioners.testing import SnapshotterContract, make_claim, pv_from_result
from rbd_support import (ADMIN_SECRET, CLUSTER_ID, CSI_SECRET, Images, config_map_reader, csi_class,  # noqa: F401
                         images, in_tree_class, rbd_pool, secret_reader)
from storage.errors import PermanentError, StowageError

MiB = 1 << 20
_LENGTH = struct.Struct(">Q")


def csi_snapshot_class_parameters() -> dict[str, str]:
    """As ceph-csi's snapshotclass.yaml."""
    return {"clusterID": CLUSTER_ID, "csi.storage.k8s.io/snapshotter-secret-name": CSI_SECRET[1],
            "csi.storage.k8s.io/snapshotter-secret-namespace": CSI_SECRET[0]}


def in_tree_snapshot_class_parameters(cluster: CephCluster) -> dict[str, str]:
    return {"monitors": cluster.monitors, "adminId": "admin", "adminSecretName": ADMIN_SECRET[1],
            "adminSecretNamespace": ADMIN_SECRET[0]}


def write_image(images: Images, pv: dict[str, Any], data: bytes) -> None:
    """A length-prefixed record at offset 0 of the PV's image (what a filesystem would hold, minus the fs)."""
    with images.rbd.Image(images.ioctx, pv["spec"]["rbd"]["image"]) as image:
        image.write(_LENGTH.pack(len(data)) + data, 0)
        image.flush()


def read_image(images: Images, pv: dict[str, Any]) -> bytes:
    with images.rbd.Image(images.ioctx, pv["spec"]["rbd"]["image"], read_only=True) as image:
        (length,) = _LENGTH.unpack(image.read(0, _LENGTH.size))
        return bytes(image.read(_LENGTH.size, length))


def snapshots_of(images: Images, image: str) -> list[str]:
    with images.rbd.Image(images.ioctx, image, read_only=True) as handle:
        return [s["name"] for s in handle.list_snaps()]


@pytest.fixture
def readers(ceph_cluster: CephCluster) -> Iterator[None]:
    """What the snapshot controller does around delete/status calls (they carry no request)."""
    with secrets_available(secret_reader(ceph_cluster), config_map_reader(ceph_cluster)):
        yield


class _Base(SnapshotterContract):
    @pytest.fixture
    def provisioner(self, readers: None) -> RbdProvisioner:
        return RbdProvisioner()

    @pytest.fixture
    def backend_count(self, images: Images) -> Callable[[str], int]:
        return images.count

    @pytest.fixture
    def snapshot_count(self, images: Images) -> Callable[[str], int]:
        def count(handle: str) -> int:
            pool, image_id, snap = parse_handle(handle)
            try:
                with images.rbd.Image(images.ioctx, image_id=image_id, read_only=True) as image:
                    return int(image.snap_exists(snap))
            except images.rbd.ImageNotFound:
                return 0
        return count

    @pytest.fixture
    def write_data(self, images: Images) -> Callable[[dict[str, Any], bytes], None]:
        return lambda pv, data: write_image(images, pv, data)

    @pytest.fixture
    def read_data(self, images: Images) -> Callable[[dict[str, Any]], bytes]:
        return lambda pv: read_image(images, pv)

    def _request(self, storage_class: dict[str, Any], size: str = "1Gi", **kw: Any) -> ProvisionRequest:
        kw.setdefault("secrets", secret_reader(self._cluster))
        kw.setdefault("config_maps", config_map_reader(self._cluster))
        return super()._request(storage_class, size, **kw)

    @pytest.fixture(autouse=True)
    def _remember(self, ceph_cluster: CephCluster) -> None:
        self._cluster = ceph_cluster


class TestRbdCsiSnapshotContract(_Base):
    """RS1-RS10 through the contract with ceph-csi's spelling (clusterID, snapshotter Secret)."""

    @pytest.fixture
    def storage_class(self, rbd_pool: str) -> dict[str, Any]:
        return csi_class()

    @pytest.fixture
    def snapshot_parameters(self) -> dict[str, str]:
        return csi_snapshot_class_parameters()


class TestRbdInTreeSnapshotContract(_Base):
    """RS1-RS10 through the contract with an in-tree class and monitors/admin* snapshot parameters."""

    @pytest.fixture
    def storage_class(self, ceph_cluster: CephCluster, rbd_pool: str) -> dict[str, Any]:
        return in_tree_class(ceph_cluster)

    @pytest.fixture
    def snapshot_parameters(self, ceph_cluster: CephCluster) -> dict[str, str]:
        return in_tree_snapshot_class_parameters(ceph_cluster)


# ---- focused tests -------------------------------------------------------------------

def _provision(cluster: CephCluster, storage_class: dict[str, Any], size: str = "64Mi",
               source: DataSource | None = None) -> tuple[ProvisionRequest, dict[str, Any]]:
    provisioner = RbdProvisioner()
    claim = make_claim(size, class_name=storage_class["metadata"]["name"])
    req = ProvisionRequest(volume_name=f"pvc-{claim['metadata']['uid']}", claim=claim, storage_class=storage_class,
                           secrets=secret_reader(cluster), config_maps=config_map_reader(cluster), data_source=source)
    result = provisioner.provision(req)
    assert result.status == "finished"
    return req, pv_from_result(provisioner, req, result)


def _snapshot(cluster: CephCluster, pv: dict[str, Any], name: str | None = None,
              parameters: dict[str, str] | None = None) -> Any:
    req = SnapshotRequest(name=name or f"snapcontent-{uuid.uuid4()}", pv=pv,
                          parameters=csi_snapshot_class_parameters() if parameters is None else parameters,
                          secrets=secret_reader(cluster), config_maps=config_map_reader(cluster))
    return RbdProvisioner().create_snapshot(req)


def _from_snapshot(snap: Any) -> DataSource:
    return DataSource(kind="VolumeSnapshot", driver="rbd.csi.ceph.com", snapshot_handle=snap.handle,
                      restore_size=snap.restore_size)


def test_snapshot_is_a_protected_rbd_snap_named_after_the_content(
        ceph_cluster: CephCluster, images: Images, readers: None) -> None:
    """RS1, RS2, RS4: `rbd snap create <image>@<content name>` + protect; the handle is <pool>/<image id>@<name>; the
    restore size is the image's size at the snapshot; asking again changes nothing."""
    _, pv = _provision(ceph_cluster, csi_class(), "48Mi")
    name = f"snapcontent-{uuid.uuid4()}"
    first = _snapshot(ceph_cluster, pv, name)
    again = _snapshot(ceph_cluster, pv, name)
    image = pv["spec"]["rbd"]["image"]
    assert first.ready and first.handle == again.handle and first.creation_time == again.creation_time
    assert first.restore_size == 48 * MiB
    pool, image_id, snap = parse_handle(first.handle)
    assert (pool, snap) == ("stowage-rbd", name)
    with images.rbd.Image(images.ioctx, image, read_only=True) as handle:
        assert handle.id() == image_id and handle.is_protected_snap(name)
    assert snapshots_of(images, image) == [name]
    status = RbdProvisioner().snapshot_status(first.handle, csi_snapshot_class_parameters())
    assert status is not None and status.ready and status.restore_size == 48 * MiB
    RbdProvisioner().delete_snapshot(first.handle, csi_snapshot_class_parameters())
    assert snapshots_of(images, image) == []
    assert RbdProvisioner().snapshot_status(first.handle, csi_snapshot_class_parameters()) is None
    RbdProvisioner().delete(pv)


def test_crash_between_snap_create_and_protect_is_finished_by_the_retry(
        ceph_cluster: CephCluster, images: Images, readers: None) -> None:
    """RS1: a snapshot cut but not yet protected (the process died in between) is protected by the retry; one
    snapshot exists."""
    _, pv = _provision(ceph_cluster, csi_class())
    name = f"snapcontent-{uuid.uuid4()}"
    image = pv["spec"]["rbd"]["image"]
    with images.rbd.Image(images.ioctx, image) as handle:
        handle.create_snap(name)
    snap = _snapshot(ceph_cluster, pv, name)
    with images.rbd.Image(images.ioctx, image, read_only=True) as handle:
        assert handle.is_protected_snap(name)
    assert snapshots_of(images, image) == [name] and snap.ready
    RbdProvisioner().delete_snapshot(snap.handle, csi_snapshot_class_parameters())
    RbdProvisioner().delete(pv)
    assert images.count(pv["metadata"]["name"]) == 0 and retired_name(pv["metadata"]["name"]) not in images.names()


def test_deleting_a_snapshot_with_an_unflattened_clone_flattens_the_clone_first(
        ceph_cluster: CephCluster, images: Images, readers: None) -> None:
    """RS5: a snapshot that still has a child (a restore a crash left before its flatten, or a clone someone
    made by hand) is deleted anyway: the children are flattened first and keep their data."""
    _, pv = _provision(ceph_cluster, csi_class())
    write_image(images, pv, b"parent data")
    snap = _snapshot(ceph_cluster, pv)
    _, _, snap_name = parse_handle(snap.handle)
    child = f"by-hand-{uuid.uuid4().hex[:8]}"
    images.rbd.RBD().clone(images.ioctx, pv["spec"]["rbd"]["image"], snap_name, images.ioctx, child, features=1)
    try:
        RbdProvisioner().delete_snapshot(snap.handle, csi_snapshot_class_parameters())
        assert snapshots_of(images, pv["spec"]["rbd"]["image"]) == []
        with images.rbd.Image(images.ioctx, child, read_only=True) as handle:
            with pytest.raises(images.rbd.ImageNotFound):
                handle.parent_info()  # no parent any more
        assert read_image(images, {"spec": {"rbd": {"image": child}}}) == b"parent data"
    finally:
        images.remove(child)
        RbdProvisioner().delete(pv)


def test_restore_is_flattened_and_grown_and_a_crash_before_the_flatten_is_finished_by_the_retry(
        ceph_cluster: CephCluster, images: Images, readers: None) -> None:
    """RS8: restore = clone of the snapshot into kubernetes-dynamic-<pv>, then flatten, then grow to the claim;
    provisioning again after a crash between clone and flatten finishes the same image."""
    _, pv = _provision(ceph_cluster, csi_class(), "32Mi")
    write_image(images, pv, b"snapshotted")
    snap = _snapshot(ceph_cluster, pv)
    provisioner = RbdProvisioner()
    claim = make_claim("40Mi", class_name="csi-rbd")
    req = ProvisionRequest(volume_name=f"pvc-{claim['metadata']['uid']}", claim=claim, storage_class=csi_class(),
                           secrets=secret_reader(ceph_cluster), config_maps=config_map_reader(ceph_cluster),
                           data_source=_from_snapshot(snap))
    # The "crash": the clone exists, nothing else happened yet.
    _, _, snap_name = parse_handle(snap.handle)
    images.rbd.RBD().clone(images.ioctx, pv["spec"]["rbd"]["image"], snap_name, images.ioctx,
                           image_name(req.volume_name), features=1)
    result = provisioner.provision(req)
    assert result.status == "finished" and result.capacity == "40Mi"
    restored = pv_from_result(provisioner, req, result)
    assert images.count(req.volume_name) == 1
    with images.rbd.Image(images.ioctx, image_name(req.volume_name), read_only=True) as handle:
        with pytest.raises(images.rbd.ImageNotFound):
            handle.parent_info()
        assert handle.size() == 40 * MiB
    assert read_image(images, restored) == b"snapshotted"
    provisioner.delete(restored)
    provisioner.delete_snapshot(snap.handle, csi_snapshot_class_parameters())
    provisioner.delete(pv)


def test_pv_deleted_while_snapshots_remain_retires_its_image_until_the_last_snapshot_goes(
        ceph_cluster: CephCluster, images: Images, readers: None) -> None:
    """RS7: deleting a PV whose image has snapshots renames it kubernetes-retired-<pv> (no longer counted as
    the volume); restores still work; deleting the last snapshot removes the image."""
    req, pv = _provision(ceph_cluster, csi_class())
    write_image(images, pv, b"keep me")
    snaps = [_snapshot(ceph_cluster, pv) for _ in range(2)]
    RbdProvisioner().delete(pv)
    RbdProvisioner().delete(pv)  # again: gone is success
    retired = retired_name(req.volume_name)
    assert images.count(req.volume_name) == 0 and retired in images.names()
    with images.rbd.Image(images.ioctx, retired, read_only=True) as handle:
        assert dict(handle.metadata_list())[META_RETIRED] == req.volume_name
    restore_req, restored = _provision(ceph_cluster, csi_class(), source=_from_snapshot(snaps[1]))
    assert read_image(images, restored) == b"keep me"
    RbdProvisioner().delete_snapshot(snaps[0].handle, csi_snapshot_class_parameters())
    assert retired in images.names()
    RbdProvisioner().delete_snapshot(snaps[1].handle, csi_snapshot_class_parameters())
    assert retired not in images.names()
    RbdProvisioner().delete_snapshot(snaps[1].handle, csi_snapshot_class_parameters())  # gone: success
    RbdProvisioner().delete(restored)


def test_clone_leaves_no_temporary_snapshot_and_is_independent(
        ceph_cluster: CephCluster, images: Images, readers: None) -> None:
    """RS10: a claim clone cuts stowage-clone-<new pv> on the source, clones, flattens and removes that snapshot;
    the source can be deleted right after."""
    _, source = _provision(ceph_cluster, in_tree_class(ceph_cluster), "16Mi")
    write_image(images, source, b"source bytes")
    clone_req, clone = _provision(ceph_cluster, in_tree_class(ceph_cluster), "16Mi",
                                  DataSource(kind="PersistentVolumeClaim", source_pv=source))
    assert snapshots_of(images, source["spec"]["rbd"]["image"]) == []
    assert not any(n.startswith(CLONE_SNAP_PREFIX) for n in snapshots_of(images, clone["spec"]["rbd"]["image"]))
    RbdProvisioner().delete(source)
    assert image_name(clone_req.volume_name) in images.names()
    assert read_image(images, clone) == b"source bytes"
    RbdProvisioner().delete(clone)


@pytest.mark.parametrize("params, words", [
    ({**csi_snapshot_class_parameters(), "noSuchParameter": "x"}, ["noSuchParameter", "clusterID"]),
    ({"clusterID": CLUSTER_ID}, ["snapshotter-secret-name", "Required value"]),
    ({**csi_snapshot_class_parameters(), "clusterID": "nowhere"}, ["clusterID", "nowhere"]),
    ({**csi_snapshot_class_parameters(), "pool": "other-pool"}, ["pool", "other-pool"]),
    ({"adminSecretName": "x"}, ["adminSecretName", "monitors"]),
])
def test_bad_snapshot_class_parameters_are_refused_and_nothing_is_cut(
        ceph_cluster: CephCluster, images: Images, readers: None, params: dict[str, str], words: list[str]) -> None:
    """RS3: unknown parameters, a missing snapshotter Secret, an unknown clusterID, another pool: PermanentError
    naming the parameter; no snapshot is made."""
    _, pv = _provision(ceph_cluster, csi_class())
    try:
        with pytest.raises(PermanentError) as info:
            _snapshot(ceph_cluster, pv, parameters=params)
        for word in words:
            assert word in str(info.value)
        assert ceph_cluster.admin_key not in str(info.value)
        assert snapshots_of(images, pv["spec"]["rbd"]["image"]) == []
    finally:
        RbdProvisioner().delete(pv)


def test_delete_or_status_without_a_cluster_location_is_refused(readers: None) -> None:
    """RS3: a handle alone does not say which cluster: the class must (clusterID or monitors)."""
    with pytest.raises(PermanentError) as info:
        RbdProvisioner().delete_snapshot("stowage-rbd/abc123@snap", {})
    assert "clusterID" in str(info.value)
    with pytest.raises(PermanentError) as info:
        RbdProvisioner().snapshot_status("not a handle", csi_snapshot_class_parameters())
    assert "not an rbd snapshot handle" in str(info.value)


def test_foreign_sources_are_refused_and_nothing_is_created(
        ceph_cluster: CephCluster, images: Images, readers: None) -> None:
    """RS9: another driver's snapshot, a backup, a non-rbd PV, a format 1 class: PermanentError naming
    what cannot be done; no image is created."""
    _, pv = _provision(ceph_cluster, csi_class())
    snap = _snapshot(ceph_cluster, pv)
    cases = [
        (csi_class(), DataSource(kind="VolumeSnapshot", driver="ebs.csi.aws.com", snapshot_handle="snap-1"), "ebs.csi.aws.com"),
        (csi_class(), DataSource(kind="VolumeSnapshot", driver=BACKUP_DRIVER, snapshot_handle="s3://b/p#x"), BACKUP_DRIVER),
        (csi_class(), DataSource(kind="PersistentVolumeClaim",
                                 source_pv={"metadata": {"name": "pv-nfs"}, "spec": {"nfs": {"server": "x", "path": "/"}}}),
         "not an rbd volume"),
        (in_tree_class(ceph_cluster, imageFormat="1", imageFeatures=""), _from_snapshot(snap), "image format 2"),
    ]
    try:
        for storage_class, source, words in cases:
            claim = make_claim("16Mi", class_name=storage_class["metadata"]["name"])
            req = ProvisionRequest(volume_name=f"pvc-{claim['metadata']['uid']}", claim=claim,
                                   storage_class=storage_class, secrets=secret_reader(ceph_cluster),
                                   config_maps=config_map_reader(ceph_cluster), data_source=source)
            with pytest.raises(StowageError) as info:
                RbdProvisioner().provision(req)
            assert words in str(info.value)
            assert images.count(req.volume_name) == 0
    finally:
        RbdProvisioner().delete_snapshot(snap.handle, csi_snapshot_class_parameters())
        RbdProvisioner().delete(pv)
