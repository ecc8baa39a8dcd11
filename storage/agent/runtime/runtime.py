"""PodRuntime: the node agent's interface to running pods as isolated host processes."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import structlog

from storage.system.fswatch import WRITES, DirWatch, EntryWatcher

from .deadline import StopDeadline
from .envvars import EnvSources
from .hosts import HostEntries
from .ipam import CLAIMS_DIR, make_allocator
from .logfile import split_line, stamp_of
from .oci import uses_user_namespace
from .orphans import reap_orphans
from .pod import ContainersNotStopped, PodWorker, Settings, remove_unmounted
from .runc import CONTAINER_LOG_MAX_BYTES, CONTAINER_LOG_MAX_FILES, Runc
from .userns import UsernsAllocator, open_userns

log = structlog.get_logger(__name__)

# How late a log follower may notice that its container ended or that its client went away; new
# lines wake it at once (inotify).
LOG_FOLLOW_BACKSTOP = 0.25


class PodRuntime:
    """Runs pods given as Kubernetes v1 Pod dicts.

    ``sync_pod`` is level-triggered and idempotent; the runtime's own threads
    restart containers and run probes between calls and call
    ``on_status_change(uid)`` whenever a pod's status changes.
    """

    def __init__(
        self,
        data_dir: Path,
        node_name: str,
        *,
        host_ip: str = "127.0.0.1",
        ip_range: str = "127.1.0.0/16",
        pod_interface: str | None = None,
        on_status_change: Callable[[str], None] | None = None,
        backoff_base: float = 10.0,
        backoff_max: float = 300.0,
        runc_binary: str = "runc",
        scratch_size: str = "256m",
        container_log_max_bytes: int = CONTAINER_LOG_MAX_BYTES,
        container_log_max_files: int = CONTAINER_LOG_MAX_FILES,
        run_dir: Path = Path("/run/stowage"),
        hidden_paths: tuple[str, ...] = (),
        user_namespaces: bool = True,
        host_path_prefixes: tuple[str, ...] | list[str] = (),
        on_event: Callable[[dict[str, Any], str, str, str, str], None] | None = None,
    ) -> None:
        """``hidden_paths``: host paths no container may see besides the data dir (the control
        plane's data dir, pools); ``user_namespaces=False`` runs every pod with the host's users."""
        self.data_dir = Path(data_dir)
        self.pods_dir = self.data_dir / "pods"
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        run_dir = Path(run_dir)
        for path in (run_dir, run_dir / "containers"):
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o711)  # walkable by a pod's unprivileged root, not listable
        reap_orphans(run_dir)  # left by agents that were killed and whose data dirs are gone
        self.userns = UsernsAllocator(self.pods_dir, run_dir / "userns") if user_namespaces else None
        self.settings = Settings(runc=Runc(self.data_dir / "runc", runc_binary), data_dir=self.data_dir,
                                 host_ip=host_ip, node_name=node_name, backoff_base=backoff_base,
                                 backoff_max=backoff_max, scratch_size=scratch_size, run_dir=run_dir,
                                 log_max_bytes=container_log_max_bytes, log_max_files=container_log_max_files,
                                 userns=self.userns, hidden=tuple(hidden_paths),
                                 host_path_prefixes=[Path(os.path.realpath(p)) for p in host_path_prefixes],
                                 on_event=on_event, exits=EntryWatcher("agent-container-exits"))
        self.ips = make_allocator(self.pods_dir, ip_range, pod_interface, claims_dir=run_dir / CLAIMS_DIR)
        self.on_status_change = on_status_change or (lambda uid: None)
        self._lock = threading.Lock()
        self._pods: dict[str, PodWorker] = {}
        # PF93: user namespaces (range base, descriptor) made while their pods waited for volumes.
        self._prepared: dict[str, tuple[int, int]] = {}
        self._adopt()

    def _notify(self, uid: str) -> None:
        try:
            self.on_status_change(uid)
        except Exception:  # a failing listener must not stop the pod's worker
            log.exception("on_status_change failed", uid=uid)

    def _adopt(self) -> None:
        for pod_dir in sorted(self.pods_dir.iterdir()):
            pod_file = pod_dir / "runtime" / "pod.json"
            if not pod_file.exists():
                continue
            uid = pod_dir.name
            try:
                pod = json.loads(pod_file.read_text())
                worker = PodWorker(self.settings, uid, pod, self.ips.allocate(uid), self._notify)
                worker.load()
            except (OSError, ValueError, KeyError):
                # One damaged pod directory must not keep the others from being adopted.
                log.exception("cannot adopt pod", uid=uid)
                continue
            self._pods[uid] = worker
            worker.start()

    # ---- the agent's calls -------------------------------------------------------------
    def sync_pod(self, pod: dict[str, Any], volumes: dict[str, str], env_sources: EnvSources,
                 hosts: HostEntries | None = None) -> dict[str, Any]:
        """Start what is missing and return the pod's current status (``status`` of a v1 Pod)."""
        uid = (pod.get("metadata") or {}).get("uid")
        if not uid:
            raise ValueError("metadata.uid: Required value: the runtime names pod directories by uid")
        if not (pod.get("spec") or {}).get("containers"):
            raise ValueError("spec.containers: Required value: a pod needs at least one container")
        with self._lock:
            worker = self._pods.get(uid)
            new = worker is None
            if worker is None:
                worker = PodWorker(self.settings, uid, pod, self.ips.allocate(uid), self._notify)
                worker.take_userns(self._prepared.pop(uid, None))
                self._pods[uid] = worker
        status = worker.update(pod, volumes, env_sources, hosts or [])
        if new:
            worker.start()
        return status

    def prepare(self, pod: dict[str, Any]) -> None:
        """PF93: make what a pod's first container start needs and can have before its volumes are
        ready -- its user namespace (a range of host ids and a helper process, about 2 ms) -- while it
        waits for them, so that the start, once they are mounted, does not wait for it. Removing the pod
        gives both back, as for a pod that started."""
        uid = (pod.get("metadata") or {}).get("uid")
        if not uid or self.userns is None or not uses_user_namespace(pod):
            return
        with self._lock:
            if uid in self._pods or uid in self._prepared:
                return
        base = self.userns.allocate(uid)
        fd = open_userns(base)
        with self._lock:
            if uid in self._pods or uid in self._prepared:  # started, or prepared, meanwhile
                os.close(fd)
                return
            self._prepared[uid] = (base, fd)

    def _drop_prepared(self, uid: str) -> None:
        with self._lock:
            prepared = self._prepared.pop(uid, None)
        if prepared is not None:
            os.close(prepared[1])

    def pod_status(self, uid: str) -> dict[str, Any] | None:
        worker = self._pods.get(uid)
        if worker is None:
            return None
        with worker.lock:
            return worker.status()

    def pod_ip(self, uid: str) -> str | None:
        return self.ips.get(uid)

    def kill_pod(self, uid: str, grace_seconds: float | StopDeadline | None = None) -> dict[str, Any] | None:
        """Stop every container (SIGTERM, SIGKILL after the grace period) and return the final status.

        ``grace_seconds``: None for the pod's own ``terminationGracePeriodSeconds``; a ``StopDeadline``
        lets the caller cut the period short while the containers stop. Logs stay until ``remove_pod``;
        an address assigned on an interface (MH2) is taken off it. ``ContainersNotStopped`` when a
        container outlived its SIGKILLs: the pod stays this runtime's, for a later call to try again.
        """
        with self._lock:
            worker = self._pods.pop(uid, None)
        if worker is None:
            return None
        grace = worker._grace() if grace_seconds is None else grace_seconds
        try:
            worker.kill_all(grace if isinstance(grace, StopDeadline) else float(grace))
        except ContainersNotStopped:
            with self._lock:  # still this runtime's pod: the next stop tries again
                self._pods.setdefault(uid, worker)
            raise
        # Nothing listens on the pod's address any more: off the host's interface now (the volume
        # teardown that follows removes the pod directory, and with it the record of the address).
        self.ips.release(uid)
        for name in ("pod.json", "state.json", "volumes.json", "hosts.json"):
            (worker.state_dir / name).unlink(missing_ok=True)
        log.info("pod killed", uid=uid)
        return worker.last_status

    def remove_pod(self, uid: str) -> None:
        """Forget a killed pod: its logs, hosts file and address (the volume manager owns the rest)."""
        if uid in self._pods:
            raise RuntimeError(f"pod {uid} is still running; kill it first")
        pod_dir = self.pods_dir / uid
        self._drop_prepared(uid)
        if self.userns is not None:
            self.userns.release(uid)  # the range goes back to the pool for the next pod
        address = self.ips.get(uid)
        for sub in ("containers", "logs", "runtime"):
            remove_unmounted(pod_dir / sub)
        self.ips.forget(uid, address)  # its record went with runtime/: the address may go to another pod

    def running_pods(self) -> set[str]:
        """Uids of every pod this runtime manages, including those adopted after a restart."""
        with self._lock:
            return set(self._pods)

    def prepared_pods(self) -> set[str]:
        """Uids of pods prepared (PF93) and not started: a pod gone before its start still holds them."""
        with self._lock:
            return set(self._prepared)

    def update_hosts(self, uid: str, entries: HostEntries) -> bool:
        """Whether the pod's hosts file changed."""
        worker = self._pods.get(uid)
        if worker is None:
            raise KeyError(f"pod {uid} is not running here")
        return worker.set_hosts(entries)

    def close(self) -> None:
        """Stop the runtime's threads; containers keep running and are adopted by the next runtime."""
        with self._lock:
            workers = list(self._pods.values())
            self._pods.clear()
            prepared = list(self._prepared.values())
            self._prepared.clear()
        for _base, fd in prepared:
            os.close(fd)
        for worker in workers:
            worker.stop_thread()
            with worker.lock:
                for cs in worker.containers.values():
                    if cs.instance is not None:
                        cs.instance.stop.set()
        if self.settings.exits is not None:
            self.settings.exits.close()

    # ---- logs ----------------------------------------------------------------------------
    def _log_files(self, uid: str, container: str) -> list[Path]:
        directory = self.pods_dir / uid / "logs" / container
        if not directory.is_dir():
            return []
        return sorted((p for p in directory.glob("*.log") if p.stem.isdigit()), key=lambda p: int(p.stem))

    def logs(self, uid: str, container: str, *, follow: bool = False, tail: int | None = None,
             previous: bool = False, since: float | None = None, timestamps: bool = False,
             stop: threading.Event | None = None) -> Iterator[str]:
        """Lines (without newline) of the container's current or previous run; ``follow`` waits
        for more until that run ends (or ``stop`` is set); ``since`` (epoch seconds) drops older
        lines; ``timestamps`` keeps each line's RFC 3339 stamp in front of it."""
        files = self._log_files(uid, container)
        index = len(files) - (2 if previous else 1)
        if index < 0:
            what = "previous terminated" if previous else "any"
            raise FileNotFoundError(f'container "{container}" in pod {uid} has no {what} logs')
        path = files[index]
        cutoff = stamp_of(since) if since is not None else None

        def shown(line: bytes) -> str | None:
            stamp, text = split_line(line)
            if cutoff is not None and stamp is not None and stamp < cutoff:
                return None
            if timestamps and stamp is not None:
                text = stamp + b" " + text
            return text.decode("utf-8", "replace")

        def lines() -> Iterator[str]:
            for line in self._read(uid, container, path, follow and not previous, tail, cutoff, stop):
                text = shown(line)
                if text is not None:
                    yield text
        return lines()

    def container_process(self, uid: str, container: str) -> tuple[str, int, Path | None] | None:
        """(runc id, run number, stdin FIFO or None) of the container's running instance."""
        worker = self._pods.get(uid)
        if worker is None:
            return None
        with worker.lock:
            cs = worker.containers.get(container)
            if cs is None or cs.instance is None:
                return None
            fifo = worker._container_dir(container) / "stdin"
            return cs.instance.container_id, cs.instance.restart, fifo if fifo.exists() else None

    def _read(self, uid: str, container: str, path: Path, follow: bool, tail: int | None,
              cutoff: bytes | None = None, stop: threading.Event | None = None) -> Iterator[bytes]:
        restart = int(path.stem)
        f = open(path, "rb")
        pending: list[Any] = []  # log files opened after a rotation, read once ``f`` is done
        try:
            lines = f.read().split(b"\n")
            partial = lines.pop()
            if cutoff is not None:
                lines = [line for line in lines if (split_line(line)[0] or cutoff) >= cutoff]
            if tail is not None:
                lines = lines[-tail:] if tail > 0 else []
            yield from lines
            if not follow:
                if partial:
                    yield partial
                return
            with DirWatch() as watch:
                # Woken by the container's writes (and by the log's last close when it ends), not by
                # looking again every 0.1 s; watched before the next read, so no write is waited past.
                watch.add(path.parent, WRITES)
                while stop is None or not stop.is_set():
                    chunk = f.read()
                    if chunk:
                        parts = (partial + chunk).split(b"\n")
                        partial = parts.pop()
                        yield from parts
                        continue
                    newer = _rotated(f, path)
                    if newer is not None:
                        # SV12: the shim moved this file aside and began a new one; the old one gets no
                        # write after the move, so what it holds now is all of it. A reader that fell a
                        # whole file behind finds the one it missed at <log>.1 (more than that is gone).
                        missed = _rotated(f, path.with_name(path.name + ".1"))
                        if missed is not None and _same_file(missed, newer):
                            missed.close()  # the new file itself was moved aside since: read from it as usual
                            missed = None
                        pending = [following for following in (missed, newer) if following is not None]
                        while pending:
                            parts = (partial + f.read()).split(b"\n")
                            partial = parts.pop()
                            yield from parts
                            f.close()
                            f = pending.pop(0)
                        continue
                    worker = self._pods.get(uid)
                    if worker is None or not worker.is_running(container, restart):
                        rest = partial + f.read()
                        for line in rest.split(b"\n"):
                            if line:
                                yield line
                        return
                    # The backstop: the worker's own notice of the end, and ``stop``, wake no watch.
                    watch.wait(LOG_FOLLOW_BACKSTOP)
        finally:
            for opened in [f, *pending]:
                opened.close()


def _rotated(f: Any, path: Path) -> Any:
    """The log file now at ``path``, opened, when it is not the one ``f`` reads (rotated); else None."""
    try:
        if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
            return None
        return open(path, "rb")
    except FileNotFoundError:  # between the move and the new file's creation
        return None


def _same_file(a: Any, b: Any) -> bool:
    return bool(os.fstat(a.fileno()).st_ino == os.fstat(b.fileno()).st_ino)
