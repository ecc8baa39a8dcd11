"""The node side of Azure disks (the ``azureDisk`` source).

The control plane attaches the disk (a lease on its VHD page blob, and the
LUN it chose, CZ6-CZ7); on an Azure VM the disk then shows up as
``/dev/disk/azure/scsi1/lun<N>`` (the link Azure's udev rules make). The
volume manager formats and mounts what ``find_device`` returns (CZ8).
"""
from __future__ import annotations

from typing import ClassVar

from storage.errors import PermanentError
from storage.system.devices import DeviceResolver
from volume_plugins.base import Device, DevicePlugin, VolumeContext


class AzureDiskPlugin(DevicePlugin):
    name = "kubernetes.io/azure-disk"
    source_key = "azureDisk"
    attachable: ClassVar[bool] = True
    attach_limit_key: ClassVar[str | None] = "attachable-volumes-azure-disk"
    default_attach_limit: ClassVar[int] = 16

    def __init__(self, resolver: DeviceResolver | None = None) -> None:
        self.resolver = resolver or DeviceResolver()

    def find_device(self, ctx: VolumeContext) -> Device | None:
        """The disk behind ``azure/scsi1/lun<N>``, N from the attachment; None until it is attached.
        An attachment for another disk (a stale VolumeAttachment) is not trusted."""
        spec = self.spec(ctx.source)
        lun = ctx.attachment.get("lun", "")
        if not lun:
            return None  # the volume id alone does not tell the LUN: wait for the attacher's answer
        if not lun.isdigit() or int(lun) > 63:
            raise PermanentError(f"attachment metadata lun={lun!r} is not a LUN (0..63)")
        uri = ctx.attachment.get("diskURI")
        if uri and spec.get("diskURI") and uri != spec["diskURI"]:
            return None
        path = self.resolver.link(f"azure/scsi1/lun{int(lun)}")
        return Device(path, self.fs_type(ctx), self.mount_options(ctx)) if path else None

    def fs_type(self, ctx: VolumeContext) -> str | None:
        return self.spec(ctx.source).get("fsType") or "ext4"
