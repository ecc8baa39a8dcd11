"""Where a process sits in the host's cgroup hierarchies (cgroup v1 mounted per controller under
/sys/fs/cgroup, or the unified v2 hierarchy there)."""
from __future__ import annotations

from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_paths(pid: int | str) -> dict[str, str]:
    """Controller -> cgroup path of a process ("" for the unified hierarchy); ``pid`` may be "self"."""
    paths: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths
