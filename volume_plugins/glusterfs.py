"""GlusterFS volumes over FUSE (the ``glusterfs`` source; a network mount, not attachable).

As Kubernetes' in-tree plugin: the source names an Endpoints object (``endpoints``) whose
addresses are the Gluster servers, and a volume (``path``). The agent reads the Endpoints
through the API (the pod's namespace for an inline volume; a PV's ``endpointsNamespace``, else
its claim's namespace) and puts the addresses in ``VolumeContext.data[DATA_KEY]`` (GF5). The
mount is ``mount -t glusterfs <first reachable host>:/<path>`` with ``backup-volfile-servers``
the other hosts, a log file per mount under the agent's data directory, ``ro`` when read-only
and the PV's mountOptions (GF6).

Teardown never waits on a hung FUSE daemon (GF7): the mount point is found from the mount
table without a stat (a stat would block on the daemon), ``umount`` runs with a short
timeout, then ``umount -f`` (aborts the FUSE connection), then ``umount -l``.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import structlog

from storage.errors import PermanentError, TemporaryError
from storage.system import mounts
from storage.system.executor import CommandError, CommandTimeout, Executor
from volume_plugins.base import VolumeContext, VolumePlugin

log = structlog.get_logger(__name__)

# Where the agent puts the addresses of the Endpoints a glusterfs source names (a list of hosts,
# in the Endpoints' order); None when there is no such Endpoints object.
DATA_KEY = "glusterfs:hosts"
GLUSTERD_PORT = 24007
FUSE_TYPE = "fuse.glusterfs"
MOUNT_TIMEOUT = 60.0


def endpoints_location(source: dict[str, Any], pod_namespace: str, inline: bool) -> tuple[str, str]:
    """(namespace, name) of the Endpoints object: an inline pod volume's is in the pod's namespace;
    a PV's in ``endpointsNamespace``, else the claim's namespace (which is the pod's), as Kubernetes."""
    spec = source.get("glusterfs") or {}
    namespace = pod_namespace if inline else (spec.get("endpointsNamespace") or pod_namespace)
    return str(namespace), str(spec.get("endpoints") or "")


def endpoint_hosts(endpoints: dict[str, Any] | None) -> list[str] | None:
    """The addresses (ip, else hostname) of an Endpoints object, ready ones, in order, once each."""
    if endpoints is None:
        return None
    hosts: list[str] = []
    for subset in endpoints.get("subsets") or []:
        for address in subset.get("addresses") or []:
            host = str(address.get("ip") or address.get("hostname") or "")
            if host and host not in hosts:
                hosts.append(host)
    return hosts


def reachable(host: str, port: int = GLUSTERD_PORT, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def order_hosts(hosts: list[str], probe: Any = reachable) -> list[str]:
    """The first reachable host first (the volfile server), the others after it in their order."""
    for i, host in enumerate(hosts):
        if probe(host):
            return [host, *hosts[:i], *hosts[i + 1:]]
    return list(hosts)


def _mounted_at(point: str) -> bool:
    return any(e.mount_point == point for e in mounts.read_mountinfo())  # no stat of point (GF7)


class GlusterfsPlugin(VolumePlugin):
    name = "kubernetes.io/glusterfs"
    source_key = "glusterfs"

    def __init__(self, resolver: Any = None, *, unmount_timeout: float = 5.0, probe: Any = reachable) -> None:
        self.unmount_timeout = unmount_timeout  # how long a plain umount may wait on the daemon (GF7)
        self.probe = probe

    @staticmethod
    def log_file(target: Path, ctx: VolumeContext | None = None) -> Path:
        """A log per mount under the agent's data directory: the target is
        ``<data>/pods/<pod uid>/volumes/kubernetes.io~glusterfs/<volume>``."""
        parts = Path(os.path.abspath(target)).parts
        if "pods" in parts and len(parts) > parts.index("pods") + 1:
            i = parts.index("pods")
            data_dir, pod_uid = Path(*parts[:i]), parts[i + 1]
        else:
            data_dir, pod_uid = Path(os.path.abspath(target)).parent, ctx.pod_uid if ctx else "pod"
        logs = data_dir / "plugins" / "kubernetes.io" / "glusterfs" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return logs / f"{pod_uid}-{Path(target).name}.log"

    def teardown(self, target: Path, executor: Executor) -> None:
        # The mount is gone (the volume manager checked): its log goes with it, so logs do not pile up.
        self.log_file(target).unlink(missing_ok=True)

    def mount_arguments(self, ctx: VolumeContext, hosts: list[str], log_file: Path) -> tuple[str, list[str]]:
        """(source, options) of the FUSE mount."""
        spec = self.spec(ctx.source)
        path = str(spec.get("path") or "").strip("/")
        if not path:
            raise PermanentError("glusterfs.path: Required value")
        if not hosts:
            raise TemporaryError("glusterfs: no servers to mount from", delay=5.0)
        options = [f"log-file={log_file}", "log-level=ERROR"]
        if len(hosts) > 1:
            options.append("backup-volfile-servers=" + ":".join(hosts[1:]))
        options += [str(o) for o in ctx.source.get("mountOptions") or []]
        if ctx.read_only or spec.get("readOnly"):
            options.append("ro")
        return f"{hosts[0]}:/{path}", options

    def _hosts(self, ctx: VolumeContext) -> list[str]:
        spec = self.spec(ctx.source)
        if not spec.get("endpoints"):
            raise PermanentError("glusterfs.endpoints: Required value")
        hosts = ctx.data.get(DATA_KEY)
        if hosts is None:
            raise TemporaryError(f"Endpoints {spec['endpoints']} for glusterfs volume {ctx.volume_name} not found", delay=5.0)
        if not hosts:
            raise TemporaryError(f"Endpoints {spec['endpoints']} for glusterfs volume {ctx.volume_name} has no addresses",
                                 delay=5.0)
        return order_hosts(list(hosts), self.probe)

    def setup(self, ctx: VolumeContext) -> Path:
        hosts = self._hosts(ctx)
        target = ctx.target
        target.mkdir(parents=True, exist_ok=True)
        if _mounted_at(mounts.real_without_stat(target)):
            return target
        log_file = self.log_file(target, ctx)
        source, options = self.mount_arguments(ctx, hosts, log_file)
        try:
            ctx.executor.run(["mount", "-t", "glusterfs", "-o", ",".join(options), source, str(target)],
                             timeout=MOUNT_TIMEOUT)
        except (CommandError, CommandTimeout) as exc:
            # mount.glusterfs says little; the client's own log says why (Kubernetes reads it too).
            detail = _log_tail(log_file)
            raise TemporaryError(f"mounting glusterfs {source} failed: {exc}" + (f"; log: {detail}" if detail else ""),
                                 delay=5.0) from None
        log.info("glusterfs.mounted", source=source, target=str(target), backups=hosts[1:])
        return target

    def unmount_volume(self, path: Path, executor: Executor) -> bool:
        """Unmount the FUSE mount at ``path`` without ever blocking on its daemon (GF7)."""
        try:
            return mounts.unmount_fuse(path, self.unmount_timeout, executor=executor)
        except RuntimeError as exc:
            raise TemporaryError(f"glusterfs: {exc}", delay=2.0) from None


def _log_tail(log_file: Path, lines: int = 3) -> str:
    try:
        text = log_file.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])[:600]
