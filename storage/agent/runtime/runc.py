"""runc, run under a small shell shim that outlives the agent and records the exit code."""
from __future__ import annotations

import collections
import ctypes
import dataclasses
import errno
import json
import os
import re
import shutil
import signal as signal_module
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

import psutil
import structlog

from storage.system.executor import Executor, kill_bounded
from storage.system.mounts import (MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MountTable, own_filesystem_mounted,
                                   process_stat)

from .oci import BlockDevice
from .userns import detach, stage_bind

log = structlog.get_logger(__name__)

# The kubelet's containerLogMaxSize default (10Mi): a container's log is rotated past it.
CONTAINER_LOG_MAX_BYTES = 10 << 20
# The kubelet's containerLogMaxFiles default: the current file and four rotated ones are kept.
CONTAINER_LOG_MAX_FILES = 5

# A runc command that only reads or signals (state, list, kill, delete) takes milliseconds; one still
# running after this is stuck (CF13).
RUNC_TIMEOUT = 30.0
# runc's own errors, as logrus writes them to its stderr: time="..." level=error msg="<the message, Go-quoted>".
ERROR_LINE = re.compile(rb'time="[^"]*" level=error msg="((?:[^"\\]|\\.)*)"')
ERROR_LINE_START = b'time="'

# The shim waits for `runc run` (which waits for the container) and writes the exit
# status atomically; it runs in its own session so an agent restart leaves it alone.
# Each line of output is stamped with the time it was written (RFC 3339, UTC), so the
# log can be cut by time (sinceSeconds) and shown with timestamps after an agent restart.
# SV12: past the log's size limit the file is moved to <log>.1, the older ones shifted to <log>.2 ...
# and the oldest of the files kept dropped, and a new one begun, as the kubelet rotates at
# containerLogMaxSize and keeps containerLogMaxFiles: a chatty or hostile container cannot fill the
# node's disk. Sizes are counted in bytes (LC_ALL=C), from the file's size at start.
_SHIM = r'''
export TZ=UTC0 LC_ALL=C
exit_file=$1 log=$2 max=$3 size=$4 files=$5; shift 5
stamp() {
  while IFS= read -r line || [ -n "$line" ]; do
    t=$EPOCHREALTIME
    printf '%(%Y-%m-%dT%H:%M:%S)T.%s000Z %s\n' "${t%.*}" "${t#*.}" "$line"
    size=$((size + ${#line} + 32))
    if ((max > 0 && size > max)); then
      for ((i = files - 1; i > 1; i--)); do
        [ -e "$log.$((i - 1))" ] && mv -f -- "$log.$((i - 1))" "$log.$i"
      done
      mv -f -- "$log" "$log.1" && exec >>"$log"
      size=0
    fi
  done
}
"$@" 2>&1 | stamp
rc=${PIPESTATUS[0]}
echo "$rc" > "$exit_file.tmp" && mv "$exit_file.tmp" "$exit_file"
'''


def _start_time(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (/proc/<pid>/stat, field 22), as runc records it."""
    fields = process_stat(pid)
    try:
        return int(fields[19]) if fields is not None else None
    except (IndexError, ValueError):
        return None


class Runc:
    def __init__(self, root: Path, binary: str = "runc", executor: Executor | None = None) -> None:
        self.root = root
        self.binary = binary
        self.executor = executor or Executor()
        root.mkdir(parents=True, exist_ok=True)

    def _cmd(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.root), *args]

    def start(self, container_id: str, bundle: Path, log_path: Path, exit_path: Path,
              stdin_path: Path | None = None, log_max_bytes: int = CONTAINER_LOG_MAX_BYTES,
              log_max_files: int = CONTAINER_LOG_MAX_FILES) -> subprocess.Popen[bytes]:
        """``stdin_path``: a FIFO made here and held open by the shim for the container's stdin
        (``stdin: true``), so ``attach`` can write to it while the container runs. ``log_max_bytes``:
        the log's size limit (0: none); ``log_max_files``: how many files of it are kept (at least 2)."""
        if (self.root / container_id).exists():
            # What a crashed start left (PF4): runc keeps each container's state in <root>/<id>,
            # so without that directory there is nothing to delete and no process to spawn.
            self.delete(container_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        stdin: int = subprocess.DEVNULL
        fifo_fd = -1
        if stdin_path is not None:
            stdin_path.unlink(missing_ok=True)
            os.mkfifo(stdin_path, 0o600)
            # Read-write: the container never sees end-of-file when one writer goes away.
            fifo_fd = stdin = os.open(stdin_path, os.O_RDWR | os.O_CLOEXEC)
        try:
            with open(log_path, "ab") as out:
                return subprocess.Popen(
                    ["/bin/bash", "-c", _SHIM, "stowage-shim", str(exit_path), str(log_path), str(log_max_bytes),
                     str(os.fstat(out.fileno()).st_size), str(max(2, log_max_files)),
                     *self._cmd("run", "--bundle", str(bundle), container_id)],
                    stdin=stdin, stdout=out, stderr=out,
                    start_new_session=True, close_fds=True, cwd=str(bundle),
                )
        finally:
            if fifo_fd >= 0:
                os.close(fifo_fd)

    def shim_of(self, exit_path: Path) -> psutil.Process | None:
        """The live shim that records a container's end at ``exit_path``, if there is one. Reads every
        process's command line, so only for the rare look after a crash, never for each start."""
        want = ["stowage-shim", str(exit_path)]
        for proc in psutil.process_iter(["cmdline", "status"]):
            try:
                if proc.info["cmdline"][3:5] == want and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    return proc
            except (TypeError, psutil.Error):  # a kernel thread (no command line) or gone meanwhile
                continue
        return None

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A runc command, bounded (CF13): one stuck in the kernel (a frozen or hung container's runc)
        raises ``CommandTimeout`` within ``RUNC_TIMEOUT`` plus the executor's kill wait, instead of
        holding the pod's worker for good."""
        return self.executor.run(self._cmd(*args), check=False, timeout=RUNC_TIMEOUT)

    def state(self, container_id: str) -> dict[str, Any] | None:
        result = self._run("state", container_id)
        if result.returncode != 0:
            return None
        return json.loads(result.stdout)

    def list(self) -> list[dict[str, Any]]:
        result = self._run("list", "--format", "json")
        if result.returncode != 0 or not result.stdout.strip():
            return []
        return json.loads(result.stdout) or []

    def kill(self, container_id: str, signal: str) -> bool:
        """Send ``signal`` (TERM, KILL...) to the container's init; True when it was sent."""
        if self._signal_init(container_id, signal):
            return True
        return self._run("kill", container_id, signal).returncode == 0

    def _signal_init(self, container_id: str, signal_name: str) -> bool:
        """PF76: the signal sent by the agent itself, as `runc kill` sends it (to the init process its
        state file names), without a runc process of 5-10 ms per signal. Only when that process is
        provably the container's init: its start time (/proc/<pid>/stat) must be the one runc recorded,
        read again after the pidfd pinned the process, so a reused pid is never signalled. Anything
        else (no state file, a process gone or different, another runc's layout) returns False and
        the caller asks runc."""
        number = getattr(signal_module, f"SIG{signal_name}", None)
        if not isinstance(number, int):
            return False
        try:
            state = json.loads((self.root / container_id / "state.json").read_bytes())
            pid, started = int(state["init_process_pid"]), int(state["init_process_start"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if pid <= 1 or _start_time(pid) != started:
            return False
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return False
        try:
            if _start_time(pid) != started:  # the pid was reused between the two looks
                return False
            signal_module.pidfd_send_signal(pidfd, number)
            return True
        except OSError:  # it ended meanwhile: runc gives the authoritative answer
            return False
        finally:
            os.close(pidfd)

    def delete(self, container_id: str) -> None:
        """``runc delete --force``, unless runc has no state for the container: runc keeps each container's
        state in <root>/<id>, and `runc run` removes it itself when its container ends, so after a
        normal exit there is nothing to delete and no process of 4-5 ms to spawn (PF79)."""
        if not (self.root / container_id).exists():
            return
        self._run("delete", "--force", container_id)

    def exec(self, container_id: str, argv: list[str], timeout: float | None) -> tuple[int, bytes]:
        """Run argv inside the container, its stdout and stderr together; (-1, reason) on timeout."""
        code, out, _ = self._exec(container_id, argv, timeout, subprocess.STDOUT)
        return code, out

    def exec_split(self, container_id: str, argv: list[str], timeout: float | None) -> tuple[int, bytes, bytes]:
        """``exec`` with stdout and stderr apart (``timeout`` None: until it ends, or its container does)."""
        return self._exec(container_id, argv, timeout, subprocess.PIPE)

    def _exec(self, container_id: str, argv: list[str], timeout: float | None, stderr: int) -> tuple[int, bytes, bytes]:
        proc = subprocess.Popen(self._cmd("exec", container_id, *argv), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_bounded(proc, self._cmd("exec", container_id), group=True)
            return -1, b"command timed out", b""
        return proc.returncode, out, err or b""


_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str | Path, fstype: str | None, flags: int, data: str | None, shown: str) -> None:
    """mount(2) in this process (PF68): the mounts of a container's root, whose options are the agent's
    own, without a `mount` process each; ``shown`` names it in the error."""
    if _libc.mount(source.encode(), os.fsencode(target), fstype.encode() if fstype else None, flags,
                   data.encode() if data else None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{shown}: {os.strerror(err)}")


def _mount_at_fd(fd: int, source: str, fstype: str | None, flags: int, data: str | None) -> None:
    _mount(source, f"/proc/self/fd/{fd}", fstype, flags, data, f"mount {source} over a hidden path")


# The host's secrets that sit on its root filesystem, which every pod's root is an overlay of:
# covered like the data dir. Homes get a writable empty directory, so HOME=/root still works.
HOST_SECRETS = ["/root", "/home", "/etc/shadow", "/etc/gshadow", "/etc/ssh", "/etc/sudoers.d"]
WRITABLE_MASKS = {"/root": 0o700, "/home": 0o755}

# Where a host keeps what only its own users may read. The pod's lower layer is idmapped so that the
# host's root shows as the pod's root, which would let the pod's root read the host's root-only files
# (TLS keys, database and service credentials): every file there that an unprivileged host user
# could not read (no o+r) and every directory it could not enter (no o+x) is covered too.
PRIVATE_SCAN_ROOTS = ("/etc", "/var", "/opt", "/srv", "/usr/local/etc", "/boot")
PRIVATE_SCAN_SKIP = ("/var/tmp", "/var/run", "/var/lock")  # scratch space (another pod's own /tmp is its own)
PRIVATE_SCAN_DEPTH = 16
PRIVATE_SCAN_BUDGET = 50_000  # entries looked at per scan, so a host with huge trees stays cheap to scan


def host_private_paths(roots: tuple[str, ...] = PRIVATE_SCAN_ROOTS, depth: int = PRIVATE_SCAN_DEPTH,
                       budget: int = PRIVATE_SCAN_BUDGET) -> list[str]:
    """Host files without o+r and directories without o+x under ``roots`` (not following links; a
    private directory is covered whole, not entered). Level by level, so a budget that runs out on a
    huge tree leaves its deepest levels unscanned, never a shallow one."""
    found: list[str] = []
    left = budget
    queue: collections.deque[tuple[str, int]] = collections.deque((r, 0) for r in roots)
    while queue and left > 0:
        where, level = queue.popleft()
        try:
            entries = list(os.scandir(where))
        except OSError:
            continue
        for entry in entries:
            left -= 1
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if entry.path in PRIVATE_SCAN_SKIP:
                    continue
                if not st.st_mode & stat.S_IXOTH:
                    found.append(entry.path)
                elif level + 1 < depth:
                    queue.append((entry.path, level + 1))
            elif stat.S_ISREG(st.st_mode) and not st.st_mode & stat.S_IROTH:
                found.append(entry.path)
    if left <= 0:
        log.warning("host scan for private files stopped early", budget=budget)
    return found


class HostPrivatePaths:
    """``host_private_paths()``, read again in the background once the reading is older than
    ``max_age`` seconds, so no container start waits for a scan after the first. A node agent asks
    every 10 s besides (its housekeeping), so a file made private between two starts is covered in
    the next pod within about ``max_age``."""

    def __init__(self, max_age: float = 60.0, scan: Callable[[], list[str]] | None = None) -> None:
        self.max_age = max_age
        self._scan = scan or host_private_paths
        self._lock = threading.Lock()
        self._paths: list[str] | None = None
        self._at = 0.0
        self._refreshing = False

    def current(self) -> list[str]:
        with self._lock:
            paths, stale = self._paths, time.monotonic() - self._at > self.max_age
            refresh = paths is not None and stale and not self._refreshing
            if refresh:
                self._refreshing = True
        if paths is None:
            paths = self._scan()
            with self._lock:
                self._paths, self._at = paths, time.monotonic()
        elif refresh:
            threading.Thread(target=self._refresh, name="stowage-private-scan", daemon=True).start()
        return paths

    def _refresh(self) -> None:
        try:
            paths = self._scan()
            with self._lock:
                self._paths, self._at = paths, time.monotonic()
        except Exception as exc:  # the old list stays; the next look tries again
            log.warning("host scan for private files failed", error=str(exc))
        finally:
            with self._lock:
                self._refreshing = False


HOST_PRIVATE = HostPrivatePaths()


def hide_paths(rootfs: Path, paths: list[str], owner: int) -> list[str]:
    """Cover each of ``paths`` inside ``rootfs`` with an empty read-only tmpfs (a directory)
    or an empty file (anything else). Made here, in the agent's mount namespace, these mounts
    are locked together with the root when runc creates the pod's user-owned mount namespace,
    so even CAP_SYS_ADMIN in the pod cannot unmount them. Paths are walked inside the root
    without following symlinks (a symlink there would lead into the host). Returns what was hidden."""
    hidden = []
    for path in sorted(set(paths)):
        parts = [p for p in Path(path).parts if p != "/"]
        if not parts:
            continue
        fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts:
                try:
                    nfd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                except OSError:
                    break  # absent in the pod's root (another filesystem, or not made yet): nothing shows
                os.close(fd)
                fd = nfd
            else:
                st = os.fstat(fd)
                if stat.S_ISDIR(st.st_mode) and path in WRITABLE_MASKS:
                    _mount_at_fd(fd, "tmpfs", "tmpfs", MS_NOSUID | MS_NODEV,
                                 f"size=64m,mode={WRITABLE_MASKS[path]:o},uid={owner},gid={owner}")
                elif stat.S_ISDIR(st.st_mode):
                    _mount_at_fd(fd, "tmpfs", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                                 f"size=4k,mode=0755,uid={owner},gid={owner}")
                elif stat.S_ISREG(st.st_mode):
                    _mount_at_fd(fd, "/dev/null", None, MS_BIND, None)
                else:
                    continue  # a symlink's own name (O_PATH|O_NOFOLLOW): the host path is elsewhere
                hidden.append(path)
        finally:
            os.close(fd)
    return hidden


def mount_rootfs(container_dir: Path, scratch_size: str, rootfs: Path | None = None, *,
                 userns_fd: int | None = None, base: int = 0, hidden: list[str] | None = None) -> Path:
    """Overlay of / with its writable layer on a private tmpfs; returns the rootfs path.

    With a user namespace the lower layer is an idmapped bind of / (host root shows as the
    pod's root) and the writable layer belongs to the range's base id, the pod's root."""
    scratch = container_dir / "scratch"
    rootfs = rootfs or container_dir / "rootfs"
    scratch.mkdir(parents=True, exist_ok=True)
    rootfs.mkdir(parents=True, exist_ok=True, mode=0o711)
    if own_filesystem_mounted(rootfs):
        return rootfs
    if not own_filesystem_mounted(scratch):
        _mount("tmpfs", scratch, "tmpfs", 0, f"size={scratch_size},mode=0700", f"mount -t tmpfs tmpfs {scratch}")
    (scratch / "upper").mkdir(exist_ok=True)
    (scratch / "work").mkdir(exist_ok=True)
    lower = Path("/")
    if userns_fd is not None:
        os.chown(scratch / "upper", base, base)
        os.chmod(scratch / "upper", 0o755)
        lower = container_dir / "lower"
        detach(lower)
        lower.mkdir(exist_ok=True)
        if not stage_bind("/", lower, userns_fd):
            detach(lower)
            raise OSError("the host's root filesystem cannot be idmapped: this kernel or filesystem "
                          "does not support idmapped mounts")
    try:
        _mount("overlay", rootfs, "overlay", 0, f"lowerdir={lower},upperdir={scratch / 'upper'},workdir={scratch / 'work'}",
               f"mount -t overlay overlay {rootfs}")
    finally:
        if lower != Path("/"):
            detach(lower)  # the overlay holds its own reference to the layer
    try:
        hide_paths(rootfs, hidden or [], base)
    except OSError:
        unmount_rootfs(container_dir, rootfs)
        raise
    return rootfs


def make_device_nodes(container_dir: Path, devices: list[BlockDevice], owner: int) -> list[BlockDevice]:
    """A node for each of a container's block devices, on its scratch tmpfs (the agent's own mount,
    without nodev), owned by the container's root (``owner``, the range's base in a user namespace,
    where the host's root-owned /dev node could not be opened). Made afresh at every start."""
    where = container_dir / "scratch" / "devices"
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(mode=0o700)
    made = []
    for i, device in enumerate(devices):
        node = where / str(i)
        os.mknod(node, stat.S_IFBLK | 0o660, os.makedev(device.major, device.minor))
        os.chown(node, owner, owner)
        made.append(dataclasses.replace(device, node=str(node)))
    return made


# More copies stacked on one path than a start makes (one each) plus what crashed starts could leave.
_MAX_STACKED = 16


def release_rootfs(container_dir: Path, rootfs: Path) -> None:
    """PF82: once runc has started the container, whose mount namespace holds its own copies, the agent's
    copies of what this start mounted go, at the paths it mounted them, without reading the mount table
    (thousands of lines on a node with hundreds of pods): the root (a lazy unmount takes what is hidden in
    it along), each staged volume, the idmapped lower layer and the scratch tmpfs. A lazy unmount never
    fails as busy; the filesystems live on in the container. Not for clean-up after a crash, which cannot
    know what was mounted where: ``unmount_rootfs`` reads the table for that."""
    stage = rootfs.parent / "volumes"
    staged = sorted(stage.iterdir()) if stage.is_dir() else []  # the directory's entries, never stat'ed
    for point in (rootfs, container_dir / "rootfs", *staged, container_dir / "lower", container_dir / "scratch"):
        try:
            for _ in range(_MAX_STACKED):
                if not detach(point, nofollow=True):
                    break
        except OSError as exc:
            log.warning("unmount of a container's copy failed", path=str(point), error=exc.strerror)


def unmount_rootfs(container_dir: Path, rootfs: Path | None = None) -> None:
    """Unmount the container's root (with what is hidden in it), its staged volumes and scratch."""
    targets = [p for p in (rootfs, container_dir / "rootfs") if p is not None]
    stage = rootfs.parent / "volumes" if rootfs is not None else None
    bases = [*targets, *([stage] if stage else []), container_dir / "lower", container_dir / "scratch"]
    if not any(os.path.lexists(base) for base in bases):
        return  # nothing made yet (a first start, PF4): nothing can be mounted there
    table = MountTable.read()  # one reading: the table is long on a node with many pods
    for entries in table.under_each(bases):  # and one pass over it for all of them (PF69)
        for entry in entries:
            if _libc.umount2(entry.mount_point.encode(), 0) != 0:
                err = ctypes.get_errno()
                if err == errno.EBUSY:
                    log.warning("unmount busy, detaching lazily", path=entry.mount_point)
                    detach(Path(entry.mount_point))
