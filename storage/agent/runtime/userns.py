"""User namespaces of pods: one host uid/gid range per pod, and idmapped mounts into it.

runc 1.1 ignores ``mounts[].uidMappings``, so the runtime makes the idmapped mounts
itself with the kernel's mount API (``open_tree`` + ``mount_setattr(MOUNT_ATTR_IDMAP)``
+ ``move_mount``) and hands them to runc as plain binds: a bind of an idmapped mount
keeps its idmap.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import itertools
import os
import subprocess
import threading
from pathlib import Path

import structlog

from storage.system.durable import write_atomically

log = structlog.get_logger(__name__)

RANGE_SIZE = 65536
# Host ids from 2^24 up: above the ranges distributions hand out in /etc/subuid (100000+)
# and below 2^31, which some programs still treat as signed.
FIRST_BASE = 1 << 24
RANGE_COUNT = 8192
USERNS_FILE = "runtime/userns"

# x86_64 syscall numbers and flags of the new mount API (linux/mount.h, asm/unistd_64.h).
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_OPEN_TREE_CLONE = 1
_O_CLOEXEC = 0o2000000
_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_IDMAP = 0x00100000
_MNT_DETACH = 2
_UMOUNT_NOFOLLOW = 8

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _open_tree(path: str) -> int:
    return _check(_libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(path),
                                ctypes.c_uint(_OPEN_TREE_CLONE | _O_CLOEXEC)), f"open_tree {path}")


def _set_idmap(tree_fd: int, userns_fd: int) -> None:
    attr = _MountAttr(attr_set=_MOUNT_ATTR_IDMAP, attr_clr=0, propagation=0, userns_fd=userns_fd)
    _check(_libc.syscall(_SYS_MOUNT_SETATTR, tree_fd, b"", ctypes.c_uint(0x1000),  # AT_EMPTY_PATH
                         ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))), "mount_setattr idmap")


def _move_mount(tree_fd: int, target: Path) -> None:
    _check(_libc.syscall(_SYS_MOVE_MOUNT, tree_fd, b"", _AT_FDCWD, os.fsencode(str(target)),
                         ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH)), f"move_mount to {target}")


def detach(target: Path, *, nofollow: bool = False) -> bool:
    """Unmount lazily and say whether a mount was detached; a mount that is already gone is fine.
    ``nofollow`` keeps a symlink planted at ``target`` from redirecting the unmount elsewhere."""
    flags = _MNT_DETACH | (_UMOUNT_NOFOLLOW if nofollow else 0)
    if _libc.umount2(os.fsencode(str(target)), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err not in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount point; no such path
        raise OSError(err, f"umount {target}: {os.strerror(err)}")
    return False


def stage_bind(source: str, target: Path, userns_fd: int | None) -> bool:
    """Mount a copy of ``source`` (file or directory) at ``target``, idmapped into the user
    namespace ``userns_fd`` when given. Returns whether the idmap took: a filesystem that
    cannot be idmapped gets a plain bind (its files then show as nobody in the pod)."""
    tree = _open_tree(source)
    try:
        idmapped = False
        if userns_fd is not None:
            try:
                _set_idmap(tree, userns_fd)
                idmapped = True
            except OSError as exc:
                log.warning("volume cannot be idmapped, bound as is", source=source, error=str(exc))
        if not target.exists():
            if os.path.isdir(source):
                target.mkdir(parents=True, mode=0o711)
            else:
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
                target.touch(mode=0o600)
        _move_mount(tree, target)
        return idmapped
    finally:
        os.close(tree)


def open_userns(base: int, size: int = RANGE_SIZE) -> int:
    """A file descriptor of a fresh user namespace mapping 0..size-1 to base..base+size-1.

    A helper process enters the namespace and waits; once its maps are written and its
    namespace is open, it exits and the descriptor keeps the namespace alive."""
    proc = subprocess.Popen(["unshare", "--user", "--", "sh", "-c", "echo ready; read _"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        if proc.stdout.readline().strip() != b"ready":
            raise OSError(f"cannot create a user namespace (unshare exited with {proc.wait()})")
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{proc.pid}/{name}", "w") as f:
                f.write(f"0 {base} {size}\n")
        return os.open(f"/proc/{proc.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def holds_range(pod_dir: Path, base: int | str) -> bool:
    """Whether the pod directory still records the range at ``base`` (a claim naming it is live). A record
    there that does not read as a range (damaged: emptied by a crash of the host) counts as holding it:
    the claim is then the only word left on the range the pod's containers run in, and handing that range
    to another pod would let the two share host ids."""
    try:
        text = (pod_dir / USERNS_FILE).read_text().strip()
    except OSError:
        return False
    try:
        return int(text) == int(base)
    except ValueError:
        return True


class UsernsAllocator:
    """Hands out host id ranges to pods, unique on this machine.

    A pod's range is recorded in ``<pods dir>/<uid>/runtime/userns``; a claim file per range
    in ``claims_dir`` (shared by every agent on the machine) names the pod directory that
    holds it. A claim whose pod directory no longer records that range (the pod was removed,
    or its data dir deleted) is stale and the range is handed out again.
    """

    def __init__(self, pods_dir: Path, claims_dir: Path) -> None:
        self.pods_dir = pods_dir
        self.claims_dir = claims_dir
        self._lock = threading.Lock()
        # Where the next search starts (PF5): just past the range handed out last, so a new pod does
        # not read every claim held by this and other agents before it finds a free one. Every
        # range is still looked at before "none left", and each under the lock, as before.
        self._next = 0

    def get(self, uid: str) -> int | None:
        try:
            return int((self.pods_dir / uid / USERNS_FILE).read_text().strip())
        except (OSError, ValueError):
            return None

    def allocate(self, uid: str) -> int:
        pod_dir = str((self.pods_dir / uid).resolve())
        with self._lock:
            self.claims_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(self.claims_dir / ".lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # other agents on this machine allocate too
                existing = self.get(uid)
                if existing is None and (self.pods_dir / uid / USERNS_FILE).exists():
                    existing = self._claimed_by(pod_dir)
                    log.warning("pod user namespace record unreadable, the range its claim names is kept",
                                uid=uid, base=existing)
                start = self._next
                # Lazily: the first free range is usually the next one, and a list of every range
                # per pod costs more than the search.
                candidates = itertools.chain([existing] if existing is not None else [], (
                    FIRST_BASE + ((start + k) % RANGE_COUNT) * RANGE_SIZE for k in range(RANGE_COUNT)))
                for base in candidates:
                    claim = self.claims_dir / str(base)
                    try:
                        owner = claim.read_text().strip()
                    except OSError:
                        owner = ""
                    if owner and owner != pod_dir and holds_range(Path(owner), base):
                        continue
                    path = self.pods_dir / uid / USERNS_FILE
                    path.parent.mkdir(parents=True, exist_ok=True)
                    for target, text in ((path, str(base)), (claim, pod_dir)):
                        write_atomically(target, text)
                    self._next = ((base - FIRST_BASE) // RANGE_SIZE + 1) % RANGE_COUNT
                    return base
        raise RuntimeError(f"no free user namespace range left ({RANGE_COUNT} pods on this machine)")

    def _claimed_by(self, pod_dir: str) -> int | None:
        """The range whose claim names ``pod_dir``: reads every claim, so only for a damaged record."""
        for claim in self.claims_dir.iterdir():
            try:
                if claim.name.isdigit() and claim.read_text().strip() == pod_dir:
                    return int(claim.name)
            except OSError:
                continue
        return None

    def release(self, uid: str) -> None:
        base = self.get(uid)
        if base is None:
            return
        pod_dir = str((self.pods_dir / uid).resolve())
        with self._lock, open(self.claims_dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            claim = self.claims_dir / str(base)
            try:
                if claim.read_text().strip() == pod_dir:
                    claim.unlink()
            except OSError:
                pass
            (self.pods_dir / uid / USERNS_FILE).unlink(missing_ok=True)
