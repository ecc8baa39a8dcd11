"""Choosing the node plugin for a volume source by its key."""
from __future__ import annotations

from typing import Any, Iterable

from storage.errors import BadRequest
from storage.system.devices import DeviceResolver
from volume_plugins.base import VolumePlugin


class PluginRegistry:
    def __init__(self, plugins: Iterable[VolumePlugin] = ()) -> None:
        self._plugins: list[VolumePlugin] = []
        for plugin in plugins:
            self.register(plugin)

    def register(self, plugin: VolumePlugin) -> None:
        if any(p.name == plugin.name for p in self._plugins):
            raise ValueError(f"volume plugin {plugin.name} registered twice")
        self._plugins.append(plugin)

    def plugins(self) -> list[VolumePlugin]:
        return list(self._plugins)

    def by_name(self, name: str) -> VolumePlugin | None:
        return next((p for p in self._plugins if p.name == name), None)

    def by_dir_name(self, dir_name: str) -> VolumePlugin | None:
        return next((p for p in self._plugins if p.dir_name == dir_name), None)

    def find(self, source: dict[str, Any]) -> VolumePlugin:
        matches = [p for p in self._plugins if p.can_support(source)]
        if len(matches) == 1:
            return matches[0]
        keys = sorted(k for k in source if k not in ("name", "mountOptions", "capacity", "accessModes",
                                                      "persistentVolumeReclaimPolicy", "storageClassName",
                                                      "nodeAffinity", "volumeMode", "claimRef"))
        if not matches:
            raise BadRequest(f"no volume plugin supports volume source {keys or '(empty)'}")
        raise BadRequest(f"several volume plugins match volume source {keys}: {[p.name for p in matches]}")


def default_registry(*, host_path_prefixes: Iterable[str] = (), resolver: DeviceResolver | None = None) -> PluginRegistry:
    """Every built-in plugin. ``resolver`` tells attachable plugins where this node's attached disks appear."""
    from volume_plugins.azure_disk import AzureDiskPlugin
    from volume_plugins.azure_file import AzureFilePlugin
    from volume_plugins.config_map import ConfigMapPlugin
    from volume_plugins.downward_api import DownwardAPIPlugin
    from volume_plugins.empty_dir import EmptyDirPlugin
    from volume_plugins.host_path import HostPathPlugin
    from volume_plugins.local import LocalPlugin
    from volume_plugins.persistent_volume_claim import PersistentVolumeClaimPlugin
    from volume_plugins.projected import ProjectedPlugin
    from volume_plugins.secret import SecretPlugin

    registry = PluginRegistry(
        [
            EmptyDirPlugin(),
            HostPathPlugin(allowed_prefixes=host_path_prefixes),
            LocalPlugin(),
            ConfigMapPlugin(),
            SecretPlugin(),
            DownwardAPIPlugin(),
            ProjectedPlugin(),
        ]
    )
    registry.register(PersistentVolumeClaimPlugin())
    resolver = resolver or DeviceResolver()
    # Cloud disk plugins (one line each): registry.register(XPlugin(resolver=resolver))
    registry.register(AzureDiskPlugin(resolver=resolver))
    registry.register(AzureFilePlugin(resolver=resolver))
    return registry
