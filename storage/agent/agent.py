"""The node agent: registers its Node, runs the pods placed on it, heartbeats.

It works only through the API (``storage.client.Client``), so the same code
runs inside ``stowage up`` and as ``stowage agent`` on another host.

The loop is level-triggered: a watch on this node's pods (and on Endpoints,
for the pods' hosts files) marks pods dirty; one worker re-reads each dirty
pod, resolves its volumes, lets the volume manager converge the whole node's
mounts, lets the runtime converge the pod's containers, and writes back the
status when it changed. The runtime's own threads (probes, restarts) mark a
pod dirty too, so status changes reach the API without polling.

A pod the agent starts carries the finalizer ``stowage.io/node-agent`` so a
deletion only marks it: the agent stops its containers (SIGTERM, then SIGKILL
when the pod's ``deletionGracePeriodSeconds`` ends, G4; a shortened deletion
cuts that short, G3), tears its volumes down, and then lets it go. A pod
force-deleted (grace 0, G2) is gone from the API at once: the agent stops
what it still runs of it as an orphan. A finished pod keeps its logs but not
its volumes (A1).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import structlog

from storage.agent.backoff import Backoff
from storage.agent.pool import Pool
from storage.agent.node_lease import renew_lease
from storage.agent.object_cache import RESOURCES, ReferencedObjects, revision
from storage.agent.resolve import ApiEnvSources, VolumeNotReady, pod_with_service_env, resolve_pod_volumes
from storage.agent.node_info import node_info, well_known_labels
from storage.agent.runtime import apparmor
from storage.agent.runtime import ContainersNotStopped, PodRuntime, StopDeadline
from storage.agent.runtime.pod import container_field_path
from storage.agent.runtime.runc import CONTAINER_LOG_MAX_BYTES, CONTAINER_LOG_MAX_FILES, HOST_PRIVATE
from storage.agent.sa_tokens import ServiceAccountTokenManager, asks_for_tokens, kubernetes_service_env
from storage.agent.volume_manager import PodVolumes, VolumeManager
from storage.api.conditions import condition
from storage.api.deletion import stop_window
from storage.api.ephemeral import claim_names, claim_volumes
from storage.api.event_correlator import EventCorrelator, write_event
from storage.api.names import NODE_AGENT_FINALIZER
from storage.api.durations import go_duration
from storage.api.quantity import canonical, format_quantity, quantity_value
from storage.api.timestamps import now
from storage.agent.credentials import AgentTLS
from storage.client import Client
from storage.errors import Conflict, Forbidden, Gone, NotFound, StowageError, TemporaryError
from storage.system import memory
from storage.system.host_resources import node_resources
from storage.system.diskusage import disk_usage
from storage.system.devices import DeviceResolver
from volume_plugins.base import DevicePlugin
from volume_plugins.registry import PluginRegistry, default_registry

log = structlog.get_logger(__name__)

Obj = dict[str, Any]
AGENT_FINALIZER = NODE_AGENT_FINALIZER
POOL_RESOURCE = "stowage.io/local-storage"
# Pods set up at once: each waits mostly on mount, mkfs and runc (~80 ms a container start),
# so a few in parallel keep the cores busy without a thread per pod.
POD_SYNC_WORKERS = 8
# A pod whose volume set-up failed is tried again after a per-pod exponential back-off
# (storage.agent.backoff), at once when the pod, or a ConfigMap or Secret it uses, changes.
LOOP_BACKOFF_MAX = 60.0  # a failing watch or loop waits at most this long between tries
# The API server sends a watch bookmark every 30 s; a stream silent this long is a dead connection.
WATCH_IDLE_TIMEOUT = 45.0
# A broken watch is resumed soon after its server is back (client-go's reflector waits 0.8 s doubling to 30 s;
# shorter here: a host back from a cut learns at once what happened to its pods meanwhile).
WATCH_RETRY_INITIAL, WATCH_RETRY_MAX = 0.5, 8.0
# Seconds without a pod sync before the heap's free pages are handed back (PF45), checked each heartbeat.
TRIM_AFTER_IDLE = 5.0
# Registration's tries when the API server drops the connection (a replica dying under it, HA8): every step
# is a read or a write by name, so it is simply done again, through the replica that answers.
REGISTER_ATTEMPTS = 6


@dataclass(frozen=True)
class PoolSpec:
    name: str
    path: Path
    capacity: int | None = None  # bytes handed out; None: the filesystem's size


@dataclass
class AgentConfig:
    node_name: str
    data_dir: Path
    pools: list[PoolSpec] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    zone: str | None = None
    provider_id: str | None = None  # the Node's spec.providerID (aws:///<zone>/<instance>): attachers find the VM by it
    host_ip: str = "127.0.0.1"
    heartbeat_seconds: float = 10.0  # the Lease's renewal, and how often the Node status is looked at
    # The kubelet's nodeStatusReportFrequency: an unchanged Node status is written this often (L17).
    status_report_seconds: float = 300.0
    host_path_prefixes: tuple[str, ...] = ()
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    backoff_base: float = 10.0
    container_log_max_bytes: int = CONTAINER_LOG_MAX_BYTES  # SV12; the kubelet's containerLogMaxSize
    container_log_max_files: int = CONTAINER_LOG_MAX_FILES  # SV12; the kubelet's containerLogMaxFiles
    pod_ip_range: str = "127.1.0.0/16"
    # The interface on the hosts' shared network that pod addresses are assigned to (MH2); None: the
    # range is loopback and pods are reachable on this host only.
    pod_interface: str | None = None
    # Host paths no container may see besides the data dir and pools (the control plane's
    # data dir with its tokens, kubeconfig and store).
    private_paths: tuple[str, ...] = ()
    tls: AgentTLS | None = None  # the agent's serving certificate; None serves plain HTTP (tests only)
    # Where attached disks appear (by-id/, azure/scsi1/ links): /dev/disk on real nodes.
    dev_disk_dir: Path = Path("/dev/disk")
    # Overrides of the attachable-volume limits this node reports (``attachable-volumes-aws-ebs`` -> 25);
    # a plugin's default_attach_limit otherwise (AD3).
    attach_limits: dict[str, int] = field(default_factory=dict)
    # FlexVolume drivers (<vendor>~<driver>/<driver>); None: $STOWAGE_VOLUME_PLUGIN_DIR or Kubernetes' default.
    volume_plugin_dir: Path | None = None


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _key(obj: Obj) -> tuple[str, str]:
    return _meta(obj).get("namespace", "default"), _meta(obj).get("name", "")


class NodeAgent:
    def __init__(self, client: Client, config: AgentConfig, *, token: str | None = None) -> None:
        self.client = client
        self.config = config
        self.token = token
        self.node = config.node_name
        self.data_dir = Path(config.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pools: dict[str, Pool] = {
            p.name: Pool(p.path, capacity=p.capacity) for p in config.pools
        }
        self.volumes = VolumeManager(self.data_dir, default_registry(
            host_path_prefixes=config.host_path_prefixes, resolver=DeviceResolver(dev_disk=Path(config.dev_disk_dir)),
            volume_plugin_dir=config.volume_plugin_dir),
            attachment_of=self._attachment_metadata)
        for plugin in self.volumes.registry.plugins():
            plugin.bind_node(self.node, self.data_dir)
        from storage.agent.backups import BackupJobs

        self.backups = BackupJobs(self)  # POST /backups jobs (LS10-LS15)
        self.runtime: PodRuntime | None = None
        self.sa_tokens = ServiceAccountTokenManager(client, self._mark_dirty)
        self.stop_event = threading.Event()
        self._lock = threading.Condition()
        self._pods: dict[str, Obj] = {}  # uid -> pod as last seen
        self._dirty: set[str] = set()
        # Pods whose only news is their runtime status: pushing it needs no volume pass.
        self._status_dirty: set[str] = set()
        self._hosts_dirty = False  # Endpoints changed: rewrite the hosts files, nothing else
        self._waiting: set[str] = set()  # pods whose volumes are not ready yet
        # PF87: (namespace, claim name) -> the pods using it, so that a claim's change finds its pods at once
        self._claim_users: dict[tuple[str, str], set[str]] = {}
        # Nothing is synced before the first listing of this node's pods: a pass over an
        # empty pod map would tear down the volumes of every pod a restarted agent adopts.
        self._pods_listed = threading.Event()
        self._all_dirty = False
        self._resolved: dict[str, PodVolumes] = {}
        self._pushed: dict[str, Obj] = {}
        self._push_locks: dict[str, threading.Lock] = {}  # per pod uid (_push_status)
        self._stopping: dict[str, threading.Thread] = {}
        self._deadlines: dict[str, StopDeadline] = {}  # the grace period of each pod being stopped
        # The last state of pods deleted from the API that this node may still run: the grace their
        # deletion left them (0 after a force delete).
        self._gone: dict[str, Obj] = {}
        self.full_passes = 0  # whole-node passes done (a relist, a start): tests wait on it
        # Pods this agent has finished stopping whose API object is not gone yet (its finalizer
        # removal is still on its way back through the watch): they must not be stopped twice.
        self._stopped: set[str] = set()
        # Of those, the ones whose finalizer removal gave up (it lost every race): each pass
        # tries again. The others are only waited for: their watched copy still shows the finalizer until
        # the removal comes back, and writing it again meanwhile costs the pass a round trip that, once
        # the name is reused (a StatefulSet's next member), is refused.
        self._unfinalized: set[str] = set()
        # Pods evicted by this agent (E17) -> their final status ({} while the eviction is under way).
        self._evicted: dict[str, Obj] = {}
        self._checking_limits = False
        self._threads: list[threading.Thread] = []
        self._endpoints: dict[tuple[str, str], Obj] = {}
        self._services: dict[tuple[str, str], Obj] = {}
        self._resizing: set[tuple[str, str]] = set()  # claims with FileSystemResizePending
        self._resize_warned: set[tuple[str, str]] = set()
        # A pending resize this node could not finish yet (its volume not published here yet, the
        # filesystem busy) is tried again after each pass and, when no pass comes, at its back-off.
        self.resize_backoff = Backoff()
        self._resize_wake: float | None = None  # monotonic time of the next retry, None: none due
        self._server: Any = None
        self.port = 0
        # Claims and PVs as the watches last saw them: resolving a pod's volumes reads these
        # instead of two API round trips per claim.
        self._claims: dict[tuple[str, str], Obj] = {}
        self._pvs: dict[str, Obj] = {}
        # This node's VolumeAttachments by PV name, from their watch (AD2); None until first listed.
        self._attachments: dict[str, Obj] | None = None
        self._attached_names: dict[str, str] = {}  # attachment uid -> its volumesAttached name
        # ConfigMaps and Secrets the node's pods use, from their watches (the kubelet's watch-based manager).
        self.referenced = ReferencedObjects()
        self._reader = _CachedReader(self)
        self.env_sources = ApiEnvSources(self._reader)
        self._sync_pool = ThreadPoolExecutor(max_workers=POD_SYNC_WORKERS, thread_name_prefix="agent-pod-sync")
        self._in_flight: set[str] = set()  # pods a sync worker is on; never two at once for one pod
        self.volume_backoff = Backoff()  # per pod uid: failed volume set-ups and container syncs
        self.events = EventCorrelator()
        # The kubelet's Normal events (Created, Started, Killing) go out from one thread of their own, as
        # its event broadcaster's do: a pod's start or stop never waits on their writes. None: stop.
        self._event_queue: queue.SimpleQueue[tuple[Obj, str, str, str] | None] = queue.SimpleQueue()
        self._event_writer: threading.Thread | None = None
        self._again: set[str] = set()  # pods marked dirty while in flight
        self._last_sync = 0.0  # monotonic end of the last pod sync
        self._last_trim = 0.0  # and of the last heap trim (PF45)
        self._status_reported: float | None = None  # monotonic time of the last Node status write

    # ---- lifecycle -------------------------------------------------------

    def start(self) -> None:
        for pool in self.pools.values():
            pool.reattach_all()
        self.volumes.reconstruct()
        self.runtime = PodRuntime(self.data_dir, self.node, host_ip=self.config.host_ip,
                                  ip_range=self.config.pod_ip_range,
                                  pod_interface=self.config.pod_interface, on_status_change=self._status_changed,
                                  backoff_base=self.config.backoff_base,
                                  container_log_max_bytes=self.config.container_log_max_bytes,
                                  container_log_max_files=self.config.container_log_max_files,
                                  hidden_paths=(*self.config.private_paths, *(str(p.path) for p in self.config.pools)),
                                  host_path_prefixes=self.config.host_path_prefixes, on_event=self._event_soon)
        from storage.agent.server import start_agent_server

        self._server, self.port = start_agent_server(self, self.config.listen_host, self.config.listen_port, self.token,
                                                     self.config.tls)
        self.register()
        for target, name in ((self._watch_pods, "agent-pods"), (self._watch_endpoints, "agent-endpoints"),
                             (self._watch_services, "agent-services"),
                             (self._watch_claims, "agent-claims"), (self._watch_pvs, "agent-pvs"),
                             (self._watch_attachments, "agent-attachments"),
                             (self._watch_configmaps, "agent-configmaps"), (self._watch_secrets, "agent-secrets"),
                             (self._work, "agent-worker"), (self._hosts_work, "agent-hosts"),
                             (self._heartbeat, "agent-heartbeat")):
            thread = threading.Thread(target=self._guard(target), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._start_plugin_watcher()
        # PF91: the first container start no longer waits for the scan of the host's private files, made
        # now and then every minute while the agent runs.
        threading.Thread(target=HOST_PRIVATE.current, name="agent-private-scan", daemon=True).start()
        log.info("agent.started", node=self.node, port=self.port, pools=list(self.pools))

    def _start_plugin_watcher(self) -> None:
        """CSI drivers register through sockets in <data dir>/plugins_registry (kubelet's protocol, CS15)."""
        import importlib.util

        if importlib.util.find_spec("grpc") is None:  # grpcio (the `csi` extra) missing
            return
        # Neither imports grpc until a registration socket appears (PF41).
        from storage.agent.plugin_watcher import PluginWatcher
        from volume_plugins.csi import register_node_driver, unregister_node_driver
        watcher = PluginWatcher(self.data_dir / "plugins_registry", self.stop_event, self.register,
                                register_node_driver, unregister_node_driver)
        thread = threading.Thread(target=self._guard(watcher.run), name="agent-plugin-watcher", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Stop the agent's loops. Containers keep running: a restarted agent adopts them."""
        self.stop_event.set()
        self.sa_tokens.stop()
        self._event_queue.put(None)
        with self._lock:
            self._lock.notify_all()
            threads = list(self._threads)
        if self._server is not None:
            self._server.should_exit = True
        for thread in threads:
            # A watch thread sits in a long HTTP read and notices the stop only at its next
            # event; it is a daemon touching nothing but this agent's maps, so don't wait for it.
            thread.join(timeout=0.2 if thread.name in self._watch_threads else 10)
        self._sync_pool.shutdown(wait=True, cancel_futures=True)
        if self.runtime is not None:
            self.runtime.close()
        log.info("agent.stopped", node=self.node)

    def run(self, stop: threading.Event) -> None:
        self.start()
        stop.wait()
        self.stop()

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            backoff = Backoff(initial=1.0, maximum=LOOP_BACKOFF_MAX)
            while not self.stop_event.is_set():
                began = time.monotonic()
                try:
                    fn()
                    return
                except Exception as exc:  # a loop must survive a bad moment of the API
                    if time.monotonic() - began > LOOP_BACKOFF_MAX:
                        backoff.success(fn.__name__)  # it ran well for a while: a new failure starts small
                    delay, attempt = backoff.failure(fn.__name__)
                    log.warning("agent.loop_error", loop=fn.__name__, error=str(exc), attempt=attempt,
                                retry_in=round(delay, 1))
                    self.stop_event.wait(delay)
        return run

    # ---- node registration and heartbeat ------------------------------------

    def _pool_status(self) -> list[Obj]:
        out = []
        for name, pool in self.pools.items():
            total, free = pool.usage()
            out.append({"name": name, "path": str(pool.root), "totalBytes": total, "freeBytes": free,
                        "fsTypes": ["ext4", "xfs", "btrfs"]})
        return out

    def _node_status(self) -> Obj:
        pools = self._pool_status()
        total_storage = sum(p["totalBytes"] for p in pools)
        free_storage = sum(p["freeBytes"] for p in pools)
        stamp = now()
        capacity, allocatable = node_resources(self.data_dir)
        limits = {key: str(n) for key, n in self.attach_limits().items()}
        # In the API server's canonical form ("1000" is stored as "1k"), so an unchanged status compares equal.
        return {
            "capacity": _canonical({**capacity, "pods": str(MAX_PODS), POOL_RESOURCE: str(total_storage), **limits}),
            "allocatable": _canonical({**allocatable, "pods": str(MAX_PODS), POOL_RESOURCE: str(free_storage),
                                       **limits}),
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "stowage agent is posting ready status",
                "lastHeartbeatTime": stamp, "lastTransitionTime": stamp,
            }],
            "addresses": [{"type": "InternalIP", "address": self.config.host_ip},
                          {"type": "Hostname", "address": self.node}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": node_info(),
            "storagePools": pools,
            "volumesInUse": self.volumes.volumes_in_use(),
            "volumesAttached": self._volumes_attached(),
        }

    def attach_limits(self) -> dict[str, int]:
        """AD3: ``attachable-volumes-<x>`` of every plugin with a limit, as the kubelet reported in-tree limits
        (what CSINode's allocatable count says for CSI drivers), with this node's overrides."""
        limits = {p.attach_limit_key: p.default_attach_limit for p in self.volumes.registry.plugins()
                  if isinstance(p, DevicePlugin) and p.attach_limit_key}
        limits.update(self.config.attach_limits)
        return limits

    def _volumes_attached(self) -> list[Obj]:
        """AD2: the volumes the control plane attached here (``kubernetes.io/<plugin>/<volume handle>`` with
        the attacher's devicePath), then the devices mounted or set up here that no attachment covers."""
        with self._lock:
            attachments = dict(self._attachments or {})
        out: dict[str, str] = {}
        covered: set[str] = set()
        names: dict[str, str] = {}
        for pv_name, va in attachments.items():
            status = va.get("status") or {}
            if not status.get("attached"):
                continue
            uid = _meta(va).get("uid", "")
            name = self._attached_names.get(uid)
            if name is None:
                # The PV may have become visible to this node after its watch listed it: read it once.
                try:
                    pv: Obj | None = self._reader.get("persistentvolumes", pv_name)
                except (NotFound, Forbidden):
                    pv = None
                name = attached_volume_name(pv, pv_name, va, self.volumes.registry)
                if pv is None:
                    uid = ""  # not remembered: the next report tries again
            names[uid] = name
            out[name] = str((status.get("attachmentMetadata") or {}).get("devicePath") or "")
            covered.add(pv_name)
        names.pop("", None)
        self._attached_names = names  # the attachments still here, named once each
        for entry in self.volumes.volumes_attached():
            if entry["name"].rsplit("/", 1)[-1] not in covered:
                out.setdefault(entry["name"], entry["devicePath"])
        return [{"name": n, "devicePath": d} for n, d in sorted(out.items())]

    def _attachment_metadata(self, pv_name: str) -> dict[str, str] | None:
        """status.attachmentMetadata of the PV's attachment to this node once attached, else None (AD2)."""
        with self._lock:
            va = (self._attachments or {}).get(pv_name)
        status = (va or {}).get("status") or {}
        if not status.get("attached"):
            return None
        return {str(k): str(v) for k, v in (status.get("attachmentMetadata") or {}).items()}

    def resolved_pod_volumes(self) -> list[tuple[str, PodVolumes]]:
        """(pod uid, its resolved volumes) of every pod this agent has set up or is setting up."""
        with self._lock:
            return list(self._resolved.items())

    def plugin_annotations(self) -> dict[str, str]:
        """What the volume plugins report about this node (e.g. ``rbd.stowage.io/mapper``)."""
        out: dict[str, str] = {}
        for plugin in self.volumes.registry.plugins():
            out.update(plugin.node_annotations())
        return out

    def register(self) -> None:
        labels = {**well_known_labels(self.node), **self.config.labels}
        annotations = self.plugin_annotations()
        if self.config.zone:
            labels["topology.kubernetes.io/zone"] = self.config.zone
        csi_annotations: dict[str, str] = {}
        csi_drivers: list[dict[str, Any]] = []
        try:  # CS11: the node's CSI drivers' node ids and topology (kubelet's nodeid annotation and CSINode)
            from volume_plugins.csi import node_registration

            csi_annotations, csi_labels, csi_drivers = node_registration()
            labels.update(csi_labels)
        except ImportError:
            pass
        annotations.update(csi_annotations)
        backoff = Backoff(initial=0.2, maximum=5.0)
        for _attempt in range(10):
            try:
                self._register_once(labels, annotations, csi_drivers)
                return
            except Conflict:
                continue
            except httpx.TransportError as exc:
                delay, attempt = backoff.failure("register")
                if attempt >= REGISTER_ATTEMPTS:
                    raise
                log.warning("agent.register_retry", error=str(exc), attempt=attempt, retry_in=round(delay, 2))
                if self.stop_event.wait(delay):
                    return

    def _register_once(self, labels: dict[str, str], annotations: dict[str, str], csi_drivers: list[Obj]) -> None:
        """One pass of registration: the Node, its status, its Lease and its CSINode."""
        try:
            node: Obj | None = self.client.get("nodes", self.node)
        except NotFound:
            node = None
        status = self._node_status()
        spec = {"providerID": self.config.provider_id} if self.config.provider_id else {}
        if node is None:
            node = self.client.create({"apiVersion": "v1", "kind": "Node",
                                       "metadata": {"name": self.node, "labels": labels,
                                                    **({"annotations": annotations} if annotations else {})},
                                       "spec": spec})
        else:
            node["metadata"].setdefault("labels", {}).update(labels)
            if annotations:
                node["metadata"]["annotations"] = {**(node["metadata"].get("annotations") or {}), **annotations}
            node["spec"] = {**(node.get("spec") or {}), **spec}
            node = self.client.update(node)
        previous = condition(node, "Ready")
        if previous and previous.get("status") == "True":
            status["conditions"][0]["lastTransitionTime"] = previous.get("lastTransitionTime", now())
        node["status"] = status
        node = self.client.update_status(node)
        self._status_reported = time.monotonic()
        renew_lease(self.client, node, self.node)
        # Every node has its CSINode, with no drivers too, as the kubelet makes it (CS11).
        self._write_csi_node(node, csi_drivers or [])

    def _write_csi_node(self, node: Obj, drivers: list[Obj]) -> None:
        """The CSINode named after this node, owned by its Node (as kubelet's), listing its CSI drivers (CS11)."""
        meta = node.get("metadata") or {}
        owner = {"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": meta.get("uid")}
        for _attempt in range(5):
            try:
                try:
                    current = self.client.get("csinodes", self.node)
                except NotFound:
                    self.client.create({"apiVersion": "storage.k8s.io/v1", "kind": "CSINode",
                                        "metadata": {"name": self.node, "ownerReferences": [owner]},
                                        "spec": {"drivers": drivers}})
                    return
                if (current.get("spec") or {}).get("drivers") == drivers:
                    return
                current["spec"] = {"drivers": drivers}
                self.client.update(current)
                return
            except Conflict:
                continue

    def _housekeeping(self) -> None:
        """At each heartbeat: the host's private files scanned again once their reading is a minute old
        (in the background), and the emptyDir limits checked on a thread of their own, so a walk of a big
        volume never holds the Lease back. No thread stays for either between two beats."""
        HOST_PRIVATE.current()
        try:
            self.volumes.collect_pending()
        except StowageError as exc:  # logged by the volume manager; the next beat tries again
            log.debug("agent.collect_pending_failed", error=str(exc))
        with self._lock:
            if self._checking_limits or not any(
                    _limited_empty_dirs(self._pods.get(uid) or {}) for uid, had in self._resolved.items() if had.volumes):
                return
            self._checking_limits = True

        def check() -> None:
            try:
                self.check_empty_dir_limits()
            except Exception as exc:  # the next beat tries again
                log.warning("agent.empty_dir_check_failed", error=str(exc))
            finally:
                with self._lock:
                    self._checking_limits = False

        threading.Thread(target=check, name="agent-local-storage", daemon=True).start()

    def check_empty_dir_limits(self) -> None:
        """E17: a running pod whose disk-backed emptyDir holds more than its ``sizeLimit`` is evicted, as the
        kubelet's eviction manager does: its containers are killed at once, its volumes released, and it
        ends Failed with reason Evicted (it is not restarted, whatever its restartPolicy)."""
        with self._lock:
            candidates = [(uid, self._pods.get(uid)) for uid, had in self._resolved.items()
                          if had.volumes and uid not in self._evicted and uid not in self._stopping]
        for uid, pod in candidates:
            if pod is None or _meta(pod).get("deletionTimestamp") or _is_finished(pod):
                continue
            for volume, source in _limited_empty_dirs(pod):
                try:
                    limit = quantity_value(source["sizeLimit"])
                except ValueError:
                    continue
                plugin = self.volumes.registry.find({"emptyDir": source})
                path = self.volumes.volume_path(uid, plugin, str(volume.get("name")))
                if disk_usage(path) > limit:
                    self._evict(pod, f'Usage of EmptyDir volume "{volume.get("name")}" exceeds the limit '
                                     f'"{source["sizeLimit"]}". ')
                    break

    def _evict(self, pod: Obj, message: str) -> None:
        assert self.runtime is not None
        uid = _meta(pod).get("uid", "")
        with self._lock:
            # A sync worker still on this pod would start what is being killed.
            while uid in self._in_flight and not self.stop_event.is_set():
                self._lock.wait(timeout=1.0)
            self._evicted[uid] = {}
        log.warning("agent.pod_evicted", pod=f"{_key(pod)[0]}/{_key(pod)[1]}", reason=message)
        self._event(pod, "Warning", "Evicted", message)
        final = self.runtime.kill_pod(uid, 0) or {}
        status = {**final, "phase": "Failed", "reason": "Evicted", "message": message}
        status["conditions"] = [*(c for c in final.get("conditions") or [] if c.get("type") != "DisruptionTarget"),
                                {"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
                                 "message": message, "lastTransitionTime": now()}]
        with self._lock:
            self._evicted[uid] = status
        self._release_volumes(pod, status)

    def _heartbeat(self) -> None:
        while not self.stop_event.wait(self.config.heartbeat_seconds):
            self.heartbeat_once()
            self._housekeeping()
            self._trim_when_settled()

    def _trim_when_settled(self) -> None:
        """Once pod syncs have stopped for a while, hand the heap's free pages back (PF45): a burst of
        pod starts must not leave its peak resident for the agent's lifetime."""
        with self._lock:
            last_sync = self._last_sync
            busy = bool(self._in_flight or self._dirty)
        if busy or last_sync <= self._last_trim or time.monotonic() - last_sync < TRIM_AFTER_IDLE:
            return
        self._last_trim = time.monotonic()
        memory.trim()

    def heartbeat_once(self) -> None:
        """L17, as the kubelet: the Lease is renewed at every beat; the Node status is written when it
        changed (a condition, the pool's free space, volumes in use, ...) or every ``status_report_seconds``."""
        for _attempt in range(5):
            try:
                node = self.client.get("nodes", self.node)
            except NotFound:
                self.register()
                return
            status = self._node_status()
            previous = condition(node, "Ready")
            if previous and previous.get("status") == "True":
                status["conditions"][0]["lastTransitionTime"] = previous.get("lastTransitionTime", now())
            merged = {**(node.get("status") or {}), **status}
            reported = self._status_reported
            due = reported is None or time.monotonic() - reported >= self.config.status_report_seconds
            if not due and _without_heartbeat(merged) == _without_heartbeat(node.get("status") or {}):
                renew_lease(self.client, node, self.node)
                return
            node["status"] = merged
            try:
                saved = self.client.update_status(node)
                self._status_reported = time.monotonic()
                renew_lease(self.client, saved, self.node)
                return
            except Conflict:
                continue

    # ---- watches -------------------------------------------------------------

    def _watch(self, resource: str, on_list: Callable[[list[Obj]], None], on_event: Callable[[str, Obj], None],
               field_selector: str | None = None) -> None:
        """List, then watch from that revision; relist only when the revision is compacted away.

        A watch that simply ends (its server-side timeout) is resumed from the last revision it
        delivered, as client-go's reflector does: a relist would bring a whole-node pass, which
        holds every pod's volume set-up while it walks all of them (PF25)."""
        rv: str | None = None
        reconnect = Backoff(initial=WATCH_RETRY_INITIAL, maximum=WATCH_RETRY_MAX)
        while not self.stop_event.is_set():
            if rv is None:
                items, rv = self.client.list(resource, field_selector=field_selector)
                with self._lock:
                    on_list(items)
                    self._lock.notify_all()
            try:
                for event in self.client.watch(resource, resource_version=rv, field_selector=field_selector, timeout=300,
                                               idle_timeout=WATCH_IDLE_TIMEOUT):
                    if self.stop_event.is_set():
                        return
                    reconnect.success(resource)
                    if event["type"] != "BOOKMARK":  # a bookmark only moves the revision to resume from
                        with self._lock:
                            on_event(event["type"], event["object"])
                            self._lock.notify_all()
                    rv = (event["object"].get("metadata") or {}).get("resourceVersion") or rv
            except Gone:
                rv = None
            except (TemporaryError, httpx.TransportError) as exc:
                # A stalled stream or a broken connection (the host was cut off, the server restarts): what
                # the server sent meanwhile is replayed by the next watch from the last revision delivered. A
                # relist would lose what a deletion said (its grace) and hold the pods' set-up for a whole pass.
                delay, attempt = reconnect.failure(resource)
                log.info("agent.watch_broken", resource=resource, error=str(exc) or type(exc).__name__,
                         attempt=attempt, retry_in=round(delay, 1))
                self.stop_event.wait(delay)

    def _watch_pods(self) -> None:
        def on_list(items: list[Obj]) -> None:
            before, self._pods = self._pods, {_meta(p)["uid"]: p for p in items}
            self.referenced.pods_listed({uid: _reference_keys(p) for uid, p in self._pods.items()})
            self._claim_users = {}
            for uid, pod in self._pods.items():
                self._index_claims(uid, pod)
            self._all_dirty = True
            self._pods_listed.set()
            for uid, pod in self._pods.items():
                self._readiness_changed(before.get(uid), pod)

        def on_event(kind: str, pod: Obj) -> None:
            uid = _meta(pod).get("uid", "")
            if kind == "DELETED":
                self._pods.pop(uid, None)
                self.referenced.pod_gone(uid)
                self._unindex_claims(uid, pod)
                self._gone[uid] = pod
                self._shorten(uid, pod)
                self._dirty.add(uid)
                return
            previous = self._pods.get(uid)
            self._pods[uid] = pod
            if previous is None:
                self.referenced.pod_seen(uid, _reference_keys(pod))
                self._index_claims(uid, pod)
            if _meta(pod).get("deletionTimestamp"):
                self._shorten(uid, pod)
            self._readiness_changed(previous, pod)
            # Most updates of a running pod are its own status, written by this agent: they
            # change nothing to converge, and a full pass for each would delay the next status.
            if not (previous is not None and uid in self._resolved and _only_status_changed(previous, pod)):
                self._dirty.add(uid)

        self._watch("pods", on_list, on_event, field_selector=f"spec.nodeName={self.node}")

    def _index_claims(self, uid: str, pod: Obj) -> None:
        """Called with the lock held. A pod's volumes never change, so its claims are indexed once."""
        namespace = _key(pod)[0]
        for name in claim_names(pod):
            self._claim_users.setdefault((namespace, name), set()).add(uid)

    def _unindex_claims(self, uid: str, pod: Obj) -> None:
        namespace = _key(pod)[0]
        for name in claim_names(pod):
            users = self._claim_users.get((namespace, name))
            if users is not None:
                users.discard(uid)
                if not users:
                    del self._claim_users[(namespace, name)]

    def _readiness_changed(self, previous: Obj | None, pod: Obj) -> None:
        """A pod's readiness changed in the API: check it against the runtime's (called with the lock held).

        Usually this agent made the change itself and the check finds nothing to do; but the node
        lifecycle controller marks pods not ready while the agent is silent, and the agent must then say
        again what is true, as the kubelet's status manager reconciles with the API server."""
        if previous is not None and _readiness(previous) != _readiness(pod) and not _meta(pod).get("deletionTimestamp"):
            self._status_dirty.add(_meta(pod).get("uid", ""))

    def _watch_endpoints(self) -> None:
        def on_list(items: list[Obj]) -> None:
            self._endpoints = {_key(e): e for e in items}
            self._all_dirty = True

        def on_event(kind: str, obj: Obj) -> None:
            if kind == "DELETED":
                self._endpoints.pop(_key(obj), None)
            else:
                self._endpoints[_key(obj)] = obj
            # Not a full pass: that re-resolved and re-synced every pod of the node (API reads,
            # a volume pass) on each readiness change anywhere, and delayed the pod that changed.
            self._hosts_dirty = True

        self._watch("endpoints", on_list, on_event)

    def _watch_services(self) -> None:
        """Services feed the ``<NAME>_SERVICE_HOST`` variables of containers started from now on."""
        def on_list(items: list[Obj]) -> None:
            self._services = {_key(s): s for s in items}

        def on_event(kind: str, obj: Obj) -> None:
            if kind == "DELETED":
                self._services.pop(_key(obj), None)
            else:
                self._services[_key(obj)] = obj

        self._watch("services", on_list, on_event)

    def _service_view(self, pod: Obj) -> Obj:
        namespace = _key(pod)[0]
        with self._lock:
            services = [s for k, s in self._services.items() if k[0] == namespace]
            endpoints = {k[1]: e for k, e in self._endpoints.items() if k[0] == namespace}
        return kubernetes_service_env(pod_with_service_env(pod, services, endpoints), self.client.server)

    def _resolve_volumes(self, pod: Obj) -> PodVolumes:
        """The pod's volumes with their data, service-account tokens included."""
        volumes = resolve_pod_volumes(pod, self._reader)
        self.sa_tokens.fill(pod, volumes)
        return volumes

    def _watch_claims(self) -> None:
        """A pod waiting for its claim to bind (or grow) is looked at again when the claim changes."""
        def on_list(items: list[Obj]) -> None:
            self._claims = {_key(c): c for c in items}
            self._dirty.update(self._waiting)
            self._resizing.update(_key(c) for c in items if _resize_pending(c))

        def on_event(kind: str, claim: Obj) -> None:
            namespace, name = _key(claim)
            if kind == "DELETED":
                self._claims.pop((namespace, name), None)
            else:
                self._claims[(namespace, name)] = claim
            if kind != "DELETED" and _resize_pending(claim):
                self._resizing.add((namespace, name))
                self._all_dirty = True  # wakes the worker, which finishes resizes after each pass
            for uid in self._claim_users.get((namespace, name), ()):
                # A running pod's volumes are set up already (growth is handled above): only
                # pods still waiting for a claim need a pass, which costs a whole volume sync.
                if uid not in self._resolved:
                    self._dirty.add(uid)

        self._watch("persistentvolumeclaims", on_list, on_event)

    def _watch_configmaps(self) -> None:
        self._watch_referenced("configmaps", "configMap")

    def _watch_secrets(self) -> None:
        self._watch_referenced("secrets", "secret")

    def _watch_referenced(self, resource: str, kind: str) -> None:
        """A pod backing off because of a ConfigMap or Secret is tried again as soon as it
        changes; the objects the node's pods use are kept current in ``referenced``."""
        def on_list(items: list[Obj]) -> None:
            self.referenced.listed(resource, items)
            # A relist may hide changes made while the watch was down: every waiting pod tries again.
            for uid in self.volume_backoff.backing_off() & set(self._pods):
                self.volume_backoff.expedite(uid)
                self._dirty.add(uid)

        def on_event(event: str, obj: Obj) -> None:
            self.referenced.observed(resource, event, obj)
            namespace, name = _key(obj)
            backing_off = self.volume_backoff.backing_off()
            for uid, pod in self._pods.items():
                if _key(pod)[0] != namespace:
                    continue
                if uid in backing_off:
                    if (kind, name) in _references(pod):
                        self.volume_backoff.expedite(uid)
                        self._dirty.add(uid)
                elif uid in self._resolved and not _is_finished(pod) and (kind, name) in _volume_references(pod):
                    # SV8: a running pod's configMap, secret and projected volumes follow the object (its
                    # env does not); the sync rewrites them atomically from the copy just observed.
                    self._dirty.add(uid)

        self._watch(resource, on_list, on_event)

    def _watch_pvs(self) -> None:
        def on_list(items: list[Obj]) -> None:
            self._pvs = {_meta(v).get("name", ""): v for v in items}

        def on_event(kind: str, pv: Obj) -> None:
            if kind == "DELETED":
                self._pvs.pop(_meta(pv).get("name", ""), None)
            else:
                self._pvs[_meta(pv).get("name", "")] = pv

        self._watch("persistentvolumes", on_list, on_event)

    def _watch_attachments(self) -> None:
        """AD2: a pod waiting for a disk is synced the moment the disk's attachment to this node turns
        attached, not at the end of its back-off. The authorizer shows a node only its own attachments."""
        def mine(va: Obj) -> str | None:
            spec = va.get("spec") or {}
            if spec.get("nodeName") != self.node:
                return None
            return (spec.get("source") or {}).get("persistentVolumeName") or None

        def wake(pv_names: set[str]) -> None:
            if not pv_names:
                return
            for uid, pod in self._pods.items():
                # The volumes its last sync resolved (a claim visible to this node only since its pod came
                # here may be missing from the claim watch), else its claims as watched.
                resolved = self._resolved.get(uid)
                used = {v.pv_name for v in resolved.volumes} if resolved is not None else {
                    ((self._claims.get((_key(pod)[0], c)) or {}).get("spec") or {}).get("volumeName")
                    for c in claim_names(pod)}
                if used & pv_names:
                    self.volume_backoff.expedite(uid)
                    self._dirty.add(uid)

        def on_list(items: list[Obj]) -> None:
            before = self._attachments or {}
            self._attachments = {pv: va for va in items if (pv := mine(va))}
            wake({pv for pv, va in self._attachments.items()
                  if (va.get("status") or {}).get("attached") and not ((before.get(pv) or {}).get("status") or {}).get("attached")})

        def on_event(kind: str, va: Obj) -> None:
            pv = mine(va)
            if pv is None:
                return
            attachments = self._attachments if self._attachments is not None else {}
            self._attachments = attachments
            previous = attachments.get(pv)
            if kind == "DELETED":
                if previous is not None and _meta(previous).get("name") == _meta(va).get("name"):
                    attachments.pop(pv, None)
                return
            attachments[pv] = va
            if (va.get("status") or {}).get("attached") and not ((previous or {}).get("status") or {}).get("attached"):
                wake({pv})

        self._watch("volumeattachments", on_list, on_event)

    def request_full_sync(self) -> int:
        """Ask for a whole-node pass, as a relist brings one; returns ``full_passes`` before it, so a
        caller can wait for the count to grow."""
        with self._lock:
            before = self.full_passes
            self._all_dirty = True
            self._lock.notify_all()
        return before

    def _mark_dirty(self, uid: str) -> None:
        with self._lock:
            self._dirty.add(uid)
            self._lock.notify_all()

    def _status_changed(self, uid: str) -> None:
        with self._lock:
            self._status_dirty.add(uid)
            self._lock.notify_all()

    # ---- the worker ------------------------------------------------------------

    def _work(self) -> None:
        while not self.stop_event.is_set():
            with self._lock:
                while (not self._pods_listed.is_set() or not (self._dirty or self._all_dirty or self._status_dirty
                                                                   or self._resize_is_due())) \
                        and not self.stop_event.is_set():
                    wake = self._resize_wake
                    self._lock.wait(timeout=30 if wake is None else min(30.0, max(0.01, wake - time.monotonic())))
                if self.stop_event.is_set():
                    return
                full = self._all_dirty
                dirty = set(self._pods) | set(self._resolved) if full else set(self._dirty)
                status_only = self._status_dirty - dirty
                self._dirty.clear()
                self._status_dirty.clear()
                self._all_dirty = False
                pods = dict(self._pods)
                resizing = set(self._resizing)
                self._resize_wake = None  # set again below by whatever is still not done
            began = time.monotonic()
            if dirty or full:
                self.sync(pods, dirty, full=full)
                if full:
                    self.full_passes += 1
            synced = time.monotonic()
            self._push_runtime_status(pods, status_only)
            log.debug("agent.pass", pods=len(dirty), status_only=len(status_only),
                      sync_seconds=round(synced - began, 3), seconds=round(time.monotonic() - began, 3))
            for key in resizing:
                self._finish_resize(*key)

    def sync(self, pods: dict[str, Obj], dirty: set[str], *, full: bool = False) -> None:
        """Stop what is deleted, then hand each dirty pod to a sync worker. ``full`` (after a
        listing) first reconciles every volume on the node, which also heals a crash (A5)."""
        assert self.runtime is not None
        active: dict[str, Obj] = {}
        with self._lock:
            self._stopped &= set(pods)
            self._unfinalized &= self._stopped
            for gone_uid in [u for u in self._evicted if u not in pods and self._evicted[u]]:
                del self._evicted[gone_uid]
            stopped = set(self._stopped)
            unfinalized = set(self._unfinalized)
            gone, self._gone = self._gone, {}
        for uid, pod in pods.items():
            if uid in stopped:
                if uid in unfinalized and AGENT_FINALIZER in (_meta(pod).get("finalizers") or []):
                    if self._remove_finalizer(pod):  # idempotent; recovers a removal that gave up
                        with self._lock:
                            self._unfinalized.discard(uid)
                continue
            if _meta(pod).get("deletionTimestamp"):
                if uid not in self._resolved and uid not in self._stopping:
                    # After a restart mid-deletion: keep its volumes wanted until its
                    # containers are stopped, so nothing is unmounted under a live process.
                    try:
                        self._resolved[uid] = self._resolve_volumes(pod)
                    except (VolumeNotReady, StowageError):
                        pass
                self._begin_stop(uid, pod)
            else:
                active[uid] = pod
        with self._lock:
            resolved = list(self._resolved)
        for uid in resolved + sorted(self.runtime.running_pods() | self.runtime.prepared_pods()):
            if uid not in pods and uid not in self._stopping:
                # Deleted without our finalizer, force-deleted, or deleted while the agent was
                # down: its adopted containers must stop too, within what its deletion left it. A pod
                # gone before it started gives back what was prepared for it (PF93, PF94).
                self._begin_stop(uid, None, gone.get(uid))
        if full:
            self._reconcile_volumes(active)
        for uid in sorted(dirty):
            if uid in active:
                self._submit(uid)

    def _reconcile_volumes(self, active: dict[str, Obj]) -> None:
        """The whole node's volumes against every pod resolved so far."""
        for uid, pod in active.items():
            if _is_finished(pod):
                with self._lock:
                    self._resolved[uid] = _no_volumes(pod)  # A1: a finished pod keeps no volume
                continue
            if uid not in self._resolved:
                try:
                    self._resolved[uid] = self._resolve_volumes(pod)
                except (VolumeNotReady, StowageError):
                    continue  # its own sync reports why

        def desired() -> list[PodVolumes]:
            # Taken once no per-pod operation runs, so a pod set up meanwhile is in it. A pod being
            # stopped keeps what it has, and gets nothing set up again.
            with self._lock:
                return [dataclasses.replace(v, keep=True) if uid in self._stopping else v
                        for uid, v in self._resolved.items()
                        if uid in self._stopping or (uid in self._pods and not _meta(self._pods[uid]).get("deletionTimestamp"))]

        result = self.volumes.sync(desired)
        for uid, message in result.teardown_errors.items():
            log.warning("agent.teardown_failed", uid=uid, error=message)

    def _submit(self, uid: str) -> None:
        with self._lock:
            if uid in self._in_flight:
                self._again.add(uid)  # synced again once the running sync ends: it may have read an old pod
                return
            self._in_flight.add(uid)
        try:
            self._sync_pool.submit(self._sync_pod_job, uid)
        except RuntimeError:  # shut down: the agent is stopping
            with self._lock:
                self._in_flight.discard(uid)

    def _sync_pod_job(self, uid: str) -> None:
        try:
            self._sync_one(uid)
        except Exception as exc:
            # Most often the API server did not answer (overloaded, restarting, failing over). Nothing
            # else would bring this pod back (its watch saw it already), so it is retried with back-off.
            with self._lock:
                pod = self._pods.get(uid)
            if pod is None:
                log.warning("agent.sync_pod_failed", uid=uid, error=str(exc))
            else:
                self._retry_later(pod, _spec_fingerprint(pod), "pod sync", str(exc))
        finally:
            with self._lock:
                self._last_sync = time.monotonic()
                self._in_flight.discard(uid)
                if uid in self._again:
                    self._again.discard(uid)
                    self._dirty.add(uid)
                self._lock.notify_all()

    def _sync_one(self, uid: str) -> None:
        """Volumes, containers and status of one pod; touches no other pod."""
        assert self.runtime is not None
        with self._lock:
            pod = self._pods.get(uid)
            if pod is None or _meta(pod).get("deletionTimestamp") or uid in self._stopping or uid in self._stopped:
                return
        began = time.monotonic()
        finished = self.runtime.pod_status(uid) if uid in self._resolved else None
        with self._lock:
            evicted = self._evicted.get(uid)
        if evicted is not None:
            if evicted:  # an eviction still under way publishes its own status
                self._release_volumes(pod, evicted)
            return
        if _is_finished(pod) or (finished is not None and finished.get("phase") in _FINAL_PHASES):
            self._release_volumes(pod, finished)
            return
        fingerprint = _spec_fingerprint(pod)
        if self.volume_backoff.waiting(uid, fingerprint) > 0:
            return  # backing off: its timer, or a change of what it uses, brings it back
        meanwhile: threading.Thread | None = None
        if AGENT_FINALIZER not in (_meta(pod).get("finalizers") or []):
            # PF94: a new pod's first sync makes what its start needs and can have before the finalizer
            # is on (its service-account tokens, its user namespace) while the finalizer is written. A
            # thread of its own that ends with it: a pool's threads would stay resident for good.
            snapshot = dict(pod)  # _ensure_finalizer replaces the pod's contents
            meanwhile = threading.Thread(target=self._prepare_first_start, args=(snapshot,),
                                         name=f"agent-prefetch-{uid[:8]}", daemon=True)
            meanwhile.start()
        finalized = self._ensure_finalizer(pod)
        if meanwhile is not None:
            meanwhile.join()  # it never raises; a token not got is asked for, and reported, below
        if not finalized:
            if meanwhile is not None:
                # Gone meanwhile (force-deleted, replaced): a pass gives back what was made for it, also
                # when the pass its deletion brought ran before that was made.
                self._mark_dirty(uid)
            return
        refusal = self._admission_refusal(uid, pod)
        if refusal is not None:
            self._refuse(pod, *refusal)
            return
        sandbox_problem = self._runtime_handler_problem(uid, pod)
        if sandbox_problem is not None:
            message = f"Failed to create pod sandbox: {sandbox_problem}"
            self._retry_later(pod, fingerprint, "pod sandbox", message)
            self._report_waiting(pod, "ContainerCreating", message)
            self._event(pod, "Warning", "FailedCreatePodSandBox", message)
            return
        try:
            volumes = self._resolve_volumes(pod)
        except (VolumeNotReady, StowageError) as exc:
            with self._lock:
                self._waiting.add(uid)
            self._report_waiting(pod, "ContainerCreating", str(exc))
            if isinstance(exc, VolumeNotReady):
                self._prepare_first_start(pod)  # PF72, PF93: the token and namespace ready when the claims are
            return
        single = self._read_write_once_pod(pod, volumes)
        with self._lock:
            # Checked and taken under one lock: two pods synced at once cannot both take the volume.
            holder = self._single_writer_holder(uid, single)
            if holder is None:
                self._waiting.discard(uid)
                self._resolved[uid] = volumes
        if holder is not None:
            volume, claim_name = single[holder[0]]
            message = (f'MountVolume.SetUp failed for volume "{volume}" : persistentvolumeclaim "{claim_name}" has '
                       f'the ReadWriteOncePod access mode and pod "{holder[1]}" on this node uses it')
            self._retry_later(pod, fingerprint, "volume set-up", message)
            self._report_waiting(pod, "ContainerCreating", message)
            self._event(pod, "Warning", "FailedMount", message)
            return
        resolved = time.monotonic()
        paths, errors = self.volumes.setup_pod(volumes)
        mounted = time.monotonic()
        if errors:
            # One message per volume in the kubelet's words; a device that holds another filesystem
            # than the volume's fsType is neither formatted nor mounted, the pod waits (A4).
            messages = [v if v.startswith("MountVolume.") else f'MountVolume.SetUp failed for volume "{k}" : {v}'
                        for k, v in sorted(errors.items())]
            self._retry_later(pod, fingerprint, "volume set-up", "; ".join(messages))
            self._report_waiting(pod, "ContainerCreating", "; ".join(messages))
            for message in messages:
                self._event(pod, "Warning", "FailedMount", message)
            return
        hosts = self._hosts_entries({uid: pod}).get(uid)
        try:
            status = self.runtime.sync_pod(self._service_view(pod), paths, self.env_sources, hosts)
        except Exception as exc:
            self._retry_later(pod, fingerprint, "container sync", str(exc))
            self._report_waiting(pod, "CreateContainerError", str(exc), event=True)
            return
        self.volume_backoff.success(uid)
        started = time.monotonic()
        self._push_status(pod, status)
        # Where a pod's start-up time goes, for the provisioning benchmark's breakdown.
        log.debug("agent.pod_synced", pod=f"{_key(pod)[0]}/{_key(pod)[1]}", phase=status.get("phase"),
                  resolve_ms=round((resolved - began) * 1000, 1), volumes_ms=round((mounted - resolved) * 1000, 1),
                  runtime_ms=round((started - mounted) * 1000, 1), status_ms=round((time.monotonic() - started) * 1000, 1))

    def _admission_refusal(self, uid: str, pod: Obj) -> tuple[str, str] | None:
        """(reason, message) when the kubelet's admission would refuse the pod on this node (AA2: AppArmor
        it cannot enforce). Asked before the pod's first start only, as the kubelet admits a pod once."""
        assert self.runtime is not None
        if uid in self._resolved or uid in self.runtime.running_pods():
            return None
        problem = apparmor.admission_problem(pod)
        return ("AppArmor", problem) if problem is not None else None

    def _refuse(self, pod: Obj, reason: str, message: str) -> None:
        """The pod fails without starting, for good: phase Failed with the reason, and a Warning event."""
        status = {"phase": "Failed", "reason": reason, "message": message}
        with self._lock:
            self._evicted[_meta(pod).get("uid", "")] = status  # never started again, and its status kept
        log.warning("agent.pod_refused", pod=f"{_key(pod)[0]}/{_key(pod)[1]}", reason=reason)
        self._event(pod, "Warning", reason, message)
        self._release_volumes(pod, status)

    def _runtime_handler_problem(self, uid: str, pod: Obj) -> str | None:
        """RC3: why the pod's RuntimeClass cannot run here, as the kubelet says it (None: it can). The agent's
        only runtime handler is runc; a class naming another (kata, gvisor) leaves the pod waiting, as a
        kubelet whose runtime has no such handler does. Asked before the pod's first start only: a running
        one (adopted after a restart) keeps running whatever became of its class."""
        name = (pod.get("spec") or {}).get("runtimeClassName")
        assert self.runtime is not None
        if not name or uid in self._resolved or uid in self.runtime.running_pods():
            return None
        try:
            runtime_class = self.client.get("runtimeclasses", str(name))
        except NotFound:
            return f'RuntimeClass "{name}" not found'
        handler = str(runtime_class.get("handler") or "")
        if handler != RUNTIME_HANDLER:
            return f'no runtime for "{handler}" is configured'
        return None

    def _read_write_once_pod(self, pod: Obj, volumes: PodVolumes) -> dict[str, tuple[str, str]]:
        """PV name -> (pod volume, claim) of the pod's claims with the ReadWriteOncePod access mode."""
        namespace = _meta(pod).get("namespace") or "default"
        by_volume = {v.name: v.pv_name for v in volumes.volumes if v.pv_name}
        out: dict[str, tuple[str, str]] = {}
        for volume in claim_volumes(pod):
            claim_name = str(((volume.get("persistentVolumeClaim") or {}).get("claimName")) or "")
            pv_name = by_volume.get(str(volume.get("name") or ""))
            if not claim_name or not pv_name:
                continue
            try:
                claim = self._reader.get("persistentvolumeclaims", claim_name, namespace)
            except NotFound:
                continue
            if "ReadWriteOncePod" in ((claim.get("spec") or {}).get("accessModes") or []):
                out[pv_name] = (str(volume.get("name")), claim_name)
        return out

    def _single_writer_holder(self, uid: str, single: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
        """(PV name, pod) of another pod on this node that has one of ``single`` set up (A8); under the lock.
        The scheduler keeps a second user off the node; a pod that names its node itself is held here."""
        if not single:
            return None
        for other, had in self._resolved.items():
            if other == uid:
                continue
            for request in had.volumes:
                if request.pv_name in single:
                    return request.pv_name, f"{had.namespace}/{had.name}"
        return None

    def _prepare_first_start(self, pod: Obj) -> None:
        """What a start needs that its volumes do not: the service-account tokens and the user namespace."""
        if asks_for_tokens(pod):
            self.sa_tokens.prefetch(pod)
        self._prepare_runtime(pod)

    def _prepare_runtime(self, pod: Obj) -> None:
        """PF93: the pod's user namespace while its volumes are made; best effort, as the start makes it
        itself when this could not."""
        assert self.runtime is not None
        try:
            self.runtime.prepare(pod)
        except (OSError, RuntimeError) as exc:
            log.debug("agent.prepare_failed", uid=_meta(pod).get("uid"), error=str(exc))

    def _retry_later(self, pod: Obj, fingerprint: str, what: str, error: str) -> None:
        """One log line per back-off step, then the pod's next try after its delay."""
        uid = _meta(pod).get("uid", "")
        delay, attempt = self.volume_backoff.failure(uid, fingerprint)
        log.warning("agent.pod_backoff", pod=f"{_key(pod)[0]}/{_key(pod)[1]}", failed=what, error=error,
                    attempt=attempt, retry_in=round(delay, 2))
        timer = threading.Timer(delay, self._mark_dirty, args=(uid,))
        timer.daemon = True
        timer.start()

    def _push_runtime_status(self, pods: dict[str, Obj], uids: set[str]) -> None:
        """Publish what the runtime reports for running pods; anything else gets a full pass."""
        assert self.runtime is not None
        for uid in uids:
            pod = pods.get(uid)
            status = self.runtime.pod_status(uid) if pod is not None and uid in self._resolved else None
            if pod is None or status is None or _meta(pod).get("deletionTimestamp") or uid in self._stopping:
                self._mark_dirty(uid)
                continue
            resolved = self._resolved.get(uid)
            if status.get("phase") in _FINAL_PHASES and resolved is not None and resolved.volumes:
                self._mark_dirty(uid)  # its volumes go first (A1), then the final phase is published
                continue
            self._push_status(pod, status)

    def _release_volumes(self, pod: Obj, status: Obj | None) -> None:
        """A1: a finished pod keeps its logs and status but no volume: unmounted and removed now,
        before its final phase is published, and never set up again (its claim may go next)."""
        uid = _meta(pod).get("uid", "")
        with self._lock:
            had = self._resolved.get(uid)
            self._resolved[uid] = _no_volumes(pod)
            self._waiting.discard(uid)
        if had is None or had.volumes:
            try:
                self.volumes.release_pod_volumes(uid)
            except Exception as exc:
                with self._lock:
                    self._resolved.pop(uid, None)  # the next pass tries again
                self._retry_later(pod, _spec_fingerprint(pod), "volume release", str(exc))
                return
        if status is not None:
            self._push_status(pod, status)

    def _hosts_work(self) -> None:
        """PF83: the hosts files follow the endpoints on a thread of their own. Each endpoint change of a
        namespace (a member Ready) rewrites the file of every running pod there; on the pod loop that
        held back the next pod's sync, right when a StatefulSet creates its next member."""
        while not self.stop_event.is_set():
            with self._lock:
                while not (self._hosts_dirty and self._pods_listed.is_set()) and not self.stop_event.is_set():
                    self._lock.wait(timeout=30)
                if self.stop_event.is_set():
                    return
                self._hosts_dirty = False  # changes from now on bring another pass
                pods = dict(self._pods)
            began = time.monotonic()
            changed = self._refresh_hosts(pods)
            log.debug("agent.hosts_pass", pods=len(pods), changed=changed, seconds=round(time.monotonic() - began, 3))

    def _refresh_hosts(self, pods: dict[str, Obj]) -> int:
        """Rewrite the hosts file of every running pod whose entries changed; returns how many."""
        assert self.runtime is not None
        running = self.runtime.running_pods()
        active = {uid: pod for uid, pod in pods.items() if uid in running and not _meta(pod).get("deletionTimestamp")}
        changed = 0
        for uid, entries in self._hosts_entries(active).items():
            try:
                changed += self.runtime.update_hosts(uid, entries)
            except KeyError:
                continue  # stopped meanwhile
        return changed

    def _ensure_finalizer(self, pod: Obj) -> bool:
        finalizers = _meta(pod).get("finalizers") or []
        if AGENT_FINALIZER in finalizers:
            return True
        namespace, name = _key(pod)
        fresh: Obj | None = pod  # the watched copy first: most of the time it is current
        for _attempt in range(5):
            if fresh is None:
                try:
                    fresh = self.client.get("pods", name, namespace)
                except (NotFound, Forbidden):  # a pod no longer bound here is out of the node's reach
                    return False
            if _meta(fresh).get("uid") != _meta(pod).get("uid") or _meta(fresh).get("deletionTimestamp"):
                return False
            meta = _meta(fresh)
            fresh = {**fresh, "metadata": {**meta, "finalizers": [*(meta.get("finalizers") or []), AGENT_FINALIZER]}}
            try:
                updated = self.client.update(fresh)
            except Conflict:
                fresh = None
                continue
            except (NotFound, Forbidden):  # a pod no longer bound here is out of the node's reach
                return False
            self._remember(updated)
            pod.clear()
            pod.update(updated)
            return True
        return False

    def _begin_stop(self, uid: str, pod: Obj | None, gone: Obj | None = None) -> None:
        """Stop a pod's containers within the window its deletion gives (G4): the API object
        being deleted, or the last state of one already gone. With neither (deleted while this
        agent was down), the pod's own terminationGracePeriodSeconds, as the kubelet does."""
        if uid in self._stopping:
            return
        known = pod if pod is not None else gone
        window = stop_window(known, dt.datetime.now(dt.timezone.utc)) if known is not None else None
        deadline = StopDeadline(window) if window is not None else None
        with self._lock:
            if deadline is not None:
                self._deadlines[uid] = deadline
            latest = self._pods.get(uid)
        if latest is not None:
            self._shorten(uid, latest)  # a shorter deletion may have come in since ``pod`` was read
        thread = threading.Thread(target=self._stop_pod, args=(uid, pod, deadline), name=f"agent-stop-{uid[:8]}", daemon=True)
        self._stopping[uid] = thread
        thread.start()

    def _shorten(self, uid: str, pod: Obj) -> None:
        """G3: a deletion that shortened the grace period (or a force delete) cuts the stop short."""
        deadline = self._deadlines.get(uid)
        if deadline is None:
            return
        window = stop_window(pod, dt.datetime.now(dt.timezone.utc))
        if window is not None and deadline.shorten(window):
            log.info("agent.grace_shortened", uid=uid, seconds=round(window, 1))

    def _stop_pod(self, uid: str, pod: Obj | None, grace: StopDeadline | None) -> None:
        assert self.runtime is not None
        with self._lock:
            # A sync worker still starting this pod would start containers behind the stop.
            while uid in self._in_flight and not self.stop_event.is_set():
                self._lock.wait(timeout=1.0)
        for spec_key, container in _running_containers(pod):
            self._event_soon(pod, "Normal", "Killing", f"Stopping container {container}",
                             container_field_path(spec_key, container))
        try:
            final = self.runtime.kill_pod(uid, grace)
            with self._lock:
                self._resolved.pop(uid, None)
            self.volumes.teardown_pod(uid)
            self.runtime.remove_pod(uid)
            if pod is not None:
                if final:
                    self._push_status(pod, final, force=True)
                removed = self._remove_finalizer(pod)
            else:
                removed = True
            with self._lock:
                self._stopped.add(uid)
                if not removed:
                    self._unfinalized.add(uid)
            self.sa_tokens.forget(uid)
            log.info("agent.pod_stopped", uid=uid)
        except ContainersNotStopped as exc:
            # G1a: the finalizer stays, and the next pass tries again (each try waits out its SIGKILLs).
            log.warning("agent.stop_failed", uid=uid, error=str(exc))
            if pod is not None:
                self._event(pod, "Warning", "FailedKillPod", f"error killing pod: {exc}")
        except Exception as exc:
            log.warning("agent.stop_failed", uid=uid, error=str(exc))
        finally:
            self._pushed.pop(uid, None)
            self._stopping.pop(uid, None)
            with self._lock:
                self._deadlines.pop(uid, None)
                self._push_locks.pop(uid, None)
            self._mark_dirty(uid)

    _volume_lock = threading.Lock()
    _watch_threads = frozenset({"agent-pods", "agent-endpoints", "agent-services", "agent-claims", "agent-pvs",
                                "agent-configmaps", "agent-secrets", "agent-attachments"})

    def _remove_finalizer(self, pod: Obj) -> bool:
        """False when it lost every race: the next pass tries again (an API server that fails raises)."""
        namespace, name = _key(pod)
        uid = _meta(pod).get("uid")
        with self._lock:
            # L15: the watched copy first, which the final status write just refreshed: a GET before the
            # write cost every deletion a round trip. Only the API server's own word that the finalizer
            # is gone ends the loop without a write.
            fresh: Obj | None = self._pods.get(uid or "")
        from_server = False
        for _attempt in range(10):
            if fresh is None:
                try:
                    fresh = self.client.get("pods", name, namespace)
                except (NotFound, Forbidden):  # a pod no longer bound here is out of the node's reach
                    return True
                from_server = True
            meta = _meta(fresh)
            if meta.get("uid") != uid or AGENT_FINALIZER not in (meta.get("finalizers") or []):
                if from_server:
                    return True
                fresh = None
                continue
            finalizers = [f for f in meta.get("finalizers") or [] if f != AGENT_FINALIZER]
            try:
                self.client.update({**fresh, "metadata": {**meta, "finalizers": finalizers}})
                return True
            except Conflict:
                fresh = None
                continue
            except (NotFound, Forbidden):  # a pod no longer bound here is out of the node's reach
                return True
        return False

    # ---- expansion: the node's half (FileSystemResizePending) -------------------

    def _finish_csi_resize(self, pv_name: str) -> bool | None:
        """NodeExpandVolume for a CSI volume published on this node (CS8); None when it is not a CSI volume."""
        try:
            from volume_plugins.csi import CsiPlugin
        except ImportError:
            return None
        try:
            pv = self.client.get("persistentvolumes", pv_name)
        except (NotFound, Forbidden):
            return None
        if not isinstance((pv.get("spec") or {}).get("csi"), dict):
            return None
        from storage.api.quantity import parse_quantity

        size = parse_quantity(((pv.get("spec") or {}).get("capacity") or {}).get("storage") or "0")
        with self._volume_lock:
            return CsiPlugin().expand_on_node(self.data_dir, pv, int(size))

    def _resize_is_due(self) -> bool:
        return self._resize_wake is not None and time.monotonic() >= self._resize_wake

    def _resize_not_done(self, key: tuple[str, str]) -> None:
        """Try ``key`` again at its back-off even if nothing else wakes the worker."""
        delay, _ = self.resize_backoff.failure("/".join(key))
        with self._lock:
            due = time.monotonic() + delay
            self._resize_wake = due if self._resize_wake is None else min(self._resize_wake, due)
            self._lock.notify_all()

    def _resize_over(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._resizing.discard(key)
        self._resize_warned.discard(key)
        self.resize_backoff.success("/".join(key))

    def _finish_resize(self, namespace: str, name: str) -> None:
        """Grow the filesystem of a claim's volume in one of this node's pools, then
        publish the new capacity on the claim and clear FileSystemResizePending.

        Mounted xfs/btrfs grow online; ext4 grows offline (online resize2fs needs
        CAP_SYS_RESOURCE, which hosts like containers withhold), so a mounted ext4
        volume stays pending until its pods are gone; an unmounted xfs/btrfs until mounted.
        """
        key = (namespace, name)
        try:
            claim = self.client.get("persistentvolumeclaims", name, namespace)
        except (NotFound, Forbidden):  # no pod here uses it any more
            claim = None
        if claim is None or not _resize_pending(claim):
            self._resize_over(key)
            return
        pv_name = (claim.get("spec") or {}).get("volumeName") or ""
        pool = next((p for p in self.pools.values() if p.get(pv_name) is not None), None)
        try:
            done: bool | None = None
            if pool is None:
                done = self._finish_csi_resize(pv_name)
                if done is None:
                    if not self.volumes.has_global_mount(pv_name):
                        self._resize_over(key)  # another node's volume
                        return
                    # a device volume mounted here (FlexVolume, attached disks): grow it in place
                    done = self.volumes.finish_resize(pv_name)
            else:
                with self._volume_lock:
                    done = pool.complete_resize(pv_name)
        except Exception as exc:
            if key not in self._resize_warned:
                self._resize_warned.add(key)
                self._event(claim, "Warning", "FileSystemResizeDeferred",
                            f"filesystem of {pv_name} cannot grow while mounted here; it grows when its pods stop: {exc}")
            self._resize_not_done(key)
            return
        if not done:
            self._resize_not_done(key)
            return
        pv = self.client.get("persistentvolumes", pv_name)
        capacity = ((pv.get("spec") or {}).get("capacity") or {}).get("storage")
        for _attempt in range(5):
            status = claim.setdefault("status", {})
            status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != "FileSystemResizePending"]
            if capacity:
                status["capacity"] = {**(status.get("capacity") or {}), "storage": capacity}
            status.pop("allocatedResourceStatuses", None)
            try:
                self.client.update_status(claim)
                break
            except Conflict:
                claim = self.client.get("persistentvolumeclaims", name, namespace)
        self._resize_over(key)
        self._event(claim, "Normal", "FileSystemResizeSuccessful",
                    f"MountVolume.NodeExpandVolume succeeded for volume \"{pv_name}\" {self.node}")
        log.info("agent.resize_finished", claim=f"{namespace}/{name}", volume=pv_name, capacity=capacity)

    # ---- status ------------------------------------------------------------

    def _push_status(self, pod: Obj, status: Obj, *, force: bool = False, warn: bool = True) -> None:
        """``warn``: the kubelet's Warning events for what the status reports new (``_container_warnings``);
        off for a caller that records its own."""
        uid = _meta(pod).get("uid", "")
        with self._lock:
            push_lock = self._push_locks.setdefault(uid, threading.Lock())
        # One push of a pod's status at a time: a sync worker's push of a just-started pod and the main
        # worker's status-only push (set off by the echo of the Pending write) used to run at once, both
        # over the same revision, so one of them got a 409, a GET and wrote the same status again.
        with push_lock:
            self._push_status_locked(pod, uid, status, force, warn)

    def _push_status_locked(self, pod: Obj, uid: str, status: Obj, force: bool, warn: bool) -> None:
        comparable = _without_times(status)
        if not force and self._pushed.get(uid) == comparable and _agrees(self._pods.get(uid), status):
            return
        namespace, name = _key(pod)
        with self._lock:
            # The watched copy first: a GET before every write cost a round trip per status.
            fresh: Obj | None = self._pods.get(uid)
        for _attempt in range(5):
            if fresh is None:
                try:
                    fresh = self.client.get("pods", name, namespace)
                except (NotFound, Forbidden):  # a pod no longer bound here is out of the node's reach
                    return
            if _meta(fresh).get("uid") != uid:
                return
            old = fresh.get("status") or {}
            merged = {**old, **status}
            merged["conditions"] = _merge_conditions(old.get("conditions") or [], status.get("conditions") or [])
            fresh = {**fresh, "status": merged}
            try:
                self._remember(self.client.update_status(fresh))
                self._pushed[uid] = comparable
            except Conflict:
                fresh = None
                continue
            except (NotFound, Forbidden):  # a pod no longer bound here is out of the node's reach
                return
            for reason, message in _container_warnings(pod, old, status) if warn else ():
                self._event(pod, "Warning", reason, message)
            # CT3: Pulled, Created and Started are recorded by each start itself (PodWorker._start_events): a
            # status write can report several restarts at once, and the diff of two writes saw only one.
            return

    def _remember(self, pod: Obj) -> None:
        """Keep a pod this agent just wrote, unless the watch has brought a newer one already, or its
        deletion: a write whose answer comes back after the watch reported the pod deleted (its request
        was held up, as over a link that was cut) must not bring the pod back, or it is never stopped."""
        uid = _meta(pod).get("uid", "")
        with self._lock:
            known = self._pods.get(uid)
            if known is not None and revision(pod) > revision(known):
                self._pods[uid] = pod
                if _meta(pod).get("deletionTimestamp") and not _meta(known).get("deletionTimestamp"):
                    # The answer carries a deletion the watch has not delivered yet; against this copy its
                    # event will look like a change of status only, so the pass that stops the pod is due now.
                    self._dirty.add(uid)
                    self._lock.notify_all()

    def _report_waiting(self, pod: Obj, reason: str, message: str, *, event: bool = False) -> None:
        containers = (pod.get("spec") or {}).get("containers") or []
        status = {
            "phase": "Pending",
            "hostIP": self.config.host_ip,
            "containerStatuses": [{
                "name": c.get("name"), "image": c.get("image", ""), "ready": False, "restartCount": 0,
                "started": False, "state": {"waiting": {"reason": reason, "message": message}},
            } for c in containers],
        }
        uid = _meta(pod).get("uid", "")
        if self._pushed.get(uid) != _without_times(status):
            self._push_status(pod, status, warn=not event)
        if event:
            # Every attempt is an event, as the kubelet's: repeats only bump its count.
            self._event(pod, "Warning", "FailedMount" if "Mount" in message else "Failed", message)

    def _event_soon(self, obj: Obj, type_: str, reason: str, message: str, field_path: str = "") -> None:
        """``_event`` on the events thread, in the order asked."""
        with self._lock:
            if self._event_writer is None and not self.stop_event.is_set():
                self._event_writer = threading.Thread(target=self._write_events, name="agent-events", daemon=True)
                self._threads.append(self._event_writer)
                self._event_writer.start()
        self._event_queue.put((obj, type_, reason, message, field_path))

    def _write_events(self) -> None:
        # A stopping agent drops what is left, as the kubelet's broadcaster does: its API server may be
        # gone, and each write would hold the stop up.
        while (item := self._event_queue.get()) is not None and not self.stop_event.is_set():
            try:
                self._event(*item)
            except Exception as exc:  # an event is not worth the thread
                log.warning("agent.event_failed", error=str(exc))

    def _event(self, obj: Obj, type_: str, reason: str, message: str, field_path: str = "") -> None:
        """``field_path`` names the container an event is about (``spec.containers{main}``), as the kubelet's
        do: two containers' events with the same words are two events, not one seen twice."""
        namespace, name = _key(obj)
        stamp = now()
        involved = {"kind": obj.get("kind", "Pod"), "name": name, "namespace": namespace,
                    "uid": _meta(obj).get("uid"), "apiVersion": "v1"}
        if field_path:
            involved["fieldPath"] = field_path
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"namespace": namespace},
            "involvedObject": involved,
            "reason": reason, "message": message, "type": type_, "count": 1,
            "firstTimestamp": stamp, "lastTimestamp": stamp,
            "source": {"component": "stowage-agent", "host": self.node},
            "reportingComponent": "stowage-agent", "reportingInstance": self.node,
        }
        try:
            write_event(self.events, event, create=self.client.create,
                        get=lambda ns, n: self.client.get("events", n, ns), update=self.client.update)
        except StowageError as exc:
            log.warning("agent.event_failed", error=str(exc))

    # ---- DNS names for /etc/hosts ------------------------------------------

    def _hosts_entries(self, pods: dict[str, Obj]) -> dict[str, list[tuple[str, list[str]]]]:
        """Every pod on this node sees the ready members of every service in its namespace."""
        with self._lock:
            endpoints = list(self._endpoints.values())
        by_namespace: dict[str, list[tuple[str, list[str]]]] = {}
        for ep in endpoints:
            namespace, service = _key(ep)
            entries = by_namespace.setdefault(namespace, [])
            fqdn_service = f"{service}.{namespace}.svc.cluster.local"
            for subset in ep.get("subsets") or []:
                for address in subset.get("addresses") or []:
                    ip = address.get("ip")
                    if not ip:
                        continue
                    names = [fqdn_service, f"{service}.{namespace}", service]
                    hostname = address.get("hostname")
                    if hostname:
                        names = [f"{hostname}.{service}.{namespace}.svc.cluster.local", f"{hostname}.{service}"] + names
                    entries.append((ip, names))
        return {uid: by_namespace.get(_key(pod)[0], []) for uid, pod in pods.items()}

    # ---- used by the agent's HTTP server --------------------------------------

    def pool(self, name: str | None) -> Pool:
        if name:
            found = self.pools.get(name)
            if found is None:
                raise NotFound(f'storage pool "{name}" not found on node {self.node}')
            return found
        if not self.pools:
            raise NotFound(f"node {self.node} has no storage pool")
        return next(iter(self.pools.values()))

    def known_pods(self) -> set[str]:
        """UIDs of the pods this agent takes as bound to its node (what its watch last said)."""
        with self._lock:
            return set(self._pods)

    def pod_list(self) -> Obj:
        """The kubelet's ``/pods``: the pods this agent takes as bound to its node, as it last saw them."""
        with self._lock:
            pods = sorted(self._pods.values(), key=_key)
        return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods}

    def kubelet_configuration(self) -> Obj:
        """The kubelet's ``/configz``: the settings of this agent that are the kubelet's, under its field names
        (``kubectl get --raw /api/v1/nodes/NAME/proxy/configz``)."""
        c = self.config
        return {"kubeletconfig": {
            "address": c.listen_host,
            "port": self.port,
            "nodeStatusUpdateFrequency": go_duration(round(c.heartbeat_seconds * 1e9)),
            "nodeStatusReportFrequency": go_duration(round(c.status_report_seconds * 1e9)),
            "containerLogMaxSize": format_quantity(c.container_log_max_bytes, prefer_binary=True),
            "containerLogMaxFiles": c.container_log_max_files,
            "podCIDR": c.pod_ip_range,
            "maxPods": MAX_PODS,
            "registerNode": True,
        }}

    def pod_uid(self, namespace: str, name: str) -> str:
        with self._lock:
            for uid, pod in self._pods.items():
                if _key(pod) == (namespace, name):
                    return uid
        raise NotFound(f'pods "{name}" not found on node {self.node}')


# The node's pod capacity (the kubelet's maxPods, there 110 by default): the agent's limit is memory, not a count.
MAX_PODS = 1000

# The one runtime handler of Stowage's agents: a RuntimeClass names it to run a pod here (RC3).
RUNTIME_HANDLER = "runc"


class _CachedReader:
    """Claims, PVs and the ConfigMaps and Secrets pods use from the agent's watches; anything else,
    or a miss, from the API."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent

    def get(self, resource: str, name: str, namespace: str = "") -> Obj:
        found: Obj | None = None
        with self.agent._lock:
            if resource == "persistentvolumeclaims":
                found = self.agent._claims.get((namespace, name))
            elif resource == "persistentvolumes":
                found = self.agent._pvs.get(name)
        if found is not None:
            return found
        if resource in RESOURCES.values():
            return self.agent.referenced.get(resource, namespace, name,
                                             lambda: self.agent.client.get(resource, name, namespace))
        return self.agent.client.get(resource, name, namespace)


# The field holding a disk's cloud identity in each in-tree source (Kubernetes' GetVolumeName).
_VOLUME_HANDLE_FIELDS = ("volumeID", "pdName", "diskURI", "diskName", "volumePath")


def attached_volume_name(pv: Obj | None, pv_name: str, va: Obj, registry: PluginRegistry) -> str:
    """Node.status.volumesAttached's unique name: ``kubernetes.io/<plugin>/<volume handle>``
    (``kubernetes.io/csi/<driver>^<handle>`` for CSI), as the attach/detach controller names them."""
    spec = (pv or {}).get("spec") or {}
    csi = spec.get("csi") or {}
    if csi.get("driver") and csi.get("volumeHandle"):
        return f"kubernetes.io/csi/{csi['driver']}^{csi['volumeHandle']}"
    try:
        plugin = registry.find(spec) if spec else None
    except StowageError:
        plugin = None
    if plugin is None:
        return f"{(va.get('spec') or {}).get('attacher') or 'unknown'}/{pv_name}"
    source = plugin.spec(spec)
    handle = next((str(source[f]) for f in _VOLUME_HANDLE_FIELDS if source.get(f)), pv_name)
    return f"{plugin.name}/{handle}"


def _canonical(resources: dict[str, str]) -> dict[str, str]:
    return {name: canonical(quantity) for name, quantity in resources.items()}


def _without_heartbeat(status: Obj) -> Any:
    """A Node status without its timestamps (``_without_times``) and without empty fields (the API server
    stores no empty list): what tells a change from a beat."""
    def pruned(value: Any) -> Any:
        if isinstance(value, dict):
            kept = {k: pruned(v) for k, v in value.items()}
            return {k: v for k, v in kept.items() if v not in (None, [], {})}
        if isinstance(value, list):
            return [pruned(v) for v in value]
        return value
    return pruned(_without_times(status))


def _spec_fingerprint(pod: Obj) -> str:
    """What a failed sync of the pod depended on in the pod itself: a change retries at once."""
    meta = _meta(pod)
    return json.dumps([pod.get("spec"), meta.get("labels"), meta.get("annotations")], sort_keys=True, default=str)


def _references(pod: Obj) -> set[tuple[str, str]]:
    """("configMap" | "secret", name) of every ConfigMap and Secret a pod's volumes and env use."""
    spec = pod.get("spec") or {}
    found = _volume_references(pod)
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        for source in container.get("envFrom") or []:
            for kind, ref in (("configMap", "configMapRef"), ("secret", "secretRef")):
                if source.get(ref):
                    found.add((kind, source[ref].get("name", "")))
        for env in container.get("env") or []:
            value_from = env.get("valueFrom") or {}
            for kind, ref in (("configMap", "configMapKeyRef"), ("secret", "secretKeyRef")):
                if value_from.get(ref):
                    found.add((kind, value_from[ref].get("name", "")))
    return found


def _volume_references(pod: Obj) -> set[tuple[str, str]]:
    """("configMap" | "secret", name) of every ConfigMap and Secret a pod's volumes use."""
    found: set[tuple[str, str]] = set()
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        if volume.get("configMap"):
            found.add(("configMap", volume["configMap"].get("name", "")))
        if volume.get("secret"):
            found.add(("secret", volume["secret"].get("secretName", "")))
        for projection in (volume.get("projected") or {}).get("sources") or []:
            for kind in ("configMap", "secret"):
                if projection.get(kind):
                    found.add((kind, projection[kind].get("name", "")))
    return found


def _reference_keys(pod: Obj) -> list[tuple[str, str, str]]:
    namespace = _key(pod)[0]
    return [(RESOURCES[kind], namespace, name) for kind, name in _references(pod)]


_FINAL_PHASES = ("Succeeded", "Failed")


def _is_finished(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in _FINAL_PHASES


def _no_volumes(pod: Obj) -> PodVolumes:
    return PodVolumes(_meta(pod).get("uid", ""), _key(pod)[0], _key(pod)[1], [])


_VOLATILE_META = ("resourceVersion", "managedFields")


def _limited_empty_dirs(pod: Obj) -> list[tuple[Obj, Obj]]:
    """(volume, emptyDir source) of the pod's disk-backed emptyDirs that have a sizeLimit (E17)."""
    out = []
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        source = volume.get("emptyDir")
        if isinstance(source, dict) and source.get("medium") != "Memory" and source.get("sizeLimit"):
            out.append((volume, source))
    return out


_FAILED_WAITING = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")


def _container_warnings(pod: Obj, old: Obj, new: Obj) -> list[tuple[str, str]]:
    """The kubelet's Warning events for what a status write reports new (reason, message): ``Failed`` when a
    container cannot be made (a missing ConfigMap, a refused mount path) and ``BackOff`` when a crashing
    container waits for its next start; ``kubectl describe pod`` shows these, not the waiting message."""
    def waiting(c: Obj) -> Obj:
        return (c.get("state") or {}).get("waiting") or {}

    before = {c.get("name"): c for c in _container_statuses(old)}
    namespace, name = _key(pod)
    out: list[tuple[str, str]] = []
    for c in _container_statuses(new):
        now_waiting, was = waiting(c), before.get(c.get("name")) or {}
        reason = now_waiting.get("reason")
        if reason in _FAILED_WAITING and (waiting(was).get("reason"), waiting(was).get("message")) != (
                reason, now_waiting.get("message")):
            out.append(("Failed", f"Error: {now_waiting.get('message') or reason}"))
        elif reason == "CrashLoopBackOff" and (waiting(was).get("reason") != reason
                                               or was.get("restartCount") != c.get("restartCount")):
            out.append(("BackOff", f"Back-off restarting failed container {c.get('name')} in pod "
                                   f"{name}_{namespace}({_meta(pod).get('uid', '')})"))
    return out


# Where each list of container statuses has its containers in the pod's spec (an event's fieldPath).
_STATUS_FIELDS = (("initContainerStatuses", "initContainers"), ("containerStatuses", "containers"),
                  ("ephemeralContainerStatuses", "ephemeralContainers"))


def _running_containers(pod: Obj | None) -> list[tuple[str, str]]:
    """(the spec list it is in, its name) of each running container: an ephemeral one's events name
    ``spec.ephemeralContainers{...}``, as the kubelet's do."""
    status = (pod or {}).get("status") or {}
    return [(spec_key, c.get("name") or "") for status_key, spec_key in _STATUS_FIELDS
            for c in status.get(status_key) or [] if "running" in (c.get("state") or {})]


def _container_statuses(status: Obj) -> list[Obj]:
    """A pod status's init containers' statuses, then its containers', then its ephemeral containers'."""
    return [c for status_key, _ in _STATUS_FIELDS for c in status.get(status_key) or []]


def _only_status_changed(old: Obj, new: Obj) -> bool:
    """True when two versions of a pod differ only in status (and bookkeeping metadata)."""
    if old.get("spec") != new.get("spec"):
        return False
    strip = lambda m: {k: v for k, v in m.items() if k not in _VOLATILE_META}  # noqa: E731
    return bool(strip(_meta(old)) == strip(_meta(new)))


def _readiness(pod: Obj) -> dict[str, Any]:
    return {c.get("type"): c.get("status") for c in (pod.get("status") or {}).get("conditions") or []
            if c.get("type") in ("Ready", "ContainersReady")}


def _agrees(watched: Obj | None, status: Obj) -> bool:
    """The API's copy shows the readiness ``status`` holds (someone else may have overwritten it since
    this agent last wrote it, and what the agent remembers writing may be an older push)."""
    said = _readiness({"status": status})
    if watched is None or not said:
        return True
    seen = _readiness(watched)
    return all(seen.get(kind) == value for kind, value in said.items())


def _resize_pending(claim: Obj) -> bool:
    return any(c.get("type") == "FileSystemResizePending" and c.get("status") == "True"
               for c in (claim.get("status") or {}).get("conditions") or [])


def _without_times(status: Obj) -> Obj:
    """The part of a status worth a write: timestamps alone never trigger one."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("lastProbeTime", "lastTransitionTime", "lastHeartbeatTime")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(status)


def _merge_conditions(old: list[Obj], new: list[Obj]) -> list[Obj]:
    """The runtime's conditions win, but the scheduler's PodScheduled is kept."""
    merged = {c.get("type"): c for c in old}
    for cond in new:
        merged[cond.get("type")] = cond
    return list(merged.values())
