"""The node half: ``awsElasticBlockStore`` sources find their attached disk by volume id (CE9), here a real
loop device standing in for the EBS disk, found through a by-id link in a private dev_disk directory, through
its serial in a private sysfs-like directory, or through the legacy device name of the attachment metadata."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from storage.api.aws_ebs import parse_volume_id, partition_path
from storage.errors import PermanentError, TemporaryError
from storage.system import loop
from storage.system.devices import DeviceResolver
from volume_plugins.aws_ebs import AwsEbsPlugin
from volume_plugins.base import VolumeContext
from volume_plugins.registry import default_registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support import host_tmp_dir, need_root  # noqa: E402

VOLUME = "vol-0123456789abcdef0"


@pytest.fixture
def disk() -> Iterator[tuple[Path, str]]:
    """(a private directory, a real loop device in it); both gone afterwards, also on failure."""
    need_root("loop devices")
    with host_tmp_dir("stowage-ebs-node-") as base:
        image = base / "disk.img"
        with open(image, "wb") as f:
            f.truncate(16 * 2**20)
        yield base, loop.attach(image)


def ctx(source: dict[str, Any], attachment: dict[str, str] | None = None) -> VolumeContext:
    return VolumeContext(pod_uid="u", pod_namespace="default", pod_name="p", volume_name="v", source=source,
                         target=Path("/nonexistent"), pv_name="pvc-1", attachment=dict(attachment or {}))


def source(volume_id: str = f"aws://us-east-1a/{VOLUME}", **extra: Any) -> dict[str, Any]:
    return {"awsElasticBlockStore": {"volumeID": volume_id, "fsType": "xfs", **extra}}


def test_found_through_the_nvme_by_id_link(disk: tuple[Path, str]) -> None:
    base, device = disk
    by_id = base / "dev-disk" / "by-id"
    by_id.mkdir(parents=True)
    plugin = AwsEbsPlugin(resolver=DeviceResolver(dev_disk=base / "dev-disk", sys_block=base / "no-sys"))
    assert plugin.find_device(ctx(source())) is None  # not attached yet: the volume manager waits
    (by_id / f"nvme-Amazon_Elastic_Block_Store_{VOLUME.replace('-', '')}").symlink_to(device)
    found = plugin.find_device(ctx(source()))
    assert found is not None and (found.path, found.fs_type) == (device, "xfs")
    assert plugin.find_device(ctx(source(VOLUME))).path == device  # the bare id form


def test_found_through_the_serial_when_udev_made_no_link(disk: tuple[Path, str]) -> None:
    base, device = disk
    sys_block = base / "sys-block"
    (sys_block / Path(device).name / "device").mkdir(parents=True)
    (sys_block / Path(device).name / "device" / "serial").write_text(VOLUME.replace("-", "") + "\n")
    plugin = AwsEbsPlugin(resolver=DeviceResolver(dev_disk=base / "dev-disk", sys_block=sys_block))
    assert plugin.find_device(ctx(source())).path == device
    other = AwsEbsPlugin(resolver=DeviceResolver(dev_disk=base / "dev-disk", sys_block=sys_block))
    assert other.find_device(ctx(source("vol-0fffffffffffffff0"))) is None


def test_found_through_the_legacy_device_name_of_the_attachment(disk: tuple[Path, str]) -> None:
    base, device = disk
    plugin = AwsEbsPlugin(resolver=DeviceResolver(dev_disk=base / "dev-disk", sys_block=base / "no-sys"))
    assert plugin.find_device(ctx(source(), {"devicePath": device})).path == device
    assert plugin.find_device(ctx(source(), {"devicePath": "/dev/xvdzz"})) is None


def test_missing_partition_keeps_waiting(disk: tuple[Path, str]) -> None:
    base, device = disk
    plugin = AwsEbsPlugin(resolver=DeviceResolver(dev_disk=base / "dev-disk", sys_block=base / "no-sys"))
    with pytest.raises(TemporaryError, match="partition 3"):
        plugin.find_device(ctx(source(partition=3), {"devicePath": device}))


def test_names_and_parsing() -> None:
    assert parse_volume_id("aws://us-east-1a/vol-0123456789abcdef0") == ("vol-0123456789abcdef0", "us-east-1a")
    assert parse_volume_id("aws:///vol-01234567") == ("vol-01234567", None)
    assert parse_volume_id("vol-01234567") == ("vol-01234567", None)
    for bad in ("", "vol-xyz", "aws://us-east-1a/i-0123", "/dev/xvdba"):
        with pytest.raises(PermanentError, match="volumeID"):
            parse_volume_id(bad)
    assert partition_path("/dev/nvme1n1", 1) == "/dev/nvme1n1p1"
    assert partition_path("/dev/xvdba", 2) == "/dev/xvdba2"
    with pytest.raises(PermanentError, match="partition"):
        AwsEbsPlugin().find_device(ctx(source(partition="-1")))


def test_registered_for_the_in_tree_source_with_the_nodes_resolver(tmp_path: Path) -> None:
    resolver = DeviceResolver(dev_disk=tmp_path)
    plugin = default_registry(resolver=resolver).find(source())
    assert isinstance(plugin, AwsEbsPlugin) and plugin.resolver is resolver
    assert (plugin.attachable, plugin.attach_limit_key, plugin.default_attach_limit) == (True, "attachable-volumes-aws-ebs", 39)
