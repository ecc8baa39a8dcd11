"""Choosing the node plugin for a volume source by its key."""
from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from storage.errors import BadRequest
from storage.system.devices import DeviceResolver
from volume_plugins.base import DevicePlugin, VolumePlugin

# Plugins added in this process besides the built-in ones (tests, embedded setups): each factory gets
# the node's DeviceResolver. default_registry() includes them, so an agent and the scheduler built after
# the registration both see the plugin.
PluginFactory = Callable[[DeviceResolver], VolumePlugin]
_extra_lock = threading.Lock()
_extra: dict[str, PluginFactory] = {}


class PluginRegistry:
    def __init__(self, plugins: Iterable[VolumePlugin] = ()) -> None:
        self._plugins: list[VolumePlugin] = []
        # Plugins that come and go at run time (FlexVolume drivers in a directory), as Kubernetes'
        # DynamicPluginProber: each is asked for its current plugins at every lookup.
        self._dynamic: list[Callable[[], list[VolumePlugin]]] = []
        for plugin in plugins:
            self.register(plugin)

    def register(self, plugin: VolumePlugin) -> None:
        if any(p.name == plugin.name for p in self._plugins):
            raise ValueError(f"volume plugin {plugin.name} registered twice")
        self._plugins.append(plugin)

    def add_dynamic(self, source: Callable[[], list[VolumePlugin]]) -> None:
        self._dynamic.append(source)

    def plugins(self) -> list[VolumePlugin]:
        found = list(self._plugins)
        for source in self._dynamic:
            found.extend(source())
        return found

    def by_name(self, name: str) -> VolumePlugin | None:
        return next((p for p in self.plugins() if p.name == name), None)

    def by_dir_name(self, dir_name: str) -> VolumePlugin | None:
        return next((p for p in self.plugins() if p.dir_name == dir_name), None)

    def find(self, source: dict[str, Any]) -> VolumePlugin:
        matches = [p for p in self.plugins() if p.can_support(source)]
        if len(matches) == 1:
            return matches[0]
        keys = sorted(k for k in source if k not in ("name", "mountOptions", "capacity", "accessModes",
                                                      "persistentVolumeReclaimPolicy", "storageClassName",
                                                      "nodeAffinity", "volumeMode", "claimRef"))
        if not matches:
            raise BadRequest(f"no volume plugin supports volume source {keys or '(empty)'}")
        raise BadRequest(f"several volume plugins match volume source {keys}: {[p.name for p in matches]}")


_generation = 0  # bumped by each (un)registration: cached views of the plugin set know when to rebuild
_limit_keys: tuple[int, "LimitKeys"] | None = None


def register_plugin(name: str, factory: PluginFactory) -> None:
    """Add a plugin to every registry ``default_registry`` builds from now on in this process."""
    global _generation
    with _extra_lock:
        _extra[name] = factory
        _generation += 1


def unregister_plugin(name: str) -> None:
    global _generation
    with _extra_lock:
        _extra.pop(name, None)
        _generation += 1


@dataclass(frozen=True)
class LimitKeys:
    """Which node allocatable key counts a volume: by its source key (``awsElasticBlockStore`` ->
    ``attachable-volumes-aws-ebs``) and by plugin name (``kubernetes.io/aws-ebs`` -> the same), the
    latter for claims whose class names the provisioner but that are not bound yet."""

    by_source: Mapping[str, str] = field(default_factory=dict)
    by_name: Mapping[str, str] = field(default_factory=dict)


def attach_limit_keys(registry: PluginRegistry | None = None) -> LimitKeys:
    """The limit keys of ``registry``'s plugins (default: the built-in and registered ones, cached)."""
    global _limit_keys
    if registry is None:
        with _extra_lock:
            generation, cached = _generation, _limit_keys
        if cached is not None and cached[0] == generation:
            return cached[1]
        keys = attach_limit_keys(default_registry())
        with _extra_lock:
            _limit_keys = (generation, keys)
        return keys
    by_source: dict[str, str] = {}
    by_name: dict[str, str] = {}
    for plugin in registry.plugins():
        if isinstance(plugin, DevicePlugin) and plugin.attach_limit_key:
            by_source[plugin.source_key] = plugin.attach_limit_key
            by_name[plugin.name] = plugin.attach_limit_key
    return LimitKeys(by_source, by_name)


def default_registry(*, host_path_prefixes: Iterable[str] = (), resolver: DeviceResolver | None = None,
                     volume_plugin_dir: str | os.PathLike[str] | None = None) -> PluginRegistry:
    """Every built-in plugin. ``resolver`` tells attachable plugins where this node's attached disks appear;
    ``volume_plugin_dir`` holds FlexVolume drivers (default: $STOWAGE_VOLUME_PLUGIN_DIR or Kubernetes' own)."""
    from volume_plugins.azure_disk import AzureDiskPlugin
    from volume_plugins.azure_file import AzureFilePlugin
    from volume_plugins.cephfs import CephfsPlugin
    from volume_plugins.config_map import ConfigMapPlugin
    from volume_plugins.downward_api import DownwardAPIPlugin
    from volume_plugins.empty_dir import EmptyDirPlugin
    from volume_plugins.aws_ebs import AwsEbsPlugin
    from volume_plugins.gce_pd import GcePdPlugin
    from volume_plugins.glusterfs import GlusterfsPlugin
    from volume_plugins.host_path import HostPathPlugin
    from volume_plugins.iscsi import IscsiPlugin
    from volume_plugins.local import LocalPlugin
    from volume_plugins.nfs import NfsPlugin
    from volume_plugins.persistent_volume_claim import PersistentVolumeClaimPlugin
    from volume_plugins.projected import ProjectedPlugin
    from volume_plugins.rbd import RbdPlugin
    from volume_plugins.secret import SecretPlugin
    from volume_plugins.flexvolume import FlexVolumePlugins, MissingFlexDriverPlugin
    from storage.system.flexvolume import plugin_dir_from_env
    from volume_plugins.git_repo import GitRepoPlugin
    from volume_plugins.flocker import FlockerPlugin
    from volume_plugins.unsupported import unsupported_plugins

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
    registry.register(AwsEbsPlugin(resolver=resolver))
    registry.register(GcePdPlugin(resolver=resolver))
    registry.register(AzureDiskPlugin(resolver=resolver))
    registry.register(AzureFilePlugin(resolver=resolver))
    registry.register(IscsiPlugin(resolver=resolver))
    registry.register(NfsPlugin(resolver=resolver))
    registry.register(RbdPlugin(resolver=resolver))
    registry.register(GlusterfsPlugin())
    flex_plugins = FlexVolumePlugins(volume_plugin_dir or plugin_dir_from_env())
    registry.register(MissingFlexDriverPlugin(flex_plugins))
    registry.add_dynamic(flex_plugins.plugins)
    registry.register(GitRepoPlugin())
    registry.register(FlockerPlugin())
    # grpcio is the optional `csi` extra; the plugin imports it only once a driver registers (PF41),
    # so ask whether it is installed without importing it.
    if importlib.util.find_spec("grpc") is not None:
        from volume_plugins.csi import CsiPlugin
        registry.register(CsiPlugin())
    registry.register(CephfsPlugin(resolver=resolver))
    with _extra_lock:
        extra = list(_extra.values())
    for factory in extra:
        registry.register(factory(resolver))
    # Refused types last, for sources no plugin (one registered in this process included) serves.
    for refused in unsupported_plugins():
        if not any(p.name == refused.name or p.source_key == refused.source_key for p in registry.plugins()):
            registry.register(refused)
    return registry
