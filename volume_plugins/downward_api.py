"""downwardAPI volumes: pod fields resolved by the caller, written as files."""
from __future__ import annotations

from pathlib import Path

from volume_plugins.atomic_writer import AtomicWriter
from volume_plugins.base import VolumeContext, VolumePlugin
from volume_plugins.projection import downward_files


class DownwardAPIPlugin(VolumePlugin):
    name = "kubernetes.io/downward-api"
    source_key = "downwardAPI"

    def setup(self, ctx: VolumeContext) -> Path:
        files = downward_files(self.spec(ctx.source), ctx.data, "downwardAPI")
        AtomicWriter(ctx.target, ctx.fs_group).write(files)
        return ctx.target
