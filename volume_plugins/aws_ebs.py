"""``awsElasticBlockStore`` volumes on the node: find the EBS disk the control plane attached.

The device is found by the volume id, in this order (Kubernetes and the EBS CSI
driver do the same): the udev link ``by-id/nvme-Amazon_Elastic_Block_Store_vol<id>``
(Nitro instances expose EBS as NVMe with the volume id as serial), the serial
itself in sysfs (hosts without udev), then the legacy ``/dev/xvdX`` name the
attacher chose (attachment metadata ``devicePath``; Xen instances, where the
kernel may call it ``/dev/sdX``). The volume manager then formats and mounts it.
"""
from __future__ import annotations

import os
import stat
from typing import Any

from storage.api.aws_ebs import parse_volume_id, partition_path
from storage.errors import PermanentError, TemporaryError
from storage.system.devices import DeviceResolver
from volume_plugins.base import Device, DevicePlugin, VolumeContext


def _is_block(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


class AwsEbsPlugin(DevicePlugin):
    name = "kubernetes.io/aws-ebs"
    source_key = "awsElasticBlockStore"
    attachable = True
    attach_limit_key = "attachable-volumes-aws-ebs"
    default_attach_limit = 39  # Kubernetes' default for Nitro instance types

    def __init__(self, resolver: DeviceResolver | None = None) -> None:
        self.resolver = resolver or DeviceResolver()

    def _partition(self, spec: dict[str, Any]) -> int:
        value = spec.get("partition", 0) or 0
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = -1
        if number < 0:
            raise PermanentError(f'awsElasticBlockStore.partition: Invalid value: "{value}": must be a partition number')
        return number

    def _disk(self, ctx: VolumeContext, volume_id: str) -> str | None:
        found = self.resolver.by_id(f"nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}")
        if found:
            return found
        found = self.resolver.by_serial(volume_id)
        if found:
            return found
        legacy = ctx.attachment.get("devicePath") or ""
        if legacy.startswith("/dev/"):
            for candidate in (legacy, legacy.replace("/dev/xvd", "/dev/sd"), legacy.replace("/dev/sd", "/dev/xvd")):
                if _is_block(candidate):
                    return os.path.realpath(candidate)
        return None

    def find_device(self, ctx: VolumeContext) -> Device | None:
        spec = self.spec(ctx.source)
        volume_id, _zone = parse_volume_id(str(spec.get("volumeID") or ""))
        partition = self._partition(spec)
        disk = self._disk(ctx, volume_id)
        if disk is None:
            return None
        path = disk
        if partition:
            path = partition_path(disk, partition)
            if not _is_block(path):
                raise TemporaryError(f"EBS volume {volume_id} is at {disk} but has no partition {partition} ({path})",
                                     delay=5.0)
        return Device(path, self.fs_type(ctx), self.mount_options(ctx))
