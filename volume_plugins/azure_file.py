"""Azure File shares over SMB (the ``azureFile`` source; a network mount, not attachable).

``mount -t cifs //<account>.file.core.windows.net/<share> <target>`` with the
options Azure documents for Linux, the PV's mountOptions, and ``ro`` when the
source is read-only (CZ9). The account key never reaches a command line, a log
or an error: it goes through a 0600 credentials file that is deleted as soon
as the mount returns (CZ10). A kernel without a CIFS client is reported as such.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import structlog

from storage.errors import PermanentError, TemporaryError
from storage.system import mounts
from storage.system.executor import CommandError, Executor
from volume_plugins.base import VolumeContext, VolumePlugin

log = structlog.get_logger(__name__)

# Where the agent puts the Secret an azureFile source names (its data, key -> bytes; None: no such Secret).
DATA_KEY = "azureFile:secret"
BASE_OPTIONS = ("vers=3.0", "dir_mode=0777", "file_mode=0777", "serverino", "nosharesock", "actimeo=30", "mfsymlinks")


def secret_location(source: dict[str, Any], pod_namespace: str, inline: bool) -> tuple[str, str]:
    """(namespace, name) of the account Secret: an inline pod volume uses the pod's namespace, a PV its
    ``secretNamespace`` (default "default"), as Kubernetes."""
    spec = source.get("azureFile") or {}
    namespace = pod_namespace if inline else (spec.get("secretNamespace") or "default")
    return namespace, str(spec.get("secretName") or "")


def cifs_supported(filesystems: Path = Path("/proc/filesystems")) -> bool:
    try:
        return any(line.split()[-1] == "cifs" for line in filesystems.read_text().splitlines() if line.split())
    except OSError:
        return False


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AzureFilePlugin(VolumePlugin):
    name = "kubernetes.io/azure-file"
    source_key = "azureFile"

    def __init__(self, resolver: Any = None, filesystems: Path = Path("/proc/filesystems"),
                 endpoint_suffix: str = "core.windows.net") -> None:
        self.filesystems = filesystems  # the kernel's list, checked for a CIFS client
        self.endpoint_suffix = endpoint_suffix

    def mount_arguments(self, ctx: VolumeContext, account: str, credentials_file: str) -> tuple[str, list[str]]:
        """(source, options) of the cifs mount; the password is only in ``credentials_file``."""
        spec = self.spec(ctx.source)
        share = str(spec.get("shareName") or "")
        if not share:
            raise PermanentError("azureFile.shareName: Required value")
        options = [BASE_OPTIONS[0], f"username={account}", f"credentials={credentials_file}", *BASE_OPTIONS[1:]]
        options += [str(o) for o in ctx.source.get("mountOptions") or []]
        if ctx.read_only or spec.get("readOnly"):
            options.append("ro")
        return f"//{account}.file.{self.endpoint_suffix}/{share}", options

    def _account(self, ctx: VolumeContext) -> tuple[str, str]:
        spec = self.spec(ctx.source)
        if not spec.get("secretName"):
            raise PermanentError("azureFile.secretName: Required value")
        data = ctx.data.get(DATA_KEY)
        if data is None:
            raise TemporaryError(f"Secret {spec['secretName']} for azureFile volume {ctx.volume_name} not found", delay=5.0)
        missing = [k for k in ("azurestorageaccountname", "azurestorageaccountkey") if not data.get(k)]
        if missing:
            raise PermanentError(f"Secret {spec['secretName']} has no {' or '.join(missing)}")
        return _text(data["azurestorageaccountname"]), _text(data["azurestorageaccountkey"])

    def setup(self, ctx: VolumeContext) -> Path:
        account, key = self._account(ctx)
        target = ctx.target
        target.mkdir(parents=True, exist_ok=True)
        if mounts.is_mount_point(target):
            return target
        if not cifs_supported(self.filesystems):
            raise PermanentError("this node's kernel has no CIFS client (no cifs in /proc/filesystems):"
                                 " cannot mount an azureFile share")
        fd, credentials = tempfile.mkstemp(prefix="stowage-azurefile-")  # 0600 from the start
        try:
            with os.fdopen(fd, "w") as f:
                f.write(f"username={account}\npassword={key}\n")
            source, options = self.mount_arguments(ctx, account, credentials)
            self._mount(source, target, options, ctx.executor, key)
        finally:
            os.unlink(credentials)
        log.info("azure_file.mounted", source=source, target=str(target))
        return target

    @staticmethod
    def _mount(source: str, target: Path, options: list[str], executor: Executor, key: str) -> None:
        try:
            executor.run(["mount", "-t", "cifs", source, str(target), "-o", ",".join(options)], secrets=(key,))
        except CommandError as exc:
            # mount.cifs may echo what it was given; keep the key out of the error either way.
            raise TemporaryError(f"mounting {source} failed: {exc.message.replace(key, '***')}", delay=5.0) from None
