"""A burst of volumes carved from one pool at once, on real loop devices: capacity stays exact, every
volume gets its own device, and the look-ups that make a burst fast (a loop device's hint, the
incremental mount table) never give a wrong answer (SEMANTICS PF20-PF24)."""
from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from storage.agent.pool import Pool, PoolFull
from storage.system import blockdev, loop, mounts

MiB = 2**20


def test_parallel_carving_from_two_pool_objects_never_overcommits(node_tmp: Path) -> None:
    """PF23: 16 creates at once through two Pool objects on one directory (as two processes would
    share it: thread lock plus flock) on a pool that holds 5: exactly 5 volumes, each formatted on
    its own direct-I/O loop device, the rest PoolFull, and the accounting adds up to the byte."""
    root = node_tmp / "pool"
    capacity = 5 * 24 * MiB + 23 * MiB  # room for 5 of the 24 MiB volumes, not for a sixth
    pools = [Pool(root, capacity=capacity), Pool(root, capacity=capacity)]
    barrier = threading.Barrier(16)
    made: list[str] = []
    full: list[str] = []
    other: list[BaseException] = []

    def carve(i: int) -> None:
        barrier.wait()
        try:
            pools[i % 2].create(f"burst-{i}", 24 * MiB, "ext4")
            made.append(f"burst-{i}")
        except PoolFull:
            full.append(f"burst-{i}")
        except BaseException as exc:  # anything else is a defect the assertion below names
            other.append(exc)

    threads = [threading.Thread(target=carve, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not other, other
    assert len(made) == 5 and len(full) == 11
    devices = {name: pools[0].device(name) for name in made}
    assert len(set(devices.values())) == 5 and None not in devices.values()
    for name, dev in devices.items():
        assert dev is not None and loop.direct_io_enabled(dev)
        assert loop.find_all_by_backing_file(pools[0].image_path(name)) == [dev]
        assert blockdev.probe_filesystem(dev) == "ext4"
    assert sorted(v.name for v in pools[1].list() if v.state == "Ready") == sorted(made)
    assert pools[0].usage() == (capacity, capacity - 5 * 24 * MiB)
    # The refused ones left no record, image or device behind.
    for name in full:
        assert pools[0].get(name) is None and not pools[0].image_path(name).exists()
        assert loop.find_by_backing_file(pools[0].image_path(name)) is None


def test_a_loop_hint_is_checked_before_it_is_believed(node_tmp: Path) -> None:
    """PF21: the remembered device of a file is used only while sysfs says it still backs that file:
    detached behind our back it is not found; re-attached (maybe on another number) the new one is."""
    image = node_tmp / "a.img"
    with open(image, "wb") as f:
        f.truncate(16 * MiB)
    dev = loop.attach(image)
    assert loop.find_by_backing_file(image) == dev
    subprocess.run(["losetup", "--detach", dev], check=True)  # not through loop.detach: the hint is stale
    # A detach while something else has the device open (udev probing it after the attach) only marks it
    # for auto-clear: it backs the file until that opener closes it, and the look-up rightly says so.
    assert not loop.wait_released({dev: str(image.resolve())}, 10), "the kernel released the detached device"
    assert loop.find_by_backing_file(image) is None
    other = node_tmp / "b.img"
    with open(other, "wb") as f:
        f.truncate(16 * MiB)
    # Whatever device number the kernel hands out now, a.img's answer follows sysfs, not the hint.
    dev_b = subprocess.run(["losetup", "--find", "--show", str(other)], check=True, capture_output=True,
                           text=True).stdout.strip()
    assert loop.find_by_backing_file(image) is None
    assert loop.find_by_backing_file(other) == dev_b
    dev_a = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True,
                           text=True).stdout.strip()
    assert loop.find_by_backing_file(image) == dev_a
    loop.detach(dev_a)
    loop.detach(dev_b)
    assert loop.find_by_backing_file(image) is None and loop.find_by_backing_file(other) is None


def _read_matching_a_full_parse() -> list[mounts.MountEntry]:
    """The incremental table, once it equals a full parse of the text read just before or just after it: other
    tests on the host mount and unmount meanwhile, so one comparison may straddle their change."""
    for _ in range(50):
        before = Path(mounts.MOUNTINFO).read_text()
        table = mounts.read_mountinfo()
        if table in (mounts.parse_mountinfo(before), mounts.parse_mountinfo(Path(mounts.MOUNTINFO).read_text())):
            return table
    raise AssertionError("the incremental mount table never matched a full parse")


def test_incremental_mount_table_matches_a_full_parse(node_tmp: Path) -> None:
    """PF20: the table read after mounts come and go equals a fresh parse of the same text, entry for
    entry, including a mount point that needs escaping."""
    _read_matching_a_full_parse()
    target = node_tmp / "with space"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)], check=True)
    try:
        during = _read_matching_a_full_parse()
        assert any(e.mount_point == str(target) and e.fstype == "tmpfs" for e in during)
        assert mounts.MountTable.read().is_mount_point(target)
    finally:
        subprocess.run(["umount", str(target)], check=True)
    after = mounts.read_mountinfo()
    assert not any(e.mount_point == str(target) for e in after)
    assert not mounts.MountTable.read().is_mount_point(target)
    assert os.path.isdir(target)
