"""A CSI driver's snapshots, restores and clones through the CSI provisioner (CS17-CS20), held to the shared
SnapshotterContract, against the CSI driver written for the tests (real directories and tar archives)."""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from csi_drivers import RunningDriver, start_test_driver, stop_driver  # noqa: E402
from provisioners.csi import CsiProvisioner  # noqa: E402
from provisioners.testing import SnapshotterContract  # noqa: E402
from storage.system.csi import CsiClient  # noqa: E402


@pytest.fixture
def running_driver() -> Iterator[tuple[RunningDriver, Path]]:
    tmp = Path(tempfile.mkdtemp(prefix="stowage-csisnap-"))
    drv = start_test_driver(tmp, "n1", "--parameters", "tier")
    try:
        yield drv, tmp / "state"
    finally:
        stop_driver(drv.proc)
        shutil.rmtree(tmp, ignore_errors=True)


def _state(state: Path) -> dict[str, Any]:
    file = state / "state.json"  # written at the driver's first change
    return json.loads(file.read_text()) if file.exists() else {"volumes": {}, "snapshots": {}}


class TestCsiSnapshotter(SnapshotterContract):
    @pytest.fixture
    def provisioner(self, running_driver: tuple[RunningDriver, Path]) -> Iterator[CsiProvisioner]:
        drv, _ = running_driver
        client = CsiClient(drv.endpoint)
        try:
            yield CsiProvisioner(drv.name, client)
        finally:
            client.close()

    @pytest.fixture
    def storage_class(self, running_driver: tuple[RunningDriver, Path]) -> dict[str, Any]:
        return {"metadata": {"name": "c"}, "provisioner": running_driver[0].name, "parameters": {"tier": "gold"}}

    @pytest.fixture
    def backend_count(self, running_driver: tuple[RunningDriver, Path]) -> Callable[[str], int]:
        return lambda volume_name: int(volume_name in _state(running_driver[1])["volumes"])

    @pytest.fixture
    def snapshot_parameters(self) -> dict[str, str]:
        return {}

    @pytest.fixture
    def snapshot_count(self, running_driver: tuple[RunningDriver, Path]) -> Callable[[str], int]:
        return lambda handle: int(handle in _state(running_driver[1])["snapshots"])

    @pytest.fixture
    def write_data(self, running_driver: tuple[RunningDriver, Path]) -> Callable[[dict[str, Any], bytes], None]:
        def write(pv: dict[str, Any], data: bytes) -> None:
            (running_driver[1] / "volumes" / pv["spec"]["csi"]["volumeHandle"] / "data").write_bytes(data)
        return write

    @pytest.fixture
    def read_data(self, running_driver: tuple[RunningDriver, Path]) -> Callable[[dict[str, Any]], bytes]:
        return lambda pv: (running_driver[1] / "volumes" / pv["spec"]["csi"]["volumeHandle"] / "data").read_bytes()


def test_static_snapshot_found_through_list_snapshots(running_driver: tuple[RunningDriver, Path]) -> None:
    """CS20: a pre-provisioned content's handle is checked with ListSnapshots: the driver's own snapshot
    is found with its size, an unknown handle is None (the controller then reports it missing)."""
    drv, _ = running_driver
    with CsiClient(drv.endpoint) as client:
        p = CsiProvisioner(drv.name, client)
        volume = client.create_volume("pvc-static", required_bytes=5 << 20)
        snap = client.create_snapshot(volume.volume_id, "snapcontent-static")
        found = p.snapshot_status(snap.snapshot_id, {})
        assert found is not None and found.ready and found.restore_size == 5 << 20
        assert found.creation_time > 0
        assert p.snapshot_status("no-such-snapshot", {}) is None


def test_snapshot_secrets_come_from_the_class_parameters(running_driver: tuple[RunningDriver, Path]) -> None:
    """CS17: csi.storage.k8s.io/snapshotter-secret-name/-namespace name the Secret whose data is sent as
    the request's secrets; the keys themselves are not sent as parameters; half a reference is refused."""
    from provisioners.base import SnapshotRequest
    from storage.errors import PermanentError

    drv, state = running_driver
    with CsiClient(drv.endpoint) as client:
        p = CsiProvisioner(drv.name, client)
        volume = client.create_volume("pvc-sec", required_bytes=1 << 20)
        pv = {"metadata": {"name": "pvc-sec"}, "spec": {"csi": {"driver": drv.name, "volumeHandle": volume.volume_id}}}
        read: list[tuple[str, str]] = []

        def reader(namespace: str, name: str) -> dict[str, str]:
            read.append((namespace, name))
            return {"token": "s3cret"}

        params = {"csi.storage.k8s.io/snapshotter-secret-name": "snap-creds",
                  "csi.storage.k8s.io/snapshotter-secret-namespace": "ops", "tier": "x"}
        result = p.create_snapshot(SnapshotRequest("snapcontent-sec", pv, params, secrets=reader))
        assert result.ready and read == [("ops", "snap-creds")]
        calls = [json.loads(line) for line in (state / "calls.log").read_text().splitlines()]
        create = next(c for c in calls if c["method"] == "CreateSnapshot")
        assert create["secret_keys"] == ["token"] and "snapshotter-secret" not in create["request"].get("parameters", "")
        half = {"csi.storage.k8s.io/snapshotter-secret-name": "snap-creds"}
        with pytest.raises(PermanentError, match="must be given together"):
            p.create_snapshot(SnapshotRequest("snapcontent-half", pv, half, secrets=reader))


def test_restore_of_another_drivers_snapshot_is_refused(running_driver: tuple[RunningDriver, Path]) -> None:
    """CS18: a CSI driver restores only its own snapshots; another driver's handle is a PermanentError
    naming it, and nothing is created."""
    from provisioners.base import DataSource, ProvisionRequest
    from provisioners.testing import make_claim
    from storage.errors import PermanentError

    drv, state = running_driver
    with CsiClient(drv.endpoint) as client:
        p = CsiProvisioner(drv.name, client)
        claim = make_claim("1Mi")
        req = ProvisionRequest("pvc-x", claim, {"metadata": {"name": "c"}, "provisioner": drv.name},
                               data_source=DataSource(kind="VolumeSnapshot", driver="ebs.csi.aws.com",
                                                      snapshot_handle="snap-0123"))
        with pytest.raises(PermanentError, match="ebs.csi.aws.com"):
            p.provision(req)
        assert "pvc-x" not in _state(state)["volumes"]
