"""fsGroup's walk of a volume the pod may be rewriting while the agent walks it as host root
(SEMANTICS A6, A6a): nothing outside the volume may change, whatever the pod swaps in."""
from __future__ import annotations

import errno
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from storage.agent.volumes_paths import FS_GROUP_MAX_DEPTH, apply_fs_group

pytestmark = pytest.mark.root

GID = 4242


def _canary(base: Path) -> tuple[Path, os.stat_result]:
    """A root-only host file outside the volume: what an escaped chown or chmod would change."""
    canary = base / "host" / "secret"
    canary.parent.mkdir()
    canary.write_text("host secret\n")
    os.chown(canary, 0, 0)
    canary.chmod(0o600)
    return canary, os.stat(canary)


def _unchanged(canary: Path, before: os.stat_result) -> None:
    now = os.stat(canary)
    assert (stat.S_IMODE(now.st_mode), now.st_uid, now.st_gid) == (stat.S_IMODE(before.st_mode), 0, 0)
    parent = os.stat(canary.parent)
    assert parent.st_gid != GID and not parent.st_mode & stat.S_ISGID


def test_a6_files_and_directories_get_the_group_links_only_their_own(tmp_path: Path) -> None:
    canary, before = _canary(tmp_path)
    vol = tmp_path / "vol"
    (vol / "d" / "e").mkdir(parents=True)
    (vol / "d" / "e" / "f").write_text("x")
    (vol / "d" / "e" / "f").chmod(0o600)
    (vol / "to-file").symlink_to(canary)
    (vol / "d" / "to-dir").symlink_to(canary.parent)
    os.mkfifo(vol / "d" / "fifo")
    apply_fs_group(vol, GID)
    for p in (vol, vol / "d", vol / "d" / "e"):
        st = os.stat(p)
        assert st.st_gid == GID and st.st_mode & stat.S_ISGID and st.st_mode & 0o070 == 0o070
    f = os.stat(vol / "d" / "e" / "f")
    assert f.st_gid == GID and stat.S_IMODE(f.st_mode) == 0o660
    assert os.lstat(vol / "to-file").st_gid == GID and os.lstat(vol / "d" / "to-dir").st_gid == GID
    assert os.stat(vol / "d" / "fifo").st_gid == GID
    _unchanged(canary, before)


def test_a6a_a_directory_swapped_for_a_link_to_a_fifo_is_not_entered(tmp_path: Path) -> None:
    """What a walk by name would open (and block on, holding the pod's set-up) is never opened for reading."""
    vol = tmp_path / "vol"
    vol.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.mkfifo(outside / "fifo")
    (vol / "d").symlink_to(outside / "fifo")
    done = threading.Event()
    worker = threading.Thread(target=lambda: (apply_fs_group(vol, GID), done.set()), daemon=True)
    worker.start()
    assert done.wait(10), "the walk blocked on a FIFO outside the volume"
    assert os.stat(outside / "fifo").st_gid == 0


def test_a6a_symlink_swaps_racing_the_walk_never_reach_the_host(tmp_path: Path) -> None:
    """The attack: while the walk runs, the pod keeps replacing files with symlinks to a host file and
    back (rename is atomic, so every name is always one or the other). A walk that looks and then
    changes by name gives the host file the group and g+rw in some of these rounds."""
    canary, before = _canary(tmp_path)
    vol = tmp_path / "vol"
    (vol / "r").mkdir(parents=True)
    names = [vol / "r" / f"f{i}" for i in range(200)]
    for p in names:
        p.write_text("x")
    racing = names[::20]
    spare = tmp_path / "spare"  # the same filesystem, outside the walk: its names never show in it
    spare.mkdir()
    stop = threading.Event()

    def race() -> None:
        while not stop.is_set():
            for p in racing:
                os.symlink(canary, spare / "s")
                os.replace(spare / "s", p)
                (spare / "t").write_text("x")
                os.replace(spare / "t", p)

    racer = threading.Thread(target=race, daemon=True)
    racer.start()
    try:
        deadline = time.monotonic() + 3.0
        rounds = 0
        while time.monotonic() < deadline:
            apply_fs_group(vol, GID)
            rounds += 1
            _unchanged(canary, before)
    finally:
        stop.set()
        racer.join(10)
    assert rounds >= 5
    assert all(os.lstat(p).st_gid == GID for p in names if p not in racing)


def test_a6a_another_mount_inside_the_volume_is_left_alone(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    inner = vol / "mnt"
    inner.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "stowage-test-fsgroup", str(inner)], check=True)
    try:
        (inner / "f").write_text("x")
        apply_fs_group(vol, GID)
        assert os.stat(vol).st_gid == GID
        assert os.stat(inner / "f").st_gid == 0 and os.stat(inner).st_gid == 0
    finally:
        subprocess.run(["umount", str(inner)], check=True)


def test_a6a_a_tree_too_deep_is_refused_not_walked_without_bound(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    fd = os.open(vol, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(FS_GROUP_MAX_DEPTH + 1):  # by descriptor: the path would pass PATH_MAX
            os.mkdir("d", dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)
    def into_volume() -> list[str]:
        # Only descriptors into the tree: other threads of this process may open and close their own meanwhile.
        found = []
        for fd_name in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd_name}")
            except OSError:
                continue
            if target == str(vol) or target.startswith(f"{vol}/"):
                found.append(target)
        return found

    try:
        with pytest.raises(OSError) as raised:
            apply_fs_group(vol, GID)
        assert raised.value.errno == errno.ELOOP and "deeper than" in str(raised.value)
        assert into_volume() == [], "every descriptor of the walk was closed"
    finally:
        _remove_deep(vol)


def _remove_deep(vol: Path) -> None:
    """Bottom up, by descriptor: too deep for a path or for a recursive rmtree."""
    fds = [os.open(vol, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        while "d" in os.listdir(fds[-1]):
            fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        while len(fds) > 1:
            os.close(fds.pop())
            os.rmdir("d", dir_fd=fds[-1])
    finally:
        for fd in fds:
            os.close(fd)
