"""Waking on directory changes (inotify) instead of looking again every few milliseconds.

A ``DirWatch`` watches directories for entries that appear (created, renamed in) or go (deleted,
renamed out). The caller still decides by looking at the files: an event only says "look now",
so a missed or merged event costs at most one ``wait`` timeout, never a wrong answer.
"""
from __future__ import annotations

import ctypes
import os
import select

# linux/inotify.h
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

ENTRIES = IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM | IN_CLOSE_WRITE | IN_DELETE_SELF

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


class DirWatch:
    """One inotify instance; ``add`` directories, then ``wait`` for anything to change in them."""

    def __init__(self) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self._fd = fd
        self._watched: set[str] = set()

    def add(self, directory: str | os.PathLike[str], mask: int = ENTRIES) -> bool:
        """Watch ``directory``; False when it does not exist (yet) or is not a directory."""
        path = os.fspath(directory)
        if path in self._watched:
            return True
        if _libc.inotify_add_watch(self._fd, os.fsencode(path), mask | IN_ONLYDIR) < 0:
            err = ctypes.get_errno()
            if err in (2, 20):  # ENOENT, ENOTDIR
                return False
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        self._watched.add(path)
        return True

    def wait(self, timeout: float) -> bool:
        """Block until something changed in a watched directory or ``timeout`` seconds passed; True
        when something changed. The events are drained: the caller looks at the files itself."""
        ready, _, _ = select.select([self._fd], [], [], max(0.0, timeout))
        if not ready:
            return False
        try:
            while os.read(self._fd, 65536):
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "DirWatch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

