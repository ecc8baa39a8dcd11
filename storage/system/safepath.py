"""Resolving a path beneath a base directory without following any symlink, and
bind-mounting what was resolved by its file descriptor.

This is the defence against the symlink-swap escapes of hostPath and subPath
(CVE-2017-1002101, CVE-2021-25741): a path checked by name can be swapped for a
symlink before it is mounted. Here the path is opened once, with openat2(2)
``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`` (or, on kernels
without openat2, a walk of ``O_PATH | O_NOFOLLOW`` opens, one component at a
time), and the resulting descriptor is what gets mounted, through
``/proc/self/fd/N``: a swap after the check cannot redirect the mount.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
from pathlib import Path, PurePosixPath

__all__ = [
    "PathEscape", "open_beneath", "open_beneath_walk", "mkdirs_beneath", "create_file_beneath",
    "bind_fd", "fd_path", "openat2_available", "RESOLVE_BENEATH", "RESOLVE_NO_SYMLINKS",
    "RESOLVE_NO_MAGICLINKS",
]

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
SAFE_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS

# openat2 has one number on every architecture that has it (the new syscall table).
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "arm64": 437}.get(platform.machine())

MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class PathEscape(OSError):
    """The path leaves its base, crosses a symlink, or is not a plain relative path."""


_openat2_missing = _SYS_OPENAT2 is None


def openat2_available() -> bool:
    return not _openat2_missing


def _components(rel: str) -> list[str]:
    """The components of a relative path; refuses absolute paths and ``..`` outright
    (even one that would stay inside: nothing legitimate needs it)."""
    pure = PurePosixPath(rel)
    if pure.is_absolute():
        raise PathEscape(errno.EXDEV, f"{rel!r} is an absolute path")
    parts = [p for p in pure.parts if p not in ("", ".")]
    if ".." in parts:
        raise PathEscape(errno.EXDEV, f"{rel!r} contains '..'")
    return parts


def _escape_error(rel: str, err: int) -> OSError:
    if err == errno.ELOOP:
        return PathEscape(errno.ELOOP, f"{rel!r} crosses a symbolic link")
    if err == errno.EXDEV:
        return PathEscape(errno.EXDEV, f"{rel!r} leaves its base directory")
    return OSError(err, f"{rel!r}: {os.strerror(err)}")


def _openat2(dir_fd: int, rel: str, flags: int, mode: int) -> int:
    global _openat2_missing
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, SAFE_RESOLVE)
    fd = _libc.syscall(_SYS_OPENAT2, dir_fd, rel.encode(), ctypes.byref(how), ctypes.sizeof(how))
    if fd >= 0:
        return int(fd)
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EPERM):  # EPERM: a seccomp filter that predates openat2
        _openat2_missing = True
        raise NotImplementedError
    raise _escape_error(rel, err)


def open_beneath_walk(dir_fd: int, rel: str, flags: int = os.O_PATH, mode: int = 0o644) -> int:
    """The fallback of ``open_beneath``: one ``O_PATH | O_NOFOLLOW`` open per component,
    each checked with fstat, so a symlink (magic links included) anywhere is refused."""
    parts = _components(rel)
    current = os.dup(dir_fd)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last and flags & ~os.O_PATH & ~os.O_DIRECTORY:
                fd = os.open(part, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=current)
            else:
                fd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                os.close(fd)
                raise PathEscape(errno.ELOOP, f"{rel!r} crosses a symbolic link")
            if not last and not stat.S_ISDIR(st.st_mode):
                os.close(fd)
                raise OSError(errno.ENOTDIR, f"{rel!r}: {part!r} is not a directory")
            if last and flags & os.O_DIRECTORY and not stat.S_ISDIR(st.st_mode):
                os.close(fd)
                raise OSError(errno.ENOTDIR, f"{rel!r} is not a directory")
            os.close(current)
            current = fd
        return current
    except PathEscape:
        os.close(current)
        raise
    except OSError as exc:
        os.close(current)
        if isinstance(exc, PathEscape) or exc.errno is None:
            raise
        raise _escape_error(rel, exc.errno) from None


def open_beneath(base: str | os.PathLike[str] | int, rel: str, flags: int = os.O_PATH, mode: int = 0o644,
                 *, use_openat2: bool = True) -> int:
    """A file descriptor of ``rel`` beneath ``base`` (a path or a directory fd), reached
    without following any symlink and without leaving ``base``. ``flags`` defaults to
    ``O_PATH``: a handle to check (fstat) and to mount, not to read. Raises ``PathEscape``
    for an escape, ``FileNotFoundError``-style ``OSError`` when something is missing."""
    parts = _components(rel)
    own = not isinstance(base, int)
    dir_fd = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) if own else int(base)  # type: ignore[arg-type]
    try:
        if not parts:
            return os.dup(dir_fd) if flags & os.O_PATH else os.open(".", flags | os.O_CLOEXEC, dir_fd=dir_fd)
        if use_openat2 and not _openat2_missing:
            try:
                return _openat2(dir_fd, "/".join(parts), flags, mode)
            except NotImplementedError:
                pass
        return open_beneath_walk(dir_fd, "/".join(parts), flags, mode)
    finally:
        if own:
            os.close(dir_fd)


def mkdirs_beneath(base: str | os.PathLike[str] | int, rel: str, mode: int = 0o755) -> int:
    """Create the missing directories of ``rel`` beneath ``base`` (one ``mkdirat`` per
    component, from the descriptor of its parent, so a planted symlink cannot redirect
    the creation) and return an ``O_PATH`` descriptor of the last one."""
    parts = _components(rel)
    current = open_beneath(base, "")
    try:
        for part in parts:
            try:
                fd = open_beneath(current, part, os.O_PATH | os.O_DIRECTORY)
            except FileNotFoundError:
                try:
                    os.mkdir(part, mode, dir_fd=current)
                except FileExistsError:
                    pass  # made meanwhile; the open below checks what it is
                fd = open_beneath(current, part, os.O_PATH | os.O_DIRECTORY)
            os.close(current)
            current = fd
        return current
    except BaseException:
        os.close(current)
        raise


def create_file_beneath(base: str | os.PathLike[str] | int, rel: str, mode: int = 0o644) -> int:
    """Create ``rel`` beneath ``base`` as an empty file if it is missing (its parent
    directories too) and return an ``O_PATH`` descriptor of it."""
    parts = _components(rel)
    if not parts:
        raise PathEscape(errno.EINVAL, "a file needs a name")
    parent = mkdirs_beneath(base, "/".join(parts[:-1]))
    try:
        try:
            fd = os.open(parts[-1], os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=parent)
            os.close(fd)
        except OSError as exc:
            if exc.errno != errno.EISDIR:
                raise _escape_error(rel, exc.errno or errno.EIO) from None
        return open_beneath(parent, parts[-1])
    finally:
        os.close(parent)


def fd_path(fd: int) -> str:
    """The ``/proc/self/fd`` name of a descriptor: mounting it mounts what the fd holds,
    whatever its path names now."""
    return f"/proc/self/fd/{fd}"


def bind_fd(fd: int, target: str | os.PathLike[str], *, recursive: bool = True) -> None:
    """Bind-mount the file or directory held by ``fd`` at ``target`` (which must exist
    and be of the same kind). mount(2) itself, not mount(8): the tool would resolve the
    /proc name back to a path and reopen the race."""
    flags = MS_BIND | (MS_REC if recursive else 0)
    if _libc.mount(fd_path(fd).encode(), os.fsencode(Path(target)), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bind mount of fd {fd} at {target}: {os.strerror(err)}")


def set_propagation(target: str | os.PathLike[str], kind: int) -> None:
    """Make the mount at ``target`` and every mount beneath it ``MS_SLAVE`` or ``MS_PRIVATE``.

    Why it matters for a recursive bind: the copy of a shared mount joins the original's peer group,
    and unmounting a submount of the copy then unmounts the original's submount at the same place too
    (an unmount propagates to the peers of the parent). A slave still receives the host's mounts but
    sends nothing back; a private copy neither receives nor sends."""
    if kind not in (MS_SLAVE, MS_PRIVATE):
        raise ValueError(f"propagation {kind:#x}: MS_SLAVE or MS_PRIVATE only")
    if _libc.mount(None, os.fsencode(Path(target)), None, kind | MS_REC, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"propagation of {target}: {os.strerror(err)}")


def split_under(path: str, prefixes: list[Path]) -> tuple[Path, str] | None:
    """``(prefix, rest)`` of an absolute, ``..``-free ``path`` lying under one of
    ``prefixes`` (compared by path component, longest first), or None. Only the prefix
    is trusted to resolve by name: ``rest`` is opened with ``open_beneath``."""
    pure = PurePosixPath(os.path.normpath(path)) if path else PurePosixPath("")
    if not pure.is_absolute() or ".." in PurePosixPath(path).parts:
        return None
    for prefix in sorted(prefixes, key=lambda p: len(p.parts), reverse=True):
        base = PurePosixPath(prefix)
        if pure == base:
            return prefix, ""
        if base in pure.parents:
            return prefix, str(pure.relative_to(base))
    return None
