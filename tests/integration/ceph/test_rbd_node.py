"""The RBD node plugin for real: rbd-fuse + loop device + mkfs + mount through the volume manager,
Block mode, the second node refused while the first holds the image, read-only sharing (RB7-RB12).
Kernel rbd and nbd are not on this machine: those paths are covered by test_rbd_commands.py."""
from __future__ import annotations

import os
import stat
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from ceph_service import CephCluster
from rbd_support import POOL, Images, images, rbd_pool  # noqa: F401
from storage.agent.volume_manager import PodVolumes, VolumeManager, VolumeRequest
from storage.api.volume_secrets import SECRET_DATA_KEY
from storage.system import loop, mounts
from storage.system.executor import CommandError
from volume_plugins.rbd import ANN_MAPPER, RbdPlugin
from volume_plugins.registry import PluginRegistry

pytestmark = pytest.mark.root

if Path("/sys/bus/rbd").exists() or Path("/sys/module/nbd").exists():
    pytest.skip("this kernel has rbd or nbd: the rbd-fuse tests are for nodes without them", allow_module_level=True)


def _cleanup(base: Path) -> None:
    """Everything under ``base``: loop devices over FUSE files, FUSE mounts, rbd-fuse daemons."""
    for entry in sorted(mounts.mounts_under(base), key=lambda e: -len(e.mount_point)):
        if not entry.fstype.startswith("fuse"):
            subprocess.run(["umount", "-l", entry.mount_point], capture_output=True, timeout=30)
    for device in loop.loops_under(base):
        subprocess.run(["losetup", "-d", device], capture_output=True, timeout=30)
    for entry in mounts.mounts_under(base):
        subprocess.run(["umount", "-l", entry.mount_point], capture_output=True, timeout=30)
    for pid_file in base.glob("**/*.pid"):
        try:
            os.kill(int(pid_file.read_text()), 9)
        except (OSError, ValueError):
            pass


@pytest.fixture
def nodes(tmp_path: Path, image: str) -> Iterator[dict[str, VolumeManager]]:
    """Two nodes' volume managers; torn down before the test's image is removed (a mapped image is busy)."""
    managers = {}
    for name in ("n1", "n2"):
        plugin = RbdPlugin()
        plugin.bind_node(name, tmp_path / name)
        managers[name] = VolumeManager(tmp_path / name, PluginRegistry([plugin]))
    try:
        yield managers
    finally:
        _cleanup(tmp_path)


@pytest.fixture
def image(images: Images) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:8]}"
    images.create(name, 64 << 20)
    try:
        yield name
    finally:
        images.remove(name)


def _pod(ceph: CephCluster, image: str, *, modes: tuple[str, ...] = ("ReadWriteOnce",), mode: str = "Filesystem",
         read_only: bool = False, key: str | None = None) -> PodVolumes:
    source = {"rbd": {"monitors": [ceph.monitors], "pool": POOL, "image": image, "user": "admin",
                      "secretRef": {"name": "ceph-user"}, "fsType": "ext4"}, "accessModes": list(modes)}
    data = {SECRET_DATA_KEY: {"key": (key or ceph.admin_key).encode()}}
    uid = str(uuid.uuid4())
    return PodVolumes(uid, "default", f"p-{uid[:6]}", [VolumeRequest("data", source, read_only=read_only, pv_name=f"pv-{image}",
                                                                    data=data, mode=mode)])


def _plugin(manager: VolumeManager) -> RbdPlugin:
    plugin = manager.registry.by_name("kubernetes.io/rbd")
    assert isinstance(plugin, RbdPlugin)
    return plugin


def _setup(manager: VolumeManager, pod: PodVolumes) -> Path:
    paths, errors = manager.setup_pod(pod)
    assert not errors, errors
    return Path(paths["data"])


def test_fuse_loop_mkfs_mount_write_and_clean_teardown(ceph_cluster: CephCluster, nodes: dict[str, VolumeManager],
                                                     image: str, images: Images) -> None:
    """RB7, RB11, RB12: rbd-fuse + loop + safe mkfs + mount; the keyring is gone once the daemon is up and the
    volume keeps working; teardown leaves no loop, FUSE mount, daemon, lock or watch."""
    n1 = nodes["n1"]
    assert _plugin(n1).node_annotations() == {ANN_MAPPER: "fuse"}
    pod = _pod(ceph_cluster, image)
    began = time.monotonic()
    path = _setup(n1, pod)
    elapsed = time.monotonic() - began
    print(f"rbd-fuse + losetup + mkfs + mount: {elapsed:.3f}s")
    state = _plugin(n1).state_dir
    assert state is not None
    assert not list(state.glob("stowage-ceph-*")), "the keyring directory outlived the daemon's start"
    (path / "hello").write_text("from n1")
    os.sync()
    device = next(e.source for e in mounts.read_mountinfo() if e.mount_point == str(path))
    assert device.startswith("/dev/loop") and loop._backing_file(os.path.basename(device)).endswith(f"@{image}/{image}")
    assert any(e.fstype == "ext4" and e.source == device for e in mounts.read_mountinfo())
    with images.rbd.Image(images.ioctx, image, read_only=True) as handle:
        assert len(list(handle.watchers_list())) == 1
        assert [c for _, c, _ in handle.list_lockers()["lockers"]] == ["kubelet_lock_magic_n1"]
    # Setting up again (the agent's periodic pass) is a no-op on the same device.
    assert _setup(n1, PodVolumes(pod.uid, pod.namespace, pod.name, pod.volumes)) == path
    n1.teardown_pod(pod.uid)
    assert not mounts.mounts_under(state) and not loop.loops_under(state)
    with images.rbd.Image(images.ioctx, image, read_only=True) as handle:
        assert list(handle.watchers_list()) == [] and not handle.list_lockers()
    # The data is on the image: mapped again, it is there (no second mkfs).
    pod2 = _pod(ceph_cluster, image)
    assert (_setup(n1, pod2) / "hello").read_text() == "from n1"
    n1.teardown_pod(pod2.uid)


def test_second_node_refused_while_the_first_holds_the_image(ceph_cluster: CephCluster, nodes: dict[str, VolumeManager],
                                                            image: str) -> None:
    """RB9: ReadWriteOnce: n2 is refused with the holder named while n1 uses the image, then gets it once
    n1 let go; n1 after an agent restart (a new plugin instance) still sees it as its own."""
    n1, n2 = nodes["n1"], nodes["n2"]
    first = _pod(ceph_cluster, image)
    (_setup(n1, first) / "f").write_text("1")
    other = _pod(ceph_cluster, image)
    _, errors = n2.setup_pod(other)
    assert f"rbd image {POOL}/{image} is used by n1" in errors["data"]
    assert ceph_cluster.admin_key not in errors["data"]
    restarted = RbdPlugin()
    restarted.bind_node("n1", n1.data_dir)
    again = VolumeManager(n1.data_dir, PluginRegistry([restarted]))
    assert (_setup(again, first) / "f").read_text() == "1"
    again.teardown_pod(first.uid)  # the restarted agent did not hold the lock in memory: it stays, stale
    assert (_setup(n2, other) / "f").read_text() == "1"
    n2.teardown_pod(other.uid)


def test_read_only_many_shares_without_locks(ceph_cluster: CephCluster, nodes: dict[str, VolumeManager],
                                             image: str, images: Images) -> None:
    """RB10: ReadOnlyMany volumes map read-only on two nodes at once, take no lock, and cannot be written."""
    n1, n2 = nodes["n1"], nodes["n2"]
    writer = _pod(ceph_cluster, image)
    (_setup(n1, writer) / "shared").write_text("both")
    n1.teardown_pod(writer.uid)
    readers = {name: _pod(ceph_cluster, image, modes=("ReadOnlyMany",), read_only=True) for name in ("n1", "n2")}
    paths = {name: _setup(nodes[name], pod) for name, pod in readers.items()}
    for path in paths.values():
        assert (path / "shared").read_text() == "both"
        with pytest.raises(OSError):
            (path / "new").write_text("x")
    with images.rbd.Image(images.ioctx, image, read_only=True) as handle:
        assert not handle.list_lockers()
    for name, pod in readers.items():
        nodes[name].teardown_pod(pod.uid)


def test_block_mode_gives_the_pod_the_device(ceph_cluster: CephCluster, nodes: dict[str, VolumeManager], image: str) -> None:
    """RB12: volumeMode Block binds the loop device over the image into the pod; teardown unmaps it."""
    n1 = nodes["n1"]
    pod = _pod(ceph_cluster, image, mode="Block")
    path = _setup(n1, pod)
    assert stat.S_ISBLK(os.stat(path).st_mode)
    with open(path, "r+b") as dev:
        dev.write(b"raw-bytes")
    state = _plugin(n1).state_dir
    assert state is not None and loop.loops_under(state)
    n1.teardown_pod(pod.uid)
    assert not loop.loops_under(state) and not mounts.mounts_under(state)


def test_wrong_key_is_an_error_without_the_key(ceph_cluster: CephCluster, nodes: dict[str, VolumeManager], image: str) -> None:
    """RB11: a Secret with a wrong key fails the mount with a message that does not carry the key."""
    bad = "AQAAAAAAAAAAABAAAAAAAAAAAAAAAAAAAAAAAA=="
    _, errors = nodes["n1"].setup_pod(_pod(ceph_cluster, image, key=bad))
    assert errors["data"] and bad not in errors["data"]


def test_grown_image_grows_the_mounted_filesystem(ceph_cluster: CephCluster, nodes: dict[str, VolumeManager],
                                                 image: str, images: Images) -> None:
    """RB5, RB12: after the image grows, the node's resize step (loop capacity refresh + resize2fs) grows the
    mounted filesystem: rbd-fuse sees the new size through its watch on the image header."""
    n1 = nodes["n1"]
    pod = _pod(ceph_cluster, image)
    path = _setup(n1, pod)
    before = os.statvfs(path).f_blocks * os.statvfs(path).f_frsize
    with images.rbd.Image(images.ioctx, image) as handle:
        handle.resize(128 << 20)
    fuse_file = next(Path(f) for f in loop.loops_under(_plugin(n1).state_dir).values())  # type: ignore[arg-type]
    wait_until_size = time.monotonic() + 20
    while fuse_file.stat().st_size != 128 << 20 and time.monotonic() < wait_until_size:
        time.sleep(0.1)
    assert fuse_file.stat().st_size == 128 << 20
    device = next(iter(loop.loops_under(_plugin(n1).state_dir)))  # type: ignore[arg-type]
    try:
        try:
            assert n1.finish_resize(f"pv-{image}")
        except CommandError as exc:
            assert int(Path(f"/sys/block/{Path(device).name}/size").read_text()) * 512 == 128 << 20
            if "Permission denied" in str(exc):
                pytest.skip("this kernel refuses online ext4 resize (EPERM, on any loop device); the loop device "
                            "did grow with the image")
            raise
        after = os.statvfs(path).f_blocks * os.statvfs(path).f_frsize
        assert after > before * 1.8
    finally:
        n1.teardown_pod(pod.uid)


def test_hung_rbd_fuse_daemon_is_killed_on_disconnect(ceph_cluster: CephCluster, nodes: dict[str, VolumeManager],
                                                     image: str, images: Images) -> None:
    """RB12: a FUSE daemon that stops answering (SIGSTOP here) does not keep the node's disconnect waiting
    for ever: the FUSE directory is unmounted and the daemon killed within a deadline."""
    import signal
    import threading

    from volume_plugins.base import VolumeContext

    n1 = nodes["n1"]
    plugin = _plugin(n1)
    pod = _pod(ceph_cluster, image, modes=("ReadOnlyMany",), read_only=True)  # no lock: nothing to release
    req = pod.volumes[0]
    ctx = VolumeContext(pod_uid=pod.uid, pod_namespace="default", pod_name=pod.name, volume_name="data",
                        source=req.plugin_source, target=n1.data_dir / "unused", read_only=True, data=req.data)
    device = plugin.connect(ctx).path
    directory = plugin._fuse_dir(POOL, image)
    pid = int(directory.with_suffix(directory.suffix + ".pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    # Safety net for the test itself: whatever happens, the daemon runs again after a while.
    resume = threading.Timer(40, lambda: os.kill(pid, signal.SIGCONT) if Path(f"/proc/{pid}").exists() else None)
    resume.start()
    try:
        began = time.monotonic()
        plugin.disconnect(device, n1.executor)
        elapsed = time.monotonic() - began
    finally:
        resume.cancel()
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert not mounts.is_mount_point(directory) and not loop.loops_under(plugin.state_dir)  # type: ignore[arg-type]
    assert elapsed < 25
    # The killed daemon's watch on the image would hold its removal (the fixture's) for the OSD's 30 s
    # watch timeout; the daemon is proven gone above, so end the watch as an administrator would.
    images.blocklist_watchers(image)
