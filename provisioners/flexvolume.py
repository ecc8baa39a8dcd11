"""The control-plane half of ``flexVolume`` (FV5, FV6, FV8): attach, detach and expand through the driver
executable, as Kubernetes' controller-manager called FlexVolume drivers.

The call runs where the attach/detach controller runs, with the drivers of the plugin directory there
($STOWAGE_VOLUME_PLUGIN_DIR, set by ``--volume-plugin-dir``): under ``stowage up`` that is the node's own
directory; with several hosts the driver must be installed on the control-plane hosts too (as with
Kubernetes' ``--flex-volume-plugin-dir``). FlexVolume volumes are written by hand (Kubernetes has no
FlexVolume provisioner): ``provision`` refuses, ``delete`` leaves the volume alone.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import structlog

from provisioners.base import Attacher, ProvisionRequest, ProvisionResult, Provisioner
from storage.errors import PermanentError, TemporaryError
from storage.system import flexvolume as flex

log = structlog.get_logger(__name__)


class FlexVolumeAttacher(Provisioner, Attacher):
    name = "kubernetes.io/flexvolume"

    def __init__(self, plugin_dir: str | os.PathLike[str] | None = None) -> None:
        self._fixed_dir = Path(plugin_dir) if plugin_dir else None
        self._probers: dict[Path, flex.FlexProber] = {}

    def _prober(self) -> flex.FlexProber:
        directory = self._fixed_dir or flex.plugin_dir_from_env()
        prober = self._probers.get(directory)
        if prober is None:
            prober = self._probers[directory] = flex.FlexProber(directory)
        return prober

    def _driver(self, pv: dict[str, Any]) -> tuple[flex.FlexDriver, dict[str, Any]]:
        source = (pv.get("spec") or {}).get("flexVolume")
        if not isinstance(source, dict):
            raise PermanentError("spec.flexVolume: Required value")
        name = flex.check_driver_name(str(source.get("driver") or ""), "spec.flexVolume.driver")
        prober = self._prober()
        driver = prober.driver(name)
        if driver is None:
            failed = prober.init_error(name)
            raise TemporaryError(f'flexVolume driver "{name}" ' + (f"failed init: {failed}" if failed else
                                 f"is not installed in {prober.plugin_dir} on the control plane"), delay=10.0)
        return driver, source

    @staticmethod
    def _pv_name(pv: dict[str, Any]) -> str:
        return str((pv.get("metadata") or {}).get("name") or "")

    def _options(self, pv: dict[str, Any], source: dict[str, Any]) -> str:
        return flex.options_json(source, volume_name=self._pv_name(pv))

    @staticmethod
    def _call(driver: flex.FlexDriver, command: str, *args: str) -> dict[str, Any]:
        try:
            return driver.call(command, *args)
        except flex.DriverFailed as exc:
            raise TemporaryError(str(exc), delay=5.0) from exc

    def _volume_name(self, driver: flex.FlexDriver, pv: dict[str, Any], source: dict[str, Any]) -> str:
        """``getvolumename``, else the PV's name (Kubernetes' GetVolumeName)."""
        try:
            answer = self._call(driver, "getvolumename", self._options(pv, source))
            return str(answer.get("volumeName") or self._pv_name(pv))
        except flex.DriverNotSupported:
            return self._pv_name(pv)

    def attach(self, pv: dict[str, Any], node: dict[str, Any]) -> dict[str, str]:
        driver, source = self._driver(pv)
        if not driver.capabilities.attach:
            return {}  # attach: false: the node mounts it alone
        node_name = str((node.get("metadata") or {}).get("name") or "")
        try:
            answer = self._call(driver, "attach", self._options(pv, source), node_name)
        except flex.DriverNotSupported:
            return {}  # Kubernetes' default attach: no device path; waitforattach on the node finds it
        device = str(answer.get("device") or "")
        log.info("flexvolume.attached", driver=driver.name, volume=self._pv_name(pv), node=node_name, device=device)
        return {"devicePath": device} if device else {}

    def is_attached(self, pv: dict[str, Any], node_name: str) -> bool | None:
        """``isattached``; None when the driver does not say."""
        driver, source = self._driver(pv)
        try:
            answer = self._call(driver, "isattached", self._options(pv, source), node_name)
        except flex.DriverNotSupported:
            return None
        return bool(answer.get("attached"))

    def detach(self, pv: dict[str, Any], node_name: str) -> None:
        driver, source = self._driver(pv)
        if not driver.capabilities.attach:
            return
        try:
            self._call(driver, "detach", self._volume_name(driver, pv, source), node_name)
        except flex.DriverNotSupported:
            return
        log.info("flexvolume.detached", driver=driver.name, volume=self._pv_name(pv), node=node_name)

    def expand(self, pv: dict[str, Any], new_size: int) -> int:
        """``expandvolume <options> <device mount path> <new bytes> <old bytes>``; the device mount path is
        the node's and unknown here, so it is empty. Not supported: the new size is taken as it is
        (Kubernetes does the same)."""
        from storage.api.quantity import quantity_value

        driver, source = self._driver(pv)
        old = quantity_value(str(((pv.get("spec") or {}).get("capacity") or {}).get("storage") or "0"))
        try:
            self._call(driver, "expandvolume", self._options(pv, source), "", str(new_size), str(old))
        except flex.DriverNotSupported:
            pass
        return new_size

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        raise PermanentError("kubernetes.io/flexvolume does not provision volumes: write a PersistentVolume "
                             "with a flexVolume source (Kubernetes has no FlexVolume provisioner)")

    def delete(self, pv: dict[str, Any]) -> None:
        log.info("flexvolume.delete_skipped", volume=self._pv_name(pv))
