"""``backup.stowage.io``: snapshots that are backups in an object store (S3, GCS, Azure Blob), of any
volume (SEMANTICS LS21-LS27).

It provisions nothing: the snapshot controller calls it for VolumeSnapshotClasses whose driver is
``backup.stowage.io``; restoring is each provisioner's part (it calls ``restore_source`` for the agent,
or ``restore_tree_from`` for a directory). Where the bytes are read depends on the volume:

* a pool volume (``stowage.io/local``): its node's agent, ``POST /backups {volume}`` (a frozen snapshot
  copy is uploaded: crash-consistent);
* a hostPath volume: ``backup_tree`` of its directory, here, in a background job keyed by the snapshot's
  name (the controller is not blocked: ``ready`` stays False until the manifest is written);
* anything else: the agent of the node where the volume is in use (an attached disk's mount, a pod's
  network filesystem, a Block device): ``POST /backups {pv}``; in use nowhere: TemporaryError.

The handle is ``backup_url(store, name)``; delete is ``delete_backup``, status ``read_manifest``.
Credentials: the Secret the class names (``csi.storage.k8s.io/snapshotter-secret-name`` and
``-namespace``), read through ``SnapshotRequest.secrets``; never logged, never in a message.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from provisioners.base import (
    ANN_PROVISIONED_BY,
    BACKUP_DRIVER,
    DataSource,
    Provisioner,
    ProvisionRequest,
    ProvisionResult,
    SecretReader,
    SnapshotRequest,
    SnapshotResult,
    Snapshotter,
    current_secrets,
)
from storage.api.node_affinity import affinity_hostnames
from storage.errors import NotFound, PermanentError, StowageError, TemporaryError

log = structlog.get_logger(__name__)

Obj = dict[str, Any]
STORE = "store"
SECRET_NAME = "csi.storage.k8s.io/snapshotter-secret-name"
SECRET_NAMESPACE = "csi.storage.k8s.io/snapshotter-secret-namespace"
KNOWN_PARAMETERS = frozenset({STORE, SECRET_NAME, SECRET_NAMESPACE})
LOCAL = "stowage.io/local"
HOSTPATH = "stowage.io/hostpath"


def backup_credentials(parameters: dict[str, str], secrets: SecretReader | None) -> tuple[str, dict[str, str]]:
    """(store url, the Secret's data) of a backup class's parameters."""
    unknown = sorted(set(parameters) - KNOWN_PARAMETERS)
    if unknown:
        raise PermanentError(f"invalid VolumeSnapshotClass parameter(s) for {BACKUP_DRIVER}: "
                             f"{', '.join(repr(u) for u in unknown)} (known: {', '.join(sorted(KNOWN_PARAMETERS))})")
    store_url = parameters.get(STORE) or ""
    if not store_url:
        raise PermanentError(f"VolumeSnapshotClass parameter {STORE!r}: Required value (s3://, gs:// or azblob:// URL)")
    name = parameters.get(SECRET_NAME) or ""
    if not name:
        return store_url, {}  # an emulator endpoint, or credentials from the environment
    namespace = parameters.get(SECRET_NAMESPACE) or "default"
    reader = secrets or current_secrets()
    if reader is None:
        raise TemporaryError(f"cannot read Secret {namespace}/{name}: no Secret reader here", delay=5.0)
    data = reader(namespace, name)
    if data is None:
        raise TemporaryError(f'Secret "{name}" in namespace "{namespace}" (parameter {SECRET_NAME}) not found',
                             delay=5.0)
    return store_url, dict(data)


def restore_source(ds: DataSource, secrets: SecretReader | None) -> tuple[str, str, dict[str, str]]:
    """(store url, backup id, credentials) of a backup snapshot data source."""
    from storage.system.backupstore import parse_backup_url

    if ds.driver != BACKUP_DRIVER:
        raise PermanentError(f"data source of driver {ds.driver!r} is not a {BACKUP_DRIVER} backup")
    store_url, backup_id = parse_backup_url(ds.snapshot_handle)
    params = {k: v for k, v in ds.snapshot_parameters.items() if k in KNOWN_PARAMETERS}
    params.setdefault(STORE, store_url)
    _, credentials = backup_credentials(params, secrets)
    return store_url, backup_id, credentials


def restore_tree_from(data_source: DataSource, secrets: SecretReader | None, dest_dir: Path) -> None:
    """Fill ``dest_dir`` from a backup snapshot that holds files (a hostPath or mounted-filesystem backup)."""
    from storage.system import backupstore

    store_url, backup_id, credentials = restore_source(data_source, secrets)
    store = backupstore.open_store(store_url, credentials)
    manifest = backupstore.read_manifest(store, backup_id)
    if manifest.kind != "tree":
        raise PermanentError(f"backup {backup_id} is a block device image: it restores into a block volume "
                             "(a local pool volume), not into a directory")
    Path(dest_dir).mkdir(parents=True, exist_ok=True)
    backupstore.restore_tree(store, backup_id, Path(dest_dir))


@dataclass
class _TreeJob:
    state: str = "Running"  # Running | Succeeded | Failed
    created: float = 0.0
    size: int = 0
    message: str = ""


class BackupSnapshotter(Provisioner, Snapshotter):
    name = BACKUP_DRIVER
    known_parameters = KNOWN_PARAMETERS

    def __init__(self, agents: Any = None, *, node_lister: Callable[[], list[Obj]] | None = None) -> None:
        # ``agents``: the LocalProvisioner that calls node agents (TLS, node lookup); by default the one
        # registered for stowage.io/local when a call needs it.
        self._agents = agents
        self.node_lister = node_lister  # every Node: where to look for a volume in use
        self._jobs: dict[str, _TreeJob] = {}
        self._lock = threading.Lock()

    # It makes no volumes: a claim of a class naming it is refused, deleting is nothing to do.
    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        raise PermanentError(f"{BACKUP_DRIVER} only takes snapshots (backups); it does not provision volumes")

    def delete(self, pv: Obj) -> None:
        return

    def agents(self) -> Any:
        if self._agents is not None:
            return self._agents
        from provisioners import registry

        found = registry.get(LOCAL)
        if found is None:
            raise TemporaryError(f"no {LOCAL} provisioner registered to reach node agents", delay=5.0)
        return found

    # ---- snapshots ------------------------------------------------------------------

    def create_snapshot(self, req: SnapshotRequest) -> SnapshotResult:
        from storage.system import backupstore

        store_url, credentials = backup_credentials(req.parameters, req.secrets)
        handle = backupstore.backup_url(store_url, req.name)
        store = backupstore.open_store(store_url, credentials)
        try:  # done before (another controller replica, or a restart): the manifest says so
            manifest = backupstore.read_manifest(store, req.name)
            return SnapshotResult(handle, manifest.size, True, _created(manifest))
        except NotFound:
            pass
        pv = req.pv
        pv_name = (pv.get("metadata") or {}).get("name", "")
        labels = {"pv": pv_name, "snapshot": req.name}
        annotations = (pv.get("metadata") or {}).get("annotations") or {}
        spec = pv.get("spec") or {}
        if annotations.get(ANN_PROVISIONED_BY) == LOCAL and isinstance(spec.get("local"), dict):
            body = {"name": req.name, "volume": pv_name, "store": store_url, "credentials": credentials,
                    "labels": labels}
            return self._agent_job(handle, self.agents()._node_of(pv), body)
        if isinstance(spec.get("hostPath"), dict):
            return self._tree_job(handle, req.name, store, Path(spec["hostPath"].get("path") or "/"), labels)
        body = {"name": req.name, "pv": {"metadata": {"name": pv_name}, "spec": spec}, "store": store_url,
                "credentials": credentials, "labels": labels}
        for node in self._candidate_nodes(pv):
            try:
                return self._agent_job(handle, node, body)
            except NotFound:
                continue  # not in use on that node
        raise TemporaryError(f"volume {pv_name} must be in use on a node (mounted by a pod) to be backed up: "
                             "it is read where it is mounted", delay=10.0)

    def _candidate_nodes(self, pv: Obj) -> list[Obj]:
        agents = self.agents()
        nodes: list[Obj] = []
        for name in affinity_hostnames(pv):
            node = agents.nodes(name) if agents.nodes is not None else None
            if node is not None:
                nodes.append(node)
        if not nodes and self.node_lister is not None:
            pv_name = (pv.get("metadata") or {}).get("name", "")
            listed = self.node_lister()
            # Nodes that report the volume in use first; network filesystems are not reported: all the others.
            in_use = [n for n in listed if any(str(v).endswith("/" + pv_name)
                                               for v in (n.get("status") or {}).get("volumesInUse") or [])]
            nodes = in_use + [n for n in listed if n not in in_use]
        return nodes

    def _agent_job(self, handle: str, node: Obj, body: Obj) -> SnapshotResult:
        from provisioners.local import agent_url

        agents = self.agents()
        job = agents._call("POST", f"{agent_url(node)}/backups", body)
        if job.get("state") == "Failed":
            raise TemporaryError(f"backup {body['name']} failed on node {(node.get('metadata') or {}).get('name')}: "
                                 f"{job.get('message')}", delay=10.0)
        ready = job.get("state") == "Succeeded"
        return SnapshotResult(handle, int(job.get("sizeBytes") or 0), ready, float(job.get("creationTime") or 0),
                              message="" if ready else f"uploading: {job.get('bytesUploaded', 0)} bytes so far",
                              retry_after=2.0)

    def _tree_job(self, handle: str, name: str, store: Any, directory: Path, labels: dict[str, str]) -> SnapshotResult:
        from storage.system import backupstore

        if not directory.is_dir():
            raise PermanentError(f"hostPath {directory} is not a directory on this host")
        with self._lock:
            job = self._jobs.get(name)
            if job is None or job.state == "Failed":
                previous = job.message if job else ""
                job = _TreeJob(created=time.time())
                self._jobs[name] = job

                def run(job: _TreeJob = job) -> None:
                    try:
                        manifest, _stats = backupstore.backup_tree(
                            store, directory, backup_id=name,
                            labels={**labels, "kind": "tree", "created": repr(job.created)})
                        job.size = manifest.size
                        job.state = "Succeeded"
                    except Exception as exc:  # noqa: BLE001  (reported by the next create_snapshot)
                        job.message = exc.message if isinstance(exc, StowageError) else f"{type(exc).__name__}: {exc}"
                        job.state = "Failed"
                        log.warning("backup.tree_failed", name=name, error=job.message)

                threading.Thread(target=run, name=f"backup-{name}", daemon=True).start()
                if previous:
                    log.info("backup.tree_restarted", name=name, previous_error=previous)
        if job.state == "Failed":
            raise TemporaryError(f"backup {name} of {directory} failed: {job.message}", delay=10.0)
        ready = job.state == "Succeeded"
        if ready:
            with self._lock:
                self._jobs.pop(name, None)  # the manifest is the record from now on
        return SnapshotResult(handle, job.size, ready, job.created, message="" if ready else "uploading")

    def delete_snapshot(self, handle: str, parameters: dict[str, str]) -> None:
        from storage.system import backupstore

        store_url, backup_id = backupstore.parse_backup_url(handle)
        _, credentials = backup_credentials({**parameters, STORE: store_url}, None if not parameters.get(SECRET_NAME)
                                            else current_secrets())
        backupstore.delete_backup(backupstore.open_store(store_url, credentials), backup_id)

    def snapshot_status(self, handle: str, parameters: dict[str, str]) -> SnapshotResult | None:
        from storage.system import backupstore

        store_url, backup_id = backupstore.parse_backup_url(handle)
        _, credentials = backup_credentials({**parameters, STORE: store_url}, None if not parameters.get(SECRET_NAME)
                                            else current_secrets())
        try:
            manifest = backupstore.read_manifest(backupstore.open_store(store_url, credentials), backup_id)
        except NotFound:
            return None
        return SnapshotResult(handle, manifest.size, True, _created(manifest))


def _created(manifest: Any) -> float:
    """When the point-in-time copy was cut (a label the jobs set), else when the manifest was written."""
    try:
        return float((manifest.labels or {}).get("created") or manifest.created)
    except (TypeError, ValueError):
        return float(manifest.created)
