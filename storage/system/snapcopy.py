"""Point-in-time copies of volume images: freeze the filesystem, copy the image, thaw (SEMANTICS LS2-LS4).

``frozen(mount_points)`` freezes each filesystem (``fsfreeze -f``) and always thaws it again
(``fsfreeze -u``), also when the copy fails, and at the latest after ``limit`` seconds: a watchdog
thaws a copy that hangs, so writers are never blocked for longer than that; the copy is then reported
as not consistent (``FreezeExpired``) and thrown away by the caller.

``copy_image(src, dst)`` clones the file with a reflink (``FICLONE``) where the filesystem shares
blocks (xfs with reflink, btrfs), else copies only its data extents (``SEEK_DATA``/``SEEK_HOLE``), so
holes stay holes. The copy is written to a temporary name, fsynced and renamed: a crash never leaves a
half copy under the final name.
"""
from __future__ import annotations

import errno
import fcntl
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal, Sequence

import structlog

from storage.errors import TemporaryError
from storage.system.executor import Executor, default_executor

log = structlog.get_logger(__name__)

FICLONE = 0x40049409  # _IOW(0x94, 9, int)
FREEZE_LIMIT_SECONDS = 60.0
_CHUNK = 8 << 20


class FreezeExpired(TemporaryError):
    """The copy took longer than the freeze may last: the filesystem was thawed mid-copy."""


@contextmanager
def frozen(mount_points: Sequence[str], *, limit: float = FREEZE_LIMIT_SECONDS,
           executor: Executor | None = None) -> Iterator[None]:
    ex = executor or default_executor()
    done: list[str] = []
    lock = threading.Lock()
    expired = threading.Event()

    def thaw_all() -> None:
        with lock:
            while done:
                mp = done.pop()
                # "Invalid argument": not frozen (someone thawed it already): nothing to do.
                proc = ex.run(["fsfreeze", "-u", mp], check=False, timeout=30)
                if proc.returncode != 0 and "Invalid argument" not in proc.stderr:
                    log.error("fsfreeze.thaw_failed", mount_point=mp, error=proc.stderr.strip())

    def watchdog() -> None:
        expired.set()
        log.warning("fsfreeze.limit_reached", limit=limit, mount_points=list(mount_points))
        thaw_all()

    timer = threading.Timer(limit, watchdog)
    timer.daemon = True
    try:
        for mp in mount_points:
            with lock:
                # Listed before it is frozen: a freeze that timed out may still take effect, and is undone
                # too (thawing what is not frozen is harmless). Bounded: a hung device must not hold the agent.
                done.append(mp)
                ex.run(["fsfreeze", "-f", mp], timeout=min(limit, 30))
        timer.start()
        yield
    finally:
        timer.cancel()
        thaw_all()
    if expired.is_set():
        raise FreezeExpired(f"the copy took longer than {limit:g}s of freeze: taken again later", delay=5.0)


def _sparse_copy(src_fd: int, dst_fd: int, size: int) -> None:
    offset = 0
    while offset < size:
        try:
            data = os.lseek(src_fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole remains
                break
            raise
        try:
            hole = os.lseek(src_fd, data, os.SEEK_HOLE)
        except OSError:
            hole = size
        pos = data
        while pos < hole:
            n = min(_CHUNK, hole - pos)
            buf = os.pread(src_fd, n, pos)
            if not buf:
                break
            # An all-zero block inside a data extent is left a hole too: cheaper and equivalent.
            if buf.count(0) != len(buf):
                os.pwrite(dst_fd, buf, pos)
            pos += len(buf)
        offset = hole


def copy_image(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Literal["reflink", "sparse"]:
    """Copy ``src`` to ``dst`` (replacing it); returns how."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(dst.name + ".partial")
    tmp.unlink(missing_ok=True)
    method: Literal["reflink", "sparse"] = "reflink"
    with open(src, "rb") as s, open(tmp, "wb") as d:
        size = os.fstat(s.fileno()).st_size
        try:
            fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.ENOSYS,
                                 errno.EPERM, errno.EBADF):
                raise
            method = "sparse"
            d.truncate(size)
            _sparse_copy(s.fileno(), d.fileno(), size)
        os.fsync(d.fileno())
    os.replace(tmp, dst)
    dir_fd = os.open(dst.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return method


def allocated_bytes(path: str | os.PathLike[str]) -> int:
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0
