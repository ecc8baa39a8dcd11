"""Path helpers of the volume manager: subPath resolution and fsGroup ownership (A6)."""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from storage.errors import FieldError, Invalid
from storage.system import safepath


def _escape(sub_path: str, detail: str) -> Invalid:
    return Invalid([FieldError("volumeMounts.subPath", "Invalid value", detail, sub_path, True)])


def resolve_subpath(volume_path: str | os.PathLike[str], sub_path: str, *, create: bool = True) -> Path:
    """The host path of ``sub_path`` inside the volume; refuses absolute paths, ``..`` and
    any symlink on the way (SEMANTICS A6). Missing directories are created (as Kubernetes
    does) one component at a time from the parent's descriptor, so that a symlink planted
    by the pod cannot redirect the creation. Only a check and a name: the runtime mounts
    the descriptor it opens itself at each container start."""
    if not sub_path:
        return Path(volume_path)
    pure = PurePosixPath(sub_path)
    if pure.is_absolute():
        raise _escape(sub_path, "must be a relative path")
    if ".." in pure.parts:
        raise _escape(sub_path, "must not contain '..'")
    try:
        try:
            fd = safepath.open_beneath(volume_path, sub_path)
        except FileNotFoundError:
            if not create:
                raise _escape(sub_path, "does not exist in the volume") from None
            fd = safepath.mkdirs_beneath(volume_path, sub_path, 0o750)
    except safepath.PathEscape as exc:
        raise _escape(sub_path, f"{exc.strerror}: may not cross a symlink or leave the volume") from None
    os.close(fd)
    return Path(volume_path).joinpath(*[p for p in pure.parts if p not in ("", ".")])


# Deeper than this, a volume's tree is refused rather than walked: the walk holds one descriptor per
# level, and a pod must not make the agent run out of them.
FS_GROUP_MAX_DEPTH = 1000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def apply_fs_group(path: str | os.PathLike[str], gid: int) -> None:
    """Give everything under ``path`` the group ``gid``, group read/write, and
    setgid on directories so that new files inherit the group (A6).

    The pod may be running and rewriting the volume while this walks it as host root, so nothing
    is changed by name (A6a): each entry is opened ``O_PATH|O_NOFOLLOW`` beneath its directory's
    descriptor and changed through that descriptor. A file swapped for a symlink in the meantime
    is a symlink when opened, and only the link's own group changes; a directory swapped for one
    is never entered. Other mounts under ``path`` are left alone."""
    top = os.open(path, _DIR_FLAGS)
    try:
        st = os.fstat(top)
        _fix_owner(top, st, gid)
        _walk_fs_group(top, st.st_dev, gid)
    finally:
        os.close(top)


def _walk_fs_group(top: int, dev: int, gid: int) -> None:
    # Iterative, one open directory per level of the tree being walked.
    stack: list[tuple[int, Iterator[os.DirEntry[str]]]] = [(top, os.scandir(top))]
    try:
        while stack:
            dirfd, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                _close_level(stack.pop(), top)
                continue
            try:
                fd = os.open(entry.name, _PATH_FLAGS, dir_fd=dirfd)
            except FileNotFoundError:
                continue  # removed by the pod meanwhile
            try:
                st = os.fstat(fd)
                if st.st_dev != dev:
                    continue  # another filesystem mounted inside the volume
                if stat.S_ISLNK(st.st_mode):
                    # Never followed: AT_SYMLINK_NOFOLLOW on a name beneath a held directory.
                    os.chown(entry.name, -1, gid, dir_fd=dirfd, follow_symlinks=False)
                    continue
                _fix_owner(fd, st, gid)
                if stat.S_ISDIR(st.st_mode):
                    if len(stack) >= FS_GROUP_MAX_DEPTH:
                        raise OSError(errno.ELOOP, f"fsGroup: the volume's tree is deeper than {FS_GROUP_MAX_DEPTH} levels")
                    sub = os.open(".", _DIR_FLAGS, dir_fd=fd)  # the directory opened, not its name again
                    try:
                        stack.append((sub, os.scandir(sub)))
                    except BaseException:
                        os.close(sub)
                        raise
            finally:
                os.close(fd)
    finally:
        while stack:
            _close_level(stack.pop(), top)


def _close_level(level: tuple[int, Iterator[os.DirEntry[str]]], top: int) -> None:
    dirfd, entries = level
    entries.close()  # type: ignore[attr-defined]  # scandir's iterator holds a descriptor of its own
    if dirfd != top:
        os.close(dirfd)


def _fix_owner(fd: int, st: os.stat_result, gid: int) -> None:
    """Group and mode of the inode ``fd`` holds (an ``O_PATH`` or directory descriptor); through
    /proc's link to the descriptor, which names that inode and nothing a pod can swap."""
    at = f"/proc/self/fd/{fd}"
    os.chown(at, -1, gid)
    mode = st.st_mode & 0o7777
    if stat.S_ISDIR(st.st_mode):
        mode |= stat.S_ISGID | stat.S_IRGRP | stat.S_IWGRP | stat.S_IXGRP
    else:
        mode |= stat.S_IRGRP | stat.S_IWGRP
    os.chmod(at, mode)
