"""Per-pod volume operations: setup_pod / teardown_pod touch only their pod (A5), concurrently."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from storage.agent.pool import Pool
from storage.agent import volume_manager
from storage.agent.volume_manager import PodVolumes, VolumeManager, VolumeRequest
from storage.errors import StowageError
from storage.system import mounts
from volume_plugins.registry import default_registry

MiB = 2**20
GLOBAL = "kubelet/plugins/kubernetes.io/local-volume/mounts"


def claim(pool: Pool, name: str) -> VolumeRequest:
    return VolumeRequest("data", {"local": {"path": str(pool.image_path(name))}}, pv_name=name)


def test_a5_setup_pod_and_teardown_pod_leave_other_pods_alone(node_tmp: Path) -> None:
    pool = Pool(node_tmp / "pool", capacity=512 * MiB)
    pool.create("pv-a", 32 * MiB, "ext4")
    pool.create("pv-b", 32 * MiB, "ext4")
    vm = VolumeManager(node_tmp / "kubelet", default_registry())
    vm.reconstruct()
    a = PodVolumes("uid-a", "ns", "a", [claim(pool, "pv-a"), VolumeRequest("scratch", {"emptyDir": {}})])
    b = PodVolumes("uid-b", "ns", "b", [claim(pool, "pv-b")])

    paths_a, errors_a = vm.setup_pod(a)
    paths_b, errors_b = vm.setup_pod(b)
    assert errors_a == {} and errors_b == {}
    assert mounts.is_mount_point(paths_a["data"]) and mounts.is_mount_point(paths_b["data"])
    assert vm.setup_pod(a) == (paths_a, {})  # idempotent: the re-check of a set-up pod
    assert sorted(vm.volumes_in_use()) == ["kubernetes.io/local-volume/pv-a", "kubernetes.io/local-volume/pv-b"]

    vm.teardown_pod("uid-a")

    assert not (node_tmp / "kubelet/pods/uid-a").exists()
    assert not (node_tmp / GLOBAL / "pv-a").exists()
    assert mounts.is_mount_point(paths_b["data"]) and mounts.is_mount_point(node_tmp / GLOBAL / "pv-b")
    assert vm.volumes_in_use() == ["kubernetes.io/local-volume/pv-b"]
    vm.teardown_pod("uid-b")
    assert not mounts.mounts_under(node_tmp / "kubelet")


def test_a5_shared_global_mount_stays_until_its_last_pod_is_torn_down(node_tmp: Path) -> None:
    pool = Pool(node_tmp / "pool", capacity=256 * MiB)
    pool.create("pv-s", 32 * MiB, "ext4")
    vm = VolumeManager(node_tmp / "kubelet", default_registry())
    one = PodVolumes("uid-1", "ns", "one", [claim(pool, "pv-s")])
    two = PodVolumes("uid-2", "ns", "two", [claim(pool, "pv-s")])
    p1, _ = vm.setup_pod(one)
    p2, _ = vm.setup_pod(two)
    Path(p1["data"], "f").write_text("shared")
    assert Path(p2["data"], "f").read_text() == "shared"

    vm.teardown_pod("uid-1")
    assert mounts.is_mount_point(node_tmp / GLOBAL / "pv-s")
    assert Path(p2["data"], "f").read_text() == "shared"

    vm.teardown_pod("uid-2")
    assert not (node_tmp / GLOBAL / "pv-s").exists()
    assert not mounts.mounts_under(node_tmp / "kubelet")


def test_a5_concurrent_setups_and_a_full_sync_agree(node_tmp: Path) -> None:
    """Pods set up from several threads at once; a later full sync keeps them all and
    removes only the pod no longer wanted."""
    pool = Pool(node_tmp / "pool", capacity=1024 * MiB)
    pods = []
    for i in range(6):
        pool.create(f"pv-{i}", 16 * MiB, "ext4")
        pods.append(PodVolumes(f"uid-{i}", "ns", f"p{i}", [claim(pool, f"pv-{i}")]))
    vm = VolumeManager(node_tmp / "kubelet", default_registry())
    results: dict[str, tuple[dict[str, str], dict[str, str]]] = {}

    def run(pod: PodVolumes) -> None:
        results[pod.uid] = vm.setup_pod(pod)

    threads = [threading.Thread(target=run, args=(p,)) for p in pods]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(errors == {} for _paths, errors in results.values()) and len(results) == 6

    res = vm.sync(lambda: pods[1:])

    assert res.errors == {} and res.teardown_errors == {}
    assert not (node_tmp / "kubelet/pods/uid-0").exists()
    assert not (node_tmp / GLOBAL / "pv-0").exists()
    for pod in pods[1:]:
        assert mounts.is_mount_point(results[pod.uid][0]["data"])
    vm.sync([])
    assert not mounts.mounts_under(node_tmp / "kubelet")


def test_pf81_a_pods_setup_and_recheck_answer_from_scans_of_one_table(node_tmp: Path, monkeypatch) -> None:
    """PF81: a new device volume's set-up asks its table one question (whether the pod's target is mounted;
    the same answer serves the bind after the device's mount) and the re-check of a set-up pod two
    (the target, and what is on the global mount): each a scan, never an index of the whole table,
    which on a node with hundreds of pods has thousands of lines."""
    pool = Pool(node_tmp / "pool", capacity=256 * MiB)
    pool.create("pv-q", 32 * MiB, "ext4")
    vm = VolumeManager(node_tmp / "kubelet", default_registry())
    tables: list[mounts.MountTable] = []
    questions: list[str] = []
    real_read, real_stacked = mounts.MountTable.read, mounts.MountTable._stacked

    def read() -> mounts.MountTable:
        tables.append(real_read())
        return tables[-1]

    def stacked(self: mounts.MountTable, path) -> list[mounts.MountEntry]:  # type: ignore[no-untyped-def]
        questions.append(str(path))
        return real_stacked(self, path)

    monkeypatch.setattr(mounts.MountTable, "read", staticmethod(read))
    monkeypatch.setattr(mounts.MountTable, "_stacked", stacked)
    pod = PodVolumes("uid-q", "ns", "q", [claim(pool, "pv-q")])
    paths, errors = vm.setup_pod(pod)
    assert errors == {} and len(tables) == 1 and questions == [paths["data"]], questions
    assert tables[0]._by_point is None
    questions.clear()
    assert vm.setup_pod(pod) == (paths, {})
    assert len(tables) == 2 and questions == [paths["data"], str(node_tmp / GLOBAL / "pv-q")], questions
    assert tables[1]._by_point is None
    monkeypatch.undo()
    assert mounts.is_mount_point(paths["data"])
    vm.teardown_pod("uid-q")
    assert not mounts.mounts_under(node_tmp / "kubelet")


def _pods_on_own_volumes(node_tmp: Path, *names: str) -> tuple[VolumeManager, list[Path]]:
    """For each name, pod "uid-NAME" set up on its own ext4 volume "pv-NAME"; the volumes' node-wide mounts."""
    pool = Pool(node_tmp / "pool", capacity=256 * MiB)
    vm = VolumeManager(node_tmp / "kubelet", default_registry())
    for name in names:
        pool.create(f"pv-{name}", 32 * MiB, "ext4")
        _paths, errors = vm.setup_pod(PodVolumes(f"uid-{name}", "ns", name, [claim(pool, f"pv-{name}")]))
        assert errors == {}
    return vm, [node_tmp / GLOBAL / f"pv-{name}" for name in names]


def test_a5g_a_global_mount_whose_unmount_failed_is_collected_by_a_later_teardown_or_beat(node_tmp: Path) -> None:
    """A5g: the pod's last user left while something still held the node-wide mount open (EBUSY). Its pod directory is
    gone by then, so nothing would name that mount again: the volume manager keeps it and tries again at the next
    teardown (the retried stop) and at the agent's heartbeat (collect_pending)."""
    vm, (busy, beat) = _pods_on_own_volumes(node_tmp, "busy", "beat")

    holders = [os.open(busy / "lost+found", os.O_RDONLY), os.open(beat / "lost+found", os.O_RDONLY)]
    try:
        for uid in ("uid-busy", "uid-beat"):
            with pytest.raises(StowageError, match="unmounting kubernetes.io/local-volume/pv-"):
                vm.teardown_pod(uid)
            assert not (node_tmp / "kubelet/pods" / uid).exists()
        assert mounts.is_mount_point(busy) and mounts.is_mount_point(beat)
        # Still held: the retry fails again and forgets nothing.
        with pytest.raises(StowageError):
            vm.collect_pending()
        assert mounts.is_mount_point(busy) and mounts.is_mount_point(beat)
    finally:
        for fd in holders:
            os.close(fd)

    vm.teardown_pod("uid-busy")  # the retried stop: its pod directory is long gone
    assert not busy.exists() and not beat.exists()
    assert vm.volumes_in_use() == []
    vm.collect_pending()  # nothing left: a no-op
    assert not mounts.mounts_under(node_tmp / "kubelet")


def test_a5g_the_heartbeat_retry_alone_collects_a_leftover_global_mount(node_tmp: Path) -> None:
    vm, (left,) = _pods_on_own_volumes(node_tmp, "left")
    holder = os.open(left / "lost+found", os.O_RDONLY)
    try:
        with pytest.raises(StowageError, match="pv-left"):
            vm.teardown_pod("uid-left")
    finally:
        os.close(holder)
    assert mounts.is_mount_point(left)

    vm.collect_pending()

    assert not left.exists() and vm.volumes_in_use() == []
    assert not mounts.mounts_under(node_tmp / "kubelet")


def test_a5g_a_teardown_waits_for_an_online_resize_of_its_global_mount(node_tmp: Path, monkeypatch) -> None:
    """A5g: resize2fs holds the mount point open while it grows a mounted filesystem. The pod's stop that comes
    meanwhile waits for it and then unmounts, instead of failing with EBUSY."""
    vm, (grow,) = _pods_on_own_volumes(node_tmp, "grow")
    resizing, release = threading.Event(), threading.Event()
    real_resize = volume_manager.resize_filesystem

    def slow_resize(device: str, mount_point: str, fstype: str, **kwargs) -> None:
        held = os.open(Path(mount_point) / "lost+found", os.O_RDONLY)  # what resize2fs -M does to the mount
        try:
            resizing.set()
            release.wait(30)
            real_resize(device, mount_point, fstype, **kwargs)
        finally:
            os.close(held)

    monkeypatch.setattr(volume_manager, "resize_filesystem", slow_resize)
    resized: list[bool] = []
    resizer = threading.Thread(target=lambda: resized.append(vm.finish_resize("pv-grow")))
    resizer.start()
    assert resizing.wait(30)
    outcome: list[BaseException | None] = []

    def stop() -> None:
        try:
            vm.teardown_pod("uid-grow")
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the assertion below names it
            outcome.append(exc)

    stopper = threading.Thread(target=stop)
    stopper.start()
    stopper.join(0.5)
    assert stopper.is_alive() and mounts.is_mount_point(grow)  # waiting on the resize, not failed
    release.set()
    resizer.join(30)
    stopper.join(30)
    assert resized == [True] and outcome == [None]
    assert not grow.exists() and not mounts.mounts_under(node_tmp / "kubelet")
