"""CephFS on a node (the ``cephfs`` source; a network mount, not attachable).

The kernel client (``mount -t ceph``) where this kernel has one (``ceph`` in /proc/filesystems), else
ceph-fuse, as Kubernetes' in-tree plugin chooses (CF7). Credentials come from ``secretRef`` (either
Secret layout: in-tree ``key``, or ceph-csi ``userID``/``userKey``), else from ``secretFile`` (a host
path, default ``/etc/ceph/<user>.secret``); ``user`` defaults to ``admin`` (CF8). A key is written
only to a 0600 file in a private directory that is removed as soon as the mount command returns:
the kernel helper reads it once, ceph-fuse keeps the key in memory (CF9).

Each ceph-fuse mount gets its own directory (log file, admin socket) under ``state_dir``, never the
host's /var/log/ceph or /var/run/ceph. Teardown works from the path alone: the mount table says what
is mounted, the process table which ceph-fuse serves it; a daemon that does not answer (stopped, or
its cluster gone) is killed after a bounded wait and the mount is then removed, so a pod whose FUSE
daemon hung is still torn down (CF10).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import structlog

from storage.api import ceph
from storage.api.volume_secrets import SECRET_DATA_KEY
from storage.errors import PermanentError, TemporaryError
from storage.system import mounts
from storage.system.executor import CommandError, CommandTimeout, Executor
from volume_plugins.base import VolumeContext, VolumePlugin

log = structlog.get_logger(__name__)

STATE_DIR_ENV = "STOWAGE_CEPHFS_STATE_DIR"
DEFAULT_STATE_DIR = Path("/run/stowage/cephfs")
FUSE_FSTYPE = "fuse.ceph-fuse"
UNMOUNT_TIMEOUT = 5.0  # a healthy unmount takes milliseconds; longer means the daemon does not answer
EXIT_TIMEOUT = 5.0
MOUNT_TIMEOUT = 60.0


def kernel_client_present(filesystems: Path = Path("/proc/filesystems")) -> bool:
    try:
        return any(line.split()[-1] == "ceph" for line in filesystems.read_text().splitlines() if line.split())
    except OSError:
        return False


def _text(value: Any) -> str:
    return (value.decode() if isinstance(value, bytes) else str(value)).strip()


def state_dir_for(base: Path, target: Path) -> Path:
    """The per-mount directory (log, admin socket): named by the target path, so teardown finds it."""
    return base / hashlib.sha256(os.fspath(target).encode()).hexdigest()[:16]


def ceph_fuse_pids(target: Path, proc: Path = Path("/proc")) -> list[int]:
    """The ceph-fuse processes serving ``target`` (their command line names it; it is always absolute)."""
    wanted = os.fspath(target).encode()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"ceph-fuse" and wanted in argv:
            found.append(int(entry.name))
    return sorted(found)


def mounts_at(target: Path) -> list[mounts.MountEntry]:
    """Mounts at ``target`` by the mount table alone: resolving the path (``mounts.mounts_at``) would
    stat the mount point and block on a FUSE daemon that does not answer."""
    wanted = os.path.abspath(target)
    return [e for e in mounts.read_mountinfo() if e.mount_point == wanted]


class CephfsPlugin(VolumePlugin):
    name = "kubernetes.io/cephfs"
    source_key = "cephfs"
    def __init__(self, resolver: Any = None, filesystems: Path = Path("/proc/filesystems"),
                 state_dir: Path | None = None, secret_dir: Path = Path("/etc/ceph")) -> None:
        self.filesystems = filesystems  # checked for the kernel client
        self.state_dir = state_dir or Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)
        self.secret_dir = secret_dir  # where secretFile defaults to <user>.secret

    # ---- what to mount, as whom ------------------------------------------------------------

    def _source(self, ctx: VolumeContext) -> tuple[tuple[str, ...], str, bool]:
        spec = self.spec(ctx.source)
        monitors = ceph.split_monitors(spec.get("monitors") or [], "cephfs.monitors")
        path = str(spec.get("path") or "/")
        if not path.startswith("/"):
            raise PermanentError(f"cephfs.path: Invalid value: {path!r}: must be absolute")
        return monitors, path, bool(ctx.read_only or spec.get("readOnly"))

    def credentials(self, ctx: VolumeContext) -> tuple[ceph.Credentials, Path | None]:
        """(credentials, the secretFile they came from, or None for a Secret). ``secretRef`` wins (CF8)."""
        spec = self.spec(ctx.source)
        user = str(spec.get("user") or "admin")
        ref = spec.get("secretRef") or {}
        if isinstance(ref, dict) and ref.get("name"):
            data = ctx.data.get(SECRET_DATA_KEY)
            if data is None:
                raise TemporaryError(f"cephfs.secretRef: Secret {ref['name']} for volume {ctx.volume_name} not found",
                                     delay=5.0)
            return ceph.credentials_from_secret(data, user=user, role="user", secret=str(ref["name"])), None
        secret_file = Path(str(spec.get("secretFile") or self.secret_dir / f"{user}.secret"))
        try:
            key = secret_file.read_text().strip()
        except OSError as exc:
            raise PermanentError(f"cephfs.secretFile: cannot read {secret_file}: {exc.strerror}") from None
        if not key:
            raise PermanentError(f"cephfs.secretFile: {secret_file} is empty")
        return ceph.Credentials(user=user.removeprefix("client."), key=key), secret_file

    def kernel_argv(self, ctx: VolumeContext, user: str, secret_file: Path) -> list[str]:
        monitors, path, read_only = self._source(ctx)
        options = [f"name={user}", f"secretfile={secret_file}"]
        options += [str(o) for o in ctx.source.get("mountOptions") or []]
        if read_only:
            options.append("ro")
        return ["mount", "-t", "ceph", f"{','.join(monitors)}:{path}", os.fspath(ctx.target), "-o", ",".join(options)]

    def fuse_argv(self, ctx: VolumeContext, user: str, conf: Path, state: Path) -> list[str]:
        _, path, read_only = self._source(ctx)
        options = [str(o) for o in ctx.source.get("mountOptions") or []]
        if read_only:
            options.append("ro")
        argv = ["ceph-fuse", "-c", os.fspath(conf), "--id", user, "-r", path, os.fspath(ctx.target),
                f"--log_file={state / 'client.log'}", f"--admin_socket={state / 'client.asok'}"]
        if options:
            argv += ["-o", ",".join(options)]
        return argv

    # ---- setup -------------------------------------------------------------------------

    def setup(self, ctx: VolumeContext) -> Path:
        target = Path(os.path.abspath(ctx.target))
        ctx.target = target
        target.mkdir(parents=True, exist_ok=True)
        if mounts_at(target):
            return target
        creds, secret_file = self.credentials(ctx)
        started = time.monotonic()
        if kernel_client_present(self.filesystems):
            self._mount_kernel(ctx, creds, secret_file)
            how = "kernel"
        else:
            self._mount_fuse(ctx, creds)
            how = "ceph-fuse"
        log.info("cephfs.mounted", target=str(target), client=how, user=creds.user,
                 seconds=round(time.monotonic() - started, 3))
        return target

    @contextmanager
    def _secret_file(self, key: str) -> Iterator[Path]:
        directory = Path(tempfile.mkdtemp(prefix="stowage-cephfs-"))  # 0700
        try:
            path = directory / "secret"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key)
            yield path
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _mount_kernel(self, ctx: VolumeContext, creds: ceph.Credentials, secret_file: Path | None) -> None:
        def run(path: Path) -> None:
            argv = self.kernel_argv(ctx, creds.user, path)
            try:
                ctx.executor.run(argv, secrets=(creds.key,), timeout=MOUNT_TIMEOUT)
            except (CommandError, CommandTimeout) as exc:
                raise TemporaryError(f"mounting cephfs {argv[3]} failed: {str(exc).replace(creds.key, '***')}",
                                     delay=5.0) from None

        if secret_file is not None:
            run(secret_file)
            return
        with self._secret_file(creds.key) as path:
            run(path)

    def _mount_fuse(self, ctx: VolumeContext, creds: ceph.Credentials) -> None:
        monitors, _, _ = self._source(ctx)
        state = state_dir_for(self.state_dir, ctx.target)
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The keyring lives only until ceph-fuse has mounted: it authenticates at start and keeps the key.
        with ceph.client_files(monitors, creds, parent=state) as (conf, _keyring):
            argv = self.fuse_argv(ctx, creds.user, conf, state)
            try:
                ctx.executor.run(argv, secrets=(creds.key,), timeout=MOUNT_TIMEOUT)
            except (CommandError, CommandTimeout) as exc:
                detail = str(exc).replace(creds.key, "***")
                self._stop_daemons(ctx.target)  # a half-started daemon must not outlive the failure
                raise TemporaryError(f"ceph-fuse mount of {','.join(monitors)}:{self._source(ctx)[1]} as"
                                     f" client.{creds.user} failed: {detail} (log: {state / 'client.log'})",
                                     delay=5.0) from None

    # ---- teardown ----------------------------------------------------------------------

    def unmount_volume(self, target: Path, executor: Executor) -> bool:
        """Unmount ``target`` before the volume manager's generic unmount, so a hung ceph-fuse cannot
        block teardown: a stopped daemon, or an unmount that does not finish within UNMOUNT_TIMEOUT, gets
        the daemon killed (which ends its FUSE connection) and the mount removed (CF8)."""
        target = Path(os.path.abspath(target))
        entries = [e for e in mounts_at(target) if e.fstype in (FUSE_FSTYPE, "ceph")]
        for entry in reversed(entries):
            serving = (lambda: ceph_fuse_pids(target)) if entry.fstype == FUSE_FSTYPE else None
            mounts.unmount_fuse(target, UNMOUNT_TIMEOUT, executor=executor, daemons=serving, exit_timeout=EXIT_TIMEOUT)
        self._stop_daemons(target)
        shutil.rmtree(state_dir_for(self.state_dir, target), ignore_errors=True)
        return bool(entries)

    def teardown(self, target: Path, executor: Executor) -> None:
        self.unmount_volume(target, executor)

    def _stop_daemons(self, target: Path) -> None:
        """A ceph-fuse left for ``target`` once nothing is mounted there: it exits on unmount by itself;
        one that does not within EXIT_TIMEOUT is killed."""
        pids = ceph_fuse_pids(target)
        if pids and not mounts.wait_processes_gone(pids, EXIT_TIMEOUT):
            mounts.kill_processes(pids)
