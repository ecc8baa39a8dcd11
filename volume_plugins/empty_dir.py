"""emptyDir: a directory under the pod directory, or tmpfs for ``medium: Memory`` (A7)."""
from __future__ import annotations

import os
from pathlib import Path

from storage.api.quantity import quantity_value
from storage.errors import FieldError, Invalid
from storage.system import mounts
from volume_plugins.base import VolumeContext, VolumePlugin


def quantity_bytes(value: str | int, field: str) -> int:
    """A storage quantity (SEMANTICS Q1) in whole bytes, rounded up; bad input names the field."""
    try:
        return quantity_value(value)
    except ValueError as exc:
        raise Invalid([FieldError(field, "Invalid value", str(exc), value, True)]) from None


class EmptyDirPlugin(VolumePlugin):
    name = "kubernetes.io/empty-dir"
    source_key = "emptyDir"

    def setup(self, ctx: VolumeContext) -> Path:
        spec = self.spec(ctx.source)
        medium = spec.get("medium") or ""
        if medium not in ("", "Memory"):
            raise Invalid([FieldError("emptyDir.medium", "Unsupported value", 'supported values: "", "Memory"', medium, True)])
        target = ctx.target
        target.mkdir(parents=True, exist_ok=True)
        if medium == "Memory" and not mounts.own_filesystem_mounted(target):
            options = ["nosuid", "nodev", "mode=1777"]
            if spec.get("sizeLimit") not in (None, ""):
                size = quantity_bytes(spec["sizeLimit"], "emptyDir.sizeLimit")
                if size <= 0:
                    raise Invalid([FieldError("emptyDir.sizeLimit", "Invalid value", "must be greater than zero", spec["sizeLimit"], True)])
                options.append(f"size={size}")
            mounts.mount("tmpfs", target, "tmpfs", options, executor=ctx.executor)
        else:
            # World-writable like Kubernetes: the pod may run as any user.
            os.chmod(target, 0o777)
        return target
