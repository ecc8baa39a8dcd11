"""EBS snapshots against moto's EC2 server (docs/semantics.md ES1-ES9): the SnapshotterContract, the
VolumeSnapshotClass parameters, idempotency by tag across a crash, states, and restores across zones."""
from __future__ import annotations

import uuid
from typing import Any, Callable

import pytest
from moto.ec2.models.elastic_block_store import EBSBackend, Snapshot

from provisioners.aws_ebs import (NAME, TAG_CLUSTER_PREFIX, TAG_PV_NAME, TAG_SNAPSHOT_NAME, AwsEbsProvisioner)
from provisioners.base import BACKUP_DRIVER, DataSource, ProvisionRequest, ProvisionResult, SnapshotRequest
from provisioners.testing import SnapshotterContract, make_claim, pv_from_result
from storage.errors import PermanentError

GiB = 1024**3


def sc(params: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "ebs"}, "provisioner": NAME, "parameters": dict({"zone": "us-east-1a"} if params is None else params)}


def request(storage_class: dict[str, Any], size: str = "1Gi", node: dict[str, Any] | None = None,
            source: DataSource | None = None) -> ProvisionRequest:
    claim = make_claim(size, class_name=storage_class["metadata"]["name"])
    return ProvisionRequest(volume_name=f"pvc-{claim['metadata']['uid']}", claim=claim, storage_class=storage_class,
                            selected_node=node, data_source=source)


def volume(ebs: AwsEbsProvisioner, size: str = "1Gi", params: dict[str, str] | None = None) -> dict[str, Any]:
    req = request(sc(params), size)
    result = ebs.provision(req)
    assert result.status == "finished", result
    return pv_from_result(ebs, req, result)


def snapshot_request(pv: dict[str, Any], parameters: dict[str, str] | None = None, name: str | None = None) -> SnapshotRequest:
    return SnapshotRequest(name=name or f"snapcontent-{uuid.uuid4()}", pv=pv, parameters=dict(parameters or {}))


def source_of(ebs: AwsEbsProvisioner, handle: str, size: int = GiB) -> DataSource:
    return DataSource(kind="VolumeSnapshot", driver=ebs.name, snapshot_handle=handle, restore_size=size)


def snapshots_named(aws: Any, name: str) -> list[dict[str, Any]]:
    filters = [{"Name": f"tag:{TAG_SNAPSHOT_NAME}", "Values": [name]},
               {"Name": f"tag:{TAG_CLUSTER_PREFIX}{aws.cluster_id}", "Values": ["owned"]}]
    return aws.ec2.describe_snapshots(Filters=filters)["Snapshots"]


def volume_id(pv_or_result: Any) -> str:
    source = pv_or_result.source if isinstance(pv_or_result, ProvisionResult) else pv_or_result["spec"]
    return str(source["awsElasticBlockStore"]["volumeID"]).rsplit("/", 1)[-1]


class TestEbsSnapshotContract(SnapshotterContract):
    """ES1-ES6 through the shared snapshot contract; moto keeps no block data, so the data checks skip."""

    @pytest.fixture
    def provisioner(self, ebs: AwsEbsProvisioner) -> AwsEbsProvisioner:
        return ebs

    @pytest.fixture
    def storage_class(self) -> dict[str, Any]:
        return {"metadata": {"name": "c"}, "provisioner": NAME, "parameters": {"type": "gp3", "zone": "us-east-1a"}}

    @pytest.fixture
    def backend_count(self, aws: Any) -> Callable[[str], int]:
        return lambda volume_name: len(aws.volumes_for(volume_name))

    @pytest.fixture
    def snapshot_parameters(self) -> dict[str, str]:
        return {"tagSpecification_1": "team=storage"}

    @pytest.fixture
    def snapshot_count(self, aws: Any) -> Callable[[str], int]:
        def count(handle: str) -> int:
            found = aws.ec2.describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": [handle]}])["Snapshots"]
            return len(found)
        return count

    @pytest.fixture
    def write_data(self) -> Callable[[dict[str, Any], bytes], None]:
        pytest.skip("moto's EBS keeps no block data: a volume's contents cannot be written or read back")

    @pytest.fixture
    def read_data(self) -> Callable[[dict[str, Any]], bytes]:
        pytest.skip("moto's EBS keeps no block data: a volume's contents cannot be written or read back")


def test_snapshot_is_tagged_with_its_name_cluster_pv_and_class_tags(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """ES1, ES2, ES4: CreateSnapshot of the PV's volume, tagged in the same call with the content name, the PV,
    the cluster's ownership and the class's tagSpecification_N tags (templates expanded)."""
    pv = volume(ebs, "3Gi")
    req = snapshot_request(pv, {"tagSpecification_1": "team=storage",
                                "tagSpecification_2": "content={{ .VolumeSnapshotContentName }}",
                                "csi.storage.k8s.io/snapshotter-secret-name": "ignored"})
    result = ebs.create_snapshot(req)
    assert result.ready and result.restore_size == 3 * GiB and result.creation_time > 0
    found = snapshots_named(aws, req.name)
    assert [s["SnapshotId"] for s in found] == [result.handle]
    assert found[0]["VolumeId"] == volume_id(pv)
    tags = {t["Key"]: t["Value"] for t in found[0]["Tags"]}
    assert tags["team"] == "storage" and tags["content"] == req.name
    assert tags[TAG_PV_NAME] == pv["metadata"]["name"] and tags[f"{TAG_CLUSTER_PREFIX}{aws.cluster_id}"] == "owned"


@pytest.mark.parametrize("params, words", [
    ({"noSuchParameter": "x"}, ["noSuchParameter", "tagSpecification_<N>"]),
    ({"type": "gp3"}, ["'type'"]),  # a StorageClass parameter is not a snapshot class parameter
    ({"tagSpecification_1": "no-equals-sign"}, ["tagSpecification_1", "key=value"]),
    ({"tagSpecification_1": "aws:foo=bar"}, ["reserved"]),
    ({"tagSpecification_1": "k={{ .VolumeSnapshotNamespace }}"}, ["VolumeSnapshotNamespace", "not supported"]),
])
def test_bad_snapshot_class_parameters_are_refused_and_nothing_is_made(
        aws: Any, ebs: AwsEbsProvisioner, params: dict[str, str], words: list[str]) -> None:
    """ES4: anything but tagSpecification_N (and the stripped csi.storage.k8s.io/ keys) is a PermanentError
    naming it; no snapshot is cut."""
    pv = volume(ebs)
    req = snapshot_request(pv, params)
    with pytest.raises(PermanentError) as info:
        ebs.create_snapshot(req)
    for word in words:
        assert word in str(info.value)
    assert snapshots_named(aws, req.name) == []


def test_crash_between_create_snapshot_and_return_finds_the_same_snapshot(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """ES2: the process dies after EC2 made the snapshot but before the answer reached it; a new provisioner
    (no memory) asked again finds the snapshot by its tag: exactly one exists."""
    pv = volume(ebs)
    req = snapshot_request(pv)
    doomed = AwsEbsProvisioner()

    class Crash(BaseException):
        pass

    def die(**_: Any) -> None:
        raise Crash()

    doomed.ec2.meta.events.register("after-call.ec2.CreateSnapshot", die)
    with pytest.raises(Crash):
        doomed.create_snapshot(req)
    assert len(snapshots_named(aws, req.name)) == 1  # the call did reach EC2
    again = AwsEbsProvisioner().create_snapshot(req)
    assert again.ready
    assert [s["SnapshotId"] for s in snapshots_named(aws, req.name)] == [again.handle]


def test_same_name_in_another_cluster_is_not_taken(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """ES2: the cluster id is part of the key."""
    pv = volume(ebs)
    req = snapshot_request(pv)
    theirs = AwsEbsProvisioner(cluster_id="other-cluster").create_snapshot(req)
    ours = ebs.create_snapshot(req)
    assert theirs.handle != ours.handle
    assert [s["SnapshotId"] for s in snapshots_named(aws, req.name)] == [ours.handle]


class SnapshotStates:
    """Holds moto's new snapshots in a state of the test's choosing (moto completes them at once); the server
    runs in this process, so its objects are changed in place."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.next_state: str | None = None
        self.made: dict[str, Snapshot] = {}
        original = EBSBackend.create_snapshot
        states = self

        def create_snapshot(backend: EBSBackend, *args: Any, **kwargs: Any) -> Snapshot:
            snap = original(backend, *args, **kwargs)
            states.made[snap.id] = snap
            if states.next_state is not None:
                snap.status = states.next_state
            return snap

        monkeypatch.setattr(EBSBackend, "create_snapshot", create_snapshot)

    def next(self, state: str) -> None:
        self.next_state = state

    def set(self, snapshot_id: str, state: str) -> None:
        self.made[snapshot_id].status = state


@pytest.fixture
def snapshot_state(monkeypatch: pytest.MonkeyPatch) -> SnapshotStates:
    return SnapshotStates(monkeypatch)


def test_pending_snapshot_is_not_ready_until_completed(aws: Any, ebs: AwsEbsProvisioner, snapshot_state: Any) -> None:
    """ES3: pending answers ready False with a retry delay, and a restore from it waits (in_progress); completed
    is ready; asking again never cuts a second snapshot."""
    pv = volume(ebs)
    snapshot_state.next("pending")
    req = snapshot_request(pv)
    first = ebs.create_snapshot(req)
    assert not first.ready and "pending" in first.message and 0 < first.retry_after <= ebs.max_wait
    restore = request(sc(), source=source_of(ebs, first.handle))
    assert ebs.provision(restore).status == "in_progress"
    assert aws.volumes_for(restore.volume_name) == []
    status = ebs.snapshot_status(first.handle, {})
    assert status is not None and not status.ready
    snapshot_state.set(first.handle, "completed")
    second = ebs.create_snapshot(req)
    assert second.ready and second.handle == first.handle
    assert len(snapshots_named(aws, req.name)) == 1
    assert ebs.provision(restore).status == "finished"


def test_snapshot_in_error_state_is_a_permanent_error(aws: Any, ebs: AwsEbsProvisioner, snapshot_state: Any) -> None:
    """ES3: a snapshot EC2 failed is a PermanentError naming it (the content's error), not retried forever."""
    pv = volume(ebs)
    snapshot_state.next("error")
    req = snapshot_request(pv)
    with pytest.raises(PermanentError) as info:
        ebs.create_snapshot(req)
    handle = snapshots_named(aws, req.name)[0]["SnapshotId"]
    assert handle in str(info.value) and "error" in str(info.value)
    with pytest.raises(PermanentError):
        ebs.provision(request(sc(), source=source_of(ebs, handle)))


def test_snapshot_of_a_missing_volume_is_refused(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """ES1: a PV whose volume is gone has nothing to snapshot: PermanentError naming the volume."""
    pv = volume(ebs)
    ebs.delete(pv)
    with pytest.raises(PermanentError) as info:
        ebs.create_snapshot(snapshot_request(pv))
    assert volume_id(pv) in str(info.value)


def test_static_content_status_by_snapshot_id(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """ES5: a pre-provisioned content's snapshot is looked up by id: its size and readiness, None when gone,
    and a handle that is no snapshot id is refused."""
    vol = aws.ec2.create_volume(AvailabilityZone="us-east-1b", Size=7)
    made = aws.ec2.create_snapshot(VolumeId=vol["VolumeId"])  # made outside Stowage: no tags
    status = ebs.snapshot_status(made["SnapshotId"], {})
    assert status is not None and status.ready and status.restore_size == 7 * GiB
    assert status.handle == made["SnapshotId"]
    ebs.delete_snapshot(made["SnapshotId"], {})
    assert ebs.snapshot_status(made["SnapshotId"], {}) is None
    with pytest.raises(PermanentError) as info:
        ebs.snapshot_status("vol-0123456789abcdef0", {})
    assert "snap-" in str(info.value)


def test_restore_is_at_least_the_snapshot_size_with_the_class_type(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """ES6: CreateVolume(SnapshotId) with the class's type, sized to the larger of the claim and the snapshot;
    the PV's capacity is the volume's."""
    pv = volume(ebs, "5Gi")
    snap = ebs.create_snapshot(snapshot_request(pv))
    small = request(sc({"type": "gp3", "zone": "us-east-1a"}), "1Gi", source=source_of(ebs, snap.handle, 5 * GiB))
    result = ebs.provision(small)
    created = aws.ec2.describe_volumes(VolumeIds=[volume_id(result)])["Volumes"][0]
    assert created["SnapshotId"] == snap.handle and created["Size"] == 5 and created["VolumeType"] == "gp3"
    assert result.capacity == "5Gi"
    bigger = ebs.provision(request(sc(), "8Gi", source=source_of(ebs, snap.handle, 5 * GiB)))
    assert bigger.capacity == "8Gi"
    again = ebs.provision(small)  # a retry answers the same volume
    assert again.source == result.source and len(aws.volumes_for(small.volume_name)) == 1


def test_restore_for_a_node_in_another_zone_follows_the_node_and_attach_stays_zonal(
        aws: Any, ebs: AwsEbsProvisioner) -> None:
    """ES7: snapshots are regional: a volume in us-east-1a restores for a node in us-east-1b, in that node's
    zone; a class limited to us-east-1a reschedules that claim (CE2); the restored volume attaches only in its
    own zone (CE4)."""
    pv = volume(ebs, params={"zone": "us-east-1a"})
    snap = ebs.create_snapshot(snapshot_request(pv))
    node_b = aws.nodes["node-b"]
    restore = request(sc({}), node=node_b, source=source_of(ebs, snap.handle))
    result = ebs.provision(restore)
    assert result.status == "finished"
    created = aws.ec2.describe_volumes(VolumeIds=[volume_id(result)])["Volumes"][0]
    assert created["AvailabilityZone"] == "us-east-1b" and created["SnapshotId"] == snap.handle
    assert result.node_affinity["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["us-east-1b"]
    restored_pv = pv_from_result(ebs, restore, result)
    with pytest.raises(PermanentError) as info:
        ebs.attach(restored_pv, aws.nodes["node-a"])
    assert "zone" in str(info.value)
    zonal = request(sc({"zone": "us-east-1a"}), node=node_b, source=source_of(ebs, snap.handle))
    assert ebs.provision(zonal).status == "reschedule"
    assert aws.volumes_for(zonal.volume_name) == []


def test_clone_and_foreign_sources_are_refused_clearly(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """ES8, ES9: supports_clone is False; a PVC dataSource, another driver's (or a backup's) snapshot is a
    PermanentError saying what cannot be done; nothing is created."""
    assert ebs.supports_clone is False
    pv = volume(ebs)
    cases = [
        (DataSource(kind="PersistentVolumeClaim", source_pv=pv), "cannot clone"),
        (DataSource(kind="VolumeSnapshot", driver="rbd.csi.ceph.com", snapshot_handle="snap-0123456789abcdef0"),
         "rbd.csi.ceph.com"),
        (DataSource(kind="VolumeSnapshot", driver=BACKUP_DRIVER, snapshot_handle="s3://b/p#x"), BACKUP_DRIVER),
        (DataSource(kind="VolumeSnapshot", driver=NAME, snapshot_handle="not-a-snapshot"), "not an EBS snapshot id"),
    ]
    for source, words in cases:
        req = request(sc(), source=source)
        with pytest.raises(PermanentError) as info:
            ebs.provision(req)
        assert words in str(info.value)
        assert aws.volumes_for(req.volume_name) == []
