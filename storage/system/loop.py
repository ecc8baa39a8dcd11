"""Loop devices, found through sysfs (there may be no udev database)."""
from __future__ import annotations

import os
from pathlib import Path

import structlog

from storage.system.executor import Executor, default_executor

log = structlog.get_logger(__name__)

SYS_BLOCK = Path("/sys/block")
_DELETED = " (deleted)"


def _backing_file(name: str) -> str | None:
    try:
        text = (SYS_BLOCK / name / "loop" / "backing_file").read_text().rstrip("\n")
    except OSError:
        return None
    if text.endswith(_DELETED):
        text = text[: -len(_DELETED)]
    return text


def list_loops() -> dict[str, str]:
    """Attached loop devices: ``/dev/loopN`` -> backing file path."""
    out: dict[str, str] = {}
    for entry in sorted(SYS_BLOCK.glob("loop*")):
        backing = _backing_file(entry.name)
        if backing:
            out[f"/dev/{entry.name}"] = backing
    return out


def find_all_by_backing_file(file: str | os.PathLike[str]) -> list[str]:
    target = os.path.realpath(os.fspath(file))
    return [dev for dev, backing in list_loops().items() if backing == target]


# Backing file -> the loop device this process attached it to (PF6): a hint only, checked against the
# device's own sysfs entry before use, so a lookup reads one file instead of every loop device's.
_attached: dict[str, str] = {}


def find_by_backing_file(file: str | os.PathLike[str]) -> str | None:
    target = os.path.realpath(os.fspath(file))
    hint = _attached.get(target)
    if hint is not None:
        if _backing_file(os.path.basename(hint)) == target:
            return hint
        _attached.pop(target, None)
    found = find_all_by_backing_file(file)
    return found[0] if found else None


def loops_under(prefix: str | os.PathLike[str]) -> dict[str, str]:
    """Loop devices whose backing file lies under ``prefix`` (by path component)."""
    base = os.path.realpath(os.fspath(prefix)).rstrip("/")
    return {dev: f for dev, f in list_loops().items() if f == base or f.startswith(base + "/")}


def attach(file: str | os.PathLike[str], direct_io: bool = True, *, executor: Executor | None = None) -> str:
    """Attach ``file`` to a free loop device and return its path.

    Direct I/O keeps the page cache of the backing file out of the way, so the
    volume behaves (and measures) like the disk under it.
    """
    argv = ["losetup", "--find", "--show"]
    if direct_io:
        argv.append("--direct-io=on")
    argv.append(os.path.realpath(os.fspath(file)))
    proc = (executor or default_executor()).run(argv)
    device = proc.stdout.strip().splitlines()[-1]
    _attached[argv[-1]] = device
    log.info("loop.attach", file=os.fspath(file), device=device, direct_io=direct_io)
    return device


def detach(device: str, *, executor: Executor | None = None) -> None:
    log.info("loop.detach", device=device)
    for file, dev in list(_attached.items()):
        if dev == device:
            _attached.pop(file, None)
    (executor or default_executor()).run(["losetup", "--detach", device])


def refresh_capacity(device: str, *, executor: Executor | None = None) -> None:
    """Make the loop device see its backing file's new size (``losetup -c``)."""
    (executor or default_executor()).run(["losetup", "--set-capacity", device])


def direct_io_enabled(device: str) -> bool:
    name = os.path.basename(device)
    try:
        return (SYS_BLOCK / name / "loop" / "dio").read_text().strip() == "1"
    except OSError:
        return False
