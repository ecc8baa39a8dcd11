"""The one-volume path without needless host commands (SEMANTICS PF1-PF3, PF6), on real loop devices."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Sequence

import pytest

from storage.agent.pool import Pool
from storage.system import blockdev, loop, mounts
from storage.system.executor import CommandError, Executor, RecordingExecutor
from support import wait_for
from volume_plugins.mounter import FilesystemMismatch, Mounter

MiB = 2**20


class Witness(Executor):
    """Runs every command for real and keeps its argv, so a test can say which ran."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        return super().run(argv, **kwargs)

    def programs(self) -> list[str]:
        return [c[0] for c in self.calls]


def test_pf1_a_formatted_device_is_mounted_without_a_probe(node_tmp: Path, make_disk) -> None:
    """PF1: a device that mounts as the requested type is mounted at once: no blkid, no mkfs."""
    dev = make_disk()
    subprocess.run(["mkfs.ext4", "-q", dev], check=True)
    uuid = blockdev.fs_uuid(dev)
    ex = Witness()
    found = Mounter(node_tmp / "state", ex).format_and_mount(dev, node_tmp / "mnt", "ext4", key="v1")
    assert found == "ext4"
    assert ex.programs() == [], f"PF74: mount(2) in this process, no process at all: {ex.calls}"
    assert mounts.top_mount(node_tmp / "mnt").fstype == "ext4"
    assert blockdev.fs_uuid(dev) == uuid, "the filesystem must be the one that was there"


def test_pf1_a_blank_device_is_probed_before_it_is_formatted(node_tmp: Path, make_disk) -> None:
    """PF1/A4: a device that does not mount is probed, and formatted only when blank; PF3: the new
    superblock is flushed in-process (no `sync` process), and the marker is gone after the mount."""
    dev = make_disk()
    ex = Witness()
    assert Mounter(node_tmp / "state", ex).format_and_mount(dev, node_tmp / "mnt", None, key="v1") == "ext4"
    # PF74: the refused mount(2) is followed by mount(8) for its words; the final mount is mount(2).
    assert ex.programs() == ["mount", "blkid", "mkfs.ext4"], ex.calls
    assert blockdev.probe_filesystem(dev) == "ext4"
    assert not list((node_tmp / "state").glob("*.mkfs-intent"))


def test_pf1_another_filesystem_is_still_neither_formatted_nor_mounted(node_tmp: Path, make_disk) -> None:
    """PF1 keeps A4: xfs asked for as ext4 fails the first mount, the probe finds xfs, nothing is written."""
    dev = make_disk(320 * MiB)
    subprocess.run(["mkfs.xfs", "-q", dev], check=True)
    uuid = blockdev.fs_uuid(dev)
    ex = Witness()
    try:
        Mounter(node_tmp / "state", ex).format_and_mount(dev, node_tmp / "mnt", "ext4", key="v1")
        raise AssertionError("mounting xfs as ext4 must fail")
    except FilesystemMismatch as exc:
        assert 'it already contains xfs' in str(exc)
        assert "wrong fs type" in str(exc), f"PF74: mount(8)'s own words for the refusal: {exc}"
    assert "mkfs.ext4" not in ex.programs() and "blkid" in ex.programs()
    assert blockdev.fs_uuid(dev) == uuid and blockdev.probe_filesystem(dev) == "xfs"
    assert not mounts.is_mount_point(node_tmp / "mnt")


def test_pf1_an_interrupted_format_is_checked_before_any_mount(node_tmp: Path, make_disk) -> None:
    """PF1: with an intent marker (an earlier format was interrupted) the probe and fsck come first."""
    dev = make_disk()
    subprocess.run(["mkfs.ext4", "-q", dev], check=True)
    state = node_tmp / "state"
    state.mkdir()
    (state / "v1.mkfs-intent").write_text(json.dumps({"device": dev, "fsType": "ext4"}))
    ex = Witness()
    Mounter(state, ex).format_and_mount(dev, node_tmp / "mnt", "ext4", key="v1")
    assert ex.programs()[:2] == ["blkid", "e2fsck"], ex.calls
    assert mounts.top_mount(node_tmp / "mnt").fstype == "ext4"
    assert not (state / "v1.mkfs-intent").exists()


def test_pf3_the_recording_executor_records_the_flush_as_sync() -> None:
    """PF3: command-construction tests still see the flush, as the command it stands for."""
    ex = RecordingExecutor()
    ex.fsync("/dev/loop-x")
    assert ex.calls == [["sync", "/dev/loop-x"]]


def test_pf2_a_new_pool_volume_is_formatted_without_probe_or_loop_scan(node_tmp: Path) -> None:
    """PF2: a new image is known blank: losetup and mkfs only; one record write before the image."""
    ex = Witness()
    pool = Pool(node_tmp / "pool", capacity=512 * MiB, executor=ex, mounter=Mounter(node_tmp / "pool" / "state", ex))
    vol = pool.create("pvc-new", 64 * MiB, "ext4")
    assert vol.state == "Ready"
    assert ex.programs() == ["losetup", "mkfs.ext4"], ex.calls
    dev = pool.device("pvc-new")
    assert dev is not None and blockdev.probe_filesystem(dev) == "ext4"
    assert json.loads((node_tmp / "pool" / "volumes" / "pvc-new.json").read_text())["state"] == "Ready"


def test_pf2_an_image_that_was_there_is_probed_and_its_filesystem_kept(node_tmp: Path) -> None:
    """PF2: a retry after a crash finds the image (and its loop device): probed, never formatted over."""
    pool = Pool(node_tmp / "pool", capacity=512 * MiB)
    image = pool.image_path("pvc-old")
    with open(image, "wb") as f:
        f.truncate(64 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    dev = loop.attach(image)
    uuid = blockdev.fs_uuid(dev)
    # What a crash between the record and the format leaves: a Creating record, an image, a device.
    (pool.volumes_dir / "pvc-old.json").write_text(json.dumps(
        {"name": "pvc-old", "size": 64 * MiB, "fs_type": "ext4", "mode": "Filesystem", "state": "Creating"}))
    ex = Witness()
    pool.executor = ex
    pool.mounter = Mounter(node_tmp / "pool" / "state", ex)
    assert pool.create("pvc-old", 64 * MiB, "ext4").state == "Ready"
    assert ex.programs() == ["blkid"], ex.calls  # the device found again, probed, kept
    assert pool.device("pvc-old") == dev and blockdev.fs_uuid(dev) == uuid


def test_pf6_a_loop_device_is_found_again_and_a_stale_hint_is_not_trusted(node_tmp: Path, make_disk) -> None:
    """PF6: the device attached here is found from the hint; once detached, the hint is dropped."""
    image = node_tmp / "pf6.img"
    with open(image, "wb") as f:
        f.truncate(16 * MiB)
    dev = loop.attach(image)
    assert loop.find_by_backing_file(image) == dev
    loop.detach(dev)
    # A device something still has open (udev's probe of the new device) is only marked for autoclear
    # by the detach; the kernel frees it when that opener closes, a moment later on a loaded machine.
    wait_for(lambda: loop.find_by_backing_file(image) is None, "the detached device to be freed", 10)
    # A device detached behind this process's back (another tool): the hint is checked, not believed.
    dev = loop.attach(image)
    subprocess.run(["losetup", "--detach", dev], check=True)
    wait_for(lambda: loop.find_by_backing_file(image) is None, "the device detached by losetup to be freed", 10)


def test_pf68_binds_tmpfs_and_unmounts_run_no_process_and_keep_what_mount8_would(node_tmp: Path) -> None:
    """PF68: the mounts whose options the agent chose (binds, tmpfs volumes) and unmounts are mount(2) and
    umount2(2) in the agent's process: no `mount` or `umount` runs. What the command gave stays: the
    tmpfs's flags and data, a read-only bind that keeps the flags its source had (the remount would
    otherwise drop nosuid and nodev), the command's own error on failure; an option mount(8) must
    interpret (nofail) and a type with an unmount helper (nfs) still go to the commands."""
    ex = Witness()
    secret = node_tmp / "secret"
    secret.mkdir()
    mounts.mount("tmpfs", secret, "tmpfs", ["nosuid", "nodev", "mode=0755", "size=1m"], executor=ex)
    entry = mounts.top_mount(secret)
    assert entry is not None and entry.fstype == "tmpfs", entry
    assert {"nosuid", "nodev"} <= set(entry.options), entry.options
    assert oct(secret.stat().st_mode & 0o777) == "0o755"
    assert os.statvfs(secret).f_blocks * os.statvfs(secret).f_frsize == MiB

    ro = node_tmp / "ro"
    ro.mkdir()
    mounts.bind_mount(secret, ro, read_only=True, executor=ex)
    entry = mounts.top_mount(ro)
    assert entry is not None and entry.read_only and {"nosuid", "nodev"} <= set(entry.options), entry.options
    with pytest.raises(OSError):
        (ro / "x").write_text("no")
    (secret / "x").write_text("yes")  # the source stays writable
    assert (ro / "x").read_text() == "yes"

    with pytest.raises(CommandError) as failed:
        mounts.bind_mount(node_tmp / "missing", node_tmp / "ro", executor=ex)
    assert failed.value.argv[:2] == ["mount", "--bind"] and "No such file or directory" in str(failed.value)

    mounts.unmount(ro, executor=ex)
    mounts.unmount(secret, executor=ex)
    assert not mounts.is_mount_point(ro) and not mounts.is_mount_point(secret)
    with pytest.raises(CommandError) as failed:
        mounts.unmount(secret, executor=ex)
    assert failed.value.argv == ["umount", str(secret)] and "Invalid argument" in str(failed.value)
    assert ex.calls == [], "a bind, a tmpfs or an unmount ran a process"

    recorded = RecordingExecutor()
    mounts.mount("tmpfs", "/x", "tmpfs", ["size=1m", "nofail"], executor=recorded)
    mounts.unmount("/n", executor=recorded, fstype="nfs4")
    mounts.bind_mount("/a", "/b", read_only=True, executor=recorded)
    assert recorded.calls == [["mount", "-t", "tmpfs", "-o", "size=1m,nofail", "tmpfs", "/x"],
                              ["umount", "/n"],
                              ["mount", "--bind", "/a", "/b"], ["mount", "-o", "remount,bind,ro", "/b"]]


def test_pf69_a_new_volume_is_mounted_without_reading_the_mount_table(node_tmp: Path, make_disk, monkeypatch) -> None:
    """PF69: whether the target is mounted already is a stat of it and its parent (a device's filesystem has
    a device number of its own); the whole table, thousands of lines on a busy node, is read only when
    something is mounted there, and a second call still finds the mount and changes nothing."""
    dev = make_disk()
    subprocess.run(["mkfs.ext4", "-q", dev], check=True)
    reads: list[int] = []
    real_read = mounts.read_mountinfo

    def counting_read(*args: Any) -> list[mounts.MountEntry]:
        reads.append(1)
        return real_read(*args)

    monkeypatch.setattr(mounts, "read_mountinfo", counting_read)
    mounter = Mounter(node_tmp / "state", Witness())
    assert mounter.format_and_mount(dev, node_tmp / "mnt", "ext4", key="v1") == "ext4"
    assert reads == [], "the first mount of a volume read the mount table"
    assert mounter.format_and_mount(dev, node_tmp / "mnt", "ext4", key="v1") == "ext4"
    assert reads, "a mounted target is checked against the table (which device is mounted there)"
    assert [e.source for e in mounts.mounts_at(node_tmp / "mnt")] == [dev]


def test_pf74_device_mounts_with_flag_options_are_system_calls_others_keep_mount8(node_tmp: Path, make_disk) -> None:
    """PF74: ext4/xfs/btrfs on a device with flag options only is mount(2) in this process, with those flags;
    a filesystem option (parsed by the filesystem, or by mount(8)) keeps the command."""
    dev = make_disk()
    subprocess.run(["mkfs.ext4", "-q", dev], check=True)
    ex = Witness()
    target = node_tmp / "flags"
    target.mkdir()
    mounts.mount(dev, target, "ext4", ["ro", "noatime", "nodev"], executor=ex)
    try:
        assert ex.calls == [], ex.calls
        entry = mounts.top_mount(target)
        assert entry is not None and entry.fstype == "ext4" and entry.source == dev
        assert entry.read_only and {"noatime", "nodev"} <= set(entry.options), entry.options
    finally:
        mounts.unmount(target, executor=ex)
    other = node_tmp / "data-option"
    other.mkdir()
    mounts.mount(dev, other, "ext4", ["noatime", "data=ordered"], executor=ex)
    try:
        assert ex.programs() == ["mount"], "an option mount(8) or the filesystem parses keeps the command"
        assert mounts.top_mount(other) is not None
    finally:
        mounts.unmount(other, executor=ex)
    recorded = RecordingExecutor()
    mounts.mount(dev, "/y", "ext4", ["ro"], executor=recorded)
    assert recorded.calls == [["mount", "-t", "ext4", "-o", "ro", dev, "/y"]], "recorded as the command it stands for"
