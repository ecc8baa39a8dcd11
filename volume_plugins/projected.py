"""projected volumes: several configMap/secret/downwardAPI/token sources in one directory."""
from __future__ import annotations

from pathlib import Path

from storage.errors import FieldError, Invalid
from volume_plugins.atomic_writer import AtomicWriter, FileProjection, validate_path
from volume_plugins.base import VolumeContext, VolumePlugin
from volume_plugins.projection import DEFAULT_MODE, downward_files, keyed_files
from volume_plugins.secret import ensure_tmpfs


class ProjectedPlugin(VolumePlugin):
    name = "kubernetes.io/projected"
    source_key = "projected"

    def setup(self, ctx: VolumeContext) -> Path:
        spec = self.spec(ctx.source)
        default_mode = spec.get("defaultMode", DEFAULT_MODE)
        files: dict[str, FileProjection] = {}
        has_secret = False
        for i, source in enumerate(spec.get("sources") or []):
            field = f"projected.sources[{i}]"
            if "configMap" in source:
                part = keyed_files("configMap", source["configMap"], ctx.data, f"{field}.configMap", default_mode)
            elif "secret" in source:
                has_secret = True
                part = keyed_files("secret", {**source["secret"]}, ctx.data, f"{field}.secret", default_mode)
            elif "downwardAPI" in source:
                part = downward_files(source["downwardAPI"], ctx.data, f"{field}.downwardAPI", default_mode)
            elif "serviceAccountToken" in source:
                has_secret = True
                token = source["serviceAccountToken"]
                path = str(validate_path(token.get("path", ""), f"{field}.serviceAccountToken.path"))
                value = (ctx.data.get("serviceAccountToken") or {}).get(path)
                if value is None:
                    from storage.errors import TemporaryError

                    raise TemporaryError(f"service account token for {path} not issued yet", delay=2.0)
                part = {path: FileProjection(value if isinstance(value, bytes) else str(value).encode(), int(default_mode))}
            else:
                raise Invalid([FieldError(field, "Required value", "must specify one of configMap, secret, downwardAPI, serviceAccountToken")])
            for path in part:
                if path in files:
                    raise Invalid([FieldError(field, "Duplicate value", "conflicting projection path", path, True)])
            files.update(part)
        if has_secret:
            ensure_tmpfs(ctx)
        AtomicWriter(ctx.target, ctx.fs_group).write(files)
        return ctx.target
