"""``flexVolume`` on the node: one plugin per driver found in the volume plugin directory (FV1-FV9).

As Kubernetes' flexvolume plugin: a driver whose ``init`` says ``attach: true`` is attached by the
control plane (provisioners/flexvolume.py) and then, on the node, ``waitforattach`` gives the device,
``mountdevice`` mounts it once per node at ``plugins/kubernetes.io/flexvolume/<vendor>/<driver>/mounts/<pv>``
and ``mount`` puts it at the pod's path (``pods/<uid>/volumes/<vendor>~<driver>/<volume>``). A step the
driver answers ``Not supported`` falls back to Kubernetes' default: the attachment's device path,
format-and-mount of the device, a bind mount, a plain unmount. A driver with ``attach: false`` gets only
``mount`` and ``unmount``.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from storage.api.volume_secrets import SECRET_DATA_KEY
from storage.errors import PermanentError, StowageError, TemporaryError
from storage.system import flexvolume as flex
from storage.system import mounts
from storage.system.executor import Executor
from volume_plugins.base import Device, DevicePlugin, VolumeContext, VolumePlugin

SOURCE_KEY = "flexVolume"
PLUGIN_PREFIX = "kubernetes.io/flexvolume"


def _source(source: dict[str, Any]) -> dict[str, Any]:
    spec = source.get(SOURCE_KEY)
    return spec if isinstance(spec, dict) else {}


class FlexVolumePlugin(DevicePlugin):
    """The plugin of one installed driver."""

    source_key = SOURCE_KEY

    def __init__(self, driver: flex.FlexDriver) -> None:
        self.driver = driver
        self.name = f"{PLUGIN_PREFIX}/{driver.name}"  # type: ignore[misc]  # per instance: one per driver
        self.attachable = driver.capabilities.attach  # type: ignore[misc]

    @property
    def dir_name(self) -> str:
        return flex.driver_dir_name(self.driver.name)

    def can_support(self, source: dict[str, Any]) -> bool:
        return _source(source).get("driver") == self.driver.name

    def device_mode(self, ctx: VolumeContext) -> bool:
        return self.driver.capabilities.attach

    def _volume_name(self, ctx: VolumeContext) -> str:
        return ctx.pv_name or ctx.volume_name

    def _options(self, ctx: VolumeContext, *, with_pod: bool = False) -> tuple[str, tuple[str, ...]]:
        spec = self.spec(ctx.source)
        extra: dict[str, str] = {}
        hidden: tuple[str, ...] = ()
        if with_pod:
            extra = {flex.OPT_POD_NAME: ctx.pod_name, flex.OPT_POD_NAMESPACE: ctx.pod_namespace,
                     flex.OPT_POD_UID: ctx.pod_uid, flex.OPT_SERVICE_ACCOUNT: str(ctx.data.get("serviceAccountName") or "")}
            if ctx.fs_group is not None and self.driver.capabilities.fs_group:
                extra[flex.OPT_FS_GROUP] = str(ctx.fs_group)
            ref = spec.get("secretRef") or {}
            if isinstance(ref, dict) and ref.get("name"):
                contents = ctx.data.get(SECRET_DATA_KEY)
                if contents is None:
                    raise TemporaryError(f'flexVolume.secretRef: secret "{ref["name"]}" not found', delay=5.0)
                secret_extra, hidden = flex.secret_options(contents)
                extra.update(secret_extra)
        return flex.options_json(spec, volume_name=self._volume_name(ctx), read_only=ctx.read_only, extra=extra), hidden

    def _call(self, command: str, *args: str, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
        try:
            return self.driver.call(command, *args, secrets=secrets)
        except flex.DriverFailed as exc:
            raise TemporaryError(str(exc), delay=5.0) from exc

    # ---- attachable drivers: device steps --------------------------------

    def find_device(self, ctx: VolumeContext) -> Device | None:
        if not ctx.attachment and not ctx.pv_name:
            raise PermanentError(f'flexVolume driver "{self.driver.name}" attaches volumes: an inline volume of it '
                                 "cannot be attached by Stowage; use a PersistentVolume")
        device_path = ctx.attachment.get("devicePath", "")
        options, _ = self._options(ctx)
        try:
            answer = self._call("waitforattach", device_path, options)
            device_path = str(answer.get("device") or device_path)
        except flex.DriverNotSupported:
            pass  # Kubernetes' default: the device path the attach returned
        if not device_path:
            return None
        return Device(device_path, self.fs_type(ctx), self.mount_options(ctx))

    def mount_device(self, ctx: VolumeContext, device: Device, global_path: Path) -> bool:
        if mounts.is_mount_point(global_path):
            return True  # mounted once per node
        global_path.mkdir(parents=True, exist_ok=True)
        options, _ = self._options(ctx)
        try:
            self._call("mountdevice", str(global_path), device.path, options)
        except flex.DriverNotSupported:
            return False  # the volume manager formats and mounts the device (Kubernetes' default)
        return True

    def mount_volume(self, ctx: VolumeContext, global_path: Path) -> bool:
        ctx.target.mkdir(parents=True, exist_ok=True)
        options, hidden = self._options(ctx, with_pod=True)
        try:
            self._call("mount", str(ctx.target), options, secrets=hidden)
        except flex.DriverNotSupported:
            return False  # bind of the device mount (Kubernetes' default)
        return True

    def unmount_device(self, global_path: Path, device: str, executor: Executor) -> bool:
        try:
            self._call("unmountdevice", str(global_path))
        except flex.DriverNotSupported:
            return False
        return True

    # ---- non-attachable drivers --------------------------------------------

    def setup(self, ctx: VolumeContext) -> Path:
        if mounts.is_mount_point(ctx.target):
            return ctx.target
        ctx.target.mkdir(parents=True, exist_ok=True)
        options, hidden = self._options(ctx, with_pod=True)
        try:
            self._call("mount", str(ctx.target), options, secrets=hidden)
        except flex.DriverNotSupported:
            raise PermanentError(f'flexVolume driver "{self.driver.name}" supports neither attach nor mount') from None
        except StowageError:
            try:
                ctx.target.rmdir()
            except OSError:
                pass
            raise
        return ctx.target

    def unmount_volume(self, path: Path, executor: Executor) -> bool:
        if not path.exists():
            return True
        try:
            self._call("unmount", str(path))
        except flex.DriverNotSupported:
            return False  # a plain unmount by the volume manager
        return True


class MissingFlexDriverPlugin(VolumePlugin):
    """Matches a ``flexVolume`` whose driver is not installed (or whose ``init`` failed): the pod's
    event says so, and the pod is tried again when the directory changes (FV2)."""

    name = PLUGIN_PREFIX
    source_key = SOURCE_KEY

    def __init__(self, family: "FlexVolumePlugins") -> None:
        self.family = family

    def can_support(self, source: dict[str, Any]) -> bool:
        spec = _source(source)
        return SOURCE_KEY in source and self.family.plugin_for(str(spec.get("driver") or "")) is None

    def setup(self, ctx: VolumeContext) -> Path:
        driver = str(self.spec(ctx.source).get("driver") or "")
        flex.check_driver_name(driver)
        failed = self.family.prober.init_error(driver)
        if failed:
            raise TemporaryError(f'flexVolume driver "{driver}" failed init: {failed}', delay=10.0)
        raise TemporaryError(f'no FlexVolume driver "{driver}" in {self.family.prober.plugin_dir} '
                             f"(expected {self.family.prober.plugin_dir / flex.driver_dir_name(driver)}/"
                             f"{driver.split('/')[-1]})", delay=10.0)


class FlexVolumePlugins:
    """The dynamic part of the registry: a plugin per driver in the plugin directory, as the directory is now."""

    def __init__(self, plugin_dir: str | os.PathLike[str], executor: Executor | None = None) -> None:
        self.prober = flex.FlexProber(plugin_dir, executor)
        self._lock = threading.Lock()
        self._plugins: dict[str, FlexVolumePlugin] = {}

    def plugins(self) -> list[VolumePlugin]:
        drivers = self.prober.drivers()
        with self._lock:
            current = {}
            for name, driver in drivers.items():
                plugin = self._plugins.get(name)
                current[name] = plugin if plugin is not None and plugin.driver is driver else FlexVolumePlugin(driver)
            self._plugins = current
            return list(current.values())

    def plugin_for(self, driver: str) -> FlexVolumePlugin | None:
        return next((p for p in self.plugins() if isinstance(p, FlexVolumePlugin) and p.driver.name == driver), None)
