"""Where a process sits in the host's cgroup hierarchies (cgroup v1 mounted per controller under
/sys/fs/cgroup, or the unified v2 hierarchy there)."""
from __future__ import annotations

import functools
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


@functools.cache
def own_v1_group(controller: str) -> Path | None:
    """This process's group in the cgroup v1 hierarchy of ``controller`` (``blkio``, ``memory``), or None (cgroup
    v2, or that hierarchy not mounted). The agent never moves itself, so it is read once."""
    try:
        own = cgroup_paths("self").get(controller)
    except (OSError, ValueError):
        return None
    group = CGROUP_ROOT / controller / own.lstrip("/") if own is not None else None
    return group if group is not None and (group / "cgroup.procs").exists() else None


@functools.cache
def _own_hierarchy_dirs() -> tuple[Path, ...]:
    """This process's group in every hierarchy, read once: asked at every container's end (CT5)."""
    return tuple(_hierarchy_dirs(cgroup_paths("self"), CGROUP_ROOT))


def _hierarchy_dirs(own: dict[str, str], root: Path) -> list[Path]:
    """The directory of ``own``'s group in each hierarchy it names (cgroup v1 controllers, named hierarchies
    such as ``name=systemd``, the unified one), once each (``cpu`` and ``cpuacct`` often share one mount)."""
    seen: dict[Path, None] = {}
    for controller, path in own.items():
        if controller == "":
            names = ["unified", ""]  # a hybrid host mounts it under unified/; a v2-only host at the root
        elif controller.startswith("name="):
            names = [controller.removeprefix("name=")]
        else:
            names = [controller]
        for name in names:
            mount = root / name if name else root
            if (mount / "cgroup.procs").exists():
                seen.setdefault((mount / path.lstrip("/")).resolve(), None)
                break
    return list(seen)


def remove_child_groups(name: str, *, wait: float = 5.0, own: dict[str, str] | None = None,
                        root: Path = CGROUP_ROOT) -> list[Path]:
    """rmdir the group ``name`` under this process's own group in every hierarchy, where it exists: what runc
    left of a container it started (runc's default cgroup path is ``<its own group>/<container id>``) when
    its own removal gave up while the container's last processes were still being reaped (runc tries for
    0.15 s). A group still busy after ``wait`` is left, and returned."""
    import errno
    import os
    import time

    busy: list[Path] = []
    deadline = time.monotonic() + wait
    for base in _hierarchy_dirs(own, root) if own is not None else _own_hierarchy_dirs():
        group = base / name
        while True:
            try:
                os.rmdir(group)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                    busy.append(group)
                    break
            time.sleep(0.02)
    return busy
