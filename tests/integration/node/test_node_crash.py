"""A5 crash safety: the volume manager SIGKILLed at named points, restarted, synced again."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from storage.agent.pool import Pool
from storage.system import blockdev, loop, mounts
from storage.system.durable import stage_durably

RUNNER = Path(__file__).with_name("vm_runner.py")
MiB = 2**20


def run_vm(tmp: Path, pods: list[dict], fault: str | None = None) -> dict | None:
    spec = tmp / "spec.json"
    spec.write_text(json.dumps({"data_dir": str(tmp / "kubelet"), "pods": pods}))
    env = {k: v for k, v in os.environ.items() if k != "STOWAGE_FAULT"}
    if fault:
        env["STOWAGE_FAULT"] = fault
    proc = subprocess.run([sys.executable, str(RUNNER), str(spec)], env=env, capture_output=True, text=True, timeout=300)
    if fault:
        assert proc.returncode == -signal.SIGKILL, f"fault {fault} never reached: {proc.stdout}\n{proc.stderr}"
        return None
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pod(device: str, uid: str = "uid-1", mode: str = "Filesystem") -> dict:
    return {"uid": uid, "namespace": "ns", "name": "db-0",
            "volumes": [{"name": "data", "source": {"local": {"path": device, "fsType": "ext4"}}, "pv_name": "pv-1", "mode": mode}]}


def assert_clean(tmp: Path, disks: int) -> None:
    assert not mounts.mounts_under(tmp / "kubelet"), "mounts left behind"
    assert not list((tmp / "kubelet" / "pods").iterdir()), "pod directories left behind"
    assert len(loop.loops_under(tmp)) == disks, "the volume manager must not leave loop devices of its own"


@pytest.mark.parametrize("fault", ["before_mkfs", "after_mkfs", "after_mount", "after_bind"])
def test_a5_crash_during_setup_heals_without_a_second_mkfs(node_tmp: Path, make_disk, fault: str) -> None:
    dev = make_disk()
    run_vm(node_tmp, [pod(dev)], fault=fault)
    uuid_after_crash = blockdev.fs_uuid(dev)
    if fault == "before_mkfs":
        assert uuid_after_crash is None
    else:
        assert uuid_after_crash is not None

    res = run_vm(node_tmp, [pod(dev)])
    assert res["errors"] == {}
    path = Path(res["paths"]["uid-1"]["data"])
    uuid = blockdev.fs_uuid(dev)
    if uuid_after_crash is not None:
        assert uuid == uuid_after_crash, "the device was formatted twice"
    (path / "precious").write_text("data")
    assert not list((node_tmp / "kubelet" / "state").glob("*.mkfs-intent"))

    res = run_vm(node_tmp, [pod(dev)])  # an ordinary restart
    assert (Path(res["paths"]["uid-1"]["data"]) / "precious").read_text() == "data"
    assert blockdev.fs_uuid(dev) == uuid

    run_vm(node_tmp, [])
    assert_clean(node_tmp, disks=1)


def test_a5_crash_during_teardown_is_finished_by_the_next_sync(node_tmp: Path, make_disk) -> None:
    dev = make_disk()
    res = run_vm(node_tmp, [pod(dev), {"uid": "uid-2", "namespace": "ns", "name": "m",
                                       "volumes": [{"name": "mem", "source": {"emptyDir": {"medium": "Memory"}}}]}])
    (Path(res["paths"]["uid-1"]["data"]) / "precious").write_text("data")
    uuid = blockdev.fs_uuid(dev)
    run_vm(node_tmp, [], fault="during_teardown")
    assert mounts.mounts_under(node_tmp / "kubelet"), "the crash left work to finish"
    run_vm(node_tmp, [])
    assert_clean(node_tmp, disks=1)
    assert blockdev.fs_uuid(dev) == uuid
    # The data is still on the device for the next pod.
    res = run_vm(node_tmp, [pod(dev, uid="uid-3")])
    assert (Path(res["paths"]["uid-3"]["data"]) / "precious").read_text() == "data"
    run_vm(node_tmp, [])
    assert_clean(node_tmp, disks=1)


def test_a5_crash_after_block_bind(node_tmp: Path, make_disk) -> None:
    dev = make_disk()
    run_vm(node_tmp, [pod(dev, mode="Block")], fault="after_bind")
    res = run_vm(node_tmp, [pod(dev, mode="Block")])
    assert res["errors"] == {}
    path = res["paths"]["uid-1"]["data"]
    assert os.stat(path).st_rdev == os.stat(dev).st_rdev
    assert len(mounts.mounts_at(path)) == 1, "a restart must not stack a second bind"
    run_vm(node_tmp, [])
    assert_clean(node_tmp, disks=1)


@pytest.mark.parametrize("fault", ["before_mkfs", "after_mkfs"])
def test_a5_pool_create_crash_is_finished_by_retrying_create(node_tmp: Path, fault: str) -> None:
    code = (
        "import sys; from storage.agent.pool import Pool; "
        "Pool(sys.argv[1], capacity=1 << 30).create('pvc-c', 64 << 20, 'ext4')"
    )
    env = {**os.environ, "STOWAGE_FAULT": fault}
    proc = subprocess.run([sys.executable, "-c", code, str(node_tmp / "pool")], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    pool = Pool(node_tmp / "pool", capacity=1 << 30)
    assert pool.get("pvc-c").state == "Creating"
    dev = pool.device("pvc-c")
    uuid_after_crash = blockdev.fs_uuid(dev)
    vol = pool.create("pvc-c", 64 * MiB, "ext4")
    assert vol.state == "Ready"
    assert loop.find_all_by_backing_file(pool.image_path("pvc-c")) == [dev]
    if uuid_after_crash:
        assert blockdev.fs_uuid(dev) == uuid_after_crash
    assert blockdev.probe_filesystem(dev) == "ext4"
    pool.delete("pvc-c")
    assert not loop.loops_under(node_tmp)


def test_a5_a_pool_record_staged_by_a_killed_process_is_removed_at_the_next_start(node_tmp: Path) -> None:
    """A process killed between writing a record aside and renaming it into place leaves the staged
    file in the pool; the next start (``reattach_all``, what an agent does first) removes it, and keeps
    what a live process has staged."""
    code = (
        "import sys; from storage.agent.pool import Pool; "
        "Pool(sys.argv[1], capacity=1 << 30).create('pvc-s', 64 << 20, 'ext4')"
    )
    env = {**os.environ, "STOWAGE_FAULT": "pool_record_staged"}
    proc = subprocess.run([sys.executable, "-c", code, str(node_tmp / "pool")], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    volumes = node_tmp / "pool" / "volumes"
    staged = sorted(p.name for p in volumes.glob(".*.tmp"))
    assert staged, "the fault point must come after the record was staged"
    live = stage_durably(volumes / "pvc-live.json", "{}")  # this process's, as if a write were under way
    try:
        pool = Pool(node_tmp / "pool", capacity=1 << 30)
        pool.reattach_all()
        assert sorted(p.name for p in volumes.glob(".*.tmp")) == [live.name]
        assert pool.create("pvc-s", 64 * MiB, "ext4").state == "Ready"
        pool.delete("pvc-s")
    finally:
        live.unlink(missing_ok=True)
        for dev in loop.loops_under(node_tmp):
            loop.detach(dev)
    assert not loop.loops_under(node_tmp)
