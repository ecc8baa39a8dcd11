"""``gcePersistentDisk`` volumes on the node: a Compute Engine disk the control plane attached here.

The attach/detach controller attaches the disk to this node's VM (provisioners/gce_pd.py); this plugin
only finds the device and hands it to the volume manager, which formats it safely and mounts it.
Compute Engine's udev rules name an attached disk ``/dev/disk/by-id/google-<device name>`` (and
``scsi-0Google_PersistentDisk_<device name>``), partitions with a ``-part<N>`` suffix; the device name
is the disk name unless the attachment metadata says otherwise (CG8).
"""
from __future__ import annotations

import os
import stat

from storage.errors import PermanentError
from storage.system.devices import DeviceResolver
from volume_plugins.base import Device, DevicePlugin, VolumeContext


class GcePdPlugin(DevicePlugin):
    name = "kubernetes.io/gce-pd"
    source_key = "gcePersistentDisk"
    attachable = True
    attach_limit_key = "attachable-volumes-gce-pd"
    default_attach_limit = 16

    def __init__(self, resolver: DeviceResolver | None = None) -> None:
        self.resolver = resolver or DeviceResolver()

    def _pd_name(self, ctx: VolumeContext) -> str:
        name = str(self.spec(ctx.source).get("pdName") or "")
        if not name:
            raise PermanentError("gcePersistentDisk.pdName: Required value")
        return name

    def _partition(self, ctx: VolumeContext) -> int:
        value = self.spec(ctx.source).get("partition") or 0
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise PermanentError(f'gcePersistentDisk.partition: Invalid value: "{value}": must be a number') from None
        if number < 0:
            raise PermanentError(f"gcePersistentDisk.partition: Invalid value: {number}: must be 0 (whole disk) or more")
        return number

    def device_names(self, ctx: VolumeContext) -> list[str]:
        """The by-id link names to look for, most specific first."""
        device = ctx.attachment.get("deviceName") or self._pd_name(ctx)
        partition = self._partition(ctx)
        suffix = f"-part{partition}" if partition else ""
        return [f"google-{device}{suffix}", f"scsi-0Google_PersistentDisk_{device}{suffix}"]

    def find_device(self, ctx: VolumeContext) -> Device | None:
        path = self.resolver.by_id(*self.device_names(ctx))
        partition = self._partition(ctx)
        if path is None and partition:
            # No udev partition link (minimal hosts): the whole disk's link, then its partition node.
            whole = ctx.attachment.get("deviceName") or self._pd_name(ctx)
            disk = self.resolver.by_id(f"google-{whole}", f"scsi-0Google_PersistentDisk_{whole}")
            path = _partition_node(disk, partition) if disk else None
        if path is None:
            return None
        return Device(path, self.fs_type(ctx), self.mount_options(ctx))


def _partition_node(disk: str, number: int) -> str | None:
    for candidate in (f"{disk}p{number}", f"{disk}{number}"):
        try:
            if stat.S_ISBLK(os.stat(candidate).st_mode):
                return candidate
        except OSError:
            continue
    return None
