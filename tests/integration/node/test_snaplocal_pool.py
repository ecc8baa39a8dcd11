"""Pool snapshots on real loop devices, mounts and fsfreeze (SEMANTICS LS1-LS6)."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from storage.agent.pool import Pool, PoolFull
from storage.errors import AlreadyExists, BadRequest, NotFound
from storage.system import blockdev, mounts, snapcopy

MiB = 2**20


def _writer(path: Path, stop: threading.Event, counter: list[int]) -> None:
    """Appends numbered, fsynced records and rewrites files, as a database would."""
    i = 0
    with open(path / "log", "ab") as log:
        while not stop.is_set():
            log.write(f"record {i:08d}\n".encode())
            log.flush()
            os.fsync(log.fileno())
            (path / f"f{i % 50}").write_bytes(os.urandom(4096 + (i % 7) * 1000))
            i += 1
    counter.append(i)


def test_snapshot_is_idempotent_counted_and_deleted_twice(node_tmp: Path) -> None:
    """LS1, LS3, LS5: one copy per name, counted by what it holds, delete of what is gone succeeds."""
    pool = Pool(node_tmp / "pool", capacity=256 * MiB)
    pool.create("vol", 64 * MiB, "ext4")
    first = pool.snapshot("snap-a", "vol")
    again = pool.snapshot("snap-a", "vol")
    assert first.state == again.state == "Ready" and first.created == again.created
    assert first.size == 64 * MiB and first.allocated > 0
    assert sorted(p.name for p in pool.snapshots_dir.iterdir()) == ["snap-a.img", "snap-a.json"]
    total, free = pool.usage()
    assert free == total - 64 * MiB - first.allocated
    pool.create("other", 16 * MiB, "ext4")
    with pytest.raises(AlreadyExists):
        pool.snapshot("snap-a", "other")
    with pytest.raises(NotFound):
        pool.snapshot("snap-b", "no-such-volume")
    pool.delete_snapshot("snap-a")
    pool.delete_snapshot("snap-a")
    assert pool.get_snapshot("snap-a") is None and not pool.snapshot_image_path("snap-a").exists()
    assert pool.usage() == (total, total - 80 * MiB)


def test_snapshot_refused_when_the_pool_cannot_hold_the_copy(node_tmp: Path) -> None:
    """LS3: a snapshot needs room for what its volume holds."""
    pool = Pool(node_tmp / "pool", capacity=64 * MiB)
    pool.create("full", 64 * MiB, "ext4")
    with pytest.raises(PoolFull):
        pool.snapshot("s", "full")
    assert pool.get_snapshot("s") is None and not pool.snapshot_image_path("s").exists()


@pytest.mark.parametrize("fs_type,size", [("ext4", 64 * MiB), ("xfs", 320 * MiB)])
def test_snapshot_under_continuous_writes_is_a_clean_filesystem(node_tmp: Path, fs_type: str, size: int) -> None:
    """LS2, LS6: cut while a process writes and fsyncs continuously, the copy is a consistent filesystem
    (fsck clean); restored into a bigger volume it is grown, mounts next to its source (its own UUID)
    and holds a prefix of the writer's log."""
    pool = Pool(node_tmp / "pool", capacity=4096 * MiB)
    pool.create("busy", size, fs_type)
    mnt = node_tmp / "mnt"
    mnt.mkdir()
    mounts.mount(pool.device("busy"), mnt, fs_type)
    stop, counter = threading.Event(), []
    writer = threading.Thread(target=_writer, args=(mnt, stop, counter))
    writer.start()
    try:
        time.sleep(0.5)
        snap = pool.snapshot("during-writes", "busy")
        time.sleep(0.3)
    finally:
        stop.set()
        writer.join()
    assert counter[0] > 10
    if fs_type == "ext4":
        # The copy itself, checked read-only through its own loop device: a frozen ext4 has an empty journal.
        check = subprocess.run(["losetup", "--find", "--show", "--read-only", str(pool.snapshot_image_path("during-writes"))],
                               capture_output=True, text=True, check=True).stdout.strip()
        try:
            result = subprocess.run(["e2fsck", "-f", "-n", check], capture_output=True, text=True, check=False)
            assert result.returncode == 0, result.stdout + result.stderr
        finally:
            subprocess.run(["losetup", "-d", check], check=True)

    restored = pool.create("restored", size * 2, fs_type, source_snapshot="during-writes")
    # Restored (an xfs log replayed, as after a power cut), the filesystem checks clean.
    usable, output = blockdev.fsck(pool.device("restored"), fs_type)
    assert usable, output
    if fs_type == "xfs":
        assert "valuable metadata changes" not in output
    assert restored.state == "Ready" and (restored.fs_type, restored.size) == (fs_type, size * 2)
    assert blockdev.fs_uuid(pool.device("restored")) != blockdev.fs_uuid(pool.device("busy"))
    rmnt = node_tmp / "rmnt"
    rmnt.mkdir()
    mounts.mount(pool.device("restored"), rmnt, fs_type)  # beside its mounted source
    st = os.statvfs(rmnt)
    assert st.f_blocks * st.f_frsize > size * 1.5
    copied = (rmnt / "log").read_bytes().splitlines()
    live = (mnt / "log").read_bytes().splitlines()
    assert 0 < len(copied) < len(live)
    assert copied == live[:len(copied)]  # a prefix: the point in time, no torn record
    assert snap.created > 0


def test_restore_smaller_than_the_snapshot_is_refused(node_tmp: Path) -> None:
    """LS6."""
    pool = Pool(node_tmp / "pool", capacity=512 * MiB)
    pool.create("src", 64 * MiB, "ext4")
    pool.snapshot("s", "src")
    with pytest.raises(BadRequest, match="smaller than snapshot"):
        pool.create("small", 32 * MiB, "ext4", source_snapshot="s")
    with pytest.raises(NotFound):
        pool.create("nothing", 64 * MiB, "ext4", source_snapshot="missing")
    assert pool.get("nothing") is None or pool.get("nothing").state != "Ready"


def test_freeze_is_undone_on_error_and_after_its_limit(node_tmp: Path) -> None:
    """LS4: the filesystem is thawed when the copy fails, and by the watchdog when it takes too long."""
    pool = Pool(node_tmp / "pool", capacity=256 * MiB)
    pool.create("f", 64 * MiB, "ext4")
    mnt = node_tmp / "mnt"
    mnt.mkdir()
    mounts.mount(pool.device("f"), mnt, "ext4")

    def write_within(seconds: float) -> bool:
        done = threading.Event()

        def w() -> None:
            with open(mnt / "probe", "wb") as f:
                f.write(b"x")
                os.fsync(f.fileno())
            done.set()
        threading.Thread(target=w, daemon=True).start()
        return done.wait(seconds)

    with pytest.raises(RuntimeError), snapcopy.frozen([str(mnt)]):
        assert not write_within(0.5)  # frozen: the write waits
        raise RuntimeError("copy failed")
    assert write_within(5)
    with pytest.raises(snapcopy.FreezeExpired), snapcopy.frozen([str(mnt)], limit=0.5):
        time.sleep(1.5)
    assert write_within(5)


def test_block_volume_snapshot_restores_the_raw_bytes_and_outlives_its_volume(node_tmp: Path) -> None:
    """LS8, LS9."""
    pool = Pool(node_tmp / "pool", capacity=512 * MiB)
    pool.create("raw", 16 * MiB, None, "Block")
    payload = os.urandom(MiB)
    fd = os.open(pool.device("raw"), os.O_WRONLY)
    try:
        os.pwrite(fd, payload, 5 * MiB)
        os.fsync(fd)
    finally:
        os.close(fd)
    pool.snapshot("raw-snap", "raw")
    pool.delete("raw")
    vol = pool.create("raw-copy", 32 * MiB, None, "Block", source_snapshot="raw-snap")
    assert (vol.mode, vol.fs_type) == ("Block", None)
    with open(pool.device("raw-copy"), "rb") as f:
        f.seek(5 * MiB)
        assert f.read(MiB) == payload
        f.seek(0)
        assert f.read(MiB) == bytes(MiB)
    assert blockdev.device_size(pool.device("raw-copy")) == 32 * MiB


def test_a_copy_interrupted_by_a_crash_is_dropped_at_restart(node_tmp: Path) -> None:
    """LS5: a `Creating` snapshot record (the agent died mid-copy) is removed when the pool is taken up
    again, and stops counting; a retry of the name makes a whole new copy."""
    pool = Pool(node_tmp / "pool", capacity=256 * MiB)
    pool.create("v", 64 * MiB, "ext4")
    snap = pool.snapshot("s", "v")
    # What a crash mid-copy leaves: the record still Creating and a partial copy.
    snap.state = "Creating"
    pool._save_snapshot(snap)
    pool.snapshot_image_path("s").rename(pool.snapshot_image_path("s").with_name("s.img.partial"))
    _total, free_with = pool.usage()
    restarted = Pool(node_tmp / "pool", capacity=256 * MiB)
    restarted.reattach_all()
    assert restarted.get_snapshot("s") is None
    assert sorted(p.name for p in restarted.snapshots_dir.iterdir()) == []
    assert restarted.usage()[1] > free_with
    assert restarted.snapshot("s", "v").state == "Ready"
