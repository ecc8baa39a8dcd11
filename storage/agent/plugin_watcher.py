"""The kubelet side of plugin registration (pluginregistration v1), for CSI drivers (CS15).

A driver's registrar (kubernetes-csi's node-driver-registrar, or any program speaking the same API)
puts a Unix socket in ``<data dir>/plugins_registry/``; the agent calls its ``GetInfo`` (type
``CSIPlugin``, the driver name, the CSI endpoint, supported versions), registers the driver's Node
service, and answers ``NotifyRegistrationStatus``. A socket that disappears unregisters the driver.
The directory is polled, quickly after a change and backing off while nothing changes.
"""
from __future__ import annotations

import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import structlog

if TYPE_CHECKING:
    from storage.system.csi import pluginregistration_pb2 as rpb

# grpc and the registration stubs load when the first socket appears (PF41): watching an empty
# directory must not cost every agent grpc's ~12 MiB.

log = structlog.get_logger(__name__)

PLUGIN_TYPE = "CSIPlugin"
MIN_INTERVAL, MAX_INTERVAL = 0.1, 2.0


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.lstat().st_mode)
    except OSError:
        return False


class PluginWatcher:
    def __init__(self, directory: Path, stop: threading.Event, on_change: Callable[[], None],
                 register: Callable[[str, str], None], unregister: Callable[[str], None],
                 timeout: float = 5.0) -> None:
        self.directory = directory
        self.stop = stop
        self.on_change = on_change
        self._register = register
        self._unregister = unregister
        self.timeout = timeout
        self.known: dict[Path, str] = {}  # registration socket -> driver name

    def run(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        interval = MIN_INTERVAL
        while not self.stop.is_set():
            changed = self.scan()
            interval = MIN_INTERVAL if changed else min(interval * 2, MAX_INTERVAL)
            self.stop.wait(interval)

    def scan(self) -> bool:
        """One pass; True when a driver was registered or unregistered."""
        sockets = {p for p in self.directory.iterdir() if _is_socket(p)} if self.directory.is_dir() else set()
        changed = False
        for gone in sorted(set(self.known) - sockets):
            name = self.known.pop(gone)
            if name not in self.known.values():
                self._unregister(name)
                log.info("csi_plugin_unregistered", driver=name, socket=str(gone))
                changed = True
        for new in sorted(sockets - set(self.known)):
            name = self._try(new)
            if name is not None:
                self.known[new] = name
                changed = True
        if changed:
            try:
                self.on_change()
            except Exception as exc:  # the node update is retried at the next change or heartbeat
                log.warning("csi_plugin_node_update_failed", error=str(exc))
        return changed

    def _try(self, sock: Path) -> str | None:
        import grpc

        from storage.system.csi import pluginregistration_pb2 as rpb
        from storage.system.csi import pluginregistration_pb2_grpc as rpbg

        channel = grpc.insecure_channel(f"unix://{sock}")
        try:
            stub = rpbg.RegistrationStub(channel)
            try:
                info = stub.GetInfo(rpb.InfoRequest(), timeout=self.timeout)
            except grpc.RpcError as exc:
                log.debug("csi_plugin_get_info_failed", socket=str(sock), error=str(exc.code()))
                return None  # not ready yet: tried again at the next pass
            error = self._check(info)
            if error is None:
                endpoint = info.endpoint or str(sock)
                try:
                    self._register(info.name, endpoint if endpoint.startswith("unix://") else f"unix://{endpoint}")
                except Exception as exc:
                    error = f"registering {info.name}: {exc}"
            try:
                stub.NotifyRegistrationStatus(rpb.RegistrationStatus(plugin_registered=error is None, error=error or ""),
                                              timeout=self.timeout)
            except grpc.RpcError as exc:
                log.warning("csi_plugin_notify_failed", socket=str(sock), error=str(exc.code()))
            if error is not None:
                log.warning("csi_plugin_refused", socket=str(sock), error=error)
                return None
            log.info("csi_plugin_registered", driver=info.name, endpoint=info.endpoint, socket=str(sock))
            return info.name
        finally:
            channel.close()

    @staticmethod
    def _check(info: rpb.PluginInfo) -> str | None:
        if info.type != PLUGIN_TYPE:
            return f"plugin type {info.type!r} is not supported (only {PLUGIN_TYPE})"
        if not info.name:
            return "plugin name is empty"
        if not any(v.split(".")[0] in ("1", "v1") for v in info.supported_versions):
            return f"none of the supported versions {list(info.supported_versions)} is a CSI 1.x version"
        return None
