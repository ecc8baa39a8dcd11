"""Reference provisioner: one directory per volume under a root directory.

Like Kubernetes' hostpath example, nothing enforces the capacity: the claim's
request is reported as the volume's capacity. The directory is named by the
volume name, which makes ``provision`` idempotent by construction.

Snapshots (SEMANTICS VS36-VS39) are directory copies (``cp -a --reflink=auto``) into ``.snapshots/``
beside the volume directories, never inside one: ``<root>/.snapshots/<snapcontent-name>`` holds the
copy and ``<root>/.snapshots/<snapcontent-name>.json`` its record (creation time, restore size); the
handle is the copy's path. Only a directory with such a record is ever treated (or deleted) as a
snapshot, so a hand-written handle cannot point the provisioner at an arbitrary directory.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import structlog

from provisioners.base import (
    BACKUP_DRIVER, DataSource, ProvisionRequest, ProvisionResult, Provisioner, SnapshotRequest, SnapshotResult,
    Snapshotter,
)
from storage.errors import PermanentError
from storage.system.executor import Executor, default_executor

log = structlog.get_logger(__name__)

DEFAULT_ROOT = "/var/lib/stowage/hostpath"
ROOT_ENV = "STOWAGE_HOSTPATH_ROOT"
SNAPSHOT_DIR = ".snapshots"
RECORD_SUFFIX = ".json"
RECORD_KIND = "stowage.io/hostpath-snapshot"


def _capacity_bytes(pv: dict[str, Any]) -> int:
    from storage.api.quantity import quantity_value

    text = ((pv.get("spec") or {}).get("capacity") or {}).get("storage")
    try:
        return max(1, quantity_value(text)) if text else 0
    except (TypeError, ValueError):
        return 0


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                continue
    return total


class HostPathProvisioner(Provisioner, Snapshotter):
    name = "stowage.io/hostpath"
    supports_recycle = True
    supports_clone = True
    known_parameters = frozenset({"root"})

    def __init__(self, root: str | os.PathLike[str] | None = None, *, node: str | None = None,
                 executor: Executor | None = None) -> None:
        self.root = Path(root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT)
        self.node = node  # when set, volumes get node affinity to this node
        self.executor = executor or default_executor()

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
        if req.data_source is not None and not path.exists():
            self._fill_from_source(req, root, path)
        path.mkdir(parents=True, exist_ok=True)
        log.info("hostpath_provisioned", volume=req.volume_name, path=str(path),
                 source=req.data_source.kind if req.data_source else None)
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

    # ---------------------------------------------------------------- data sources (DS rules)

    def _copy_tree(self, source: Path, dest: Path) -> None:
        """``dest`` (absent) becomes a copy of ``source``'s contents: modes, owners, times, links kept;
        shared extents where the filesystem can (reflink), a plain copy where it cannot."""
        dest.mkdir(parents=True)
        self.executor.run(["cp", "-a", "--reflink=auto", "--", f"{source}/.", str(dest)], timeout=3600)

    def _fill_from_source(self, req: ProvisionRequest, root: Path, path: Path) -> None:
        """Build the new volume in a temporary directory beside it and rename it into place, so a crash
        half-way leaves no directory under the volume's name (and the retry starts over)."""
        source = req.data_source
        assert source is not None
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f".{req.volume_name}.filling-*"):
            shutil.rmtree(stale, ignore_errors=True)
        temp = root / f".{req.volume_name}.filling-{uuid.uuid4().hex[:8]}"
        try:
            if source.kind == "PersistentVolumeClaim":
                self._check_clone_source(source)
                self._copy_tree(Path(source.source_pv["spec"]["hostPath"]["path"]), temp)  # type: ignore[index]
            elif source.driver in self.names():
                snapshot = self._snapshot_path(source.snapshot_handle)
                if snapshot is None:
                    raise PermanentError(f"snapshot {source.snapshot_handle!r} does not exist")
                self._copy_tree(snapshot, temp)
            elif source.driver == BACKUP_DRIVER:
                # Imported on use: the backup engine stays out of the memory of agents that never restore.
                from provisioners.backup import restore_tree_from
                temp.mkdir(parents=True)
                restore_tree_from(source, req.secrets, temp)
            else:
                raise PermanentError(f"provisioner {self.name} cannot restore a snapshot of driver "
                                     f"{source.driver!r} (only {', '.join(sorted(self.names()))} and {BACKUP_DRIVER})")
            temp.rename(path)
        finally:
            if temp.exists():
                shutil.rmtree(temp, ignore_errors=True)
        log.info("hostpath_filled", volume=req.volume_name, kind=source.kind)

    def _check_clone_source(self, source: DataSource) -> None:
        pv = source.source_pv or {}
        src = self._path(pv)
        if not self.owns(pv) or src is None:
            raise PermanentError(f"provisioner {self.name} can clone only its own hostPath volumes")
        if not src.is_dir():
            raise PermanentError(f"the source volume's directory {str(src)!r} does not exist")

    # ---------------------------------------------------------------- snapshots (VS, LS rules)

    @staticmethod
    def _record_path(snapshot: Path) -> Path:
        return snapshot.with_name(snapshot.name + RECORD_SUFFIX)

    def _read_record(self, snapshot: Path) -> dict[str, Any] | None:
        try:
            record = json.loads(self._record_path(snapshot).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("kind") != RECORD_KIND or record.get("name") != snapshot.name:
            return None
        return record

    def _snapshot_path(self, handle: str) -> Path | None:
        """The snapshot directory of ``handle`` when it is one of ours and complete; else None."""
        if not handle or not os.path.isabs(handle) or "\0" in handle:
            return None
        path = Path(os.path.normpath(handle))
        if path.parent.name != SNAPSHOT_DIR or not path.is_dir() or path.is_symlink():
            return None
        return path if self._read_record(path) is not None else None

    def _result(self, path: Path, record: dict[str, Any]) -> SnapshotResult:
        return SnapshotResult(handle=str(path), restore_size=int(record.get("restoreSize") or 1), ready=True,
                              creation_time=float(record.get("creationTime") or 0.0))

    def create_snapshot(self, req: SnapshotRequest) -> SnapshotResult:
        source = self._path(req.pv)
        if source is None or not self.owns(req.pv):
            raise PermanentError(f"provisioner {self.name} can snapshot only its own hostPath volumes")
        if not source.is_dir():
            raise PermanentError(f"the volume's directory {str(source)!r} does not exist")
        if "/" in req.name or req.name in ("", ".", ".."):
            raise PermanentError(f"invalid snapshot name {req.name!r}")
        snapshots = source.parent / SNAPSHOT_DIR
        path = snapshots / req.name
        record = self._read_record(path) if path.is_dir() else None
        if record is not None:
            return self._result(path, record)  # the retry of a snapshot already cut
        snapshots.mkdir(parents=True, exist_ok=True)
        # Two controllers may cut the same snapshot at once (a second manager, a replica taking over):
        # without the lock each would clear the other's half-made copy as stale while it is written.
        lock = os.open(snapshots / f".{req.name}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._cut_locked(req, source, snapshots, path)
        finally:
            os.close(lock)

    def _cut_locked(self, req: SnapshotRequest, source: Path, snapshots: Path, path: Path) -> SnapshotResult:
        record = self._read_record(path) if path.is_dir() else None
        if record is not None:
            return self._result(path, record)  # cut by whoever held the lock before us
        if path.exists():
            shutil.rmtree(path)  # a copy whose record was never written: cut again
        for stale in snapshots.glob(f".{req.name}.copying-*"):
            shutil.rmtree(stale, ignore_errors=True)
        temp = snapshots / f".{req.name}.copying-{uuid.uuid4().hex[:8]}"
        created = time.time()
        try:
            self._copy_tree(source, temp)
            size = _capacity_bytes(req.pv) or max(1, _tree_bytes(temp))
            record = {"kind": RECORD_KIND, "name": req.name, "volume": (req.pv.get("metadata") or {}).get("name"),
                      "creationTime": created, "restoreSize": size}
            temp.rename(path)
            record_temp = snapshots / f".{req.name}.record-{uuid.uuid4().hex[:8]}"
            record_temp.write_text(json.dumps(record))
            record_temp.rename(self._record_path(path))  # the record last: its presence means complete
        finally:
            if temp.exists():
                shutil.rmtree(temp, ignore_errors=True)
        log.info("hostpath_snapshot_created", snapshot=req.name, volume=record["volume"], path=str(path))
        return self._result(path, record)

    def delete_snapshot(self, handle: str, parameters: dict[str, str]) -> None:
        path = self._snapshot_path(handle)
        if path is None:
            log.info("hostpath_snapshot_absent", handle=handle)
            return  # gone already, or never ours: nothing to delete
        self._record_path(path).unlink(missing_ok=True)  # first: a half-deleted copy is no snapshot
        shutil.rmtree(path, ignore_errors=True)
        path.with_name(f".{path.name}.lock").unlink(missing_ok=True)
        log.info("hostpath_snapshot_deleted", path=str(path))

    def snapshot_status(self, handle: str, parameters: dict[str, str]) -> SnapshotResult | None:
        path = self._snapshot_path(handle)
        if path is None:
            return None
        record = self._read_record(path)
        return self._result(path, record) if record is not None else None
