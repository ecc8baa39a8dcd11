"""One pod on this node: its containers' lifecycle, restarts, probes and status.

A ``PodWorker`` thread watches the containers (exit files written by the shim),
restarts them per restartPolicy with back-off, acts on probe results and calls
``on_change`` whenever the pod's status changes. Everything it needs to resume
after an agent restart is persisted in the pod directory.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson
import psutil
import structlog

from storage.api.timestamps import from_epoch as iso
from storage.api.timestamps import now as now_iso
from storage.errors import TemporaryError
from storage.system.cgroups import remove_child_groups
from storage.system.durable import write_atomically
from storage.system.fswatch import DirWatch, EntryWatcher
from storage.system.mounts import mounts_under

from . import hosts as hostsfile
from . import memcg
from .deadline import StopDeadline
from .envvars import EnvContext, EnvError, EnvSources, command_line, resolve_env
from .hooks import handler_kind, handler_of, run_handler
from .logfile import split_line
from .oci import add_block_devices, block_device_sources, build_config, cgroup_limits, join_target, uses_user_namespace
from .probes import ProbeWorker, make_probe
from .sidecars import (any_regular_started, incomplete_inits, is_sidecar, next_sidecar_to_stop, regular_containers_done,
                       stop_order)
from .runc import (CONTAINER_LOG_MAX_BYTES, CONTAINER_LOG_MAX_FILES, ERROR_LINE, HOST_PRIVATE, HOST_SECRETS, Runc,
                   make_device_nodes, mount_rootfs, release_rootfs, unmount_rootfs)
from .subpaths import release_staged, stage_volume_mounts
from .orphans import OWNER_FILE
from .userns import UsernsAllocator, open_userns, stage_bind

log = structlog.get_logger(__name__)


IDLE_AFTER = 5.0  # seconds without a status change before a pod is polled slowly
# PF75: a container's start and stop are noticed through inotify; these only bound how late what sends
# no event is seen (a shim that died without its exit file; a grace period cut short).
START_LOOK_BACKSTOP = 0.1
STOP_LOOK_INTERVAL = 0.05
# The kubelet keeps 10 KiB of a probe's output; an event's message gets its start.
PROBE_EVENT_OUTPUT = 1024
IDLE_POLL_INTERVAL = 1.0
# PF95: how long a start's status waits for a readiness probe's first result.
FIRST_READINESS_WAIT = 0.25
# CT2: the kubelet's limits on a termination message (pkg/kubelet/container): the last 4 KiB of the file a
# container wrote; with FallbackToLogsOnError, the first 2 KiB of its log's last 80 lines; and 12 KiB per pod,
# split evenly over its containers and init containers.
TERMINATION_MESSAGE_MAX = 4096
TERMINATION_LOG_MAX = 2048
TERMINATION_LOG_LINES = 80
POD_TERMINATION_MESSAGES_MAX = 12 * 1024
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"

# SP1: a pod with ``shareProcessNamespace`` gets a sandbox, what the pause container is on Kubernetes: the first
# process of the pod's one process namespace, which every container then joins (with its IPC and UTS
# namespaces, as Kubernetes shares those per pod). A container's end or restart then leaves the others
# running, where the namespace of a container's own first process would die with it. A dot is not allowed in
# a container's name (a DNS label), so the sandbox's name is never one of the pod's own.
SANDBOX = "stowage.sandbox"
SANDBOX_SPEC: dict[str, Any] = {
    "name": SANDBOX, "image": "",
    # As PID 1 it also reaps the processes the pod's containers leave behind (the shell's wait takes any child).
    "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 86400 & wait $!; done"],
    # pause's own user; nothing it needs calls for more.
    "securityContext": {"runAsUser": 65535, "runAsGroup": 65535, "runAsNonRoot": True, "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
}


def shares_process_namespace(pod: dict[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return spec.get("shareProcessNamespace") is True and not spec.get("hostPID")


@dataclass
class Settings:
    """Runtime-wide knobs; the back-off base is small in tests."""

    runc: Runc
    data_dir: Path
    host_ip: str
    node_name: str
    backoff_base: float = 10.0
    backoff_max: float = 300.0
    backoff_reset: float = 600.0
    scratch_size: str = "256m"
    log_max_bytes: int = CONTAINER_LOG_MAX_BYTES  # SV12: each container log rotates past this (0: never)
    log_max_files: int = CONTAINER_LOG_MAX_FILES  # SV12: the files of a container's log kept, the current one included
    poll_interval: float = 0.1
    # Container roots and staged volumes: outside the data dir, whose modes keep a pod's
    # unprivileged root from walking to them (runc mounts them from inside the user namespace).
    run_dir: Path = Path("/run/stowage")
    userns: UsernsAllocator | None = None  # None: pods run with the host's users
    hidden: tuple[str, ...] = ()  # host paths no container may see (data dirs, pools)
    host_path_prefixes: list[Path] = field(default_factory=list)  # resolved; hostPath sources are re-checked beneath them
    # Records an Event on a pod: (pod, type, reason, message). None: events are not recorded.
    # (pod, type, reason, message, the container's fieldPath or "")
    on_event: Callable[[dict[str, Any], str, str, str, str], None] | None = None
    # PF77: wakes a pod's worker when one of its containers ends. None: ends are seen at the next look.
    exits: EntryWatcher | None = None


class ContainersNotStopped(TemporaryError):
    """A pod's stop left containers whose processes outlived every SIGKILL (asleep in the kernel, as on a
    hung mount): the pod is not stopped, and its volumes must stay until they end (G1a)."""


@dataclass
class Instance:
    """One run of a container (one runc container, one log file)."""

    restart: int
    container_id: str
    started_at: str
    started_wall: float
    shim_pid: int
    shim_created: float
    proc: subprocess.Popen[bytes] | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    started_gate: threading.Event = field(default_factory=threading.Event)
    probes: dict[str, ProbeWorker] = field(default_factory=dict)
    kill_reason: str = ""
    killing: bool = False
    never_ran: bool = False
    exit_watched: bool = False  # its exit file wakes the worker (PF77), so no quick looks are needed (PF84)
    hooking: bool = False  # LH1: its postStart hook runs; until it ends the container counts as being created
    hook_failure: str = ""  # LH5: the kubelet's message for its failed postStart hook

    def to_json(self) -> dict[str, Any]:
        return {"restart": self.restart, "containerID": self.container_id, "startedAt": self.started_at,
                "startedWall": self.started_wall, "shimPid": self.shim_pid, "shimCreated": self.shim_created}


@dataclass
class ContainerState:
    name: str
    init: bool
    restart_count: int = 0
    instance: Instance | None = None
    last_terminated: dict[str, Any] | None = None
    final: bool = False  # terminated and will not run again
    succeeded: bool = False  # init containers: completed with exit 0
    sidecar: bool = False  # SD1: an init container with restartPolicy Always
    started_once: bool = False  # SD2: a sidecar that has started no longer holds up the init containers after it
    next_start: float = 0.0  # wall clock
    backoff_exp: int = 0
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"restartCount": self.restart_count, "lastTerminated": self.last_terminated, "final": self.final,
                "succeeded": self.succeeded, "startedOnce": self.started_once,
                "nextStart": self.next_start, "backoffExp": self.backoff_exp,
                "instance": self.instance.to_json() if self.instance else None}


def container_field_path(spec_list: str, name: str) -> str:
    """A container's place in the pod's spec (``spec.containers{main}``), as the kubelet's events name it."""
    return f"spec.{spec_list}{{{name}}}"


def _field_path(cs: ContainerState) -> str:
    return container_field_path("initContainers" if cs.init else "containers", cs.name)


class PodWorker:
    def __init__(self, settings: Settings, uid: str, pod: dict[str, Any], pod_ip: str,
                 on_change: Callable[[str], None]) -> None:
        self.s = settings
        self.uid = uid
        self.pod = pod
        self.pod_ip = pod_ip
        self.on_change = on_change
        self.volumes: dict[str, str] = {}
        self.hosts: hostsfile.HostEntries = []
        self.env_sources: EnvSources | None = None
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.dir = settings.data_dir / "pods" / uid
        self.state_dir = self.dir / "runtime"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.containers: dict[str, ContainerState] = {}
        self.conditions: dict[str, tuple[str, str]] = {}
        # A pod the node acknowledged before (its records lost with `stowage down`) keeps the start time
        # the API server holds, as the kubelet keeps it; only a pod new to the node gets now.
        self.start_time = str((pod.get("status") or {}).get("startTime") or now_iso())
        self._ensure_container_states()
        self._carry_counts(pod.get("status") or {})
        self.last_status: dict[str, Any] | None = None
        self._userns: tuple[int, int] | None = None  # (base, namespace fd) for idmapped mounts
        self._warned_not_idmapped: set[str] = set()  # volumes the pod was told of (once each)
        self._written: dict[str, str] = {}  # part file -> the text this worker last wrote there
        # SD4: the one grace period the sidecars of a pod whose other containers are done stop within.
        self._sidecars_deadline: StopDeadline | None = None
        self.thread = threading.Thread(target=self._loop, name=f"pod-{uid[:8]}", daemon=True)

    # ---- persistence -------------------------------------------------------------------
    def save(self) -> None:
        """Everything: after a new spec, its volumes and hosts (``update``)."""
        for name, value in (("pod.json", self.pod), ("volumes.json", self.volumes), ("hosts.json", self.hosts)):
            self._save_part(name, value)
        self.save_state()

    def save_state(self) -> None:
        """PF88: what the worker's own steps change (containers, conditions). The spec, the volumes and the
        hosts change only in ``update`` and ``set_hosts``, which save theirs; the steps do not rewrite them."""
        self._save_part("state.json", {"startTime": self.start_time, "conditions": self.conditions,
                                       "containers": {n: c.to_json() for n, c in self.containers.items()}})

    def _save_part(self, name: str, value: Any) -> None:
        """PF88: a part whose text is what this worker last wrote is not written again (a resync of an
        unchanged pod rewrote all four files)."""
        text = json.dumps(value)
        if self._written.get(name) == text:
            return
        write_atomically(self.state_dir / name, text)
        self._written[name] = text

    def _carry_counts(self, api_status: dict[str, Any]) -> None:
        """A5f: containers of a pod the node ran before, whose records went with `stowage down`, keep
        the restart counts the API server holds, as the kubelet keeps them when its runtime lost the
        containers. One that was running is presumed ended and counts as restarted when it starts again,
        with the kubelet's ``ContainerStatusUnknown`` as its last state. A new pod has no statuses: nothing
        changes; an adopted pod's own records (``load``) replace all of this."""
        for old in (api_status.get("initContainerStatuses") or []) + (api_status.get("containerStatuses") or []):
            cs = self.containers.get(str(old.get("name") or ""))
            if cs is None:
                continue
            cs.restart_count = int(old.get("restartCount") or 0)
            state = old.get("state") or {}
            if "running" in state:
                cs.last_terminated = {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                      "message": "The container could not be located when the pod was terminated",
                                      "startedAt": (state["running"] or {}).get("startedAt"), "finishedAt": now_iso(),
                                      "containerID": old.get("containerID", "")}
            else:
                cs.last_terminated = (state.get("terminated") or (old.get("lastState") or {}).get("terminated")
                                      or None)

    def load(self) -> None:
        """Adopt what a previous agent left: running containers keep running."""
        self.volumes = json.loads((self.state_dir / "volumes.json").read_text())
        self.hosts = [(ip, list(names)) for ip, names in json.loads((self.state_dir / "hosts.json").read_text())]
        state = json.loads((self.state_dir / "state.json").read_text())
        self.start_time = state.get("startTime", self.start_time)
        self.conditions = {k: (v[0], v[1]) for k, v in (state.get("conditions") or {}).items()}
        self._ensure_container_states()
        for name, saved in (state.get("containers") or {}).items():
            cs = self.containers.get(name)
            if cs is None:
                continue
            cs.restart_count = saved["restartCount"]
            cs.last_terminated = saved["lastTerminated"]
            cs.final, cs.succeeded = saved["final"], saved["succeeded"]
            cs.started_once = bool(saved.get("startedOnce"))  # absent in what an older agent saved
            cs.next_start, cs.backoff_exp = saved["nextStart"], saved["backoffExp"]
            inst = saved.get("instance")
            if inst:
                cs.instance = Instance(restart=inst["restart"], container_id=inst["containerID"],
                                       started_at=inst["startedAt"], started_wall=inst["startedWall"],
                                       shim_pid=inst["shimPid"], shim_created=inst["shimCreated"])
                cs.instance.exit_watched = self._watch_exit(self._container_dir(name))
                self._start_probes(cs, self._container_spec(name), adopted=True)
        log.info("pod adopted", uid=self.uid, running=[n for n, c in self.containers.items() if c.instance])

    # ---- spec helpers ------------------------------------------------------------------
    def _specs(self, key: str) -> list[dict[str, Any]]:
        return list((self.pod.get("spec") or {}).get(key) or [])

    def _container_spec(self, name: str) -> dict[str, Any]:
        if name == SANDBOX:
            return SANDBOX_SPEC
        for c in self._specs("initContainers") + self._specs("containers") + self._specs("ephemeralContainers"):
            if c.get("name") == name:
                return c
        return {}

    def _ensure_container_states(self) -> None:
        if shares_process_namespace(self.pod):
            self.containers.setdefault(SANDBOX, ContainerState(SANDBOX, init=False))
        for c in self._specs("initContainers"):
            self.containers.setdefault(c["name"], ContainerState(c["name"], init=True, sidecar=is_sidecar(c)))
        for c in self._specs("containers") + self._specs("ephemeralContainers"):
            self.containers.setdefault(c["name"], ContainerState(c["name"], init=False))

    def _policy(self) -> str:
        return str((self.pod.get("spec") or {}).get("restartPolicy") or "Always")

    def _container_dir(self, name: str) -> Path:
        return self.dir / "containers" / name

    def _bundle_dir(self, name: str) -> Path:
        key = f"{self.s.data_dir.resolve()}\0{self.uid}\0{name}".encode()
        return self.s.run_dir / "containers" / hashlib.sha256(key).hexdigest()[:24]

    def _warn_not_idmapped(self, container: dict[str, Any], staged_mounts: list[str | None],
                           sources: list[str]) -> None:
        """A Warning event on the pod for volumes whose filesystem cannot be idmapped: their files show
        with host ids (nobody) inside the pod, and a pod cannot change what another pod wrote; without
        the event only the node's log would say why."""
        names = [n for n in _volume_names(self.volumes, container, staged_mounts, sources)
                 if n not in self._warned_not_idmapped]
        if not names or self.s.on_event is None:
            return
        self._warned_not_idmapped.update(names)
        listed = ", ".join(f'"{n}"' for n in names)
        self._pod_event("Warning", "VolumeNotIdmapped",
                        f"volume {listed} cannot be idmapped into the pod's user namespace (its filesystem, "
                        "such as FUSE or NFS, does not support it): its files keep their host owners, so the "
                        "pod may not change files another pod wrote; set hostUsers: true to share them")

    def _hidden_paths(self) -> list[str]:
        paths = [*self.s.hidden, str(self.s.data_dir), str(self.s.run_dir)]
        return sorted({q for p in paths for q in (os.path.abspath(p), os.path.realpath(p))} | set(HOST_SECRETS)
                      | set(HOST_PRIVATE.current()))

    def _userns_fd(self) -> tuple[int, int]:
        assert self.s.userns is not None
        base = self.s.userns.allocate(self.uid)
        if self._userns is None or self._userns[0] != base:
            self.close_userns()
            self._userns = (base, open_userns(base))
        return self._userns

    def take_userns(self, prepared: tuple[int, int] | None) -> None:
        """A new worker's user namespace, made by the runtime while the pod waited (PF93); ``_userns_fd`` uses
        it if its range is still the pod's."""
        self._userns = prepared

    def close_userns(self) -> None:
        if self._userns is not None:
            os.close(self._userns[1])
            self._userns = None

    def _runc_id(self, name: str) -> str:
        return f"stowage-{self.uid}-{name}"

    # ---- public, called with or without the lock held by the runtime ----------------------
    def update(self, pod: dict[str, Any], volumes: dict[str, str], env_sources: EnvSources,
               hosts: hostsfile.HostEntries) -> dict[str, Any]:
        with self.lock:
            self.pod, self.volumes, self.env_sources = pod, dict(volumes), env_sources
            self.hosts = [(ip, list(names)) for ip, names in hosts]
            self._ensure_container_states()
            self.write_hosts()
            self._step()
            status = self.status()
            self.save()
            first = [w for cs in self.containers.values() if cs.instance is not None
                     for w in (cs.instance.probes.get("readiness"),) if w is not None and w.first_due_now()]
        self.wake.set()
        if first:
            # PF95: a container just started whose readiness probe runs now: its first result goes out with
            # the Running status, in one write instead of two (a fast exec probe takes about 25 ms; the
            # second write and its trip through the watch took longer). A slow probe holds it back no more
            # than FIRST_READINESS_WAIT.
            deadline = time.monotonic() + FIRST_READINESS_WAIT
            for worker in first:
                worker.first_done.wait(max(0.0, deadline - time.monotonic()))
            with self.lock:
                status = self.status()
        return status

    def write_hosts(self) -> None:
        hostsfile.write_in_place(self.state_dir / "etc-hosts", hostsfile.render(self.pod, self.pod_ip, self.hosts))

    def set_hosts(self, entries: hostsfile.HostEntries) -> bool:
        """PF83: only a pod whose entries changed is written, and only its hosts file and their saved
        copy: every endpoint change of a namespace asks this of every running pod on the node."""
        hosts = [(ip, list(names)) for ip, names in entries]
        with self.lock:
            if hosts == self.hosts:
                return False
            self.hosts = hosts
            self.write_hosts()
            self._save_part("hosts.json", self.hosts)
        return True

    def start(self) -> None:
        self.thread.start()

    def stop_thread(self) -> None:
        self.stopping.set()
        self.wake.set()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout=30)

    def is_running(self, name: str, restart: int) -> bool:
        with self.lock:
            cs = self.containers.get(name)
            return bool(cs and cs.instance and cs.instance.restart == restart)

    # ---- the loop ------------------------------------------------------------------------
    def _loop(self) -> None:
        last_change = time.monotonic()
        while not self.stopping.is_set():
            try:
                with self.lock:
                    if self.stopping.is_set():
                        break
                    self._step()
                    status = self.status()
                    changed = status != self.last_status
                    if changed:
                        self.last_status = status
                        self.save_state()
                if changed:
                    last_change = time.monotonic()
                    self.on_change(self.uid)
            except Exception:  # the worker must survive one bad step and try again
                log.exception("pod worker step failed", uid=self.uid)
            self.wake.wait(self._poll_interval(last_change))
            self.wake.clear()

    def _poll_interval(self, last_change: float) -> float:
        """A settled pod is looked at about once a second (the kubelet's relist period), or when a back-off
        ends: hundreds of pods polling ten times a second would keep the agent busy doing nothing. A pod
        that changed in the last seconds is looked at quickly only while one of its running containers
        has no exit watch (PF84): every other change wakes the worker itself (an exit file, a probe's
        result, a stop, a new spec). In a 500-pod burst those quick looks were a fifth of the agent's CPU."""
        with self.lock:
            unwatched = any(cs.instance is not None and not cs.instance.exit_watched for cs in self.containers.values())
            starts = [cs.next_start for cs in self.containers.values() if cs.instance is None and not cs.final]
        if unwatched and time.monotonic() - last_change < IDLE_AFTER:
            return self.s.poll_interval
        interval = max(self.s.poll_interval, IDLE_POLL_INTERVAL)
        if starts:
            interval = min(interval, max(self.s.poll_interval, min(starts) - time.time()))
        return interval

    def _step(self) -> None:
        policy = self._policy()
        if shares_process_namespace(self.pod):
            sandbox = self.containers[SANDBOX]
            if self.status()["phase"] in ("Succeeded", "Failed"):
                # SP1: nothing will run in a finished pod's namespace again; the kubelet stops its sandbox too.
                if sandbox.instance is not None:
                    self._stop_instance(sandbox, sandbox.instance, 1.0)
                    self._observe(sandbox, SANDBOX_SPEC, "Never")
                return
            self._observe(sandbox, SANDBOX_SPEC, "Always")
            if sandbox.instance is None:
                self._maybe_start(sandbox, SANDBOX_SPEC)
            if sandbox.instance is None:
                return  # SP1: nothing of the pod runs outside its process namespace
        done = self._regular_containers_done(policy)
        if done:
            self._stop_sidecars()
        for spec in self._specs("initContainers"):
            cs = self.containers[spec["name"]]
            if cs.sidecar:
                if done:
                    continue  # SD4: stopping, never started again
                # SD3: restarted whenever it ends, whatever the pod's restartPolicy (with the back-off).
                self._observe(cs, spec, "Always")
                if not cs.final and cs.instance is None:
                    self._maybe_start(cs, spec)
                if cs.instance is not None and cs.instance.started_gate.is_set():
                    cs.started_once = True
                if cs.started_once:
                    continue  # SD2: started, it runs on beside the containers after it
                return
            if cs.succeeded:
                continue
            self._observe(cs, spec, "OnFailure" if policy == "Always" else policy)
            if cs.succeeded:
                continue
            if not cs.final and cs.instance is None:
                self._maybe_start(cs, spec)
            return  # init containers run one at a time, in order
        for spec in self._specs("containers"):
            cs = self.containers[spec["name"]]
            self._observe(cs, spec, policy)
            if not cs.final and cs.instance is None:
                self._maybe_start(cs, spec)
            if cs.instance is not None and cs.instance.hooking:
                return  # LH1: the kubelet starts the containers after this one once its postStart hook is done
        # EC1: an ephemeral container runs once (never restarted), after the pod's init containers.
        for spec in self._specs("ephemeralContainers"):
            cs = self.containers[spec["name"]]
            self._observe(cs, spec, "Never")
            if not cs.final and cs.instance is None:
                self._maybe_start(cs, spec)

    def _regular_containers_done(self, policy: str) -> bool:
        """SD4: every container but the sidecars has ended for good."""
        init_failed = any(cs.final and not cs.succeeded for cs in self._regular_init_states())
        apps_final = [self.containers[c["name"]].final for c in self._specs("containers")]
        return regular_containers_done(policy, init_failed, apps_final)

    def _regular_init_states(self) -> list[ContainerState]:
        return [cs for c in self._specs("initContainers") for cs in (self.containers[c["name"]],) if not cs.sidecar]

    def _stop_sidecars(self) -> None:
        """SD4: the sidecars of a pod whose other containers are done stop, the last declared first, each once
        the ones after it have ended, all within one grace period. Each stop runs on a thread of its own (its
        end wakes the worker), so a sidecar that ignores SIGTERM does not hold the worker for its grace."""
        sidecars = self._sidecars()
        for spec, cs in sidecars:
            self._observe(cs, spec, "Never")
            if cs.instance is None and cs.last_terminated is not None:
                cs.final = True  # one waiting out its back-off does not start again
        name = next_sidecar_to_stop([(cs.name, cs.instance is not None) for _, cs in sidecars])
        cs = self.containers[name] if name is not None else None
        if cs is None or cs.instance is None or cs.instance.killing:
            return
        cs.instance.killing = True
        if self._sidecars_deadline is None:
            self._sidecars_deadline = StopDeadline(self._grace())
        log.info("stopping sidecar: the pod's other containers are done", uid=self.uid, container=cs.name)
        self._pod_event("Normal", "Killing", f"Stopping container {cs.name}", _field_path(cs))
        threading.Thread(target=self._stop_instance, args=(cs, cs.instance, self._sidecars_deadline),
                         daemon=True).start()

    # ---- one container -------------------------------------------------------------------
    def _exit_code(self, cs: ContainerState) -> tuple[int, float] | None:
        """(exit code, finished wall time) once the instance is gone, else None."""
        inst = cs.instance
        assert inst is not None
        exit_file = self._container_dir(cs.name) / "exit"
        if inst.proc is not None:
            inst.proc.poll()  # reap the shim if it is our child
        try:
            return int(exit_file.read_text().strip() or "137"), exit_file.stat().st_mtime
        except (OSError, ValueError):
            pass
        if inst.proc is not None:
            if inst.proc.returncode is None:
                return None
        else:
            try:
                shim = psutil.Process(inst.shim_pid)
                if abs(shim.create_time() - inst.shim_created) < 1 and shim.status() != psutil.STATUS_ZOMBIE:
                    return None
            except psutil.Error:
                pass
        try:  # the shim may have written the file just now
            return int(exit_file.read_text().strip()), exit_file.stat().st_mtime
        except (OSError, ValueError):
            return 137, time.time()  # lost track of it: ContainerStatusUnknown, as the kubelet says

    def _observe(self, cs: ContainerState, spec: dict[str, Any], policy: str) -> None:
        inst = cs.instance
        if inst is None:
            return
        result = self._exit_code(cs)
        if result is None:
            if inst.kill_reason and not inst.killing:
                inst.killing = True
                grace = float(spec.get("livenessProbe", {}).get("terminationGracePeriodSeconds")
                              or self._grace())
                threading.Thread(target=self._stop_instance, args=(cs, inst, grace), daemon=True).start()
            return
        code, finished = result
        inst.stop.set()
        # CT1: an OOM kill in the container's memory group, read before the group goes in the teardown.
        reason = "Completed" if code == 0 else ("OOMKilled" if self._oom_killed(cs) else "Error")
        message = inst.kill_reason
        # runc's own error (the command could not be started) is the runtime's message, as containerd's is. Not
        # any run that ended before the start was seen (``never_ran``): a quick one's log is its own (CT2).
        runc_error = self._runc_error(cs.name, inst.restart) if code != 0 else ""
        if runc_error:
            message = runc_error
        else:  # CT2: what the container wrote, joined to the runtime's message as the kubelet joins them
            written = self._termination_message(cs.name, spec, inst.restart, code)
            message = f"{message}: {written}" if message and written else message or written
        cs.last_terminated = {"exitCode": code, "reason": reason, "startedAt": inst.started_at,
                              "finishedAt": iso(finished), "containerID": f"runc://{inst.container_id}"}
        if message:
            cs.last_terminated["message"] = message
        # CT1: no ``signal``: the kubelet never fills it (CRI reports a signalled end as exit code 128+n).
        self._teardown(cs.name)
        cs.instance = None
        ran_for = finished - inst.started_wall
        restart = policy == "Always" or (policy == "OnFailure" and code != 0)
        if cs.init and not cs.sidecar and code == 0:
            cs.succeeded, restart = True, False
        log.info("container exited", uid=self.uid, container=cs.name, exit_code=code, restart=restart)
        if not restart:
            cs.final = True
            return
        if ran_for >= self.s.backoff_reset:
            cs.backoff_exp = 0
        delay = 0.0 if cs.backoff_exp == 0 else min(self.s.backoff_base * 2 ** (cs.backoff_exp - 1), self.s.backoff_max)
        cs.backoff_exp += 1
        cs.next_start = finished + delay
        if delay == 0 and inst.hook_failure:
            # LH5: the kubelet's reason cache: a start that failed in its postStart hook and is not backed off
            # waits with the hook's error until its next relist (about a second) starts it again.
            cs.waiting_reason, cs.waiting_message = "PostStartHookError", inst.hook_failure
            cs.next_start = finished + IDLE_POLL_INTERVAL
            return
        cs.waiting_reason = "CrashLoopBackOff"
        cs.waiting_message = (f"back-off {delay:g}s restarting failed container={cs.name} "
                              f"pod={(self.pod.get('metadata') or {}).get('name')}_"
                              f"{(self.pod.get('metadata') or {}).get('namespace', 'default')}({self.uid})")

    def _memory_group(self, name: str) -> Path | None:
        """CT1: the agent's memory group of the container's current run, as its start recorded it."""
        try:
            text = (self._container_dir(name) / memcg.BUNDLE_FILE).read_text().strip()
        except OSError:
            return None
        return Path(text) if text else None

    def _oom_killed(self, cs: ContainerState) -> bool:
        """CT1: the kernel OOM-killed a process of the run (the count of its memory group, which runc's
        removal of its own group at the exit does not touch)."""
        group = self._memory_group(cs.name)
        return group is not None and memcg.oom_kills(group) > 0

    def _termination_log(self, name: str) -> Path:
        """CT2: the host file bound at the container's terminationMessagePath, made empty at each start."""
        return self._container_dir(name) / "termination-log"

    def _termination_message(self, name: str, spec: dict[str, Any], restart: int, code: int) -> str:
        """CT2: the kubelet's message of a run that ended: the last 4 KiB of the file it wrote at its
        terminationMessagePath; with ``FallbackToLogsOnError``, when that is empty (or there is no path) and the
        run failed, the first 2 KiB of its log's last 80 lines. Never its log under the default ``File``."""
        fallback = spec.get("terminationMessagePolicy") == "FallbackToLogsOnError" and code != 0
        data = b""
        if spec.get("terminationMessagePath", DEFAULT_TERMINATION_MESSAGE_PATH):
            try:
                with open(self._termination_log(name), "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    f.seek(max(0, size - TERMINATION_MESSAGE_MAX))
                    data = f.read(TERMINATION_MESSAGE_MAX)
            except OSError:
                data = b""
        if not data and fallback:
            data = self._log_lines(name, restart, TERMINATION_LOG_LINES)[:TERMINATION_LOG_MAX]
        return data.decode("utf-8", "replace")

    def _log_lines(self, name: str, restart: int, lines: int) -> bytes:
        """The text of a run's last ``lines`` log lines (stdout and stderr as written, without the stamps)."""
        path = self.dir / "logs" / name / f"{restart}.log"
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                window = 64 * 1024
                while True:  # enough of the end for ``lines`` lines, or the whole file
                    f.seek(max(0, size - window))
                    raw = f.read()
                    if size <= window or raw.count(b"\n") > lines:
                        break
                    window *= 4
        except OSError:
            return b""
        kept = raw.split(b"\n")
        if size > window:
            kept = kept[1:]  # the first piece may be a line cut in two
        if kept and kept[-1] == b"":
            kept.pop()
        return b"".join(split_line(line)[1] + b"\n" for line in kept[-lines:])

    def _runc_error(self, name: str, restart: int) -> str:
        """What `runc run` said when it could not start the command (the run's last log line), else ""."""
        last = self._log_lines(name, restart, 1).rstrip(b"\n")
        found = ERROR_LINE.fullmatch(last)
        if found is None or not found.group(1).startswith(_RUN_FAILED):
            return ""
        return found.group(1)[len(_RUN_FAILED):].replace(b'\\"', b'"').decode("utf-8", "replace")[:512]

    def _grace(self) -> float:
        value = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        return float(30 if value is None else value)

    def _maybe_start(self, cs: ContainerState, spec: dict[str, Any]) -> None:
        if time.time() < cs.next_start:
            return
        if self._adopt_unrecorded(cs, spec):
            return
        if self.env_sources is None:
            cs.waiting_reason, cs.waiting_message = "ContainerCreating", "waiting for the agent to resync the pod"
            return
        restart = cs.restart_count + (1 if cs.last_terminated else 0)
        prepare_began = time.time()
        try:
            env = resolve_env(spec, EnvContext(self.pod, self.pod_ip, self.s.host_ip, self.env_sources,
                                               node_cpu=os.cpu_count() or 1,
                                               node_memory=psutil.virtual_memory().total))
            argv = command_line(spec, env)
            userns = self._userns_fd() if self.s.userns is not None and uses_user_namespace(self.pod) else None
            # Resolved again at every start, restarts included: a path may have been swapped since.
            safe_sources = stage_volume_mounts(spec, self.volumes, env, pod_dir=self.dir,
                                               host_path_prefixes=self.s.host_path_prefixes, pod=self.pod)
        except EnvError as exc:
            cs.waiting_reason, cs.waiting_message = "CreateContainerConfigError", str(exc)
            cs.next_start = time.time() + 1.0  # ConfigMaps and Secrets may appear later
            return
        except OSError as exc:
            cs.waiting_reason, cs.waiting_message = "CreateContainerError", str(exc)
            cs.next_start = time.time() + 1.0
            return
        cdir = self._container_dir(cs.name)
        cdir.mkdir(parents=True, exist_ok=True)
        (cdir / "exit").unlink(missing_ok=True)
        exit_watched = self._watch_exit(cdir)
        bundle = self._bundle_dir(cs.name)
        rootfs = bundle / "rootfs"
        staged = bundle / "volumes"
        unmount_rootfs(cdir, rootfs)  # what a crashed start or a dead agent left
        bundle.mkdir(parents=True, exist_ok=True)
        # Names the pod directory, so a bundle outliving it (a killed agent) can be reaped safely.
        (bundle / OWNER_FILE).write_text(f"{self.dir.resolve()}\n")
        try:
            hosts_file = self.state_dir / "etc-hosts"
            not_idmapped: list[str] = []
            stage = _stager(staged, userns[1], not_idmapped) if userns is not None else None
            if stage is not None:
                hosts_file = Path(stage(str(hosts_file), False))
            old_group = self._memory_group(cs.name)
            if old_group is not None:
                memcg.remove(old_group)
            memory_group = memcg.prepare(self._runc_id(cs.name), (cgroup_limits(spec).get("memory") or {}).get("limit"))
            (cdir / memcg.BUNDLE_FILE).write_text(f"{memory_group}\n" if memory_group is not None else "")
            # Named in the bundle too, so an orphan bundle's reaping removes it (a killed agent's pods).
            (bundle / memcg.BUNDLE_FILE).write_text(f"{memory_group}\n" if memory_group is not None else "")
            message_path = str(spec.get("terminationMessagePath", DEFAULT_TERMINATION_MESSAGE_PATH) or "")
            termination_log = self._termination_log(cs.name)
            if message_path:  # CT2: a new empty file for each run, writable by the container's user
                termination_log.write_bytes(b"")
                os.chmod(termination_log, 0o666)
                if stage is not None:
                    termination_log = Path(stage(str(termination_log), False))
            config = build_config(pod=self.pod, container=spec, argv=argv, env=env, volumes=self.volumes,
                                  hostname=hostsfile.pod_hostname(self.pod), hosts_file=hosts_file,
                                  userns_base=userns[0] if userns else None, rootfs=str(rootfs), stage=stage,
                                  staged_mounts=safe_sources, memory_group=memory_group)
            if message_path:  # after the volumes, as the kubelet adds it
                config["mounts"].append({"destination": message_path, "type": "bind", "source": str(termination_log),
                                         "options": ["bind", "rprivate", "rw"]})
            if spec.get("targetContainerName"):
                join_target(config, self._target_pid(str(spec["targetContainerName"])))
            elif cs.name != SANDBOX and shares_process_namespace(self.pod):
                join_target(config, self._target_pid(SANDBOX))
            devices = block_device_sources(self.pod, spec, self.volumes)
            mount_rootfs(cdir, self.s.scratch_size, rootfs, userns_fd=userns[1] if userns else None,
                         base=userns[0] if userns else 0, hidden=self._hidden_paths())
            if devices:  # on the scratch tmpfs, which mount_rootfs has just made
                add_block_devices(config, make_device_nodes(cdir, devices, userns[0] if userns else 0))
            self._warn_not_idmapped(spec, safe_sources, not_idmapped)
        except (EnvError, OSError) as exc:
            unmount_rootfs(cdir, rootfs)
            config_error = isinstance(exc, EnvError)
            cs.waiting_reason = "CreateContainerConfigError" if config_error else "CreateContainerError"
            cs.waiting_message = str(exc)
            cs.next_start = time.time() + 1.0  # ConfigMaps and Secrets may appear later
            return
        # orjson: 0.01 ms for a config with RuntimeDefault's system call list, where json.dumps with an
        # indent took 0.4 ms of every container start.
        (cdir / "config.json").write_bytes(orjson.dumps(config))
        container_id = self._runc_id(cs.name)
        log_path = self.dir / "logs" / cs.name / f"{restart}.log"
        _drop_old_logs(log_path.parent, restart)
        started_wall = time.time()
        proc = self.s.runc.start(container_id, cdir, log_path, cdir / "exit",
                                 stdin_path=cdir / "stdin" if spec.get("stdin") else None,
                                 log_max_bytes=self.s.log_max_bytes, log_max_files=self.s.log_max_files)
        try:
            created = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            created = 0.0
        inst = Instance(restart=restart, container_id=container_id, started_at=iso(started_wall),
                        started_wall=started_wall, shim_pid=proc.pid, shim_created=created, proc=proc,
                        exit_watched=exit_watched)
        inst.never_ran = not self._wait_created(container_id, cdir / "exit", proc)
        log.debug("container.created", uid=self.uid, container=cs.name, prepare_ms=round((started_wall - prepare_began) * 1000, 1),
                  runc_ms=round((time.time() - started_wall) * 1000, 1))
        # The container's mount namespace holds its own copies of the root and the volume binds
        # now: the agent's copies go, so nothing of the pod stays mounted on the host (a volume's
        # device is released when the container ends, however the agent ends).
        release_rootfs(cdir, rootfs)
        if cs.last_terminated is not None:
            cs.restart_count = restart
        cs.instance = inst
        cs.waiting_reason = cs.waiting_message = ""
        log.info("container started", uid=self.uid, container=cs.name, restart=restart, runc_id=container_id)
        self.save_state()
        self._start_events(cs, spec)
        hook = handler_of(spec, "postStart")
        if hook is None or inst.never_ran:
            self._after_start(cs, spec, inst)
            return
        # LH1: the hook runs in a thread of its own, outside the worker's lock, so that a hook that never ends
        # cannot hold up the pod's stop; the worker starts nothing after this container meanwhile.
        inst.hooking = True
        threading.Thread(target=self._post_start, args=(cs, spec, inst, hook), name=f"poststart-{cs.name}"[:15],
                         daemon=True).start()

    def _after_start(self, cs: ContainerState, spec: dict[str, Any], inst: Instance) -> None:
        """A started container (its postStart hook done) begins to count as started and to be probed."""
        if not spec.get("startupProbe"):
            inst.started_gate.set()
        self._start_probes(cs, spec, adopted=False)

    def _post_start(self, cs: ContainerState, spec: dict[str, Any], inst: Instance, hook: dict[str, Any]) -> None:
        """LH1/LH2: the kubelet runs a container's postStart hook right after its start; a hook that fails has
        its container killed (``FailedPostStartHook``), which restarts as its restartPolicy says."""
        try:
            failure = run_handler(hook, container=spec, pod=self.pod, container_id=inst.container_id,
                                  pod_ip=self.pod_ip, runc=self.s.runc, timeout=None, stop=inst.stop)
        except Exception as exc:  # the container must not be left counted as being created for good
            failure = f"Cannot run handler: {exc}"
        if failure is not None and not inst.stop.is_set():
            path = _field_path(cs)
            # LH5: what the hook printed may be a secret: the event says only that it failed, as the kubelet's
            # does; the whole message is the container's waiting message until its restart.
            log.info("postStart hook failed", uid=self.uid, container=cs.name, handler=handler_kind(hook))
            inst.hook_failure = failure
            self._pod_event("Warning", "FailedPostStartHook", "PostStartHook failed", path)
            self._pod_event("Normal", "Killing", "FailedPostStartHook", path)
            self._stop_instance(cs, inst, self._grace())
        with self.lock:
            inst.hooking = False
            if failure is None and cs.instance is inst and not inst.stop.is_set():
                self._after_start(cs, spec, inst)
        self.wake.set()

    def _start_events(self, cs: ContainerState, spec: dict[str, Any]) -> None:
        """L19/CT3: the kubelet's ``Pulled``, ``Created`` and ``Started`` at every start of a container, restarts
        included, recorded by the start itself: the event correlator counts the repeats up (same reason and
        message: one event, ``count`` + 1). A container runs on the host's own files, so its image is always
        present: the kubelet's words for an image it did not need to pull. Not the sandbox's (SP1)."""
        if cs.name == SANDBOX:
            return
        ephemeral = any(c.get("name") == cs.name for c in self._specs("ephemeralContainers"))
        path = container_field_path("ephemeralContainers", cs.name) if ephemeral else _field_path(cs)
        self._pod_event("Normal", "Pulled", f'Container image "{spec.get("image") or ""}" already present on machine', path)
        self._pod_event("Normal", "Created", f"Created container: {cs.name}", path)
        self._pod_event("Normal", "Started", f"Started container {cs.name}", path)

    def _target_pid(self, name: str) -> int:
        """EC2: the host pid of the running container an ephemeral container targets (its namespaces are
        joined). OSError (a CreateContainerError, tried again) while the target is not running."""
        target = self.containers.get(name)
        state = self.s.runc.state(target.instance.container_id) if target and target.instance else None
        pid = int((state or {}).get("pid") or 0)
        if not pid or (state or {}).get("status") != "running":
            raise OSError(f'target container "{name}" is not running')
        return pid

    def _adopt_unrecorded(self, cs: ContainerState, spec: dict[str, Any]) -> bool:
        """A5: an agent killed after runc began running a container but before it saved that it had
        leaves the container running under its shim (its own session). Starting it again would kill
        it, run the command a second time, and take the killed run's exit, which its shim writes
        meanwhile, for the new run's (one more restart, the command a third time). That container is
        taken over instead, as a recorded one is at a restart. True when it was."""
        container_id = self._runc_id(cs.name)
        if not (self.s.runc.root / container_id).exists():
            return False  # the usual case, one stat: runc has nothing under that name
        cdir = self._container_dir(cs.name)
        shim = self.s.runc.shim_of(cdir / "exit")
        if shim is None:
            return False  # nothing waits on it: the start cleans away what is left
        state = self.s.runc.state(container_id)
        if state is None or state.get("status") not in ("running", "paused"):
            # Ended or never got going: its shim's exit record must be written before the start clears
            # the record, or the new run would be taken for ended at once.
            self.s.runc.delete(container_id)
            try:
                shim.wait(timeout=10)
            except psutil.Error:
                pass
            return False
        try:
            created = shim.create_time()
        except psutil.Error:
            return False
        restart = cs.restart_count + (1 if cs.last_terminated else 0)  # what the dead agent computed
        # The dead agent may not have released its copies of the root and the staged volumes.
        unmount_rootfs(cdir, self._bundle_dir(cs.name) / "rootfs")
        if cs.last_terminated is not None:
            cs.restart_count = restart
        cs.instance = Instance(restart=restart, container_id=container_id, started_at=iso(created),
                               started_wall=created, shim_pid=shim.pid, shim_created=created,
                               exit_watched=self._watch_exit(cdir))
        cs.waiting_reason = cs.waiting_message = ""
        self._start_probes(cs, spec, adopted=True)
        log.warning("container adopted: running, but missing from the pod's saved state",
                    uid=self.uid, container=cs.name, restart=restart, runc_id=container_id)
        self.save_state()
        return True

    def _watch_exit(self, cdir: Path) -> bool:
        """PF77: the shim renaming the exit file into place wakes this worker, so a container's end (an init
        container done, a crash, a job finished) is handled at once, not at the next look. The looks stay:
        they are what decides. Returns whether the watch is in place (no inotify to spare: it is not)."""
        return self.s.exits is not None and self.s.exits.watch(cdir, "exit", self.wake.set)

    def _wait_created(self, container_id: str, exit_file: Path, proc: subprocess.Popen[bytes]) -> bool:
        """Wait until runc reports the container (so exec and kill work), or it failed."""
        began = time.monotonic()
        deadline = began + 30
        # runc writes its state file once the container exists; a stat is far cheaper than
        # running `runc state` (a process of its own) every few milliseconds.
        state_dir = self.s.runc.root / container_id
        state_file = state_dir / "state.json"
        # runc makes exec.fifo before it writes state.json and removes it once `start` released the
        # container's init: state.json without exec.fifo is what `runc state` reports as running (or
        # stopped, when it ended already), read without a process per look (PF4).
        fifo = state_dir / "exec.fifo"
        with DirWatch() as watch:
            # PF75: woken by the change itself (runc making its directory, writing state.json, removing
            # exec.fifo; the shim writing the exit file), not by looking again every 5 ms. Each directory
            # is watched before it is looked at, so a change right after a look still wakes the wait.
            watch.add(self.s.runc.root)
            watch.add(exit_file.parent)
            while time.monotonic() < deadline:
                watch.add(state_dir)  # once runc has made it
                if state_file.exists() and not fifo.exists():
                    return True
                if time.monotonic() - began > 1.0:  # another runc's layout: ask it
                    state = self.s.runc.state(container_id)
                    if state and state.get("status") in ("running", "stopped"):
                        return True
                if exit_file.exists() or proc.poll() is not None:
                    return False
                watch.wait(START_LOOK_BACKSTOP)
        return False

    def _start_probes(self, cs: ContainerState, spec: dict[str, Any], adopted: bool) -> None:
        inst = cs.instance
        assert inst is not None
        started_mono = time.monotonic() - max(0.0, time.time() - inst.started_wall)
        if adopted:
            inst.started_gate.set()  # a container that was running before the restart has started
        for kind in ("startup", "liveness", "readiness"):
            probe = spec.get(f"{kind}Probe")
            if not probe or (cs.init and not cs.sidecar) or (adopted and kind == "startup"):
                continue
            run = make_probe(probe, spec, inst.container_id, self.pod_ip, self.s.runc)
            worker = ProbeWorker(kind, probe, run, started_mono,
                                 on_change=lambda k, ok, cs=cs, inst=inst: self._probe_changed(cs, inst, k, ok),
                                 stop=inst.stop, gate=None if kind == "startup" else inst.started_gate,
                                 on_failure=lambda k, out, cs=cs, inst=inst: self._probe_failed(cs, inst, k, out))
            inst.probes[kind] = worker
            worker.start()

    def _probe_changed(self, cs: ContainerState, inst: Instance, kind: str, ok: bool) -> None:
        killing = False
        with self.lock:
            if cs.instance is not inst:
                return
            if kind == "startup" and ok:
                inst.started_gate.set()
            elif kind in ("liveness", "startup") and not ok:
                inst.kill_reason = (f"Container {cs.name} failed {kind} probe, will be restarted: "
                                    f"{inst.probes[kind].state.message}".strip())
                log.info("probe failed, killing container", uid=self.uid, container=cs.name, probe=kind)
                killing = True
        if killing:
            self._pod_event("Normal", "Killing", f"Container {cs.name} failed {kind} probe, will be restarted",
                            _field_path(cs))
        self.wake.set()

    def _probe_failed(self, cs: ContainerState, inst: Instance, kind: str, output: str) -> None:
        """The kubelet's ``Unhealthy`` event, at every failed run of a probe (its correlator counts repeats)."""
        if cs.instance is inst:
            self._pod_event("Warning", "Unhealthy", f"{kind.capitalize()} probe failed: {output[:PROBE_EVENT_OUTPUT]}",
                            _field_path(cs))

    def _pod_event(self, type_: str, reason: str, message: str, field_path: str = "") -> None:
        if self.s.on_event is None:
            return
        try:
            self.s.on_event(self.pod, type_, reason, message, field_path)
        except Exception:  # an event is advice: it must never stop a container start, a probe or a stop
            log.exception("pod.event_failed", uid=self.uid, reason=reason)

    # ---- stopping ------------------------------------------------------------------------
    def _stop_instance(self, cs: ContainerState, inst: Instance, grace: float | StopDeadline) -> None:
        """SIGTERM to PID 1, then SIGKILL when the grace period ends (it may be shortened meanwhile,
        G3); returns when it is gone."""
        deadline = grace if isinstance(grace, StopDeadline) else StopDeadline(grace)
        exit_file = self._container_dir(cs.name) / "exit"
        while not exit_file.exists():
            if self.s.runc.kill(inst.container_id, "TERM"):
                break
            if self.s.runc.state(inst.container_id) is None and (inst.proc is None or inst.proc.poll() is not None):
                break
            if deadline.remaining() <= 0:
                break
            deadline.wait(0.05)
        with DirWatch() as watch:
            # PF75: the shim's exit file wakes the wait when it appears.
            watch.add(exit_file.parent)
            while not exit_file.exists() and deadline.remaining() > 0:
                watch.wait(min(STOP_LOOK_INTERVAL, deadline.remaining()))
            kill_deadline = time.monotonic() + 30
            while not exit_file.exists() and time.monotonic() < kill_deadline:
                if not self.s.runc.kill(inst.container_id, "KILL") and not self._runc_running(inst.container_id):
                    break  # the container is gone and no exit file came: more SIGKILLs for 30 s would change nothing
                watch.wait(0.05)
                if inst.proc is not None and inst.proc.poll() is not None:
                    break
        self.wake.set()

    def _sidecars(self) -> list[tuple[dict[str, Any], ContainerState]]:
        """The pod's sidecars (spec, state), in the spec's order."""
        return [(spec, self.containers[spec["name"]]) for spec in self._specs("initContainers") if is_sidecar(spec)]

    def _sidecar_stop_order(self) -> list[str]:
        """SD5: the pod's running sidecars, the last declared first."""
        return stop_order([(str(spec["name"]), cs.instance is not None) for spec, cs in self._sidecars()])

    def _runc_running(self, container_id: str) -> bool:
        state = self.s.runc.state(container_id)
        return state is not None and state.get("status") in ("created", "running", "paused")

    def _pre_stop_hook(self, name: str) -> dict[str, Any] | None:
        return handler_of(self._container_spec(name), "preStop")

    def pre_stop(self, cs: ContainerState, timeout: float) -> None:
        """LH3: the container's preStop hook (exec, httpGet or sleep) within what is left of the grace period;
        a failure is the kubelet's ``FailedPreStopHook`` event, and the stop goes on."""
        hook = self._pre_stop_hook(cs.name)
        inst = cs.instance
        if hook is None or inst is None or timeout <= 0:
            return
        failure = run_handler(hook, container=self._container_spec(cs.name), pod=self.pod,
                              container_id=inst.container_id, pod_ip=self.pod_ip, runc=self.s.runc, timeout=timeout,
                              stop=threading.Event())
        log.info("preStop hook ran", uid=self.uid, container=cs.name, handler=handler_kind(hook), failed=failure is not None)
        if failure is not None:
            # LH5: not the message, which may carry what the hook printed (the kubelet's words).
            self._pod_event("Warning", "FailedPreStopHook", "PreStopHook failed", _field_path(cs))

    def kill_all(self, grace: float | StopDeadline) -> None:
        """Stop every container (preStop hooks, then SIGTERM, SIGKILL when the grace period ends) and
        clean up. A ``StopDeadline`` may be moved earlier while this runs (a shortened deletion)."""
        deadline = grace if isinstance(grace, StopDeadline) else StopDeadline(grace)
        self.stop_thread()
        with self.lock:
            running = [cs for cs in self.containers.values() if cs.instance is not None]
            for cs in running:
                cs.instance.stop.set()  # type: ignore[union-attr]
            # SP1: the sandbox's end kills every process left in its namespace: it goes after the containers.
            sandbox = next((cs for cs in running if cs.name == SANDBOX), None)
            containers = [cs for cs in running if cs is not sandbox]
            # SD5: the sidecars get their SIGTERM once the other containers have ended, the last declared first.
            sidecars = [self.containers[name] for name in self._sidecar_stop_order()]
            # Only containers with a preStop hook get a thread, and a hook's end wakes the wait below: a
            # no-op thread still alive at the wait's first look held every plain stop up to 50 ms.
            def hook(cs: ContainerState, timeout: float) -> None:
                try:
                    self.pre_stop(cs, timeout)
                finally:
                    deadline.wake()
            hooks = [threading.Thread(target=hook, args=(cs, deadline.remaining()), daemon=True)
                     for cs in containers if self._pre_stop_hook(cs.name)]
            for t in hooks:
                t.start()
            # A hook still running when the period ends (or is cut short) is cut off by the SIGKILL.
            while any(t.is_alive() for t in hooks) and deadline.remaining() > 0:
                deadline.wait(0.05)
            stops = [threading.Thread(target=self._stop_instance, args=(cs, cs.instance, deadline))
                     for cs in containers if not cs.sidecar]
            for t in stops:
                t.start()
            for t in stops:
                t.join()
            for cs in sidecars:
                if cs.instance is not None:
                    self._stop_instance(cs, cs.instance, deadline)
            if sandbox is not None and sandbox.instance is not None:
                self._stop_instance(sandbox, sandbox.instance, deadline)
            for cs in running:
                self._observe(cs, self._container_spec(cs.name), "Never")
            # G1a: a container still alive after the SIGKILLs keeps its root, its volumes and the pod's
            # record: tearing them down would free its claim for another pod while it can still write.
            alive = [cs.name for cs in running if cs.instance is not None]
            if alive:
                self.last_status = self.status()
                raise ContainersNotStopped(f"container {', '.join(alive)} did not stop: "
                                           "its processes outlived SIGKILL", delay=0)
            for name in list(self.containers):
                self._teardown(name)
            self.close_userns()
            remove_unmounted(self.dir / "containers")
            self.last_status = self.status()

    def _teardown(self, name: str) -> None:
        release_staged(self.dir, name)
        cdir = self._container_dir(name)
        if cdir.exists():
            self.s.runc.delete(self._runc_id(name))
        # runc gives up removing its groups of the container after 0.15 s; under load a container's last
        # processes (a JVM's threads) can take longer to be reaped, and nothing else would remove what it
        # left (CT5). Also when the container's directory is gone already: its groups may not be.
        left = remove_child_groups(self._runc_id(name))
        if left:
            log.warning("container cgroups left busy", uid=self.uid, container=name, groups=[str(g) for g in left])
        if not cdir.exists():
            return
        group = self._memory_group(name)
        if group is not None and memcg.remove(group):
            (cdir / memcg.BUNDLE_FILE).unlink(missing_ok=True)
        bundle = self._bundle_dir(name)
        unmount_rootfs(cdir, bundle / "rootfs")
        for path in (cdir / "rootfs", cdir / "scratch", cdir / "lower", bundle):
            remove_unmounted(path)
        (cdir / "config.json").unlink(missing_ok=True)

    # ---- status --------------------------------------------------------------------------
    def _message_budget(self) -> int:
        """CT2: the bytes of termination message each container status may carry (the kubelet's 12 KiB per pod,
        split over its containers and init containers)."""
        return POD_TERMINATION_MESSAGES_MAX // max(1, len(self._specs("containers")) + len(self._specs("initContainers")))

    def _terminated(self, state: dict[str, Any] | None) -> dict[str, Any] | None:
        """A terminated state as the status shows it: its message cut to the pod's budget (CT2)."""
        message = (state or {}).get("message")
        if not message:
            return state
        raw = str(message).encode()
        budget = self._message_budget()
        if len(raw) <= budget:
            return state
        return {**state, "message": raw[:budget].decode("utf-8", "ignore")}  # type: ignore[dict-item]

    def _container_status(self, spec: dict[str, Any]) -> dict[str, Any]:
        cs = self.containers[spec["name"]]
        inst = cs.instance
        status: dict[str, Any] = {"name": cs.name, "image": spec.get("image", ""), "imageID": "",
                                  "restartCount": cs.restart_count, "ready": False, "started": False}
        if inst is not None and inst.hooking:
            # LH1: the kubelet writes no status while a container's postStart hook runs: it is still being created.
            status["state"] = {"waiting": {"reason": "ContainerCreating"}}
            status["lastState"] = {"terminated": self._terminated(cs.last_terminated)} if cs.last_terminated else {}
        elif inst is not None:
            status["containerID"] = f"runc://{inst.container_id}"
            status["state"] = {"running": {"startedAt": inst.started_at}}
            started = inst.started_gate.is_set()
            status["started"] = started
            readiness = inst.probes.get("readiness")
            # SD3: a sidecar is ready as a regular container is; a regular init container never is while it runs.
            status["ready"] = (started and (not cs.init or cs.sidecar)
                               and (readiness is None or readiness.state.result is True))
            if cs.last_terminated:
                status["lastState"] = {"terminated": self._terminated(cs.last_terminated)}
            else:
                status["lastState"] = {}
        elif cs.final or (cs.succeeded and cs.last_terminated):
            status["state"] = {"terminated": self._terminated(cs.last_terminated) or {"exitCode": 0, "reason": "Completed"}}
            status["containerID"] = (cs.last_terminated or {}).get("containerID", "")
            status["lastState"] = {}
        else:
            waiting: dict[str, Any] = {"reason": cs.waiting_reason or "ContainerCreating"}
            if cs.waiting_message:
                waiting["message"] = cs.waiting_message
            status["state"] = {"waiting": waiting}
            status["lastState"] = {"terminated": self._terminated(cs.last_terminated)} if cs.last_terminated else {}
        return status

    def _set_condition(self, kind: str, value: bool) -> None:
        text = "True" if value else "False"
        if self.conditions.get(kind, ("",))[0] != text:
            self.conditions[kind] = (text, now_iso())

    def status(self) -> dict[str, Any]:
        init_specs = self._specs("initContainers")
        inits = [self._container_status(c) for c in init_specs]
        apps = [self._container_status(c) for c in self._specs("containers")]
        ephemeral = [self._container_status(c) for c in self._specs("ephemeralContainers")]
        sidecar_states = [self.containers[c["name"]] for c in init_specs if is_sidecar(c)]
        # SD2: the pod's start goes on once every regular init container completed and every sidecar started.
        sequence_done = (all(cs.succeeded for cs in self._regular_init_states())
                         and all(cs.started_once or (cs.instance is not None and cs.instance.started_gate.is_set())
                                 for cs in sidecar_states))
        init_failed = any(cs.final and not cs.succeeded for cs in self._regular_init_states())
        sidecars_running = sum(cs.instance is not None for cs in sidecar_states)
        phase = self._phase(apps, sequence_done, init_failed, sidecars_running)
        # SD2: Initialized as the kubelet says it: each init container done now, or a regular container has run.
        pending = incomplete_inits(init_specs, inits)
        initialized = sequence_done and (not pending or any_regular_started(apps))
        # SD3: the sidecars' readiness counts for the pod's, listed before the containers', as the kubelet does.
        readied = [s for c, s in zip(init_specs, inits) if is_sidecar(c)] + apps
        containers_ready = initialized and bool(apps) and all(s["ready"] for s in readied)
        self._set_condition("PodScheduled", True)
        self._set_condition("Initialized", initialized)
        self._set_condition("ContainersReady", containers_ready)
        self._set_condition("Ready", containers_ready)
        conditions = []
        for kind in ("Initialized", "Ready", "ContainersReady", "PodScheduled"):
            value, when = self.conditions[kind]
            cond = {"type": kind, "status": value, "lastTransitionTime": when}  # no null: the API drops them
            if value == "False" and kind in ("Ready", "ContainersReady"):
                not_ready = [s["name"] for s in readied if not s["ready"]]
                cond["reason"] = "PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"
                cond["message"] = f"containers with unready status: [{' '.join(not_ready)}]"
            elif value == "False" and kind == "Initialized":
                cond["reason"] = "ContainersNotInitialized"
                cond["message"] = f"containers with incomplete status: [{' '.join(pending)}]"
            conditions.append(cond)
        status: dict[str, Any] = {
            "phase": phase, "conditions": conditions, "hostIP": self.s.host_ip, "hostIPs": [{"ip": self.s.host_ip}],
            "podIP": self.pod_ip, "podIPs": [{"ip": self.pod_ip}], "startTime": self.start_time,
            "containerStatuses": apps, "qosClass": "BestEffort",
        }
        if inits:
            status["initContainerStatuses"] = inits
        if ephemeral:  # never ready and never counted for the phase or the pod's conditions
            status["ephemeralContainerStatuses"] = ephemeral
        return status

    def _phase(self, apps: list[dict[str, Any]], initialized: bool, init_failed: bool, sidecars_running: int = 0) -> str:
        """SD4: the regular containers decide the phase (a sidecar's exit code never counts), and a pod with a
        sidecar still running is not finished yet: its volumes are released at the final phase (A1)."""
        if init_failed:
            return "Pending" if sidecars_running else "Failed"
        if not initialized:
            return "Pending"
        pending = running = succeeded = failed = 0
        for s in apps:
            state = s["state"]
            if "running" in state:
                running += 1
            elif "terminated" in state:
                if state["terminated"]["exitCode"] == 0:
                    succeeded += 1
                else:
                    failed += 1
            elif s["lastState"].get("terminated"):
                running += 1  # restarting (back-off) counts as running, as in the kubelet
            else:
                pending += 1
        if pending:
            return "Pending"
        if running or sidecars_running:
            return "Running"
        if failed:
            return "Failed"
        return "Succeeded" if succeeded else "Pending"


# How runc 1.1's error line (runc.ERROR_LINE, on its stderr, in the container's log) reports a start that failed.
_RUN_FAILED = b"runc run failed: "


def _volume_names(volumes: dict[str, str], container: dict[str, Any], staged_mounts: list[str | None],
                  sources: list[str]) -> list[str]:
    """The pod's volume names of ``sources``: a volume's own directory, or the copy staged for one of
    the container's ``volumeMounts`` (a subPath, a hostPath; ``staged_mounts`` is aligned with them)."""
    by_path = {os.path.realpath(path): name for name, path in volumes.items()}
    for vm, staged in zip(container.get("volumeMounts") or [], staged_mounts):
        if staged is not None:
            by_path[os.path.realpath(staged)] = str(vm.get("name", ""))
    return sorted({by_path.get(os.path.realpath(src), os.path.basename(src)) for src in sources})


def remove_unmounted(path: Path) -> None:
    """rmtree that never reaches into a mount (a staged volume must not lose its files)."""
    if not os.path.lexists(path):
        return
    if mounts_under(path):
        log.warning("mounts remain, directory kept", path=str(path))
        return
    shutil.rmtree(path, ignore_errors=True)


def _stager(staged: Path, userns_fd: int, not_idmapped: list[str] | None = None) -> Callable[[str, bool], str]:
    """Stages each volume of a user-namespaced container as an idmapped mount under ``staged``
    (a plain one when asked), so that runc, working as the pod's root, binds a path it can reach
    and the files keep their owners inside the pod. Sources whose filesystem refused the idmap
    (FUSE, NFS) are added to ``not_idmapped``."""
    count = iter(range(1 << 30))

    def stage(source: str, plain: bool) -> str:
        target = staged / str(next(count))
        if not stage_bind(source, target, None if plain else userns_fd) and not plain and not_idmapped is not None:
            not_idmapped.append(source)
        return str(target)

    return stage


def _drop_old_logs(directory: Path, restart: int) -> None:
    """SV12: only the previous run's log stays beside the new one (what `logs --previous` shows), as the
    kubelet keeps one dead container's: a crash-looping container's runs do not pile up on the disk."""
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return
    for entry in entries:
        run = entry.name.split(".", 1)[0]
        if run.isdigit() and int(run) < restart - 1 and entry.name.startswith(f"{run}.log"):
            entry.unlink(missing_ok=True)
