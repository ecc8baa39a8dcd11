"""configMap volumes: keys as files, updated atomically."""
from __future__ import annotations

from pathlib import Path

from volume_plugins.atomic_writer import AtomicWriter
from volume_plugins.base import VolumeContext, VolumePlugin
from volume_plugins.projection import keyed_files


class ConfigMapPlugin(VolumePlugin):
    name = "kubernetes.io/configmap"
    source_key = "configMap"

    def setup(self, ctx: VolumeContext) -> Path:
        files = keyed_files("configMap", self.spec(ctx.source), ctx.data, "configMap")
        AtomicWriter(ctx.target, ctx.fs_group).write(files)
        return ctx.target
