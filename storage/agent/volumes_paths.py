"""Path helpers of the volume manager: subPath resolution and fsGroup ownership (A6)."""
from __future__ import annotations

import os
import stat
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


def apply_fs_group(path: str | os.PathLike[str], gid: int) -> None:
    """Give everything under ``path`` the group ``gid``, group read/write, and
    setgid on directories so that new files inherit the group (A6).
    Does not follow symlinks nor cross into other mounts."""
    top = Path(path)
    top_dev = os.lstat(top).st_dev

    def fix(p: Path, st: os.stat_result) -> None:
        if stat.S_ISLNK(st.st_mode):
            os.lchown(p, -1, gid)
            return
        os.chown(p, -1, gid)
        mode = st.st_mode & 0o7777
        if stat.S_ISDIR(st.st_mode):
            mode |= stat.S_ISGID | stat.S_IRGRP | stat.S_IWGRP | stat.S_IXGRP
        else:
            mode |= stat.S_IRGRP | stat.S_IWGRP
        os.chmod(p, mode)

    fix(top, os.lstat(top))
    for dirpath, dirnames, filenames in os.walk(top):
        keep = []
        for name in dirnames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            if st.st_dev != top_dev:
                continue
            fix(p, st)
            if not stat.S_ISLNK(st.st_mode):
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            p = Path(dirpath) / name
            fix(p, os.lstat(p))
