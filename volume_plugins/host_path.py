"""hostPath: a path on the host, limited to the administrator's allowed prefixes (A7)."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable

from storage.errors import Forbidden, Invalid, FieldError, PermanentError, TemporaryError
from volume_plugins.base import VolumeContext, VolumePlugin

TYPES = ("", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice", "BlockDevice")


class HostPathPlugin(VolumePlugin):
    name = "kubernetes.io/host-path"
    source_key = "hostPath"

    def __init__(self, allowed_prefixes: Iterable[str] = ()) -> None:
        # Compared by path component after resolving symlinks, so "/data"
        # admits "/data/x" but not "/database" nor a symlink out of /data.
        self.allowed_prefixes = [Path(os.path.realpath(p)) for p in allowed_prefixes]

    def check_allowed(self, path: str) -> Path:
        if not path or not os.path.isabs(path):
            raise Invalid([FieldError("hostPath.path", "Invalid value", "must be an absolute path", path, True)])
        if ".." in Path(path).parts:
            raise Invalid([FieldError("hostPath.path", "Invalid value", "must not contain '..'", path, True)])
        resolved = Path(os.path.realpath(path))
        for prefix in self.allowed_prefixes:
            if resolved == prefix or prefix in resolved.parents:
                return resolved
        allowed = ", ".join(str(p) for p in self.allowed_prefixes) or "none configured"
        raise Forbidden(f'hostPath.path "{path}" is not under an allowed host path prefix (allowed: {allowed})')

    def setup(self, ctx: VolumeContext) -> Path:
        spec = self.spec(ctx.source)
        path = str(spec.get("path") or "")
        kind = str(spec.get("type") or "")
        if kind not in TYPES:
            raise Invalid([FieldError("hostPath.type", "Unsupported value", f"supported values: {', '.join(repr(t) for t in TYPES)}", kind, True)])
        resolved = self.check_allowed(path)
        if kind == "DirectoryOrCreate" and not resolved.exists():
            resolved.mkdir(mode=0o755, parents=True)
        elif kind == "FileOrCreate" and not resolved.exists():
            resolved.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            fd = os.open(resolved, os.O_CREAT | os.O_WRONLY, 0o644)
            os.close(fd)
        self._check_type(resolved, kind, path)
        # Kubernetes hands the host path straight to the container runtime.
        return resolved

    @staticmethod
    def _check_type(resolved: Path, kind: str, shown: str) -> None:
        if not kind:
            return
        try:
            mode = os.stat(resolved).st_mode
        except FileNotFoundError:
            raise TemporaryError(f'hostPath type check failed: {shown} does not exist', delay=5.0) from None
        checks = {
            "DirectoryOrCreate": (stat.S_ISDIR, "is not a directory"),
            "Directory": (stat.S_ISDIR, "is not a directory"),
            "FileOrCreate": (stat.S_ISREG, "is not a file"),
            "File": (stat.S_ISREG, "is not a file"),
            "Socket": (stat.S_ISSOCK, "is not a socket file"),
            "CharDevice": (stat.S_ISCHR, "is not a character device"),
            "BlockDevice": (stat.S_ISBLK, "is not a block device"),
        }
        test, message = checks[kind]
        if not test(mode):
            raise PermanentError(f"hostPath type check failed: {shown} {message}")
