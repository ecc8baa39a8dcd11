"""Path helpers of the volume manager: subPath resolution and fsGroup ownership (A6)."""
from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from storage.errors import FieldError, Invalid


def _escape(sub_path: str, detail: str) -> Invalid:
    return Invalid([FieldError("volumeMounts.subPath", "Invalid value", detail, sub_path, True)])


def resolve_subpath(volume_path: str | os.PathLike[str], sub_path: str, *, create: bool = True) -> Path:
    """The host path of ``sub_path`` inside the volume; refuses absolute paths,
    ``..`` and symlinks that lead outside the volume. Missing directories are
    created (as Kubernetes does), one component at a time so that a symlink
    planted by the pod cannot redirect the creation."""
    if not sub_path:
        return Path(volume_path)
    pure = PurePosixPath(sub_path)
    if pure.is_absolute():
        raise _escape(sub_path, "must be a relative path")
    if ".." in pure.parts:
        raise _escape(sub_path, "must not contain '..'")
    root = Path(os.path.realpath(volume_path))
    current = root
    for part in pure.parts:
        if part in ("", "."):
            continue
        candidate = current / part
        if candidate.is_symlink():
            resolved = Path(os.path.realpath(candidate))
            if resolved != root and root not in resolved.parents:
                raise _escape(sub_path, f"symlink {part!r} points outside the volume")
            candidate = resolved
        elif not candidate.exists():
            if not create:
                raise _escape(sub_path, "does not exist in the volume")
            os.mkdir(candidate, 0o750)
        current = candidate
    final = Path(os.path.realpath(current))
    if final != root and root not in final.parents:
        raise _escape(sub_path, "points outside the volume")
    return final


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
