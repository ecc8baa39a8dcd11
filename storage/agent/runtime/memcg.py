"""CT1: a container's OOM kills, counted in a memory cgroup the agent owns.

runc makes each container's memory cgroup and removes it as soon as the container's first process has
ended (``runc run`` destroys the container before it exits), so the kernel's count of the OOM kills in it
(cgroup v1 ``memory.oom_control`` ``oom_kill``; v1 counts a kill only in the victim's own group, never in its
ancestors) is gone by the time the agent sees the exit. On cgroup v1 the container's processes therefore live
in a memory group of the agent's own, ``<agent's memory group>/<runc id>.oom`` (beside runc's own group of the
container, ``<agent's memory group>/<runc id>``; a container's name has no dot), which carries the
container's memory limit: runc's createRuntime hook moves the first process there before the container's
command starts (as PF97 does for blkio), its children follow it, and the agent reads the count after the exit,
then removes the group. runc's own group keeps the limit too (``runc exec``'s processes are charged there).
Anything that fails here leaves the process in runc's group, limited as before: an OOM kill then shows as
``Error``. Not on cgroup v2 (no v1 memory hierarchy): ``prepare`` returns None.
"""
from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import structlog

from storage.system.cgroups import own_v1_group

log = structlog.get_logger(__name__)

SUFFIX = ".oom"
# The file in a container's bundle (and its container dir) that names the group of its current run.
BUNDLE_FILE = "memory-group"


def own_memory_group() -> Path | None:
    """This process's group in the cgroup v1 memory hierarchy, or None (cgroup v2, no memory hierarchy)."""
    group = own_v1_group("memory")
    return group if group is not None and (group / "memory.oom_control").exists() else None


def group_of(container_id: str) -> Path | None:
    base = own_memory_group()
    return base / f"{container_id}{SUFFIX}" if base is not None else None


def prepare(container_id: str, limit: int | None) -> Path | None:
    """A fresh memory group for one run of a container, with its limit (bytes; None: none); None when none
    can be made (the container then stays in runc's group)."""
    group = group_of(container_id)
    if group is None:
        return None
    remove(group)  # what a crashed agent left of an earlier run (its count must not carry over)
    try:
        group.mkdir()
        if limit is not None:
            (group / "memory.limit_in_bytes").write_text(str(limit))
    except OSError as exc:
        log.warning("memory group for OOM accounting not made", group=str(group), error=exc.strerror)
        remove(group)
        return None
    return group


def oom_kills(group: Path) -> int:
    """The OOM kills of processes in ``group`` so far; 0 when it cannot be read."""
    try:
        for line in (group / "memory.oom_control").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def remove(group: Path, wait: float = 1.0) -> bool:
    """rmdir the group; a group whose last processes are still being reaped is busy a moment. True when gone."""
    deadline = time.monotonic() + wait
    while True:
        try:
            os.rmdir(group)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                log.warning("memory group not removed", group=str(group), error=exc.strerror)
                return False
        time.sleep(0.02)
