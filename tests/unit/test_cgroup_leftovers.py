"""CT5: what runc leaves of a container's groups is removed by the agent, in every hierarchy, and only the
container's own group (named by its runc id under the agent's group)."""
from __future__ import annotations

from pathlib import Path

from storage.system.cgroups import remove_child_groups


def test_ct5_leftover_groups_are_removed_in_every_hierarchy(tmp_path: Path) -> None:
    # A hybrid host's layout: per-controller mounts (cpu and cpuacct joined, with links), a named systemd
    # hierarchy and the unified one; the agent's own group is /agent in each.
    root = tmp_path / "cgroup"
    for mount in ("cpu,cpuacct", "memory", "pids", "systemd", "unified"):
        (root / mount / "agent").mkdir(parents=True)
        (root / mount / "cgroup.procs").write_text("")
    (root / "cpu").symlink_to("cpu,cpuacct")
    (root / "cpuacct").symlink_to("cpu,cpuacct")
    own = {"cpu": "/agent", "cpuacct": "/agent", "memory": "/agent", "pids": "/agent", "name=systemd": "/agent",
           "": "/agent"}
    for mount in ("cpu,cpuacct", "memory", "systemd", "unified"):
        (root / mount / "agent" / "stowage-u-c").mkdir()
    (root / "memory" / "agent" / "stowage-u-other").mkdir()  # another container's: not touched

    assert remove_child_groups("stowage-u-c", own=own, root=root, wait=0) == []
    assert sorted(str(p.relative_to(root)) for p in root.rglob("stowage-*")) == ["memory/agent/stowage-u-other"]
    # Nothing left to remove, or a hierarchy without it: nothing happens.
    assert remove_child_groups("stowage-u-c", own=own, root=root, wait=0) == []
