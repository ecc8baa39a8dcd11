"""Loop devices, found through sysfs (there may be no udev database)."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import structlog
import tenacity

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


# Backing file (real path) -> the loop device this process attached or last found for it. Only a
# hint: every hit is checked against the device's own sysfs record before it is believed, so a
# detach by anyone else, or a device number reused for another file, falls back to the full scan.
# Without it each look-up reads the backing file of every loop device on the host: O(devices) per
# volume, O(volumes^2) for a burst of pods (PF21).
_known: dict[str, str] = {}
_known_lock = threading.Lock()


def _remember(target: str, device: str | None) -> None:
    with _known_lock:
        if device is None:
            _known.pop(target, None)
        else:
            _known[target] = device


def find_by_backing_file(file: str | os.PathLike[str]) -> str | None:
    target = os.path.realpath(os.fspath(file))
    with _known_lock:
        hint = _known.get(target)
    if hint is not None and _backing_file(os.path.basename(hint)) == target:
        return hint
    found = find_all_by_backing_file(target)
    _remember(target, found[0] if found else None)
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
    target = os.path.realpath(os.fspath(file))
    argv.append(target)
    proc = (executor or default_executor()).run(argv)
    device = proc.stdout.strip().splitlines()[-1]
    _remember(target, device)
    log.info("loop.attach", file=os.fspath(file), device=device, direct_io=direct_io)
    return device


# How long a detach waits for the kernel to let the device go. A detach while any other process has
# the device open (a probe such as blkid, another tool scanning block devices) only marks it for
# auto-clear, and it goes when that process closes it: milliseconds for a probe. Without the wait, a
# look-up right after the detach still finds the device attached to the same file, uses it, and
# loses it a moment later (a CI run: a volume re-attached "after a reboot" vanished).
RELEASE_WAIT_SECONDS = 3.0


def wait_released(detached: dict[str, str], limit: float) -> dict[str, str]:
    """Wait (with back-off, at most ``limit`` seconds) until no device of ``detached`` (device -> the
    file it was detached from) is still backed by that file; returns those that still are."""
    def still_attached() -> dict[str, str]:
        return {dev: f for dev, f in detached.items() if _backing_file(os.path.basename(dev)) == f}

    waiting = tenacity.Retrying(retry=tenacity.retry_if_result(bool),
                                wait=tenacity.wait_exponential(multiplier=0.005, max=0.25),
                                stop=tenacity.stop_after_delay(limit),
                                retry_error_callback=lambda state: state.outcome.result())
    left: dict[str, str] = waiting(still_attached)
    return left


def detach(device: str, *, executor: Executor | None = None, release_wait: float = RELEASE_WAIT_SECONDS) -> None:
    """Detach ``device`` and wait up to ``release_wait`` seconds for the kernel to release it
    (0: do not wait; a caller detaching many devices waits for them together)."""
    log.info("loop.detach", device=device)
    name = os.path.basename(device)
    backing = _backing_file(name)
    (executor or default_executor()).run(["losetup", "--detach", device])
    with _known_lock:
        for target in [t for t, d in _known.items() if d == device]:
            del _known[target]
    if backing and release_wait > 0 and wait_released({device: backing}, release_wait):
        # The kernel detaches it when its last user closes it; until then it stays attached.
        log.warning("loop.detach_deferred", device=device, file=backing, waited_seconds=release_wait)


def refresh_capacity(device: str, *, executor: Executor | None = None) -> None:
    """Make the loop device see its backing file's new size (``losetup -c``)."""
    (executor or default_executor()).run(["losetup", "--set-capacity", device])


def direct_io_enabled(device: str) -> bool:
    name = os.path.basename(device)
    try:
        return (SYS_BLOCK / name / "loop" / "dio").read_text().strip() == "1"
    except OSError:
        return False
