"""One Stowage process per data directory: an ``flock`` on a lock file inside it.

The kernel drops the lock when the holder exits, however it exits, so a
crash never leaves a stale lock behind. The holder's pid and program are
written into the file so that the refusal can name them.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "stowage.lock"


class DirLocked(RuntimeError):
    """Another process holds the data directory."""

    def __init__(self, directory: Path, holder: str) -> None:
        super().__init__(
            f"{directory} is in use by {holder}: one `stowage up`, `serve` or `agent` per data dir. "
            f"Stop it first (`stowage down --data-dir {directory}` for `stowage up`), or choose another --data-dir"
        )
        self.directory = directory
        self.holder = holder


class DirLock:
    """Held from ``acquire`` until ``release`` or the end of the process."""

    def __init__(self, directory: str | os.PathLike[str], program: str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.program = program
        self._fd: int | None = None

    def acquire(self) -> "DirLock":
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DirLocked(self.directory, holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.program}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.ftruncate(fd, 0)
            os.close(fd)  # closing the only descriptor drops the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _written_holder(fd: int) -> tuple[int | None, str]:
    """The pid and program the lock file names (its holder writes "<pid> <program>")."""
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    pid, _, program = text.partition(" ")
    return (int(pid) if pid.isdigit() else None), program


def _read_holder(fd: int) -> str:
    pid, program = _written_holder(fd)
    if pid is None:
        return "another process"
    return f"{program or 'stowage'} (pid {pid})"


def holder_pid(directory: str | os.PathLike[str]) -> int | None:
    """The pid of the process that holds ``directory``'s lock now, or None when none does. Only the
    kernel's lock counts: a pid the file names after its holder ended is not returned."""
    try:
        fd = os.open(Path(directory) / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            # A shared lock is granted only when no one holds it exclusively, as every holder does.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _written_holder(fd)[0]
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
