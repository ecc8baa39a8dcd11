"""local persistent volumes: ``spec.local.path`` on this node.

The path may be
* a directory (usually a mount point prepared by the administrator): bind-mounted into the pod;
* a block device: formatted safely and mounted once per node, or handed raw to the pod (Block mode);
* a regular file, the image of a volume carved from the node's local storage
  pool: it is reached through a loop device (attached by the pool, re-attached
  here if the node restarted) and then treated as a block device.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from storage.errors import PermanentError, TemporaryError
from storage.system import loop, mounts
from volume_plugins.base import Device, DevicePlugin, VolumeContext


class LocalPlugin(DevicePlugin):
    name = "kubernetes.io/local-volume"
    source_key = "local"

    def _path(self, ctx: VolumeContext) -> str:
        path = str(self.spec(ctx.source).get("path") or "")
        if not path or not os.path.isabs(path):
            raise PermanentError(f'local.path: Invalid value: "{path}": must be an absolute path')
        return path

    def _mode(self, path: str) -> int:
        try:
            return os.stat(path).st_mode
        except FileNotFoundError:
            raise TemporaryError(f"local volume path {path} does not exist on this node", delay=5.0) from None

    def device_mode(self, ctx: VolumeContext) -> bool:
        mode = self._mode(self._path(ctx))
        if stat.S_ISDIR(mode):
            if ctx.mode == "Block":
                raise PermanentError(f"local volume path {self._path(ctx)} is a directory: volumeMode Block needs a block device")
            return False
        if stat.S_ISBLK(mode) or stat.S_ISREG(mode):
            return True
        raise PermanentError(f"local volume path {self._path(ctx)} is neither a directory, a block device nor a pool volume image")

    def find_device(self, ctx: VolumeContext) -> Device | None:
        path = self._path(ctx)
        mode = self._mode(path)
        if stat.S_ISBLK(mode):
            return Device(path, self.fs_type(ctx), self.mount_options(ctx))
        found = loop.find_by_backing_file(path)
        return Device(found, self.fs_type(ctx), self.mount_options(ctx)) if found else None

    def connect(self, ctx: VolumeContext) -> Device:
        found = self.find_device(ctx)
        if found is not None:
            return found
        device = loop.attach(self._path(ctx), executor=ctx.executor)
        return Device(device, self.fs_type(ctx), self.mount_options(ctx), attached_by_plugin=True)

    def setup(self, ctx: VolumeContext) -> Path:
        """The directory case: a bind mount of the administrator's directory."""
        path = self._path(ctx)
        target = ctx.target
        target.mkdir(parents=True, exist_ok=True)
        if not mounts.is_mount_point(target):
            mounts.bind_mount(path, target, ctx.read_only, executor=ctx.executor)
        return target
