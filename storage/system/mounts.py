"""The mount table (``/proc/self/mountinfo``) and mount/unmount commands."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import structlog

from storage.system.executor import Executor, default_executor

log = structlog.get_logger(__name__)

MOUNTINFO = "/proc/self/mountinfo"

_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    parent_id: int
    major_minor: str  # "7:3"
    root: str  # path inside the source filesystem ("/" unless a bind of a subdirectory)
    mount_point: str
    options: tuple[str, ...]  # per-mount options (ro/rw, nosuid, ...)
    fstype: str
    source: str
    super_options: tuple[str, ...]

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        left, _, right = line.partition(" - ")
        fields = left.split()
        tail = right.split()
        if len(fields) < 6 or len(tail) < 2:
            continue
        entries.append(
            MountEntry(
                mount_id=int(fields[0]),
                parent_id=int(fields[1]),
                major_minor=fields[2],
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                options=tuple(fields[5].split(",")),
                fstype=tail[0],
                source=_unescape(tail[1]),
                super_options=tuple(tail[2].split(",")) if len(tail) > 2 else (),
            )
        )
    return entries


def read_mountinfo(path: str = MOUNTINFO) -> list[MountEntry]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


def _real(path: str | os.PathLike[str]) -> str:
    return os.path.realpath(os.fspath(path))


def mounts_at(path: str | os.PathLike[str]) -> list[MountEntry]:
    """Every mount stacked on ``path``, bottom first."""
    target = _real(path)
    return [e for e in read_mountinfo() if e.mount_point == target]


def is_mount_point(path: str | os.PathLike[str]) -> bool:
    return bool(mounts_at(path))


def top_mount(path: str | os.PathLike[str]) -> MountEntry | None:
    stacked = mounts_at(path)
    return stacked[-1] if stacked else None


def mounts_under(prefix: str | os.PathLike[str]) -> list[MountEntry]:
    """Mounts at or below ``prefix`` (compared by path component), deepest and newest first,
    which is the order to unmount them in."""
    base = _real(prefix).rstrip("/") or "/"
    found = [
        e
        for e in read_mountinfo()
        if e.mount_point == base or e.mount_point.startswith(base + "/") or base == "/"
    ]
    found.sort(key=lambda e: (e.mount_point.count("/"), e.mount_id), reverse=True)
    return found


def mount(
    source: str,
    target: str | os.PathLike[str],
    fstype: str | None = None,
    options: Sequence[str] = (),
    *,
    executor: Executor | None = None,
) -> None:
    argv = ["mount"]
    if fstype:
        argv += ["-t", fstype]
    if options:
        argv += ["-o", ",".join(options)]
    argv += [source, os.fspath(target)]
    log.info("mount", source=source, target=os.fspath(target), fstype=fstype, options=list(options))
    (executor or default_executor()).run(argv)


def bind_mount(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    read_only: bool = False,
    *,
    executor: Executor | None = None,
) -> None:
    ex = executor or default_executor()
    ex.run(["mount", "--bind", os.fspath(source), os.fspath(target)])
    if read_only:
        # The kernel ignores "ro" on the initial bind: it must be a remount of the bind.
        try:
            ex.run(["mount", "-o", "remount,bind,ro", os.fspath(target)])
        except Exception:
            ex.run(["umount", os.fspath(target)], check=False)
            raise
    log.info("mount.bind", source=os.fspath(source), target=os.fspath(target), read_only=read_only)


def unmount(path: str | os.PathLike[str], lazy: bool = False, *, executor: Executor | None = None) -> None:
    argv = ["umount"]
    if lazy:
        argv.append("-l")
    argv.append(os.fspath(path))
    log.info("umount", target=os.fspath(path), lazy=lazy)
    (executor or default_executor()).run(argv)


def unmount_all_under(prefix: str | os.PathLike[str], *, executor: Executor | None = None) -> None:
    """Unmount everything at or under ``prefix``, deepest first, stacked mounts included."""
    # Re-read after each unmount: stacked mounts and propagation change the table.
    for _ in range(1000):
        found = mounts_under(prefix)
        if not found:
            return
        unmount(found[0].mount_point, executor=executor)
    raise RuntimeError(f"mounts under {prefix} keep reappearing")


def device_number(path: str | os.PathLike[str]) -> str:
    """``major:minor`` of a block device node (as mountinfo shows it)."""
    st = os.stat(path)
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def mounts_of_device(device: str | os.PathLike[str]) -> list[MountEntry]:
    """Mounts of a block device's filesystem (binds of it included).

    btrfs reports an anonymous device number in mountinfo, so the source
    path is compared as well."""
    number = device_number(device)
    dev = _real(device)
    by_source = {e.major_minor for e in read_mountinfo() if e.source == dev}
    return [e for e in read_mountinfo() if e.major_minor == number or e.major_minor in by_source]


def is_path_under(path: str | os.PathLike[str], prefix: str | os.PathLike[str]) -> bool:
    p = Path(_real(path))
    base = Path(_real(prefix))
    return p == base or base in p.parents
