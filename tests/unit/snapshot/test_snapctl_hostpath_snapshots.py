"""The hostPath provisioner as a Snapshotter: it passes the shared SnapshotterContract (VS36, VS42, DS19),
keeps its snapshots beside the volumes, never deletes what is not one of its snapshots, and restores from
backups only through provisioners.backup (DS19)."""
from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pytest

from provisioners.base import DataSource, ProvisionRequest, SnapshotRequest
from provisioners.hostpath import SNAPSHOT_DIR, HostPathProvisioner
from provisioners.testing import SnapshotterContract, make_claim, pv_from_result
from storage.errors import PermanentError


class TestHostPathSnapshotter(SnapshotterContract):
    @pytest.fixture
    def provisioner(self, tmp_path: Path) -> HostPathProvisioner:
        return HostPathProvisioner(tmp_path / "root")

    @pytest.fixture
    def storage_class(self) -> dict:
        return {"metadata": {"name": "hp"}, "provisioner": HostPathProvisioner.name, "parameters": {}}

    @pytest.fixture
    def backend_count(self, provisioner: HostPathProvisioner) -> Callable[[str], int]:
        return lambda name: sum(1 for p in provisioner.root.iterdir() if p.name == name) if provisioner.root.exists() else 0

    @pytest.fixture
    def snapshot_parameters(self) -> dict[str, str]:
        return {}

    @pytest.fixture
    def snapshot_count(self) -> Callable[[str], int]:
        def count(handle: str) -> int:
            path = Path(handle)
            return int(path.is_dir() and path.with_name(path.name + ".json").is_file())
        return count

    @pytest.fixture
    def write_data(self) -> Callable[[dict[str, Any], bytes], None]:
        return lambda pv, data: (Path(pv["spec"]["hostPath"]["path"]) / "file").write_bytes(data)

    @pytest.fixture
    def read_data(self) -> Callable[[dict[str, Any]], bytes]:
        return lambda pv: (Path(pv["spec"]["hostPath"]["path"]) / "file").read_bytes()


def _volume(hp: HostPathProvisioner, name: str = "pvc-a", size: str = "1Gi", **kw: Any) -> dict[str, Any]:
    claim = make_claim(size, class_name="hp")
    req = ProvisionRequest(volume_name=name, claim=claim,
                           storage_class={"metadata": {"name": "hp"}, "provisioner": hp.name}, **kw)
    return pv_from_result(hp, req, hp.provision(req))


def test_snapshot_sits_beside_the_volumes_with_modes_and_links(tmp_path: Path) -> None:
    """VS42: the copy keeps modes and symlinks, lives in <root>/.snapshots (not inside a volume), and its
    restore size is the source volume's capacity."""
    hp = HostPathProvisioner(tmp_path / "root")
    pv = _volume(hp, size="2Gi")
    src = Path(pv["spec"]["hostPath"]["path"])
    (src / "sub").mkdir()
    (src / "sub" / "x").write_text("x")
    os.chmod(src / "sub" / "x", 0o640)
    (src / "link").symlink_to("sub/x")
    result = hp.create_snapshot(SnapshotRequest(name="snapcontent-1", pv=pv, parameters={}))
    path = Path(result.handle)
    assert path == tmp_path / "root" / SNAPSHOT_DIR / "snapcontent-1"
    assert result.ready and result.restore_size == 2 * 1024**3 and result.creation_time > 0
    assert (path / "sub" / "x").stat().st_mode & 0o777 == 0o640
    assert os.readlink(path / "link") == "sub/x"
    assert hp.snapshot_status(result.handle, {}) == result


def test_two_controllers_cutting_one_snapshot_at_once_leave_one_copy_and_no_half_copies(tmp_path: Path) -> None:
    """Controllers are safe to run twice at once: the same snapshot cut by four threads at once is cut
    once (each gets the same result) and no half-made copy is left beside it."""
    hp = HostPathProvisioner(tmp_path / "root")
    pv = _volume(hp)
    src = Path(pv["spec"]["hostPath"]["path"])
    for i in range(300):  # enough files that the copies overlap in time
        (src / f"f{i}").write_text("x" * 100)
    for round_ in range(3):
        name = f"snapcontent-{round_}"
        barrier = threading.Barrier(4)

        def cut() -> Any:
            barrier.wait()
            return hp.create_snapshot(SnapshotRequest(name=name, pv=pv, parameters={}))

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: cut(), range(4)))
        assert len({(r.handle, r.creation_time) for r in results}) == 1, "one cut, the same answer to every caller"
        assert len(list(Path(results[0].handle).iterdir())) == 300
    snapshots = tmp_path / "root" / SNAPSHOT_DIR
    assert sorted(p.name for p in snapshots.iterdir() if p.is_dir()) == [f"snapcontent-{i}" for i in range(3)]
    hp.delete_snapshot(str(snapshots / "snapcontent-0"), {})
    assert not any(p.name.startswith(".snapcontent-0") for p in snapshots.iterdir()), "its lock goes with it"


def test_foreign_directories_are_never_snapshots(tmp_path: Path) -> None:
    """VS42, VS34: delete and status ignore a handle that is not a recorded snapshot, so a hand-written
    pre-provisioned content cannot make the provisioner delete an arbitrary directory."""
    hp = HostPathProvisioner(tmp_path / "root")
    victim = tmp_path / "precious" / SNAPSHOT_DIR / "x"
    victim.mkdir(parents=True)
    (victim / "keep").write_text("keep")
    for handle in (str(victim), str(tmp_path / "precious"), "relative/path", ""):
        assert hp.snapshot_status(handle, {}) is None
        hp.delete_snapshot(handle, {})
    assert (victim / "keep").read_text() == "keep"
    # A record with another name does not make it ours either.
    victim.with_name("x.json").write_text(json.dumps({"kind": "stowage.io/hostpath-snapshot", "name": "y"}))
    hp.delete_snapshot(str(victim), {})
    assert (victim / "keep").exists()


def test_restore_from_another_drivers_snapshot_is_refused(tmp_path: Path) -> None:
    """DS19: a provisioner restores only its own snapshots (and backups), naming what it cannot do."""
    hp = HostPathProvisioner(tmp_path / "root")
    source = DataSource(kind="VolumeSnapshot", driver="ebs.csi.aws.com", snapshot_handle="snap-1", restore_size=1)
    with pytest.raises(PermanentError, match="ebs.csi.aws.com"):
        _volume(hp, "pvc-b", data_source=source)
    assert not (tmp_path / "root" / "pvc-b").exists()
    assert not [p for p in (tmp_path / "root").iterdir() if "filling" in p.name]


def test_clone_of_a_foreign_volume_is_refused(tmp_path: Path) -> None:
    """DS12: cloning copies only this provisioner's own directories."""
    hp = HostPathProvisioner(tmp_path / "root")
    (tmp_path / "etc").mkdir()
    foreign = {"metadata": {"name": "pv-x", "annotations": {}}, "spec": {"hostPath": {"path": str(tmp_path / "etc")}}}
    with pytest.raises(PermanentError, match="only its own"):
        _volume(hp, "pvc-c", data_source=DataSource(kind="PersistentVolumeClaim", source_pv=foreign))
