"""Backups the node agent runs for the control plane (SEMANTICS LS10-LS15): one background job per
backup name, so a POST returns at once and the caller polls (the snapshot controller asks again until
the job is done).

What is read, by what the volume is on this node:
* a pool volume: a temporary snapshot of it (frozen filesystem, reflink or sparse copy: crash-consistent)
  is uploaded with ``backup_block`` while the volume stays in use, then the snapshot is removed;
* another volume mounted as a filesystem on this node (an attached disk's global mount, or a network
  filesystem in a pod's volume directory): ``backup_tree`` of the mounted directory, file by file while
  the application runs: each file is read as it is at that moment, not one point in time for all;
* a raw block device (volumeMode Block) of an attached volume: ``backup_block`` of the device, read while
  the application runs: consistent only if the application is quiesced.

The manifest is written last by the engine: a job that died (agent restart) is taken up again by the
next POST with the same name and resumes, uploading only what is missing.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog

from storage.errors import BadRequest, NotFound, StowageError

if TYPE_CHECKING:
    from storage.agent.agent import NodeAgent

log = structlog.get_logger(__name__)

Obj = dict[str, Any]
JobState = Literal["Running", "Succeeded", "Failed"]
TEMP_SNAPSHOT_PREFIX = "bk-"


@dataclass
class BackupJob:
    name: str
    kind: str  # "block" | "tree"
    source: str  # what is read: a pool volume, a device, a directory
    consistency: str
    state: JobState = "Running"
    started: float = field(default_factory=time.time)
    created: float = 0.0  # when the point-in-time copy was cut (pool volumes), else when reading began
    size: int = 0
    bytes_uploaded: int = 0
    message: str = ""

    def to_dict(self) -> Obj:
        return {"name": self.name, "kind": self.kind, "source": self.source, "consistency": self.consistency,
                "state": self.state, "startTime": self.started, "creationTime": self.created,
                "sizeBytes": self.size, "bytesUploaded": self.bytes_uploaded, "message": self.message}


def _pod_path_of(agent: NodeAgent, pv_name: str) -> tuple[str, str] | None:
    """("tree", a pod's mounted volume directory) or ("block", the device bound into a pod) of a PV that
    has no global mount (network filesystems are mounted per pod)."""
    from storage.system import mounts

    for uid, pod_volumes in agent.resolved_pod_volumes():
        for req in pod_volumes.volumes:
            if req.pv_name != pv_name:
                continue
            plugin = agent.volumes.registry.find(req.plugin_source)
            path = agent.volumes.volume_path(uid, plugin, req.name, req.mode)
            if req.mode == "Block" and path.exists():
                top = mounts.top_mount(path)
                return ("block", top.source) if top is not None and top.source.startswith("/dev/") else None
            if mounts.is_mount_point(path):
                return "tree", str(path)
    return None


class BackupJobs:
    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        self._lock = threading.Lock()
        self._jobs: dict[str, BackupJob] = {}

    def get(self, name: str) -> BackupJob:
        with self._lock:
            job = self._jobs.get(name)
        if job is None:
            raise NotFound(f'backup "{name}" not found on node {self.agent.node}', name=name)
        return job

    def start(self, body: Obj) -> BackupJob:
        from storage.system import backupstore

        name = str(body.get("name") or "")
        if not name:
            raise BadRequest("name: Required value")
        store_url = str(body.get("store") or "")
        if not store_url:
            raise BadRequest("store: Required value")
        credentials = {str(k): str(v) for k, v in (body.get("credentials") or {}).items()}
        labels = {str(k): str(v) for k, v in (body.get("labels") or {}).items()}
        with self._lock:
            job = self._jobs.get(name)
            if job is not None and job.state != "Failed":
                return job  # idempotent by name: the running or finished job
        store = backupstore.open_store(store_url, credentials)
        job, run = self._plan(name, body, store, labels)
        with self._lock:
            current = self._jobs.get(name)
            if current is not None and current.state != "Failed":
                return current
            self._jobs[name] = job
        threading.Thread(target=self._run, args=(job, run), name=f"backup-{name}", daemon=True).start()
        return job

    def _plan(self, name: str, body: Obj, store: Any, labels: dict[str, str]) -> tuple[BackupJob, Callable[[BackupJob], None]]:
        from storage.system import backupstore

        volume = body.get("volume")
        pv = body.get("pv")
        if volume:
            from storage.agent.server import pool_holding

            pool = pool_holding(self.agent, body.get("pool"), volume=str(volume))
            vol = pool.get(str(volume))
            if vol is None or vol.state != "Ready":
                raise NotFound(f"pool volume {volume} not found on node {self.agent.node}", name=str(volume))
            job = BackupJob(name, "block", f"pool volume {volume}", "crash-consistent (frozen filesystem, copied)",
                            size=vol.size)

            def run_pool(job: BackupJob) -> None:
                snap_name = f"{TEMP_SNAPSHOT_PREFIX}{name}"[:253]
                snap = pool.snapshot(snap_name, str(volume))
                job.created = snap.created
                try:
                    _manifest, stats = backupstore.backup_block(
                        store, pool.snapshot_image_path(snap_name), backup_id=name,
                        labels={**labels, "kind": "pool-volume", "volume": str(volume),
                                "fsType": vol.fs_type or "", "volumeMode": vol.mode,
                                "created": repr(snap.created)},
                        progress=None)
                    job.bytes_uploaded = stats.bytes_uploaded
                finally:
                    pool.delete_snapshot(snap_name)
            return job, run_pool
        if isinstance(pv, dict):
            pv_name = str((pv.get("metadata") or {}).get("name") or "")
            if not pv_name:
                raise BadRequest("pv.metadata.name: Required value")
            found = self.agent.volumes.global_mount_of(pv_name)
            kind, path = ("tree", found[0]) if found else (_pod_path_of(self.agent, pv_name) or ("", ""))
            if not kind:
                raise NotFound(f"volume {pv_name} is not in use on node {self.agent.node}: a backup reads it "
                               "where a pod has it mounted", name=pv_name)
            consistency = ("file by file while in use (each file as read)" if kind == "tree"
                           else "raw device read while in use (consistent only if the application is quiesced)")
            job = BackupJob(name, kind, path, consistency)

            def run_other(job: BackupJob) -> None:
                job.created = time.time()
                engine = backupstore.backup_tree if kind == "tree" else backupstore.backup_block
                manifest, stats = engine(store, Path(path), backup_id=name,
                                         labels={**labels, "kind": kind, "pv": pv_name, "created": repr(job.created)},
                                         progress=None)
                job.size = manifest.size
                job.bytes_uploaded = stats.bytes_uploaded
            return job, run_other
        raise BadRequest("volume: Required value: name a pool volume (volume) or a PersistentVolume (pv)")

    def _run(self, job: BackupJob, run: Callable[[BackupJob], None]) -> None:
        try:
            run(job)
            job.state = "Succeeded"
            log.info("backup.done", name=job.name, kind=job.kind, uploaded=job.bytes_uploaded)
        except Exception as exc:  # noqa: BLE001  (recorded on the job; the caller sees it and starts it again)
            job.message = exc.message if isinstance(exc, StowageError) else f"{type(exc).__name__}: {exc}"
            job.state = "Failed"
            log.warning("backup.failed", name=job.name, error=job.message)
