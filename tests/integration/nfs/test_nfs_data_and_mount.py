"""The data path: bytes through the real NFS protocol into a provisioned directory (libnfs, NFSv3),
the `mount -t nfs` command line, and the kernel mount this machine cannot do (NF1, NF3, NF4, NF6, NF8)."""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from provisioners.base import ProvisionRequest
from provisioners.nfs_subdir import NfsSubdirProvisioner
from provisioners.testing import make_claim
from storage.errors import PermanentError, TemporaryError
from storage.system.executor import CommandTimeout, RecordingExecutor
from volume_plugins.base import VolumeContext
from volume_plugins.nfs import NO_CLIENT, NfsPlugin, mount_source, nfs_supported


def ctx(tmp_path: Path, source: dict, read_only: bool = False, executor=None) -> VolumeContext:
    return VolumeContext(pod_uid="u1", pod_namespace="default", pod_name="p", volume_name="data",
                         source=source, target=tmp_path / "target", read_only=read_only,
                         executor=executor or RecordingExecutor())


@pytest.mark.root
def test_nf1_large_file_round_trip_through_nfs_v3(ganesha, tmp_path: Path) -> None:
    """NF1: a 3 MiB file written over NFSv3 into a provisioned directory reads back the same over NFS
    and is in the exported directory on the server's disk."""
    prov = NfsSubdirProvisioner(netns=ganesha.netns, local_exports={})
    claim = make_claim()
    cls = {"metadata": {"name": "nfs"}, "provisioner": "nfs.csi.k8s.io",
           "parameters": {"server": ganesha.server, "share": ganesha.export}}
    req = ProvisionRequest(volume_name=f"pvc-{claim['metadata']['uid']}", claim=claim, storage_class=cls)
    path = prov.provision(req).source["nfs"]["path"]
    data = os.urandom(3 * 1024 * 1024 + 17)
    from storage.system.libnfs import NfsClient

    try:
        started = time.monotonic()
        with NfsClient(ganesha.server, path, netns=ganesha.netns) as client:  # mount the volume's own path
            client.write_file("blob", data)
            write_s = time.monotonic() - started
            assert hashlib.sha256(client.read_file("blob")).digest() == hashlib.sha256(data).digest()
        assert (Path(path) / "blob").read_bytes() == data
        print(f"mount + 3 MiB write over NFSv3: {write_s * 1000:.1f} ms")
    finally:
        pv = {"metadata": {"name": req.volume_name, "annotations": {
            "pv.kubernetes.io/provisioned-by": "nfs.csi.k8s.io", "nfs.stowage.io/share": ganesha.export,
            "nfs.stowage.io/on-delete": "delete"}}, "spec": {"nfs": {"server": ganesha.server, "path": path}}}
        prov.delete(pv)
    assert not Path(path).exists()


@pytest.mark.root
def test_nf1_session_server_serves_its_export(ganesha) -> None:
    """The session's server came up through the users' script and serves its export over NFSv3 (a file
    made on the server's disk is listed by an NFS client); its start time is reported, not asserted."""
    print(f"ganesha ready {ganesha.ready_seconds * 1000:.0f} ms after launch; script total {ganesha.start_seconds:.2f} s")
    marker = Path(ganesha.export) / "nf1-marker"
    marker.write_text("x")
    try:
        with ganesha.client() as client:
            assert "nf1-marker" in client.listdir("/")
    finally:
        marker.unlink()


def test_nf3_mount_argv_options_ro_and_ipv6(tmp_path: Path) -> None:
    """NF3: PV mountOptions, then ro for a read-only source or mount; IPv6 servers in brackets."""
    plugin = NfsPlugin()
    source = {"nfs": {"server": "10.0.0.5", "path": "/exports/a"}, "mountOptions": ["nfsvers=4.1", "hard"]}
    assert plugin.mount_argv(ctx(tmp_path, source)) == [
        "mount", "-t", "nfs", "-o", "nfsvers=4.1,hard", "10.0.0.5:/exports/a", str(tmp_path / "target")]
    ro = {"nfs": {"server": "fd00::5", "path": "/x", "readOnly": True}}
    assert plugin.mount_argv(ctx(tmp_path, ro)) == ["mount", "-t", "nfs", "-o", "ro", "[fd00::5]:/x", str(tmp_path / "target")]
    assert plugin.mount_argv(ctx(tmp_path, {"nfs": {"server": "s", "path": "/"}}, read_only=True))[3:6] == ["-o", "ro", "s:/"]
    assert plugin.mount_argv(ctx(tmp_path, {"nfs": {"server": "s", "path": "/p"}})) == ["mount", "-t", "nfs", "s:/p", str(tmp_path / "target")]
    assert mount_source("[::1]", "/e") == "[::1]:/e"
    with pytest.raises(PermanentError, match="nfs.server: Required value"):
        plugin.mount_argv(ctx(tmp_path, {"nfs": {"path": "/p"}}))
    with pytest.raises(PermanentError, match="nfs.path: Invalid value: 'rel'"):
        plugin.mount_argv(ctx(tmp_path, {"nfs": {"server": "s", "path": "rel"}}))


def test_nf4_efs_is_plain_nfs(tmp_path: Path) -> None:
    """NF4: an EFS DNS name mounts as any NFS server, with the options AWS recommends passed through."""
    source = {"nfs": {"server": "fs-0123abcd.efs.eu-west-1.amazonaws.com", "path": "/"},
              "mountOptions": ["nfsvers=4.1", "rsize=1048576", "wsize=1048576", "hard", "timeo=600", "retrans=2", "noresvport"]}
    argv = NfsPlugin().mount_argv(ctx(tmp_path, source))
    assert argv[-2] == "fs-0123abcd.efs.eu-west-1.amazonaws.com:/"
    assert argv[4] == "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport"


def test_nf6_setup_runs_mount_when_the_kernel_has_nfs(tmp_path: Path) -> None:
    """NF6: with nfs in the filesystem list, setup runs exactly the built command; a failure is temporary."""
    filesystems = tmp_path / "filesystems"
    filesystems.write_text("nodev\ttmpfs\n\text4\nnodev\tnfs\nnodev\tnfs4\n")
    executor = RecordingExecutor()
    plugin = NfsPlugin(filesystems=filesystems)
    c = ctx(tmp_path, {"nfs": {"server": "s", "path": "/p"}}, executor=executor)
    assert plugin.setup(c) == c.target
    assert executor.calls == [["mount", "-t", "nfs", "s:/p", str(c.target)]]
    failing = RecordingExecutor(responses={("mount",): (32, "", "mount.nfs: Connection refused")})
    with pytest.raises(TemporaryError, match="mounting s:/p failed: .*Connection refused"):
        plugin.setup(ctx(tmp_path, {"nfs": {"server": "s", "path": "/p"}}, executor=failing))


def test_nf6_no_kernel_client_is_a_clear_permanent_error(tmp_path: Path) -> None:
    """NF6: without nfs/nfs4 in /proc/filesystems nothing is run and the error says why."""
    filesystems = tmp_path / "filesystems"
    filesystems.write_text("nodev\ttmpfs\n\text4\nnodev\tfuse\n")
    executor = RecordingExecutor()
    plugin = NfsPlugin(filesystems=filesystems)
    plugin_module = __import__("volume_plugins.nfs", fromlist=["_module_available"])
    if plugin_module._module_available():
        pytest.skip("this kernel has an nfs module the mount would load")
    with pytest.raises(PermanentError) as info:
        plugin.setup(ctx(tmp_path, {"nfs": {"server": "s", "path": "/p"}}, executor=executor))
    assert NO_CLIENT in str(info.value) and "s:/p" in str(info.value)
    assert executor.calls == []


def test_nf8_teardown_goes_lazy_when_the_server_hangs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NF8: an umount that does not return in time is retried lazily."""
    from volume_plugins import nfs

    monkeypatch.setattr(nfs.mounts, "is_mount_point", lambda path: True)

    def hang(argv: list[str]) -> tuple[int, str, str]:
        raise CommandTimeout(argv, 1.0)

    executor = RecordingExecutor(responses={("umount", str(tmp_path)): hang})
    NfsPlugin(unmount_timeout=1.0).teardown(tmp_path, executor)
    assert executor.calls == [["umount", str(tmp_path)], ["umount", "-l", str(tmp_path)]]


@pytest.mark.skipif(not nfs_supported(), reason="kernel has no NFS client (no nfs/nfs4 in /proc/filesystems)")
@pytest.mark.root
def test_nf3_kernel_mount_of_the_export(ganesha, tmp_path: Path) -> None:  # pragma: no cover - needs a kernel client
    """NF3: a real kernel mount of the session's export (only where the kernel has an NFS client)."""
    import subprocess

    target = tmp_path / "mnt"
    target.mkdir()
    plugin = NfsPlugin()
    c = ctx(tmp_path, {"nfs": {"server": ganesha.server, "path": ganesha.export}, "mountOptions": ["nfsvers=3"]})
    argv = plugin.mount_argv(c, target)
    subprocess.run(["nsenter", f"--net={ganesha.netns}", *argv], check=True, timeout=60)
    try:
        (target / "k").write_text("kernel")
        assert (Path(ganesha.export) / "k").read_text() == "kernel"
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)
        (Path(ganesha.export) / "k").unlink(missing_ok=True)


@pytest.mark.root
def test_nf1_a_stuck_call_is_bounded_and_abandoned(ganesha) -> None:
    """NF1: a call that does not return in time fails with ETIMEDOUT and the client closes at once
    (the stuck worker is a daemon thread, abandoned), so a black-holed server cannot wedge a controller."""
    import errno
    import threading

    from storage.system.libnfs import NfsClient, NfsError

    client = NfsClient(ganesha.server, ganesha.export, netns=ganesha.netns)
    client._call_timeout = 0.2
    release = threading.Event()
    with pytest.raises(NfsError) as info:
        client._call(lambda: release.wait(10))
    assert info.value.errno == errno.ETIMEDOUT and "no answer within" in str(info.value)
    stuck = client._worker._thread
    client.close()
    # close returned while the worker is still blocked in the call: it was abandoned, not joined.
    assert stuck.is_alive() and not release.is_set()
    with pytest.raises(NfsError, match="closed"):
        client.listdir("/")
    release.set()
    stuck.join(30)
    assert not stuck.is_alive()


def test_nf1_unjoinable_namespace_fails_in_the_caller(tmp_path: Path) -> None:
    """NF1: a network namespace that cannot be joined is an OSError from the constructor, not a hang."""
    from storage.system.libnfs import NfsClient

    with pytest.raises(OSError):
        NfsClient("127.0.0.1", "/x", netns=str(tmp_path / "no-such-netns"))
