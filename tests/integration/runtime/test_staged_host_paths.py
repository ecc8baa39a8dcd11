"""SV13: a hostPath staged for a container is a recursive copy of the host's mounts beneath it; unmounting
that copy must never unmount the host's own mounts.

The hazard, reproduced here on a tree of the test's own: a shared mount ("the host's /run") with a childless
submount ("a network namespace's file", "another pod's volume"). A recursive bind of a shared mount joins its
peer group, and an unmount beneath the copy propagates to the peers of its parent, so the container's end
(``unstage_volume_mounts``) used to unmount the original submount as well. In a CI run a `kubectl debug node/`
pod (hostPath /) took the network namespaces of another test's hosts with it that way.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from storage.agent.runtime.subpaths import stage_volume_mounts, staging_dir, unstage_volume_mounts
from storage.agent.teardown import stop_node
from storage.system import mounts
from support import host_tmp_dir, need_root

pytestmark = pytest.mark.root


@pytest.fixture
def shared_tree() -> Iterator[tuple[Path, Path, Path]]:
    """(base, the shared "host" mount, its childless submount), all under a temp dir of the test's own."""
    need_root("mounts and their propagation")
    with host_tmp_dir("stowage-staged-") as base:
        host = base / "host"
        host.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "stowage-staged-host", str(host)], check=True)
        subprocess.run(["mount", "--make-shared", str(host)], check=True)
        child = host / "netns-file"
        child.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "stowage-staged-child", str(child)], check=True)
        (child / "marker").write_text("still here")
        yield base, host, child


def _container(propagation: str | None) -> dict:
    mount = {"name": "host", "mountPath": "/host"}
    if propagation:
        mount["mountPropagation"] = propagation
    return {"name": "main", "volumeMounts": [mount]}


@pytest.mark.parametrize("propagation", [None, "HostToContainer", "Bidirectional"])
def test_sv13_unstaging_a_host_path_leaves_the_hosts_mounts_beneath_it(
        shared_tree: tuple[Path, Path, Path], propagation: str | None) -> None:
    base, host, child = shared_tree
    pod_dir = base / "pod"
    pod_dir.mkdir()
    staged = stage_volume_mounts(_container(propagation), {"host": str(host)}, [], pod_dir=pod_dir,
                                 host_path_prefixes=[base])
    assert staged[0] is not None
    copy = Path(staged[0])
    assert (copy / "netns-file" / "marker").read_text() == "still here", "the staged copy is recursive"
    if propagation != "Bidirectional":
        # A slave of the host's mounts: a mount made on the host later still shows in the copy.
        late = host / "late"
        late.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "stowage-staged-late", str(late)], check=True)
        assert mounts.is_mount_point(copy / "late"), "the copy receives the host's new mounts"

    unstage_volume_mounts(pod_dir, "main")

    assert not staging_dir(pod_dir, "main").exists()
    assert mounts.is_mount_point(child), "unmounting the copy unmounted the host's own submount"
    assert (child / "marker").read_text() == "still here"
    if propagation != "Bidirectional":
        assert mounts.is_mount_point(host / "late")


def _teardown_by(way: str, pod_dir: Path, data_dir: Path) -> None:
    if way == "unmount_all_under":  # the volume manager's last sweep of a pod, a test's cleanup
        mounts.unmount_all_under(pod_dir)
    elif way == "unmount_entries":  # the volume manager's teardown of a pod's mounts from one table read
        assert mounts.unmount_entries(mounts.mounts_under(pod_dir))
    else:  # `stowage down`
        result = stop_node(data_dir, data_dir / "agent", grace_seconds=1)
        assert result["left"]["mounts"] == []


@pytest.mark.parametrize("way", ["unmount_all_under", "unmount_entries", "stop_node"])
def test_sv13_a_bidirectional_copy_left_by_a_dead_agent_is_removed_without_reaching_the_host(
        shared_tree: tuple[Path, Path, Path], way: str) -> None:
    """The agent died between a Bidirectional container's staging and its end, so nobody unstaged the copy,
    which is still a peer of the host's mounts. Whatever removes it later (the restarted agent's teardown of
    the pod, or `stowage down`) unmounts it deepest first, and must not take the host's submount with it."""
    base, host, child = shared_tree
    data_dir = base / "data"
    pod_dir = data_dir / "pods" / "uid-1"
    pod_dir.mkdir(parents=True)
    staged = stage_volume_mounts(_container("Bidirectional"), {"host": str(host)}, [], pod_dir=pod_dir,
                                 host_path_prefixes=[base])
    copy = Path(str(staged[0]))
    assert mounts.is_mount_point(copy / "netns-file")

    _teardown_by(way, pod_dir, data_dir)

    assert mounts.mounts_under(pod_dir) == []
    assert mounts.is_mount_point(child), f"{way} unmounted the host's own submount through the staged copy"
    assert (child / "marker").read_text() == "still here"


def test_sv13_a_pods_bind_of_a_shared_node_mount_is_removed_without_reaching_the_other_pods(
        shared_tree: tuple[Path, Path, Path]) -> None:
    """The same hazard without hostPath: a recursive bind of a shared node-wide mount (another pod still
    uses its submount) is a peer of it, so unmounting the bind's submount used to unmount the original's."""
    base, host, child = shared_tree
    pod_dir = base / "pod"
    target = pod_dir / "volumes" / "v"
    target.mkdir(parents=True)
    subprocess.run(["mount", "--rbind", str(host), str(target)], check=True)
    assert mounts.is_mount_point(target / "netns-file")

    mounts.unmount_all_under(pod_dir)

    assert mounts.mounts_under(pod_dir) == []
    assert mounts.is_mount_point(child), "the pod's teardown unmounted the node-wide mount's submount"


def test_sv13_a_staged_tree_is_detached_in_one_step(shared_tree: tuple[Path, Path, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A staged copy of a tree with many mounts (the host's "/" for `kubectl debug node/`) goes with one lazy
    detach once private, not one unmount per copied mount: while the copy lingers, each copied mount point is
    busy on the host (in a CI run, another test's `ip netns del` could not remove its namespace's file
    during a debug pod's teardown). The host's mounts beneath stay."""
    base, host, child = shared_tree
    for i in range(12):  # more of the host's mounts beneath the tree
        sub = host / f"more-{i}"
        sub.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", f"stowage-staged-more-{i}", str(sub)], check=True)
    pod_dir = base / "pod"
    pod_dir.mkdir()
    staged = stage_volume_mounts(_container("HostToContainer"), {"host": str(host)}, [], pod_dir=pod_dir,
                                 host_path_prefixes=[base])
    copy = Path(staged[0])
    assert len(mounts.mounts_under(copy)) == 14
    calls: list[tuple[str, bool]] = []
    real_unmount = mounts.unmount

    def counting(path, lazy=False, **kwargs):  # type: ignore[no-untyped-def]
        calls.append((str(path), lazy))
        return real_unmount(path, lazy, **kwargs)

    monkeypatch.setattr(mounts, "unmount", counting)
    unstage_volume_mounts(pod_dir, "main")
    assert calls == [(str(copy), True)]
    assert not staging_dir(pod_dir, "main").exists()
    assert mounts.is_mount_point(child) and (child / "marker").read_text() == "still here"
    assert all(mounts.is_mount_point(host / f"more-{i}") for i in range(12))
