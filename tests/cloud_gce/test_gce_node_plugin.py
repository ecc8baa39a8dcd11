"""GcePdPlugin on a node (CG8): the attached disk is found as by-id/google-<device name> through the
DeviceResolver, here a real loop device behind a link in a temporary dev_disk directory, then really
formatted and mounted by the shared Mounter (SEMANTICS A4)."""
from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from storage.errors import PermanentError
from storage.system import loop, mounts
from storage.system.devices import DeviceResolver
from volume_plugins.base import VolumeContext
from volume_plugins.gce_pd import GcePdPlugin
from volume_plugins.mounter import Mounter
from volume_plugins.registry import default_registry

MIB = 1 << 20


def _ctx(tmp: Path, source: dict, attachment: dict[str, str] | None = None) -> VolumeContext:
    return VolumeContext(pod_uid="u1", pod_namespace="default", pod_name="p", volume_name="data",
                         source=source, target=tmp / "target", pv_name="pvc-1", attachment=dict(attachment or {}))


@pytest.fixture
def loop_disk(tmp_path: Path) -> Iterator[str]:
    """A 64 MiB disk image with one MBR partition from 1 MiB, on a loop device with partition scanning."""
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(64 * MIB)
        entry = struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x83, b"\0\0\0", 2048, (63 * MIB) // 512)
        f.seek(446)
        f.write(entry)
        f.seek(510)
        f.write(b"\x55\xaa")
    device = subprocess.run(["losetup", "--find", "--show", "--partscan", str(image)], check=True,
                            capture_output=True, text=True).stdout.strip()
    try:
        # This kernel may not scan partition tables itself: add the partition explicitly (BLKPG).
        subprocess.run(["partx", "--add", device], check=False, capture_output=True)
        yield device
    finally:
        for entry in mounts.mounts_under(tmp_path):
            mounts.unmount(entry.mount_point)
        subprocess.run(["partx", "--delete", device], check=False, capture_output=True)
        loop.detach(device)


def test_registered_with_the_attach_limit_key() -> None:
    plugin = default_registry().find({"gcePersistentDisk": {"pdName": "d"}})
    assert isinstance(plugin, GcePdPlugin) and plugin.attachable
    assert (plugin.attach_limit_key, plugin.default_attach_limit) == ("attachable-volumes-gce-pd", 16)


def test_finds_the_attached_loop_device_and_mounts_it(tmp_path: Path, loop_disk: str) -> None:
    dev_disk = tmp_path / "dev-disk"
    (dev_disk / "by-id").mkdir(parents=True)
    plugin = GcePdPlugin(resolver=DeviceResolver(dev_disk=dev_disk))
    ctx = _ctx(tmp_path, {"gcePersistentDisk": {"pdName": "pvc-1", "fsType": "ext4"}})
    assert plugin.find_device(ctx) is None  # not attached yet: the volume manager waits
    (dev_disk / "by-id" / "google-other").symlink_to(loop_disk)
    assert plugin.find_device(ctx) is None  # another disk's link is not ours
    (dev_disk / "by-id" / "google-pvc-1").symlink_to(loop_disk)
    found = plugin.find_device(ctx)
    assert found is not None and found.path == os.path.realpath(loop_disk) and found.fs_type == "ext4"
    # Attached under another device name: the attachment metadata says which.
    renamed = _ctx(tmp_path, {"gcePersistentDisk": {"pdName": "pvc-1"}}, {"deviceName": "other"})
    assert plugin.find_device(renamed).path == os.path.realpath(loop_disk)
    # Real format and mount of the whole disk... no: it holds a partition table, so it is never formatted.
    mounter = Mounter(tmp_path / "state")
    with pytest.raises(PermanentError, match="partition table"):
        mounter.format_and_mount(found.path, tmp_path / "whole", "ext4", key="whole")


def test_partition_is_found_by_its_link_or_under_the_disk(tmp_path: Path, loop_disk: str) -> None:
    part = f"{loop_disk}p1"
    assert Path(part).is_block_device(), "the partition node exists (devtmpfs)"
    dev_disk = tmp_path / "dev-disk"
    (dev_disk / "by-id").mkdir(parents=True)
    (dev_disk / "by-id" / "google-pvc-1").symlink_to(loop_disk)
    plugin = GcePdPlugin(resolver=DeviceResolver(dev_disk=dev_disk))
    ctx = _ctx(tmp_path, {"gcePersistentDisk": {"pdName": "pvc-1", "partition": 1}})
    assert plugin.find_device(ctx).path == part  # no -part1 link (no udev): the disk's partition node
    (dev_disk / "by-id" / "scsi-0Google_PersistentDisk_pvc-1-part1").symlink_to(part)
    assert plugin.find_device(ctx).path == part
    # The partition is a real filesystem after the safe format.
    mounter = Mounter(tmp_path / "state")
    target = tmp_path / "mnt"
    assert mounter.format_and_mount(part, target, None, key="pvc-1") == "ext4"
    (target / "hello").write_text("gce")
    mounts.unmount(target)
    assert mounter.format_and_mount(part, target, None, key="pvc-1") == "ext4"
    assert (target / "hello").read_text() == "gce"


def test_bad_sources_are_refused(tmp_path: Path) -> None:
    plugin = GcePdPlugin(resolver=DeviceResolver(dev_disk=tmp_path))
    with pytest.raises(PermanentError, match="pdName"):
        plugin.find_device(_ctx(tmp_path, {"gcePersistentDisk": {}}))
    with pytest.raises(PermanentError, match="partition"):
        plugin.find_device(_ctx(tmp_path, {"gcePersistentDisk": {"pdName": "d", "partition": "x"}}))
