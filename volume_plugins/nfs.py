"""NFS exports (the ``nfs`` source: server, path, readOnly; a network mount, not attachable).

``mount -t nfs [-o OPTIONS] SERVER:PATH TARGET`` with the PV's mountOptions and ``ro`` for a
read-only source (NF3). An IPv6 server goes in brackets; an AWS EFS file system is a plain NFS
server (``fs-1234.efs.us-east-1.amazonaws.com:/``, NF4). A kernel without an NFS client is reported
as such instead of as a failed mount (NF6). Teardown waits a bounded time for the unmount and
falls back to a lazy unmount, so a dead server cannot hang the node (NF8).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import structlog

from storage.errors import PermanentError, TemporaryError
from storage.system import mounts
from storage.system.executor import CommandError, CommandTimeout, Executor
from volume_plugins.base import VolumeContext, VolumePlugin

log = structlog.get_logger(__name__)

NO_CLIENT = "this node's kernel has no NFS client (no nfs or nfs4 in /proc/filesystems)"
UNMOUNT_TIMEOUT = 30.0  # seconds an unmount may take before it goes lazy (a hung server blocks umount)


def nfs_supported(filesystems: Path = Path("/proc/filesystems")) -> bool:
    try:
        names = {line.split()[-1] for line in filesystems.read_text().splitlines() if line.split()}
    except OSError:
        return False
    # nfs.ko registers on first use through the module loader; a kernel that has it says so here
    # once loaded, and mount(8) loads it: a missing entry with modules present is still worth a try.
    return bool(names & {"nfs", "nfs4"}) or _module_available()


def _module_available() -> bool:
    release = os.uname().release
    base = Path("/lib/modules") / release / "kernel/fs/nfs"
    return base.is_dir() and any(base.glob("nfs.ko*"))


def mount_source(server: str, path: str) -> str:
    """``server:/path``; an IPv6 address in brackets, as mount.nfs wants it."""
    server = server.strip()
    if ":" in server and not server.startswith("["):
        server = f"[{server}]"
    return f"{server}:{path or '/'}"


class NfsPlugin(VolumePlugin):
    name = "kubernetes.io/nfs"
    source_key = "nfs"

    def __init__(self, resolver: Any = None, filesystems: Path = Path("/proc/filesystems"),
                 unmount_timeout: float = UNMOUNT_TIMEOUT) -> None:
        self.filesystems = filesystems
        self.unmount_timeout = unmount_timeout

    def mount_argv(self, ctx: VolumeContext, target: Path | None = None) -> list[str]:
        spec = self.spec(ctx.source)
        server, path = str(spec.get("server") or ""), str(spec.get("path") or "")
        if not server:
            raise PermanentError("nfs.server: Required value")
        if not path.startswith("/"):
            raise PermanentError(f"nfs.path: Invalid value: {path!r}: must be an absolute path")
        options = [str(o) for o in ctx.source.get("mountOptions") or []]
        if (ctx.read_only or spec.get("readOnly")) and "ro" not in options:
            options.append("ro")
        argv = ["mount", "-t", "nfs"]
        if options:
            argv += ["-o", ",".join(options)]
        return argv + [mount_source(server, path), str(target or ctx.target)]

    def setup(self, ctx: VolumeContext) -> Path:
        argv = self.mount_argv(ctx)  # bad input is reported before anything else
        target = ctx.target
        target.mkdir(parents=True, exist_ok=True)
        if mounts.is_mount_point(target):
            return target
        if not nfs_supported(self.filesystems):
            raise PermanentError(f"{NO_CLIENT}: cannot mount nfs volume {ctx.volume_name} from {argv[-2]}")
        try:
            ctx.executor.run(argv, timeout=120.0)
        except CommandTimeout:
            raise TemporaryError(f"mounting {argv[-2]} timed out (server not answering?)", delay=10.0) from None
        except CommandError as exc:
            raise TemporaryError(f"mounting {argv[-2]} failed: {exc.message}", delay=5.0) from None
        log.info("nfs.mounted", source=argv[-2], target=str(target))
        return target

    def teardown(self, target: Path, executor: Executor) -> None:
        if not mounts.is_mount_point(target):
            return
        try:
            executor.run(["umount", str(target)], timeout=self.unmount_timeout)
        except CommandTimeout:
            # A server that is gone blocks umount forever; detach it from the tree now instead.
            log.warning("nfs.unmount_lazy", target=str(target), timeout=self.unmount_timeout)
            executor.run(["umount", "-l", str(target)], timeout=self.unmount_timeout)
