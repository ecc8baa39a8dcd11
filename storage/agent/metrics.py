"""Resource usage of the node and its containers, as the kubelet's ``/stats/summary`` reports it.

CPU is a rate (nanocores): the difference of the cumulative CPU time between two
readings over the time between them. The previous reading of each container is kept;
the first request for a container it has no recent reading of takes two readings a
short window apart. Memory is the working set (usage less inactive file pages), the
figure the kubelet and ``kubectl top`` use.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from storage.api.ephemeral import claim_volumes
from storage.api.timestamps import now as now_iso
from storage.system import mounts
from storage.system.cgroups import CGROUP_ROOT, cgroup_paths

if TYPE_CHECKING:
    from storage.agent.agent import NodeAgent

# Filesystems whose statfs waits on a server or a daemon, which may not answer (GF7): a summary must never
# hang on one, so their usage is left out (a CSI driver's is asked of the driver, which answers or fails).
REMOTE_FILESYSTEMS = ("fuse", "nfs", "ceph", "cifs", "smb3", "glusterfs", "9p")
WINDOW_SECONDS = 0.5  # the window a rate is measured over when no earlier reading will do
# N8: two readings closer than this mostly measure what happened between two requests (kubectl starting, the
# API server answering it), not the node's load: a rate needs an earlier reading at least this old, as
# metrics-server's scrapes are 15 s apart; else it is measured now over WINDOW_SECONDS.
MIN_WINDOW_SECONDS = 10.0
STALE_SECONDS = 60.0  # an older reading says little about the present rate

_lock = threading.Lock()
# key -> readings (monotonic time, cumulative cpu ns), oldest first, at least MIN_WINDOW_SECONDS / 4 apart and
# none older than STALE_SECONDS: enough to find one of the right age without keeping one per request.
_history: dict[str, list[tuple[float, int]]] = {}


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stat(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                out[key] = int(value)
    except OSError:
        pass
    return out


def cgroup_usage(pid: int) -> tuple[int, int] | None:
    """(cumulative CPU nanoseconds, memory working set bytes) of the cgroup ``pid`` is in."""
    try:
        paths = cgroup_paths(pid)
    except OSError:
        return None
    cpu = memory = None
    if "cpuacct" in paths:  # cgroup v1
        cpu = _read_int(CGROUP_ROOT / "cpuacct" / paths["cpuacct"].lstrip("/") / "cpuacct.usage")
    if "memory" in paths:
        base = CGROUP_ROOT / "memory" / paths["memory"].lstrip("/")
        usage = _read_int(base / "memory.usage_in_bytes")
        if usage is not None:
            memory = max(0, usage - _stat(base / "memory.stat").get("total_inactive_file", 0))
    if (cpu is None or memory is None) and "" in paths:  # cgroup v2
        base = CGROUP_ROOT / paths[""].lstrip("/")
        if cpu is None:
            usec = _stat(base / "cpu.stat").get("usage_usec")
            cpu = usec * 1000 if usec is not None else None
        if memory is None:
            current = _read_int(base / "memory.current")
            if current is not None:
                memory = max(0, current - _stat(base / "memory.stat").get("inactive_file", 0))
    if cpu is None or memory is None:
        return None
    return cpu, memory


def _node_usage() -> tuple[int, int]:
    times = psutil.cpu_times()
    busy = sum(getattr(times, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))
    vm = psutil.virtual_memory()
    return int(busy * 1e9), int(vm.total - vm.available)


def _baseline(samples: list[tuple[float, int]], at: float) -> tuple[float, int] | None:
    """The newest reading at least MIN_WINDOW_SECONDS and less than STALE_SECONDS before ``at``."""
    for sample in reversed(samples):
        if MIN_WINDOW_SECONDS <= at - sample[0] < STALE_SECONDS:
            return sample
    return None


def _remember(key: str, at: float, cpu: int) -> None:
    samples = [s for s in _history.get(key, []) if at - s[0] < STALE_SECONDS]
    if not samples or at - samples[-1][0] >= MIN_WINDOW_SECONDS / 4:
        samples.append((at, cpu))
    _history[key] = samples


def _rates(readers: dict[str, Any]) -> tuple[dict[str, tuple[int, int]], float]:
    """key -> (nanocores, working set bytes) for each reader (a function giving cumulative cpu ns
    and memory, or None when the thing is gone), and the node's window in seconds."""
    first: dict[str, tuple[float, int, int]] = {}
    for key, read in readers.items():
        value = read()
        if value is not None:
            first[key] = (time.monotonic(), *value)
    with _lock:
        base = {k: b for k in first if (b := _baseline(_history.get(k, []), first[k][0])) is not None}
    missing = [k for k in first if k not in base]
    if missing:
        time.sleep(WINDOW_SECONDS)  # a rate needs two readings; this is the measuring window
        for key in missing:
            base[key] = (first[key][0], first[key][1])
            value = readers[key]()
            if value is not None:
                first[key] = (time.monotonic(), *value)
    out: dict[str, tuple[int, int]] = {}
    window = WINDOW_SECONDS
    with _lock:
        for key, (at, cpu, memory) in first.items():
            before_at, before_cpu = base[key]
            elapsed = at - before_at
            out[key] = (max(0, int((cpu - before_cpu) / elapsed)) if elapsed > 0 else 0, memory)
            if key == "node":
                window = elapsed
            _remember(key, at, cpu)
        now = time.monotonic()
        for gone in [k for k, v in _history.items() if k not in readers and (not v or now - v[-1][0] >= STALE_SECONDS)]:
            del _history[gone]  # a container that stopped: its readings would never be asked for again
    return out, window


def _init_pid(agent: "NodeAgent", container_id: str) -> int | None:
    runtime = agent.runtime
    assert runtime is not None
    state_file = runtime.settings.runc.root / container_id / "state.json"
    try:
        return int(json.loads(state_file.read_text())["init_process_pid"])
    except (OSError, ValueError, KeyError, TypeError):
        state = runtime.settings.runc.state(container_id)
        return int(state["pid"]) if state and state.get("pid") else None


def _claim_refs(pod: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Volume name -> the ``pvcRef`` of its claim, for the pod's claim volumes (generated ephemeral ones too)."""
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    claims = {v.get("name"): (v.get("persistentVolumeClaim") or {}).get("claimName") for v in claim_volumes(pod)}
    return {name: {"name": claim, "namespace": namespace} for name, claim in claims.items() if name and claim}


def csi_volume_stats(pod_dir: Path, pod: dict[str, Any], stamp: str) -> list[dict[str, Any]]:
    """The pod's CSI volumes as /stats/summary's ``volume`` entries, from the drivers' NodeGetVolumeStats
    (with ``pvcRef`` for claims, as the kubelet reports claim usage). A driver that fails is left out."""
    try:
        from volume_plugins.csi import DIR_NAME, CsiPlugin
    except ImportError:
        return []
    refs = _claim_refs(pod)
    out: list[dict[str, Any]] = []
    for target in sorted((pod_dir / "volumes" / DIR_NAME).glob("*")):
        try:
            usage = CsiPlugin().stats(target)
        except Exception:  # a driver down must not break the node's summary
            continue
        if usage is None:
            continue
        entry: dict[str, Any] = {"name": target.name, "time": stamp, "capacityBytes": usage.total_bytes,
                                 "usedBytes": usage.used_bytes, "availableBytes": usage.available_bytes,
                                 "inodes": usage.total_inodes, "inodesUsed": usage.used_inodes,
                                 "inodesFree": usage.available_inodes}
        entry = {k: v for k, v in entry.items() if v is not None}
        if target.name in refs:
            entry["pvcRef"] = refs[target.name]
        out.append(entry)
    return out


def mounted_volume_stats(pod_dir: Path, pod: dict[str, Any], stamp: str,
                         by_point: dict[str, mounts.MountEntry]) -> list[dict[str, Any]]:
    """The pod's volumes that have a mount of their own on a local filesystem (a claim's local or
    block-backed volume, a Memory emptyDir, a projected or Secret volume), as /stats/summary's
    ``volume`` entries: statfs of the mount, as the kubelet's MetricsStatFS reports, with ``pvcRef``
    for a claim. ``by_point``: the node's mounts by mount point. A volume without a mount of its own
    (an emptyDir on the node's disk) is left out, as are network and FUSE filesystems
    (``REMOTE_FILESYSTEMS``); CSI volumes come from ``csi_volume_stats``."""
    try:
        from volume_plugins.csi import DIR_NAME as CSI_DIR
    except ImportError:
        CSI_DIR = ""
    refs = _claim_refs(pod)
    out: list[dict[str, Any]] = []
    for plugin_dir in sorted((pod_dir / "volumes").glob("*")):
        if plugin_dir.name == CSI_DIR:
            continue
        try:
            targets = sorted(plugin_dir.iterdir())
        except OSError:  # the pod torn down meanwhile
            continue
        for target in targets:
            # Found in the table without a stat of the target itself: a hung FUSE daemon would block it.
            entry = by_point.get(mounts.real_without_stat(target))
            if entry is None or entry.fstype.split(".")[0] in REMOTE_FILESYSTEMS:
                continue
            try:
                fs = os.statvfs(target)
            except OSError:  # unmounted meanwhile
                continue
            item: dict[str, Any] = {
                "name": target.name, "time": stamp, "capacityBytes": fs.f_blocks * fs.f_frsize,
                "availableBytes": fs.f_bavail * fs.f_frsize, "usedBytes": (fs.f_blocks - fs.f_bfree) * fs.f_frsize,
                "inodes": fs.f_files, "inodesFree": fs.f_ffree, "inodesUsed": fs.f_files - fs.f_ffree}
            if target.name in refs:
                item["pvcRef"] = refs[target.name]
            out.append(item)
    return out


def summary(agent: "NodeAgent") -> dict[str, Any]:
    """The node's and each running container's CPU rate and working set, and each pod's volume usage."""
    runtime = agent.runtime
    assert runtime is not None
    readers: dict[str, Any] = {"node": _node_usage}
    pods: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for uid, pod, containers in _running_containers(agent):
        for name, pid in containers:
            readers[f"{uid}/{name}"] = lambda pid=pid: cgroup_usage(pid)
        pods[uid] = (pod, [name for name, _ in containers])
    rates, window = _rates(readers)
    stamp = now_iso()

    def usage(key: str) -> dict[str, Any]:
        cpu, memory = rates[key]
        return {"cpu": {"time": stamp, "usageNanoCores": cpu}, "memory": {"time": stamp, "workingSetBytes": memory}}

    by_point = _mounts_by_point() if pods else {}
    out_pods = []
    for uid, (pod, running) in pods.items():
        meta = pod.get("metadata") or {}
        containers = [{"name": n, "startTime": stamp, **usage(f"{uid}/{n}")} for n in running if f"{uid}/{n}" in rates]
        if containers:
            entry: dict[str, Any] = {"podRef": {"name": meta.get("name", ""), "namespace": meta.get("namespace", ""),
                                                "uid": uid}, "containers": containers}
            volumes = _volume_stats(agent, uid, pod, stamp, by_point)
            if volumes:
                entry["volume"] = volumes
            out_pods.append(entry)
    return {"node": {"nodeName": agent.node, **usage("node")}, "pods": out_pods, "window": f"{window:.3f}s"}


def _running_containers(agent: "NodeAgent") -> list[tuple[str, dict[str, Any], list[tuple[str, int]]]]:
    """(uid, pod as last seen, [(container, its init pid)]) of each running pod, by uid."""
    runtime = agent.runtime
    assert runtime is not None
    out = []
    for uid in sorted(runtime.running_pods()):
        pod = agent._pods.get(uid) or {}
        running = []
        for container in (pod.get("spec") or {}).get("containers") or []:
            name = container.get("name", "")
            process = runtime.container_process(uid, name)
            pid = _init_pid(agent, process[0]) if process is not None else None
            if pid is not None:
                running.append((name, pid))
        out.append((uid, pod, running))
    return out


def _mounts_by_point() -> dict[str, mounts.MountEntry]:
    """The node's mounts by mount point, the top one of a stack."""
    return {e.mount_point: e for e in mounts.read_mountinfo()}


def _volume_stats(agent: "NodeAgent", uid: str, pod: dict[str, Any], stamp: str,
                  by_point: dict[str, mounts.MountEntry]) -> list[dict[str, Any]]:
    pod_dir = agent.data_dir / "pods" / uid
    return csi_volume_stats(pod_dir, pod, stamp) + mounted_volume_stats(pod_dir, pod, stamp, by_point)


# The kubelet's volume gauges (its /metrics), from the summary's fields of each claim's volume.
_VOLUME_GAUGES = (
    ("kubelet_volume_stats_capacity_bytes", "Capacity in bytes of the volume", "capacityBytes"),
    ("kubelet_volume_stats_available_bytes", "Number of available bytes in the volume", "availableBytes"),
    ("kubelet_volume_stats_used_bytes", "Number of used bytes in the volume", "usedBytes"),
    ("kubelet_volume_stats_inodes", "Maximum number of inodes in the volume", "inodes"),
    ("kubelet_volume_stats_inodes_free", "Number of free inodes in the volume", "inodesFree"),
    ("kubelet_volume_stats_inodes_used", "Number of used inodes in the volume", "inodesUsed"),
)


class _VolumeCollector:
    """A prometheus_client collector of the claims mounted for the node's running pods, read at each scrape."""

    def __init__(self, agent: "NodeAgent") -> None:
        self.agent = agent

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        runtime = self.agent.runtime
        assert runtime is not None
        stamp = now_iso()
        by_point = _mounts_by_point()
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for uid in sorted(runtime.running_pods()):
            pod = self.agent._pods.get(uid) or {}
            for volume in _volume_stats(self.agent, uid, pod, stamp, by_point):
                ref = volume.get("pvcRef")
                if ref:  # a claim two pods mount is one series, as the kubelet reports it
                    seen.setdefault((ref["namespace"], ref["name"]), volume)
        for name, help_text, field in _VOLUME_GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=["namespace", "persistentvolumeclaim"])
            for (namespace, claim), volume in sorted(seen.items()):
                if volume.get(field) is not None:
                    family.add_metric([namespace, claim], float(volume[field]))
            yield family


def prometheus_text(agent: "NodeAgent") -> tuple[bytes, str]:
    """(body, content type) of the agent's ``/metrics``: the kubelet's ``kubelet_volume_stats_*`` gauges for
    each claim mounted for a running pod (labels ``namespace`` and ``persistentvolumeclaim``), in the
    Prometheus text format. The library is loaded at the first scrape: an agent nobody scrapes does not
    carry it (the agent's memory aim)."""
    return _exposition(_VolumeCollector(agent))


def _exposition(collector: object) -> tuple[bytes, str]:
    """(body, content type) of one collector's metrics in the Prometheus text format, from a registry of its
    own: a scrape reads the cgroups and mounts at that moment, and nothing is kept between scrapes."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _ResourceCollector:
    """The kubelet's resource metrics (its ``/metrics/resource``, what metrics-server scrapes): cumulative CPU
    seconds and the working set of the node, of each running pod (the sum of its containers) and of each
    container, read at each scrape; ``scrape_error`` is 1 when a container's cgroup could not be read."""

    def __init__(self, agent: "NodeAgent") -> None:
        self.agent = agent

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        node_cpu = CounterMetricFamily("node_cpu_usage_seconds", "Cumulative cpu time consumed by the node in "
                                       "core-seconds")
        node_memory = GaugeMetricFamily("node_memory_working_set_bytes", "Current working set of the node in bytes")
        pod_cpu = CounterMetricFamily("pod_cpu_usage_seconds", "Cumulative cpu time consumed by the pod in "
                                      "core-seconds", labels=["namespace", "pod"])
        pod_memory = GaugeMetricFamily("pod_memory_working_set_bytes", "Current working set of the pod in bytes",
                                       labels=["namespace", "pod"])
        labels = ["container", "namespace", "pod"]
        container_cpu = CounterMetricFamily("container_cpu_usage_seconds", "Cumulative cpu time consumed by the "
                                            "container in core-seconds", labels=labels)
        container_memory = GaugeMetricFamily("container_memory_working_set_bytes", "Current working set of the "
                                             "container in bytes", labels=labels)
        cpu_ns, memory = _node_usage()
        node_cpu.add_metric([], cpu_ns / 1e9)
        node_memory.add_metric([], float(memory))
        failed = 0
        for _uid, pod, containers in _running_containers(self.agent):
            meta = pod.get("metadata") or {}
            namespace, name = meta.get("namespace", ""), meta.get("name", "")
            total_cpu = total_memory = 0
            measured = False
            for container, pid in containers:
                usage = cgroup_usage(pid)
                if usage is None:
                    failed = 1  # gone between the listing and the read, or unreadable
                    continue
                measured = True
                container_cpu.add_metric([container, namespace, name], usage[0] / 1e9)
                container_memory.add_metric([container, namespace, name], float(usage[1]))
                total_cpu += usage[0]
                total_memory += usage[1]
            if measured:
                pod_cpu.add_metric([namespace, name], total_cpu / 1e9)
                pod_memory.add_metric([namespace, name], float(total_memory))
        scrape_error = GaugeMetricFamily("scrape_error", "1 if there was an error while getting container "
                                         "metrics, 0 otherwise")
        scrape_error.add_metric([], float(failed))
        yield from (container_cpu, container_memory, node_cpu, node_memory, pod_cpu, pod_memory, scrape_error)


def resource_metrics_text(agent: "NodeAgent") -> tuple[bytes, str]:
    """(body, content type) of the agent's ``/metrics/resource``, in the Prometheus text format."""
    return _exposition(_ResourceCollector(agent))
