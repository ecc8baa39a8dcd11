"""The cephfs node plugin with real ceph-fuse mounts against the session's Ceph (CF7-CF10, CF1-CF2 from
the client's side), and the kernel client's command construction (this kernel has no ceph module)."""
from __future__ import annotations

import base64
import contextlib
import errno
import os
import signal
import stat
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from cephfs_testutil import cephfs_clean, cluster_objects, csi_class, make_provisioner  # noqa: F401
from ceph_service import CephCluster
from provisioners.testing import make_claim, pv_from_result
from provisioners.base import ProvisionRequest
from storage.api.volume_secrets import SECRET_DATA_KEY
from storage.errors import PermanentError, TemporaryError
from storage.system.executor import CommandTimeout, Executor, RecordingExecutor
from storage.system.mounts import process_stopped
from volume_plugins.base import VolumeContext
from volume_plugins.cephfs import CephfsPlugin, ceph_fuse_pids, kernel_client_present, mounts_at, state_dir_for
from volume_plugins.registry import default_registry

pytestmark = pytest.mark.root


class Volume:
    """One provisioned volume: its PV and the per-volume user's Secret data."""

    def __init__(self, cluster: CephCluster, size: str = "8Mi") -> None:
        self.provisioner = make_provisioner(cluster_objects(cluster))
        claim = make_claim(size, modes=("ReadWriteMany",), class_name="cephfs-csi")
        self.req = ProvisionRequest(volume_name=f"pvc-{claim['metadata']['uid']}", claim=claim, storage_class=csi_class())
        result = self.provisioner.provision(self.req)
        self.pv = pv_from_result(self.provisioner, self.req, result)
        self.secret = {k: base64.b64decode(v) for k, v in result.objects[0]["data"].items()}

    def delete(self) -> None:
        self.provisioner.delete(self.pv)


def _ctx(source: dict[str, Any], target: Path, secret: dict[str, bytes] | None, read_only: bool = False,
         executor: Executor | None = None) -> VolumeContext:
    ctx = VolumeContext(pod_uid="u1", pod_namespace="default", pod_name="p", volume_name="data", source=source,
                        target=target, read_only=read_only, pv_name="pv", data={SECRET_DATA_KEY: secret})
    if executor is not None:
        ctx.executor = executor
    return ctx


@pytest.fixture
def plugin(cephfs_clean: Path) -> CephfsPlugin:
    # No kernel client here: an empty filesystems list makes the choice explicit even on a host with one.
    fs = cephfs_clean / "filesystems"
    fs.write_text("nodev\ttmpfs\nnodev\tfuse\n")
    return CephfsPlugin(filesystems=fs, state_dir=cephfs_clean / "state")


def test_registered_for_the_cephfs_source() -> None:
    """CF7: the cephfs source finds this plugin (directory kubernetes.io~cephfs, as Kubernetes)."""
    registry = default_registry()
    plugin = registry.find({"cephfs": {"monitors": ["m:6789"]}})
    assert isinstance(plugin, CephfsPlugin) and plugin.dir_name == "kubernetes.io~cephfs"


def test_fuse_mount_works_after_the_keyring_is_gone_and_teardown_leaves_nothing(
        ceph_cluster: CephCluster, plugin: CephfsPlugin, cephfs_clean: Path) -> None:
    """CF7, CF9, CF10: ceph-fuse as the per-volume user; the keyring exists only while ceph-fuse starts,
    the mount keeps working without it; teardown unmounts, the daemon exits, its directory goes."""
    volume = Volume(ceph_cluster)
    target = cephfs_clean / "pod" / "data"
    try:
        ctx = _ctx(volume.pv["spec"], target, volume.secret)
        started = time.monotonic()
        plugin.setup(ctx)
        print(f"\nceph-fuse mount: {(time.monotonic() - started) * 1000:.0f} ms")
        [entry] = mounts_at(target)
        assert entry.fstype == "fuse.ceph-fuse"
        state = state_dir_for(plugin.state_dir, target)
        assert sorted(p.name for p in state.iterdir() if not p.name.endswith(".asok")) == ["client.log"]
        assert not any("keyring" in p.name for p in state.rglob("*"))
        [pid] = ceph_fuse_pids(target)
        assert volume.secret["key"].decode() not in Path(f"/proc/{pid}/cmdline").read_text()
        (target / "hello").write_text("hi")
        os.sync()
        assert (target / "hello").read_text() == "hi"
        assert plugin.setup(ctx) == target and len(mounts_at(target)) == 1  # idempotent
        plugin.unmount_volume(target, Executor())
        assert not mounts_at(target) and not ceph_fuse_pids(target) and not state.exists()
    finally:
        plugin.unmount_volume(target, Executor())
        volume.delete()


def test_quota_is_enforced_through_ceph_fuse(ceph_cluster: CephCluster, plugin: CephfsPlugin, cephfs_clean: Path) -> None:
    """CF1: writing past the subvolume's size fails with EDQUOT."""
    volume = Volume(ceph_cluster, "4Mi")
    target = cephfs_clean / "q"
    try:
        plugin.setup(_ctx(volume.pv["spec"], target, volume.secret))
        chunk = b"x" * (1 << 20)
        with pytest.raises(OSError) as info:
            with open(target / "big", "wb") as f:
                for _ in range(64):
                    f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
        assert info.value.errno == errno.EDQUOT
        assert (target / "big").stat().st_size <= 8 << 20
    finally:
        plugin.unmount_volume(target, Executor())
        volume.delete()


def test_a_volume_user_reaches_only_its_own_subvolume(ceph_cluster: CephCluster, plugin: CephfsPlugin,
                                                      cephfs_clean: Path) -> None:
    """CF2: volume A's user mounting volume B's path is refused; nothing stays mounted or running."""
    a, b = Volume(ceph_cluster), Volume(ceph_cluster)
    target = cephfs_clean / "steal"
    try:
        source = {**b.pv["spec"], "cephfs": {**b.pv["spec"]["cephfs"], "user": a.pv["spec"]["cephfs"]["user"]}}
        with pytest.raises(TemporaryError, match=f"as client.{a.req.volume_name} failed") as info:
            plugin.setup(_ctx(source, target, a.secret))
        assert a.secret["key"].decode() not in str(info.value)
        assert not mounts_at(target) and not ceph_fuse_pids(target)
    finally:
        plugin.unmount_volume(target, Executor())
        a.delete()
        b.delete()


def test_read_only_and_two_clients_see_each_others_writes(ceph_cluster: CephCluster, plugin: CephfsPlugin,
                                                          cephfs_clean: Path) -> None:
    """CF7, CF11: two mounts of one volume (as two nodes would have) share data; readOnly mounts refuse writes."""
    volume = Volume(ceph_cluster)
    one, two, ro = cephfs_clean / "n1", cephfs_clean / "n2", cephfs_clean / "ro"
    try:
        plugin.setup(_ctx(volume.pv["spec"], one, volume.secret))
        plugin.setup(_ctx(volume.pv["spec"], two, volume.secret))
        plugin.setup(_ctx(volume.pv["spec"], ro, volume.secret, read_only=True))
        (one / "from-one").write_text("1")
        (two / "from-two").write_text("2")
        deadline = time.monotonic() + 10
        while not ((two / "from-one").exists() and (one / "from-two").exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (two / "from-one").read_text() == "1" and (one / "from-two").read_text() == "2"
        assert (ro / "from-one").read_text() == "1"
        with pytest.raises(OSError) as info:
            (ro / "nope").write_text("x")
        assert info.value.errno == errno.EROFS
    finally:
        for target in (one, two, ro):
            plugin.unmount_volume(target, Executor())
        volume.delete()


def test_secret_file_and_csi_secret_layout(ceph_cluster: CephCluster, plugin: CephfsPlugin, cephfs_clean: Path) -> None:
    """CF8: secretFile (a host path) when there is no secretRef; a ceph-csi Secret (userID/userKey) works
    too; secretRef wins over secretFile; a missing Secret is retried, an unreadable file is permanent."""
    volume = Volume(ceph_cluster)
    key_file = cephfs_clean / "user.secret"
    key_file.write_text(volume.secret["key"].decode() + "\n")
    spec = volume.pv["spec"]["cephfs"]
    by_file = {"cephfs": {k: v for k, v in spec.items() if k != "secretRef"} | {"secretFile": str(key_file)}}
    by_csi = {"cephfs": {**spec, "user": "ignored", "secretFile": "/nonexistent"}}
    csi_secret = {"userID": spec["user"].encode(), "userKey": volume.secret["key"]}
    t1, t2 = cephfs_clean / "f1", cephfs_clean / "f2"
    try:
        plugin.setup(_ctx(by_file, t1, None))
        plugin.setup(_ctx(by_csi, t2, csi_secret))
        assert mounts_at(t1) and mounts_at(t2)
        with pytest.raises(TemporaryError, match="Secret .* not found"):
            plugin.setup(_ctx(volume.pv["spec"], cephfs_clean / "f3", None))
        no_file = {"cephfs": {**by_file["cephfs"], "secretFile": str(cephfs_clean / "missing")}}
        with pytest.raises(PermanentError, match="cephfs.secretFile: cannot read"):
            plugin.setup(_ctx(no_file, cephfs_clean / "f4", None))
        default = CephfsPlugin(filesystems=plugin.filesystems, state_dir=plugin.state_dir, secret_dir=cephfs_clean)
        (cephfs_clean / f"{spec['user']}.secret").write_text(volume.secret["key"].decode())
        creds, path = default.credentials(_ctx({"cephfs": {k: v for k, v in spec.items() if k != "secretRef"}},
                                               cephfs_clean / "f5", None))
        assert path == cephfs_clean / f"{spec['user']}.secret" and creds.user == spec["user"]
    finally:
        for target in (t1, t2):
            plugin.unmount_volume(target, Executor())
        volume.delete()


def _stop(pid: int) -> None:
    """SIGSTOP, and wait until the process is stopped: the signal is delivered after kill() returns."""
    os.kill(pid, signal.SIGSTOP)
    for _ in range(1000):
        if process_stopped(pid):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not stop")


@contextlib.contextmanager
def _stopped_ceph_fuse(ceph_cluster: CephCluster, plugin: CephfsPlugin, target: Path) -> Iterator[int]:
    """A new volume mounted by ceph-fuse at ``target``, its daemon stopped (SIGSTOP); yields the daemon's
    pid, and tears the mount and the volume down afterwards."""
    volume = Volume(ceph_cluster)
    try:
        plugin.setup(_ctx(volume.pv["spec"], target, volume.secret))
        [pid] = ceph_fuse_pids(target)
        _stop(pid)
        yield pid
    finally:
        plugin.unmount_volume(target, Executor())
        volume.delete()


def test_a_command_stuck_in_the_kernel_times_out_within_a_bound(ceph_cluster: CephCluster, plugin: CephfsPlugin,
                                                                cephfs_clean: Path) -> None:
    """CF12: `umount` of a FUSE mount whose daemon is stopped sleeps in the kernel where SIGKILL cannot end
    it (the request is the daemon's to answer). The executor's timeout still returns within a bound
    (CommandTimeout) instead of waiting for it forever; once the daemon is killed, the stuck umount ends."""
    target = cephfs_clean / "stuck"
    with _stopped_ceph_fuse(ceph_cluster, plugin, target):
        started = time.monotonic()
        with pytest.raises(CommandTimeout):
            Executor().run(["umount", str(target)], timeout=1)
        elapsed = time.monotonic() - started
        assert elapsed < 10, elapsed
    assert not mounts_at(target)


def test_hung_ceph_fuse_is_torn_down_within_a_bound(ceph_cluster: CephCluster, plugin: CephfsPlugin,
                                                    cephfs_clean: Path) -> None:
    """CF10: the ceph-fuse daemon is stopped (SIGSTOP): teardown kills it and removes the mount within
    a bounded time instead of hanging in umount."""
    target = cephfs_clean / "hung"
    with _stopped_ceph_fuse(ceph_cluster, plugin, target) as pid:
        started = time.monotonic()
        plugin.unmount_volume(target, Executor())
        elapsed = time.monotonic() - started
        assert elapsed < 15, elapsed
        assert not mounts_at(target)
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]


def test_kernel_client_command_and_secret_file(tmp_path: Path) -> None:
    """CF7, CF9: with ceph in /proc/filesystems the kernel client is used: mount -t ceph mons:/path -o
    name=USER,secretfile=F[,options][,ro]; F is 0600 holding the key during mount and gone after;
    the key is on no command line."""
    fs = tmp_path / "filesystems"
    fs.write_text("nodev\tceph\n")
    assert kernel_client_present(fs)
    seen: dict[str, Any] = {}

    def mount(argv: list[str]) -> tuple[int, str, str]:
        secret_file = Path(argv[-1].split("secretfile=")[1].split(",")[0])
        seen["file"], seen["mode"], seen["text"] = secret_file, stat.S_IMODE(secret_file.stat().st_mode), secret_file.read_text()
        return 0, "", ""

    executor = RecordingExecutor(responses={("mount", "-t", "ceph"): mount})
    plugin = CephfsPlugin(filesystems=fs, state_dir=tmp_path / "state")
    source = {"cephfs": {"monitors": ["10.0.0.1:6789", "10.0.0.2:6789"], "path": "/volumes/g/v/uuid", "user": "pvc-1",
                         "secretRef": {"name": "s"}}, "mountOptions": ["noatime"]}
    target = tmp_path / "t"
    ctx = _ctx(source, target, {"key": b"AQBSECRET=="}, read_only=True, executor=executor)
    # setup checks the mount table after mounting only through is_mount_point before: nothing is mounted here.
    plugin.setup(ctx)
    [argv] = executor.calls
    assert argv[:5] == ["mount", "-t", "ceph", "10.0.0.1:6789,10.0.0.2:6789:/volumes/g/v/uuid", str(target)]
    assert argv[5:] == ["-o", f"name=pvc-1,secretfile={seen['file']},noatime,ro"]
    assert seen["mode"] == 0o600 and seen["text"] == "AQBSECRET==" and not seen["file"].exists()
    assert "AQBSECRET==" not in " ".join(argv)
    # A secretFile source is handed to mount.ceph as it is; user defaults to admin.
    executor.calls.clear()
    key_file = tmp_path / "admin.secret"
    key_file.write_text("AQBOTHER==")
    plugin.setup(_ctx({"cephfs": {"monitors": ["m:6789"], "secretFile": str(key_file)}}, tmp_path / "t2", None,
                      executor=executor))
    assert executor.calls[0][3:] == ["m:6789:/", str(tmp_path / "t2"), "-o", f"name=admin,secretfile={key_file}"]


def test_kernel_mount_failure_never_shows_the_key(tmp_path: Path) -> None:
    """CF9: a failing kernel mount is a TemporaryError naming the source, scrubbed of the key."""
    fs = tmp_path / "filesystems"
    fs.write_text("nodev\tceph\n")
    executor = RecordingExecutor(responses={("mount",): (32, "", "mount error 13 = Permission denied AQBSECRET==")})
    plugin = CephfsPlugin(filesystems=fs, state_dir=tmp_path / "state")
    source = {"cephfs": {"monitors": ["m:6789"], "path": "/p", "user": "u", "secretRef": {"name": "s"}}}
    with pytest.raises(TemporaryError, match="mounting cephfs m:6789:/p failed") as info:
        plugin.setup(_ctx(source, tmp_path / "t", {"key": b"AQBSECRET=="}, executor=executor))
    assert "AQBSECRET==" not in str(info.value)


def test_real_kernel_mount(ceph_cluster: CephCluster, cephfs_clean: Path) -> None:
    """CF7: the real kernel client, where the kernel has one."""
    if not kernel_client_present():
        pytest.skip("this kernel has no ceph client (no ceph in /proc/filesystems): only ceph-fuse is exercised")
    plugin = CephfsPlugin(state_dir=cephfs_clean / "state")
    volume = Volume(ceph_cluster)
    target = cephfs_clean / "kernel"
    try:
        plugin.setup(_ctx(volume.pv["spec"], target, volume.secret))
        assert [e.fstype for e in mounts_at(target)] == ["ceph"]
        (target / "k").write_text("kernel")
        plugin.unmount_volume(target, Executor())
        assert not mounts_at(target)
    finally:
        plugin.unmount_volume(target, Executor())
        volume.delete()
