"""hostPath: a path on the host, limited to the administrator's allowed prefixes (A7)."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable

from storage.errors import Forbidden, Invalid, FieldError, PermanentError, TemporaryError
from storage.system import safepath
from volume_plugins.base import VolumeContext, VolumePlugin

TYPES = ("", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice", "BlockDevice")


class HostPathPlugin(VolumePlugin):
    name = "kubernetes.io/host-path"
    source_key = "hostPath"

    def __init__(self, allowed_prefixes: Iterable[str] = ()) -> None:
        # The administrator's prefixes are resolved once, by name; what lies beneath one is
        # opened without following any symlink (a pod sharing the directory may plant one).
        self._given = [Path(os.path.abspath(p)) for p in allowed_prefixes]
        self.allowed_prefixes = [Path(os.path.realpath(p)) for p in self._given]

    def check_allowed(self, path: str) -> tuple[Path, str]:
        """(allowed prefix, the rest of the path beneath it); by path component, so "/data"
        admits "/data/x" but not "/database"."""
        if not path or not os.path.isabs(path):
            raise Invalid([FieldError("hostPath.path", "Invalid value", "must be an absolute path", path, True)])
        if ".." in Path(path).parts:
            raise Invalid([FieldError("hostPath.path", "Invalid value", "must not contain '..'", path, True)])
        found = safepath.split_under(path, self.allowed_prefixes)
        if found is None:
            # The prefix as written may itself be a symlink the administrator made (e.g. /data -> /srv/data).
            for given, real in zip(self._given, self.allowed_prefixes):
                rest = safepath.split_under(path, [given])
                if rest is not None:
                    found = (real, rest[1])
                    break
        if found is None:
            raise Forbidden(f'hostPath.path "{path}" is not under an allowed host path prefix ({self._allowed_text()})')
        return found

    def _allowed_text(self) -> str:
        return "allowed: " + (", ".join(str(p) for p in self.allowed_prefixes) or "none configured")

    def setup(self, ctx: VolumeContext) -> Path:
        spec = self.spec(ctx.source)
        path = str(spec.get("path") or "")
        kind = str(spec.get("type") or "")
        if kind not in TYPES:
            raise Invalid([FieldError("hostPath.type", "Unsupported value", f"supported values: {', '.join(repr(t) for t in TYPES)}", kind, True)])
        base, rest = self.check_allowed(path)
        try:
            if kind == "DirectoryOrCreate":
                fd = safepath.mkdirs_beneath(base, rest, 0o755)
            elif kind == "FileOrCreate":
                fd = safepath.create_file_beneath(base, rest, 0o644)
            else:
                fd = safepath.open_beneath(base, rest)
        except safepath.PathEscape as exc:
            raise Forbidden(f'hostPath.path "{path}" is not under an allowed host path prefix: '
                            f'{exc.strerror} ({self._allowed_text()})') from None
        except FileNotFoundError:
            if kind:
                raise TemporaryError(f"hostPath type check failed: {path} does not exist", delay=5.0) from None
            return base / rest  # no type asked: the container start reports it if still missing
        try:
            # Checked on the descriptor, not the name: the name may be swapped meanwhile.
            check_type(os.fstat(fd).st_mode, kind, path)
        finally:
            os.close(fd)
        # The runtime opens it again beneath the prefix at every container start and mounts
        # that descriptor; this path only names it.
        return base / rest if rest else base


def check_type(mode: int, kind: str, shown: str) -> None:
    """hostPath ``type`` against the mode of what was opened (an fstat of the descriptor)."""
    if not kind or kind not in _TYPE_CHECKS:
        return
    test, message = _TYPE_CHECKS[kind]
    if not test(mode):
        raise PermanentError(f"hostPath type check failed: {shown} {message}")


_TYPE_CHECKS = {
    "DirectoryOrCreate": (stat.S_ISDIR, "is not a directory"),
    "Directory": (stat.S_ISDIR, "is not a directory"),
    "FileOrCreate": (stat.S_ISREG, "is not a file"),
    "File": (stat.S_ISREG, "is not a file"),
    "Socket": (stat.S_ISSOCK, "is not a socket file"),
    "CharDevice": (stat.S_ISCHR, "is not a character device"),
    "BlockDevice": (stat.S_ISBLK, "is not a block device"),
}
