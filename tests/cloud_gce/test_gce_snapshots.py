"""GCE PD snapshots against the Compute Engine fake (docs/semantics.md GS1-GS7): the SnapshotterContract,
the PD CSI driver's VolumeSnapshotClass parameters, idempotency by name across a lost answer, states, restores."""
from __future__ import annotations

import uuid
from typing import Any, Callable

import pytest
from gce_fake import GceFake
from gce_support import ZONE, gce_node

from provisioners.base import BACKUP_DRIVER, DataSource, ProvisionRequest, SnapshotRequest
from provisioners.gce_pd import LABEL_CLUSTER, LABEL_SNAPSHOT, GcePdProvisioner
from provisioners.testing import SnapshotterContract, make_claim, pv_from_result
from storage.errors import PermanentError

GIB = 1 << 30


def sc(params: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "pd"}, "provisioner": "kubernetes.io/gce-pd",
            "parameters": {"type": "pd-ssd", "zone": ZONE} if params is None else params}


def request(cls: dict[str, Any], size: str = "10Gi", source: DataSource | None = None,
            node: dict[str, Any] | None = None) -> ProvisionRequest:
    claim = make_claim(size, class_name="pd")
    return ProvisionRequest(f"pvc-{claim['metadata']['uid']}", claim, cls, selected_node=node, data_source=source)


def volume(p: GcePdProvisioner, size: str = "10Gi") -> dict[str, Any]:
    req = request(sc(), size)
    result = p.provision(req)
    assert result.status == "finished", result.message
    return pv_from_result(p, req, result)


def snap_req(pv: dict[str, Any], params: dict[str, str] | None = None, name: str | None = None) -> SnapshotRequest:
    return SnapshotRequest(name=name or f"snapcontent-{uuid.uuid4()}", pv=pv, parameters=dict(params or {}))


def from_snapshot(p: GcePdProvisioner, handle: str) -> DataSource:
    return DataSource(kind="VolumeSnapshot", driver=p.name, snapshot_handle=handle, restore_size=10 * GIB)


class TestGcePdSnapshotContract(SnapshotterContract):
    """GS1-GS5 through the shared contract; the fake keeps no disk data, so the data checks skip."""

    @pytest.fixture
    def provisioner(self, gce_provisioner: GcePdProvisioner) -> GcePdProvisioner:
        return gce_provisioner

    @pytest.fixture
    def storage_class(self) -> dict[str, Any]:
        return {"metadata": {"name": "c"}, "provisioner": "kubernetes.io/gce-pd",
                "parameters": {"type": "pd-ssd", "zone": ZONE}}

    @pytest.fixture
    def backend_count(self, gce: GceFake) -> Callable[[str], int]:
        return lambda volume_name: gce.disk_names().count(volume_name)

    @pytest.fixture
    def snapshot_parameters(self) -> dict[str, str]:
        return {"storage-locations": "us-central1", "labels": "team=storage"}

    @pytest.fixture
    def snapshot_count(self, gce: GceFake) -> Callable[[str], int]:
        return lambda handle: gce.snapshot_names().count(handle.rsplit("/", 1)[-1])

    @pytest.fixture
    def write_data(self) -> Callable[[dict[str, Any], bytes], None]:
        pytest.skip("the Compute Engine fake keeps no disk data: contents cannot be written or read back")

    @pytest.fixture
    def read_data(self) -> Callable[[dict[str, Any]], bytes]:
        pytest.skip("the Compute Engine fake keeps no disk data: contents cannot be written or read back")


def test_snapshot_named_after_the_content_labelled_and_located(gce: GceFake, gce_provisioner: GcePdProvisioner) -> None:
    """GS1, GS2, GS3: snapshots.insert of the PV's disk named snapshot-<uid> (the PD CSI driver's name for
    snapcontent-<uid>), labelled with the cluster and content, in the class's storage location; handle
    projects/<p>/global/snapshots/<name>; restore size the disk's."""
    pv = volume(gce_provisioner, "20Gi")
    uid = str(uuid.uuid4())
    result = gce_provisioner.create_snapshot(snap_req(pv, {"storage-locations": "us-central1", "labels": "a=b"},
                                                      f"snapcontent-{uid}"))
    assert result.ready and result.restore_size == 20 * GIB
    assert result.handle == f"projects/{gce.project}/global/snapshots/snapshot-{uid}"
    snapshot = gce.snapshots[f"global/snapshots/snapshot-{uid}"]
    assert snapshot["sourceDisk"].endswith(f"zones/{ZONE}/disks/{pv['metadata']['name']}")
    assert snapshot["labels"]["a"] == "b" and snapshot["labels"][LABEL_CLUSTER] == "test-cluster"
    assert snapshot["labels"][LABEL_SNAPSHOT] == f"snapcontent-{uid}"
    assert snapshot["storageLocations"] == ["us-central1"]


def test_lost_insert_answer_finds_the_same_snapshot(gce: GceFake, gce_provisioner: GcePdProvisioner) -> None:
    """GS2: the insert reached Compute Engine but its answer was lost; a new provisioner asks again, and even
    when its look-up races the insert (404, then 409 on insert) it answers the one snapshot by its name."""
    pv = volume(gce_provisioner)
    req = snap_req(pv)
    gce_provisioner.create_snapshot(req)  # the first attempt, whose answer is "lost"
    gce.inject("GET", r"global/snapshots/snapshot-", 404, "notFound")  # the race: not seen yet
    again = GcePdProvisioner(project=gce.project, endpoint=gce.endpoint, zone=ZONE, cluster_id="test-cluster")
    result = again.create_snapshot(req)
    assert result.ready and gce.snapshot_names() == [GcePdProvisioner.snapshot_name(req.name)]
    assert sum(1 for m, p in gce.requests if m == "POST" and p.endswith("/global/snapshots")) == 2


def test_another_clusters_snapshot_of_that_name_is_refused(gce: GceFake, gce_provisioner: GcePdProvisioner) -> None:
    """GS2: a snapshot of that name made by another cluster is never adopted."""
    pv = volume(gce_provisioner)
    req = snap_req(pv)
    GcePdProvisioner(project=gce.project, endpoint=gce.endpoint, zone=ZONE, cluster_id="other").create_snapshot(req)
    with pytest.raises(PermanentError) as info:
        gce_provisioner.create_snapshot(req)
    assert "not made for" in str(info.value)


@pytest.mark.parametrize("params, words", [
    ({"noSuchParameter": "x"}, ["noSuchParameter", "storage-locations"]),
    ({"snapshot-type": "images"}, ["snapshot-type", "images"]),
    ({"labels": "Bad Label"}, ["labels"]),
    ({"storage-locations": "us,eu"}, ["storage-locations"]),
])
def test_bad_snapshot_class_parameters_are_refused(gce: GceFake, gce_provisioner: GcePdProvisioner,
                                                   params: dict[str, str], words: list[str]) -> None:
    """GS3: unknown parameters, image snapshots, bad labels, several locations: PermanentError, nothing made."""
    pv = volume(gce_provisioner)
    with pytest.raises(PermanentError) as info:
        gce_provisioner.create_snapshot(snap_req(pv, params))
    for word in words:
        assert word in str(info.value)
    assert gce.snapshot_names() == []


def test_creating_snapshot_is_not_ready_and_restore_waits(gce: GceFake, gce_provisioner: GcePdProvisioner) -> None:
    """GS4: CREATING/UPLOADING answer ready false and a restore from it in_progress (nothing created); READY is
    ready; FAILED is a PermanentError."""
    pv = volume(gce_provisioner)
    req = snap_req(pv)
    name = GcePdProvisioner.snapshot_name(req.name)
    first = gce_provisioner.create_snapshot(req)
    gce.set_snapshot_status(name, "UPLOADING")
    pending = gce_provisioner.create_snapshot(req)
    assert not pending.ready and "UPLOADING" in pending.message and pending.handle == first.handle
    restore = request(sc(), source=from_snapshot(gce_provisioner, first.handle))
    assert gce_provisioner.provision(restore).status == "in_progress"
    assert restore.volume_name not in gce.disk_names()
    gce.set_snapshot_status(name, "READY")
    assert gce_provisioner.provision(restore).status == "finished"
    gce.set_snapshot_status(name, "FAILED")
    with pytest.raises(PermanentError):
        gce_provisioner.create_snapshot(req)


def test_restore_is_at_least_the_snapshot_size_in_the_nodes_zone(gce: GceFake, gce_provisioner: GcePdProvisioner) -> None:
    """GS5: disks.insert with sourceSnapshot, sized to the larger of the claim and the snapshot (the fake, like
    GCE, refuses smaller), in the selected node's zone (snapshots are global); a retry answers the same disk,
    even once the snapshot is gone."""
    pv = volume(gce_provisioner, "30Gi")
    snap = gce_provisioner.create_snapshot(snap_req(pv))
    req = request(sc({"type": "pd-balanced"}), "10Gi", from_snapshot(gce_provisioner, snap.handle),
                  node=gce_node("node-b1", "us-central1-b"))
    result = gce_provisioner.provision(req)
    assert result.status == "finished" and result.capacity == "30Gi"
    disk = gce.disk(req.volume_name)
    assert disk is not None and disk["sourceSnapshot"].endswith(snap.handle) and "us-central1-b" in disk["zone"]
    gce_provisioner.delete_snapshot(snap.handle, {})
    again = gce_provisioner.provision(req)
    assert again.status == "finished" and again.source == result.source


def test_fake_refuses_a_disk_smaller_than_its_snapshot(gce: GceFake, gce_provisioner: GcePdProvisioner) -> None:
    """The fake rejects what Compute Engine rejects (so GS5's sizing is really tested)."""
    from google.api_core import exceptions as gexc
    from google.cloud import compute_v1

    pv = volume(gce_provisioner, "30Gi")
    snap = gce_provisioner.create_snapshot(snap_req(pv))
    clients = gce_provisioner._setup()
    disk = compute_v1.Disk(name="too-small", size_gb=10, source_snapshot=snap.handle,
                           type_=f"projects/{gce.project}/zones/{ZONE}/diskTypes/pd-ssd")
    with pytest.raises(gexc.BadRequest) as info:
        clients.disks.insert_unary(project=gce.project, zone=ZONE, disk_resource=disk)
    assert "smaller than the snapshot" in str(info.value)
    missing = compute_v1.Disk(name="no-source", size_gb=10, source_snapshot=f"projects/{gce.project}/global/snapshots/nope",
                              type_=f"projects/{gce.project}/zones/{ZONE}/diskTypes/pd-ssd")
    with pytest.raises(gexc.NotFound):
        clients.disks.insert_unary(project=gce.project, zone=ZONE, disk_resource=missing)


def test_clone_foreign_and_bad_sources_are_refused(gce: GceFake, gce_provisioner: GcePdProvisioner) -> None:
    """GS6, GS7: no claim clones; other drivers' (and backups') snapshots, a malformed or other project's
    handle: PermanentError naming what; nothing created."""
    pv = volume(gce_provisioner)
    cases = [
        (DataSource(kind="PersistentVolumeClaim", source_pv=pv), "does not clone"),
        (DataSource(kind="VolumeSnapshot", driver="ebs.csi.aws.com", snapshot_handle="snap-1"), "ebs.csi.aws.com"),
        (DataSource(kind="VolumeSnapshot", driver=BACKUP_DRIVER, snapshot_handle="s3://b#x"), BACKUP_DRIVER),
        (DataSource(kind="VolumeSnapshot", driver=gce_provisioner.name, snapshot_handle="snap"), "not a GCE snapshot"),
        (DataSource(kind="VolumeSnapshot", driver=gce_provisioner.name,
                    snapshot_handle="projects/elsewhere/global/snapshots/s"), "elsewhere"),
    ]
    for source, words in cases:
        req = request(sc(), source=source)
        with pytest.raises(PermanentError) as info:
            gce_provisioner.provision(req)
        assert words in str(info.value)
        assert req.volume_name not in gce.disk_names()


def test_snapshot_of_a_missing_disk_is_refused(gce: GceFake, gce_provisioner: GcePdProvisioner) -> None:
    """GS1: a PV whose disk is gone has nothing to snapshot."""
    pv = volume(gce_provisioner)
    gce_provisioner.delete(pv)
    with pytest.raises(PermanentError) as info:
        gce_provisioner.create_snapshot(snap_req(pv))
    assert "does not exist" in str(info.value)
    assert gce.snapshot_names() == []
