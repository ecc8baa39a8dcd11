"""secret volumes: like configMap, but on tmpfs so secret bytes never reach a disk."""
from __future__ import annotations

from pathlib import Path

from storage.system import mounts
from volume_plugins.atomic_writer import AtomicWriter
from volume_plugins.base import VolumeContext, VolumePlugin
from volume_plugins.projection import keyed_files


def ensure_tmpfs(ctx: VolumeContext) -> None:
    ctx.target.mkdir(parents=True, exist_ok=True)
    if not mounts.own_filesystem_mounted(ctx.target):
        mounts.mount("tmpfs", ctx.target, "tmpfs", ["nosuid", "nodev", "mode=0755"], executor=ctx.executor)


class SecretPlugin(VolumePlugin):
    name = "kubernetes.io/secret"
    source_key = "secret"

    def setup(self, ctx: VolumeContext) -> Path:
        # Resolve first: a missing secret must not leave an empty tmpfs behind for nothing.
        files = keyed_files("secret", self.spec(ctx.source), ctx.data, "secret")
        ensure_tmpfs(ctx)
        AtomicWriter(ctx.target, ctx.fs_group).write(files)
        return ctx.target
