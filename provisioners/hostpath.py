"""Reference provisioner: one directory per volume under a root directory.

Like Kubernetes' hostpath example, nothing enforces the capacity: the claim's
request is reported as the volume's capacity. The directory is named by the
volume name, which makes ``provision`` idempotent by construction.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import structlog

from provisioners.base import ProvisionRequest, ProvisionResult, Provisioner
from storage.errors import PermanentError

log = structlog.get_logger(__name__)

DEFAULT_ROOT = "/var/lib/stowage/hostpath"
ROOT_ENV = "STOWAGE_HOSTPATH_ROOT"


class HostPathProvisioner(Provisioner):
    name = "stowage.io/hostpath"
    supports_recycle = True
    known_parameters = frozenset({"root"})

    def __init__(self, root: str | os.PathLike[str] | None = None, *, node: str | None = None) -> None:
        self.root = Path(root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT)
        self.node = node  # when set, volumes get node affinity to this node

    def _root_for(self, parameters: dict[str, str]) -> Path:
        return Path(parameters["root"]) if parameters.get("root") else self.root

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        self.check_parameters(req.parameters)
        if req.volume_mode == "Block":
            raise PermanentError(f"provisioner {self.name} cannot provision volumeMode Block")
        root = self._root_for(req.parameters)
        if not root.is_absolute():
            raise PermanentError(f'parameter "root" must be an absolute path, got "{root}"')
        path = root / req.volume_name
        path.mkdir(parents=True, exist_ok=True)
        log.info("hostpath_provisioned", volume=req.volume_name, path=str(path))
        requested = req.claim["spec"]["resources"]["requests"]["storage"]
        affinity = None
        if self.node:
            affinity = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [self.node]}]}]}}
        return ProvisionResult.finished({"hostPath": {"path": str(path), "type": "DirectoryOrCreate"}}, str(requested), affinity)

    def _path(self, pv: dict[str, Any]) -> Path | None:
        path = ((pv.get("spec") or {}).get("hostPath") or {}).get("path")
        return Path(path) if path else None

    def delete(self, pv: dict[str, Any]) -> None:
        if not self.owns(pv):
            return
        path = self._path(pv)
        name = (pv.get("metadata") or {}).get("name")
        # Only ever remove the directory this provisioner made for this volume.
        if path is None or path.name != name:
            log.warning("hostpath_delete_refused", volume=name, path=str(path))
            return
        if path.exists():
            shutil.rmtree(path)
        log.info("hostpath_deleted", volume=name, path=str(path))

    def expand(self, pv: dict[str, Any], new_size: int) -> int:
        return new_size  # a directory has no size of its own

    def can_recycle(self, pv: dict[str, Any]) -> bool:
        path = self._path(pv)
        return path is not None

    def recycle(self, pv: dict[str, Any]) -> None:
        path = self._path(pv)
        if path is None:
            raise PermanentError("volume has no hostPath to recycle")
        if path.resolve() == Path("/"):
            raise PermanentError("refusing to scrub /")
        if not path.exists():
            return
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        log.info("hostpath_recycled", volume=(pv.get("metadata") or {}).get("name"), path=str(path))
