"""SEMANTICS A4 (safe format) on real loop devices."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from storage.system import blockdev, mounts
from volume_plugins.mounter import FilesystemMismatch, MountError, Mounter


def write_dos_partition_table(dev: str) -> None:
    """One Linux partition from sector 2048 to the end, written byte by byte (no sfdisk needed)."""
    sectors = blockdev.device_size(dev) // 512
    entry = bytes([0x00, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") + (sectors - 2048).to_bytes(4, "little")
    with open(dev, "r+b") as f:
        f.seek(440)
        f.write(b"STOW" + b"\0\0")  # disk signature
        f.seek(446)
        f.write(entry + b"\0" * 48 + b"\x55\xaa")


def test_a4_blank_device_is_formatted_with_default_ext4(node_tmp: Path, make_disk) -> None:
    dev = make_disk()
    assert blockdev.probe_filesystem(dev) is None
    m = Mounter(node_tmp / "state")
    fs = m.format_and_mount(dev, node_tmp / "mnt", None, key="v1")
    assert fs == "ext4"
    assert blockdev.probe_filesystem(dev) == "ext4"
    assert mounts.top_mount(node_tmp / "mnt").fstype == "ext4"
    assert not list((node_tmp / "state").glob("*")), "intent marker must be gone after a successful mount"


def test_a4_requested_fs_type_is_used_for_blank_device(node_tmp: Path, make_disk) -> None:
    dev = make_disk(320 * 2**20)  # mkfs.xfs needs 300 MiB
    fs = Mounter(node_tmp / "state").format_and_mount(dev, node_tmp / "mnt", "xfs", key="v1")
    assert fs == "xfs" and mounts.top_mount(node_tmp / "mnt").fstype == "xfs"


def _checksum(dev: str) -> str:
    with open(dev, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.parametrize("requested", ["ext4", None])
def test_a4_filesystem_of_another_type_is_neither_formatted_nor_mounted(node_tmp: Path, make_disk,
                                                                        requested: str | None) -> None:
    """A4 as mount-utils does it: the requested type (ext4 when none is given) is compared with the
    device's; btrfs asked to mount as ext4 fails with the kubelet's message; the device is untouched."""
    dev = make_disk(160 * 2**20)
    subprocess.run(["mkfs.btrfs", "-q", dev], check=True)
    m = Mounter(node_tmp / "state")
    m.format_and_mount(dev, node_tmp / "a", "btrfs", key="v1")
    (node_tmp / "a" / "data.txt").write_text("keep me")
    mounts.unmount(node_tmp / "a")
    before = _checksum(dev)

    with pytest.raises(FilesystemMismatch) as info:
        m.format_and_mount(dev, node_tmp / "b", requested, key="v1")

    assert str(info.value).startswith('failed to mount the volume as "ext4", it already contains btrfs. Mount error: '
                                      "mount failed: exit status 32")
    assert "Mounting arguments: -t ext4 " in str(info.value)
    assert not mounts.is_mount_point(node_tmp / "b")
    assert _checksum(dev) == before, "the device must not be written"
    assert not list((node_tmp / "state").glob("*.mkfs-intent"))
    m.format_and_mount(dev, node_tmp / "c", "btrfs", key="v1")
    assert (node_tmp / "c" / "data.txt").read_text() == "keep me"


def test_a4_ext3_requested_as_ext4_mounts_as_the_kubelet_does(node_tmp: Path, make_disk) -> None:
    """A4: only a mount that fails is refused; the ext4 driver mounts ext3, so Kubernetes mounts it too."""
    dev = make_disk()
    subprocess.run(["mkfs.ext3", "-q", dev], check=True)
    Mounter(node_tmp / "state").format_and_mount(dev, node_tmp / "mnt", "ext4", key="v1")
    assert mounts.top_mount(node_tmp / "mnt").fstype == "ext4"
    assert blockdev.probe_filesystem(dev) == "ext3"


def test_a4_partition_table_is_never_formatted(node_tmp: Path, make_disk) -> None:
    dev = make_disk()
    write_dos_partition_table(dev)
    before = blockdev.probe(dev)
    assert before.get("PTTYPE") == "dos"
    with pytest.raises(MountError, match="partition table"):
        Mounter(node_tmp / "state").format_and_mount(dev, node_tmp / "mnt", "ext4", key="v1")
    assert blockdev.probe(dev).get("PTTYPE") == "dos"
    assert "TYPE" not in blockdev.probe(dev)
    assert not mounts.is_mount_point(node_tmp / "mnt")


def test_a4_blank_read_only_fails_with_kubernetes_message(node_tmp: Path, make_disk) -> None:
    dev = make_disk()
    with pytest.raises(MountError, match="cannot mount unformatted disk"):
        Mounter(node_tmp / "state").format_and_mount(dev, node_tmp / "mnt", "ext4", key="v1", read_only=True)
    assert blockdev.probe_filesystem(dev) is None


def test_a4_formatted_read_only_mounts_read_only(node_tmp: Path, make_disk) -> None:
    dev = make_disk()
    subprocess.run(["mkfs.ext4", "-q", dev], check=True)
    Mounter(node_tmp / "state").format_and_mount(dev, node_tmp / "mnt", "ext4", key="v1", read_only=True)
    assert mounts.top_mount(node_tmp / "mnt").read_only
    with pytest.raises(OSError):
        (node_tmp / "mnt" / "x").write_text("no")


def test_a5_interrupted_format_with_garbage_fails_loudly_and_is_not_reformatted(node_tmp: Path, make_disk) -> None:
    """An intent marker plus a device holding something else than the requested type: refuse."""
    dev = make_disk(160 * 2**20)
    m = Mounter(node_tmp / "state")
    (node_tmp / "state").mkdir()
    (node_tmp / "state" / "v1.mkfs-intent").write_text('{"fsType": "ext4"}')
    subprocess.run(["mkfs.btrfs", "-q", dev], check=True)
    uuid = blockdev.fs_uuid(dev)
    with pytest.raises(MountError, match="interrupted"):
        m.format_and_mount(dev, node_tmp / "mnt", "ext4", key="v1")
    assert blockdev.fs_uuid(dev) == uuid
    assert not mounts.is_mount_point(node_tmp / "mnt")


def test_a5_interrupted_format_of_right_type_is_checked_and_accepted(node_tmp: Path, make_disk) -> None:
    dev = make_disk()
    (node_tmp / "state").mkdir()
    (node_tmp / "state" / "v1.mkfs-intent").write_text('{"fsType": "ext4"}')
    subprocess.run(["mkfs.ext4", "-q", dev], check=True)
    uuid = blockdev.fs_uuid(dev)
    Mounter(node_tmp / "state").format_and_mount(dev, node_tmp / "mnt", "ext4", key="v1")
    assert blockdev.fs_uuid(dev) == uuid
    assert not (node_tmp / "state" / "v1.mkfs-intent").exists()


def test_a5_interrupted_format_with_corrupt_filesystem_fails(node_tmp: Path, make_disk) -> None:
    dev = make_disk()
    subprocess.run(["mkfs.ext4", "-q", dev], check=True)
    # Wipe the inode table area of group 0 but keep the superblock: blkid still says ext4.
    with open(dev, "r+b") as f:
        f.seek(4096 * 2)
        f.write(b"\xff" * 4096 * 64)
    (node_tmp / "state").mkdir()
    (node_tmp / "state" / "v1.mkfs-intent").write_text('{"fsType": "ext4"}')
    assert blockdev.probe_filesystem(dev) == "ext4"
    with pytest.raises(MountError, match="fails its check"):
        Mounter(node_tmp / "state").format_and_mount(dev, node_tmp / "mnt", "ext4", key="v1")
