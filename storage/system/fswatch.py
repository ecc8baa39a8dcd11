"""Waking on directory changes (inotify) instead of looking again every few milliseconds.

A ``DirWatch`` watches directories for entries that appear (created, renamed in) or go (deleted,
renamed out). The caller still decides by looking at the files: an event only says "look now",
so a missed or merged event costs at most one ``wait`` timeout, never a wrong answer.
"""
from __future__ import annotations

import ctypes
import errno
import math
import os
import select
import struct
import threading
import time
from typing import Callable

import structlog

# linux/inotify.h
IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name, NUL-padded)
# One read's buffer, reused: room for at least one event with the longest name (16 + 256 bytes). The
# agent's memory is measured, and a fresh 64 KiB bytes object per read sat in each thread's malloc arena.
_READ_SIZE = 4096

ENTRIES = IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM | IN_CLOSE_WRITE | IN_DELETE_SELF
# ENTRIES and a file in the directory written to (a container's log growing).
WRITES = ENTRIES | IN_MODIFY

# What running out of inotify looks like: EMFILE (the user's instances, fs.inotify.max_user_instances, 128
# by default and shared with every other program of that user; or the descriptor table), ENFILE, ENOMEM,
# and ENOSPC (the user's watches, fs.inotify.max_user_watches).
_OUT_OF_INOTIFY = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOSPC})

log = structlog.get_logger(__name__)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


def _inotify_init() -> int:
    fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"inotify_init1: {os.strerror(err)}")
    return int(fd)


def _add_watch(fd: int, directory: str | os.PathLike[str], mask: int) -> int | None:
    """The watch descriptor, or None when ``directory`` does not exist (yet) or is not a directory."""
    wd = _libc.inotify_add_watch(fd, os.fsencode(os.fspath(directory)), mask | IN_ONLYDIR)
    if wd < 0:
        err = ctypes.get_errno()
        if err in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise OSError(err, f"inotify_add_watch {directory}: {os.strerror(err)}")
    return int(wd)


class DirWatch:
    """One inotify instance; ``add`` directories, then ``wait`` for anything to change in them.

    Without inotify to spare (the user's instance or watch limit reached, the descriptor table full) it
    still works, as the looks it replaced did: ``wait`` then only sleeps its timeout, which every caller
    keeps short enough to be its backstop.
    """

    def __init__(self) -> None:
        self._watched: set[str] = set()
        self._buf = bytearray(_READ_SIZE)
        # poll, not select: select refuses descriptors past 1023, and the agent may hold more than that
        # (its soft limit is the host's, often far above 1024; each pod adds logs, pipes and pidfds).
        self._poll = select.poll()
        try:
            self._fd = _inotify_init()
        except OSError as exc:
            if exc.errno not in _OUT_OF_INOTIFY:
                raise
            log.warning("fswatch.unavailable", error=str(exc))
            self._fd = -1
            return
        self._poll.register(self._fd, select.POLLIN)

    def add(self, directory: str | os.PathLike[str], mask: int = ENTRIES) -> bool:
        """Watch ``directory``; False when it does not exist (yet), is not a directory, or cannot be
        watched (no inotify to spare: the wait's timeout stands in for its events)."""
        path = os.fspath(directory)
        if path in self._watched:
            return True
        if self._fd < 0:
            return False
        try:
            if _add_watch(self._fd, path, mask) is None:
                return False
        except OSError as exc:
            if exc.errno not in _OUT_OF_INOTIFY:
                raise
            log.warning("fswatch.unavailable", directory=path, error=str(exc))
            return False
        self._watched.add(path)
        return True

    def wait(self, timeout: float) -> bool:
        """Block until something changed in a watched directory or ``timeout`` seconds passed; True
        when something changed. The events are drained: the caller looks at the files itself."""
        if self._fd < 0:
            time.sleep(max(0.0, timeout))  # no events to wait for: the caller's backstop look
            return False
        if not self._poll.poll(max(0, math.ceil(timeout * 1000))):
            return False
        try:
            while os.readv(self._fd, [self._buf]):
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


class EntryWatcher:
    """One thread for many directories: calls a directory's callback when an entry of a given name is
    created in it or renamed into it. The thread starts with the first watch; ``close`` ends it."""

    def __init__(self, name: str = "fswatch") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._by_wd: dict[int, tuple[bytes, Callable[[], None]]] = {}
        self._fd = -1
        self._stop_r = self._stop_w = -1
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, directory: str | os.PathLike[str], entry: str, callback: Callable[[], None]) -> bool:
        """Call ``callback`` (on the watcher's thread: it must be quick) whenever ``entry`` appears in
        ``directory``; False when the directory does not exist. A directory watched again gets the new
        entry and callback. The watch ends by itself when the directory is removed."""
        with self._lock:
            if self._closed:
                return False
            try:
                if self._thread is None:
                    self._start()
                wd = _add_watch(self._fd, directory, IN_CREATE | IN_MOVED_TO)
            except OSError as exc:
                if exc.errno not in _OUT_OF_INOTIFY:
                    raise
                # No inotify to spare: the caller's own looks still see the entry, only later.
                log.warning("fswatch.unavailable", directory=os.fspath(directory), error=str(exc))
                return False
            if wd is None:
                return False
            self._by_wd[wd] = (os.fsencode(entry), callback)
            return True

    def _start(self) -> None:
        fd = _inotify_init()
        try:
            self._stop_r, self._stop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = bytearray(_READ_SIZE)
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            ready = poller.poll()
            if any(fd == self._stop_r for fd, _ in ready):
                return
            due: list[Callable[[], None]] = []
            try:
                while True:
                    try:
                        size = os.readv(self._fd, [buf])
                    except BlockingIOError:
                        break
                    due.extend(self._callbacks(bytes(buf[:size])))
            except OSError:
                return  # closed under the thread
            for callback in due:
                try:
                    callback()
                except Exception:  # one broken callback must not end the others' wake-ups
                    pass

    def _callbacks(self, buf: bytes) -> list[Callable[[], None]]:
        out: list[Callable[[], None]] = []
        with self._lock:
            offset = 0
            while offset + _EVENT.size <= len(buf):
                wd, mask, _cookie, length = _EVENT.unpack_from(buf, offset)
                name = buf[offset + _EVENT.size:offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                if mask & IN_Q_OVERFLOW:  # events were lost: everyone looks
                    out.extend(callback for _, callback in self._by_wd.values())
                    continue
                if mask & IN_IGNORED:  # the directory went away, and its watch with it
                    self._by_wd.pop(wd, None)
                    continue
                watched = self._by_wd.get(wd)
                if watched is not None and name == watched[0]:
                    out.append(watched[1])
        return out

    def close(self) -> None:
        with self._lock:
            thread = self._thread
            if self._closed or thread is None:  # closed already, or never started
                self._closed = True
                return
            self._closed = True
            os.write(self._stop_w, b"x")
        thread.join(timeout=5)
        with self._lock:
            for fd in (self._fd, self._stop_r, self._stop_w):
                os.close(fd)
            self._fd = self._stop_r = self._stop_w = -1
            self._by_wd.clear()
