"""Fixed machine paths that real tools make on first use, removed after a test session that made them.

The agents' run dir (pod address and user-namespace claims, container bundles, ceph-fuse state), the bind
mount `ip netns add` puts on /run/netns, glusterd's state outside its work dir and libuuid's clock file are
made the first time a test uses them and left by the tools. A session that found none of them leaves none:
what existed before the session is never touched, and a directory that still holds something (another user's
pods, a namespace still there) is left alone.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

# Emptied-only directories, the deepest first; (path, remove its contents too).
_PATHS: tuple[tuple[str, bool], ...] = (
    ("/run/stowage/cephfs", False),
    ("/run/stowage/containers", False),
    ("/run/stowage/podips", False),
    ("/run/stowage/userns", False),
    ("/run/stowage", False),
    ("/var/lib/glusterd/geo-replication", True),  # glusterd's empty gsyncd template, made at its start
    ("/var/lib/glusterd/ss_brick", False),
    ("/var/lib/libuuid/clock.txt", False),
)
_NETNS = Path("/run/netns")
_LOCK = ".lock"


def _mounted(path: Path) -> bool:
    try:
        return any(line.split()[1] == str(path) for line in Path("/proc/self/mounts").read_text().splitlines())
    except OSError:
        return False


def snapshot() -> dict[str, bool]:
    """Which of the paths exist now (and whether /run/netns is a mount point)."""
    found = {path: os.path.lexists(path) for path, _ in _PATHS}
    found[str(_NETNS)] = _NETNS.exists()
    found["netns-mount"] = _mounted(_NETNS)
    return found


def restore(before: dict[str, bool]) -> None:
    """Remove what did not exist in ``before``, only where nothing is left in it."""
    if not before.get("netns-mount") and _mounted(_NETNS) and not any(_NETNS.iterdir()):
        subprocess.run(["umount", str(_NETNS)], check=False, capture_output=True)
    if not before.get(str(_NETNS)) and _NETNS.is_dir() and not _mounted(_NETNS):
        try:
            _NETNS.rmdir()
        except OSError:
            pass
    for path, with_contents in _PATHS:
        if before.get(path) or not os.path.lexists(path):
            continue
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                if with_contents:
                    shutil.rmtree(path)
                    continue
                if os.listdir(path) == [_LOCK]:  # the claim dirs' lock file, with no claim left beside it
                    os.unlink(os.path.join(path, _LOCK))
                os.rmdir(path)
            else:
                os.unlink(path)
        except OSError:
            pass  # something still uses it: left as it is
