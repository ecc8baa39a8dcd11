"""The glusterfs node plugin with real FUSE mounts of a real glusterd's volumes: mount options,
Endpoints resolution by the agent, the node authorizer, and teardown of a mount whose FUSE daemon
hangs (GF5-GF7)."""
from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from gluster_service import Glusterd
from storage.agent.resolve import resolve_pod_volumes
from storage.agent.volume_manager import PodVolumes, VolumeManager, VolumeRequest
from storage.errors import NotFound, PermanentError, TemporaryError
from storage.system import mounts
from storage.system.executor import RecordingExecutor
from volume_plugins.base import VolumeContext
from volume_plugins.glusterfs import DATA_KEY, GlusterfsPlugin, endpoint_hosts, order_hosts
from volume_plugins.registry import default_registry

pytestmark = pytest.mark.root


@pytest.fixture
def volume(glusterd: Glusterd) -> Iterator[str]:
    name = f"v{uuid.uuid4().hex[:10]}"
    started = time.monotonic()
    glusterd.create_volume(name)
    print(f"volume create+start: {time.monotonic() - started:.2f}s")
    try:
        yield name
    finally:
        glusterd.delete_volume(name)


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[VolumeManager]:
    data = tmp_path / "agent"
    vm = VolumeManager(data, default_registry())
    try:
        yield vm
    finally:
        # Whatever a failed test left: FUSE first, lazily (its daemon may be stopped).
        for entry in mounts.mounts_under(data):
            os.system(f"umount -l {entry.mount_point}")


def _fuse_pid(point: Path) -> int:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"glusterfs") and str(point).encode() in argv:
            return int(proc.name)
    raise AssertionError(f"no glusterfs client process for {point}")


def _pod(volume_name: str, source: dict[str, Any], hosts: list[str] | None, read_only: bool = False) -> PodVolumes:
    return PodVolumes(uid=str(uuid.uuid4()), namespace="default", name="p", volumes=[
        VolumeRequest(name="data", plugin_source=source, read_only=read_only, data={DATA_KEY: hosts})])


def test_mount_write_read_only_and_teardown(glusterd: Glusterd, volume: str, manager: VolumeManager) -> None:
    """GF6: the volume is FUSE-mounted from the first reachable Endpoints address (an unreachable one
    listed first becomes a backup), with a log file under the agent's data dir; readOnly mounts ro;
    teardown unmounts and removes the pod's directory and the mount's log."""
    source = {"glusterfs": {"endpoints": "ep", "path": volume}}
    pod = _pod(volume, source, ["127.0.0.9", "127.0.0.1"])
    started = time.monotonic()
    paths, errors = manager.setup_pod(pod)
    print(f"FUSE mount: {time.monotonic() - started:.2f}s")
    assert not errors, errors
    target = Path(paths["data"])
    entry = mounts.top_mount(target)
    assert entry is not None and entry.fstype == "fuse.glusterfs" and entry.source == f"127.0.0.1:/{volume}"
    (target / "hello").write_text("gluster")
    pid = _fuse_pid(target)
    argv = (Path(f"/proc/{pid}") / "cmdline").read_bytes().split(b"\0")
    assert b"--volfile-server=127.0.0.9" in argv  # the backup volfile server
    log_file = next(a for a in argv if a.startswith(b"--log-file=")).decode().split("=", 1)[1]
    assert log_file.startswith(str(manager.data_dir) + "/")
    ro = _pod(volume, {"glusterfs": {"endpoints": "ep", "path": volume, "readOnly": True}}, ["127.0.0.1"])
    ro_paths, errors = manager.setup_pod(ro)
    assert not errors, errors
    assert (Path(ro_paths["data"]) / "hello").read_text() == "gluster"
    with pytest.raises(OSError):
        (Path(ro_paths["data"]) / "other").write_text("x")
    for p in (pod, ro):
        manager.teardown_pod(p.uid)
        assert not manager.pod_dir(p.uid).exists()
    assert not mounts.mounts_under(manager.data_dir)
    assert not Path(log_file).exists()  # the mount's log goes with it


def test_teardown_of_a_hung_fuse_daemon_is_bounded(glusterd: Glusterd, volume: str, manager: VolumeManager) -> None:
    """GF7: with the mount's glusterfs client stopped (SIGSTOP), teardown neither stats the mount point nor
    waits on the daemon: plain umount times out, the forced one aborts the connection, all within seconds."""
    plugin = next(p for p in manager.registry.plugins() if isinstance(p, GlusterfsPlugin))
    plugin.unmount_timeout = 2.0
    pod = _pod(volume, {"glusterfs": {"endpoints": "ep", "path": volume}}, ["127.0.0.1"])
    paths, errors = manager.setup_pod(pod)
    assert not errors, errors
    target = Path(paths["data"])
    (target / "f").write_text("x")
    pid = _fuse_pid(target)
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(1.5)  # let the client's attribute cache (1 s) expire: a stat now blocks
        started = time.monotonic()
        manager.teardown_pod(pod.uid)
        took = time.monotonic() - started
        print(f"teardown with a hung FUSE daemon: {took:.2f}s")
        assert took < 15, took
        assert not manager.pod_dir(pod.uid).exists()
        assert not mounts.mounts_under(manager.data_dir)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the aborted client exits once it runs again
        try:
            os.kill(pid, 0)
            if Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z":
                break
        except (ProcessLookupError, FileNotFoundError):
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the glusterfs client of the aborted mount did not exit")


def test_missing_or_empty_endpoints_and_required_fields(tmp_path: Path) -> None:
    """GF5, GF6: no Endpoints or no addresses: TemporaryError naming the Endpoints; path and endpoints required."""
    plugin = GlusterfsPlugin(probe=lambda host: True)

    def ctx(source: dict[str, Any], hosts: Any) -> VolumeContext:
        return VolumeContext(pod_uid="u", pod_namespace="default", pod_name="p", volume_name="data", source=source,
                             target=tmp_path / "t", data={DATA_KEY: hosts}, executor=RecordingExecutor())

    with pytest.raises(TemporaryError, match="Endpoints gl-ep .*not found"):
        plugin.setup(ctx({"glusterfs": {"endpoints": "gl-ep", "path": "v"}}, None))
    with pytest.raises(TemporaryError, match="Endpoints gl-ep .*no addresses"):
        plugin.setup(ctx({"glusterfs": {"endpoints": "gl-ep", "path": "v"}}, []))
    with pytest.raises(PermanentError, match="glusterfs.endpoints"):
        plugin.setup(ctx({"glusterfs": {"path": "v"}}, ["10.0.0.1"]))
    with pytest.raises(PermanentError, match="glusterfs.path"):
        plugin.setup(ctx({"glusterfs": {"endpoints": "e"}}, ["10.0.0.1"]))


def test_mount_command_has_backups_options_and_ro(tmp_path: Path) -> None:
    """GF6: the mount command: first reachable host, the rest as backup-volfile-servers, the PV's
    mountOptions, ro when read-only."""
    executor = RecordingExecutor()
    plugin = GlusterfsPlugin(probe=lambda host: host != "10.0.0.1")
    target = tmp_path / "agent" / "pods" / "u" / "volumes" / "kubernetes.io~glusterfs" / "data"
    ctx = VolumeContext(pod_uid="u", pod_namespace="default", pod_name="p", volume_name="data",
                        source={"glusterfs": {"endpoints": "e", "path": "/vol1", "readOnly": True},
                                "mountOptions": ["acl"]},
                        target=target, data={DATA_KEY: ["10.0.0.1", "10.0.0.2", "10.0.0.3"]}, executor=executor)
    plugin.setup(ctx)
    argv = list(executor.calls[-1])
    assert argv[:3] == ["mount", "-t", "glusterfs"]
    options = argv[4].split(",")
    assert argv[5] == "10.0.0.2:/vol1" and argv[6] == str(target)
    assert "backup-volfile-servers=10.0.0.1:10.0.0.3" in options
    assert "acl" in options and "ro" in options
    log_opt = next(o for o in options if o.startswith("log-file="))
    assert log_opt.startswith(f"log-file={tmp_path / 'agent' / 'plugins'}")
    assert order_hosts(["a", "b"], lambda h: False) == ["a", "b"]


class _Reader:
    def __init__(self, objects: dict[tuple[str, str, str], Any]) -> None:
        self.objects = objects

    def get(self, resource: str, name: str, namespace: str = "") -> Any:
        try:
            return self.objects[(resource, namespace, name)]
        except KeyError:
            raise NotFound(f"{resource} {namespace}/{name}") from None


def test_agent_resolves_endpoints_inline_and_through_a_pv() -> None:
    """GF5: an inline volume's Endpoints are in the pod's namespace; a PV's in endpointsNamespace, else the
    claim's (the pod's) namespace; addresses in order, each once."""
    endpoints = {"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}, {"addresses": [{"ip": "10.0.0.1"}]}]}
    pod = {"metadata": {"name": "p", "namespace": "apps", "uid": "u"},
           "spec": {"volumes": [{"name": "inline", "glusterfs": {"endpoints": "ep1", "path": "v"}},
                                {"name": "claimed", "persistentVolumeClaim": {"claimName": "c"}},
                                {"name": "claimed2", "persistentVolumeClaim": {"claimName": "c2"}}]}}
    objects = {
        ("endpoints", "apps", "ep1"): endpoints,
        ("persistentvolumeclaims", "apps", "c"): {"spec": {"volumeName": "pv1"}, "status": {"phase": "Bound"}},
        ("persistentvolumes", "", "pv1"): {"spec": {"glusterfs": {"endpoints": "ep2", "path": "v",
                                                                  "endpointsNamespace": "storage"}}},
        ("endpoints", "storage", "ep2"): {"subsets": [{"addresses": [{"ip": "10.0.0.3"}]}]},
        ("persistentvolumeclaims", "apps", "c2"): {"spec": {"volumeName": "pv2"}, "status": {"phase": "Bound"}},
        ("persistentvolumes", "", "pv2"): {"spec": {"glusterfs": {"endpoints": "ep1", "path": "v"}}},
    }
    by_name = {v.name: v for v in resolve_pod_volumes(pod, _Reader(objects)).volumes}
    assert by_name["inline"].data[DATA_KEY] == ["10.0.0.1", "10.0.0.2"]
    assert by_name["claimed"].data[DATA_KEY] == ["10.0.0.3"]
    assert by_name["claimed2"].data[DATA_KEY] == ["10.0.0.1", "10.0.0.2"]
    del objects[("endpoints", "storage", "ep2")]
    assert {v.name: v for v in resolve_pod_volumes(pod, _Reader(objects)).volumes}["claimed"].data[DATA_KEY] is None
    assert endpoint_hosts(None) is None


def test_node_may_read_the_endpoints_its_glusterfs_volumes_name() -> None:
    """GF5: a node agent may read Endpoints (Kubernetes' system:node rules let every node read them; the
    agent also watches them for Service environment variables), so a glusterfs volume's are readable."""
    from storage.apiserver.auth import User
    from storage.apiserver.node_authz import NodeAuthorizer
    from storage.apiserver.rbac import Attributes

    authorizer = NodeAuthorizer(index=None)  # type: ignore[arg-type]  # Endpoints need no graph lookup
    node = User("system:node:n1", groups=("system:nodes",))
    for verb in ("get", "list", "watch"):
        decision = authorizer.authorize(Attributes(user=node, verb=verb, namespace="apps", resource="endpoints",
                                                   name="glusterfs-dynamic-data" if verb == "get" else ""))
        assert decision.allowed, (verb, decision)
    assert not authorizer.authorize(Attributes(user=node, verb="update", namespace="apps", resource="endpoints",
                                               name="glusterfs-dynamic-data")).allowed


def test_stowage_down_releases_a_hung_fuse_mount_quickly(glusterd: Glusterd, volume: str, manager: VolumeManager,
                                                         tmp_path: Path) -> None:
    """GF7: `stowage down` (stop_node) unmounts FUSE mounts with the same bounded steps, so a stopped
    glusterfs client does not stall it."""
    from storage.agent.teardown import stop_node

    pod = _pod(volume, {"glusterfs": {"endpoints": "ep", "path": volume}}, ["127.0.0.1"])
    paths, errors = manager.setup_pod(pod)
    assert not errors, errors
    pid = _fuse_pid(Path(paths["data"]))
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(1.5)
        started = time.monotonic()
        result = stop_node(manager.data_dir, tmp_path / "no-agent-dir", grace_seconds=1)
        took = time.monotonic() - started
        print(f"stop_node with a hung FUSE daemon: {took:.2f}s")
        assert took < 20, took
        assert result["mounts"] == 1 and not result["left"]["mounts"], result
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
