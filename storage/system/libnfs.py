"""A small synchronous NFS client over libnfs (Debian's libnfs13) through ctypes.

It speaks the NFS protocol from user space, so directories on an export can be made, renamed
and removed on a host whose kernel has no NFS client. Signatures follow ``nfsc/libnfs.h`` of
libnfs 4.0 (the sync API: each call returns 0 or a negative errno). A context is not
thread-safe, so every call of one ``NfsClient`` runs on its own worker thread; that thread can
also join a network namespace (``netns``: a path like ``/proc/PID/ns/net``) when the server is
reachable only there: a network namespace is per thread, and sockets keep theirs.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import queue
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


class NfsError(OSError):
    """A failed NFS call: ``errno`` and libnfs's own message (which names the server or path)."""


class _Dirent(ctypes.Structure):
    pass


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


_Dirent._fields_ = [
    ("next", ctypes.POINTER(_Dirent)), ("name", ctypes.c_char_p), ("inode", ctypes.c_uint64),
    ("type", ctypes.c_uint32), ("mode", ctypes.c_uint32), ("size", ctypes.c_uint64),
    ("atime", _Timeval), ("mtime", _Timeval), ("ctime", _Timeval),
    ("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32), ("nlink", ctypes.c_uint32),
    ("dev", ctypes.c_uint64), ("rdev", ctypes.c_uint64), ("blksize", ctypes.c_uint64),
    ("blocks", ctypes.c_uint64), ("used", ctypes.c_uint64),
    ("atime_nsec", ctypes.c_uint32), ("mtime_nsec", ctypes.c_uint32), ("ctime_nsec", ctypes.c_uint32),
]
NF3DIR = 2  # nfs_readdir's type for a directory (NF3DIR in libnfs-raw-nfs.h)


def library() -> ctypes.CDLL:
    """libnfs with argument and result types declared (OSError when it is not installed)."""
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        name = ctypes.util.find_library("nfs") or "libnfs.so.13"
        lib = ctypes.CDLL(name, use_errno=True)
        vp, cp, i, u64 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint64
        sig: dict[str, tuple[Any, list[Any]]] = {
            "nfs_init_context": (vp, []),
            "nfs_destroy_context": (None, [vp]),
            "nfs_get_error": (cp, [vp]),
            "nfs_set_version": (i, [vp, i]),
            "nfs_set_timeout": (None, [vp, i]),
            "nfs_set_uid": (None, [vp, i]),
            "nfs_set_gid": (None, [vp, i]),
            "nfs_mount": (i, [vp, cp, cp]),
            "nfs_umount": (i, [vp]),
            "nfs_mkdir2": (i, [vp, cp, i]),
            "nfs_rmdir": (i, [vp, cp]),
            "nfs_unlink": (i, [vp, cp]),
            "nfs_rename": (i, [vp, cp, cp]),
            "nfs_chmod": (i, [vp, cp, i]),
            "nfs_chown": (i, [vp, cp, i, i]),
            "nfs_opendir": (i, [vp, cp, ctypes.POINTER(vp)]),
            "nfs_readdir": (ctypes.POINTER(_Dirent), [vp, vp]),
            "nfs_closedir": (None, [vp, vp]),
            "nfs_open2": (i, [vp, cp, i, i, ctypes.POINTER(vp)]),
            "nfs_close": (i, [vp, vp]),
            "nfs_pwrite": (i, [vp, vp, u64, u64, ctypes.c_void_p]),
            "nfs_pread": (i, [vp, vp, u64, u64, ctypes.c_void_p]),
        }
        for fn, (restype, argtypes) in sig.items():
            f = getattr(lib, fn)
            f.restype, f.argtypes = restype, argtypes
        _lib = lib
        return lib


def available() -> bool:
    try:
        library()
        return True
    except OSError:
        return False


def join_netns(path: str) -> None:
    """Move the calling thread (only it: setns is per thread) into the network namespace at ``path``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class _Worker:
    """One daemon thread running submitted calls in order (in ``netns`` when given): a libnfs context
    is used from one thread only, and a call stuck in a dead server never blocks interpreter exit."""

    def __init__(self, netns: str | None) -> None:
        self._queue: queue.Queue[tuple[Callable[[], Any], Future[Any]] | None] = queue.Queue()
        self._abandoned = False
        started: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(netns, started), name="libnfs", daemon=True)
        self._thread.start()
        started.result()  # a namespace that cannot be joined fails here, in the caller

    def _run(self, netns: str | None, started: Future[None]) -> None:
        try:
            if netns:
                join_netns(netns)
        except BaseException as exc:
            started.set_exception(exc)
            return
        started.set_result(None)
        while (item := self._queue.get()) is not None:
            fn, future = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)

    def submit(self, fn: Callable[[], T]) -> "Future[T]":
        if self._abandoned or not self._thread.is_alive():
            raise NfsError(errno.ESHUTDOWN, "the NFS client is closed")
        future: Future[T] = Future()
        self._queue.put((fn, future))
        return future

    def abandon(self) -> None:
        self._abandoned = True
        self._queue.put(None)

    def stop(self) -> None:
        if self._thread.is_alive() and not self._abandoned:
            self._queue.put(None)
            self._thread.join()


class NfsClient:
    """One mounted export (server, export path). Paths are relative to the export ("/a/b" or "a/b")."""

    def __init__(self, server: str, export: str, *, version: int = 3, netns: str | None = None,
                 timeout_ms: int = 10_000) -> None:
        self.server, self.export, self.version = server, export, version
        self._worker = _Worker(netns)
        self._ctx: int | None = None
        # libnfs's timeout covers each RPC; this bounds a whole call (a connect to a black hole included).
        self._call_timeout = max(30.0, 3 * timeout_ms / 1000)
        try:
            self._call(lambda: self._mount(timeout_ms))
        except BaseException:
            self.close()
            raise

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return self._worker.submit(fn).result(timeout=self._call_timeout)
        except FutureTimeout:
            # The worker stays blocked in libnfs: abandon it (a daemon thread) with its context.
            self._ctx = None
            self._worker.abandon()
            raise NfsError(errno.ETIMEDOUT, f"{self.server}:{self.export}: no answer within {self._call_timeout:.0f} s") from None

    def _mount(self, timeout_ms: int) -> None:
        lib = library()
        ctx = lib.nfs_init_context()
        if not ctx:
            raise NfsError(errno.ENOMEM, "nfs_init_context failed")
        self._ctx = ctx
        lib.nfs_set_timeout(ctx, timeout_ms)
        self._check(lib.nfs_set_version(ctx, self.version), "set version")
        self._check(lib.nfs_mount(ctx, self.server.encode(), self.export.encode()),
                    f"mount {self.server}:{self.export}")

    def _check(self, rc: int, what: str) -> int:
        if rc < 0:
            detail = library().nfs_get_error(self._ctx) if self._ctx else None
            message = (detail or b"").decode(errors="replace") or os.strerror(-rc)
            raise NfsError(-rc, f"{what}: {message}")
        return rc

    @staticmethod
    def _p(path: str) -> bytes:
        return ("/" + path.lstrip("/")).encode()

    def close(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx:
            def finish() -> None:
                lib = library()
                lib.nfs_umount(ctx)
                lib.nfs_destroy_context(ctx)
            try:
                self._call(finish)
            except Exception as exc:  # a dead server: the context is gone with the thread either way
                log.info("libnfs.close_failed", server=self.server, error=str(exc))
        self._worker.stop()

    def __enter__(self) -> "NfsClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Directory operations

    def mkdir(self, path: str, mode: int = 0o777, *, exist_ok: bool = False) -> bool:
        """True when this call made it. NFS applies the caller's mode; the server's umask does not apply."""
        def op() -> bool:
            rc = library().nfs_mkdir2(self._ctx, self._p(path), mode)
            if rc == -errno.EEXIST and exist_ok:
                return False
            self._check(rc, f"mkdir {path}")
            return True
        return self._call(op)

    def makedirs(self, path: str, mode: int = 0o777) -> None:
        parts = [p for p in path.split("/") if p]
        for n in range(1, len(parts) + 1):
            self.mkdir("/".join(parts[:n]), mode, exist_ok=True)

    def chmod(self, path: str, mode: int) -> None:
        self._call(lambda: self._check(library().nfs_chmod(self._ctx, self._p(path), mode), f"chmod {path}"))

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._call(lambda: self._check(library().nfs_chown(self._ctx, self._p(path), uid, gid), f"chown {path}"))

    def rename(self, old: str, new: str) -> None:
        self._call(lambda: self._check(library().nfs_rename(self._ctx, self._p(old), self._p(new)),
                                       f"rename {old} to {new}"))

    def rmdir(self, path: str) -> None:
        self._call(lambda: self._check(library().nfs_rmdir(self._ctx, self._p(path)), f"rmdir {path}"))

    def unlink(self, path: str) -> None:
        self._call(lambda: self._check(library().nfs_unlink(self._ctx, self._p(path)), f"unlink {path}"))

    def entries(self, path: str) -> list[tuple[str, bool]]:
        """(name, is a directory) of each entry but . and .."""
        def op() -> list[tuple[str, bool]]:
            lib = library()
            handle = ctypes.c_void_p()
            self._check(lib.nfs_opendir(self._ctx, self._p(path), ctypes.byref(handle)), f"opendir {path}")
            found: list[tuple[str, bool]] = []
            try:
                while True:
                    entry = lib.nfs_readdir(self._ctx, handle)
                    if not entry:
                        break
                    name = (entry.contents.name or b"").decode(errors="surrogateescape")
                    if name not in (".", ".."):
                        found.append((name, entry.contents.type == NF3DIR))
            finally:
                lib.nfs_closedir(self._ctx, handle)
            return found
        return self._call(op)

    def listdir(self, path: str) -> list[str]:
        return [name for name, _ in self.entries(path)]

    def exists(self, path: str) -> bool:
        parent, _, name = ("/" + path.strip("/")).rpartition("/")
        try:
            return name in self.listdir(parent or "/")
        except NfsError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise

    def remove_tree(self, path: str, *, keep_top: bool = False) -> None:
        """Remove ``path`` and everything under it (only its contents with ``keep_top``); gone already: fine.
        Symbolic links are removed, never followed."""
        try:
            children = self.entries(path)
        except NfsError as exc:
            if exc.errno == errno.ENOENT:
                return
            if exc.errno != errno.ENOTDIR:
                raise
            self.unlink(path)
            return
        for name, is_dir in children:
            child = f"{path.rstrip('/')}/{name}"
            if is_dir:
                self.remove_tree(child)
            else:
                self._ignore_missing(self.unlink, child)
        if not keep_top:
            self._ignore_missing(self.rmdir, path)

    @staticmethod
    def _ignore_missing(fn: Callable[[str], None], path: str) -> None:
        try:
            fn(path)
        except NfsError as exc:
            if exc.errno != errno.ENOENT:
                raise

    # File contents (the data path, for checks and tools)

    def write_file(self, path: str, data: bytes, mode: int = 0o644, chunk: int = 1 << 20) -> None:
        def op() -> None:
            lib = library()
            fh = ctypes.c_void_p()
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            self._check(lib.nfs_open2(self._ctx, self._p(path), flags, mode, ctypes.byref(fh)), f"open {path}")
            try:
                offset = 0
                while offset < len(data):
                    piece = data[offset:offset + chunk]
                    buf = ctypes.create_string_buffer(piece, len(piece))
                    written = self._check(lib.nfs_pwrite(self._ctx, fh, offset, len(piece), buf), f"write {path}")
                    if written == 0:
                        raise NfsError(errno.EIO, f"write {path}: no progress at offset {offset}")
                    offset += written
            finally:
                lib.nfs_close(self._ctx, fh)
        self._call(op)

    def read_file(self, path: str, chunk: int = 1 << 20) -> bytes:
        def op() -> bytes:
            lib = library()
            fh = ctypes.c_void_p()
            self._check(lib.nfs_open2(self._ctx, self._p(path), os.O_RDONLY, 0, ctypes.byref(fh)), f"open {path}")
            parts: list[bytes] = []
            try:
                offset = 0
                buf = ctypes.create_string_buffer(chunk)
                while True:
                    n = self._check(lib.nfs_pread(self._ctx, fh, offset, chunk, buf), f"read {path}")
                    if n == 0:
                        break
                    parts.append(buf.raw[:n])
                    offset += n
            finally:
                lib.nfs_close(self._ctx, fh)
            return b"".join(parts)
        return self._call(op)

