"""Many hosts on one control plane: N node agents, each in its own network namespace, and P pods.

Each host is a network namespace on a bridge (tests/netns_hosts.py) running its own ``stowage agent``
(its own address, pod range, data dir and storage pool); the control plane is one ``stowage serve``
process (SQLite) on the bridge's control address. Two phases, in the same run:

- baseline: P pods without volumes;
- measured: P WaitForFirstConsumer claims of the local class + P pods using them (a claim per pod).

Each phase reports the seconds until every pod is Running, a pod's create -> Running as p50/p99 (the
create call's return to the first watch event showing Running, both on this process's clock), the CPU
seconds of the control plane process and of all agents together, pods that got a FailedScheduling
event (failed placements) and pods not Running at the end. Then the store's size on disk. The ratio
measured ÷ baseline of the all-Running times is the figure the README quotes (aim: at most 1.3x).

Last, in the same run, the control plane's leader failover (``failover.py``: three ``stowage serve``
replicas on a private PostgreSQL, SIGKILL of the Lease holder, median of ``--failover-rounds`` kills):
a replicated control plane needs PostgreSQL, while the phases above use the single-process default
(SQLite), so it runs as its own cluster after them. ``--failover-rounds 0`` skips it.

usage: python benchmarks/scale.py [--hosts 50] [--pods 1000] [--clients 4] [--failover-rounds 5]
                                  [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import httpx  # noqa: E402
import psutil  # noqa: E402

from netns_hosts import Fabric, Host  # noqa: E402
from storage.client import Client  # noqa: E402
from storage.errors import AlreadyExists, NotFound, TemporaryError  # noqa: E402
from support import cleanup_tree  # noqa: E402

LOOP = "trap 'exit 0' TERM; while true; do sleep 600 & wait $!; done"
MiB = 1 << 20


def _wait(predicate: Any, what: str, timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (httpx.TransportError, TemporaryError) as exc:
            # A loaded API server may not answer one call in time: that is a figure, not the end of the run.
            print(f"  (waiting for {what}: {exc!r}; asking again)", flush=True)
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class ScaleCluster:
    def __init__(self, base: Path, hosts: int, pool_bytes: int) -> None:
        self.base = base
        self.fabric = Fabric(hosts, prefix="node")
        self.serve: subprocess.Popen[bytes] | None = None
        self.agents: list[subprocess.Popen[bytes]] = []
        self.pool_bytes = pool_bytes
        data = base / "control"
        data.mkdir(parents=True)
        self.data = data
        log = open(base / "serve.log", "ab")
        self.serve = subprocess.Popen(
            [sys.executable, "-m", "storage.cli", "serve", "--data-dir", str(data), "--listen",
             f"{self.fabric.control_ip}:0", "--log-format", "json"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        kubeconfig = data / "kubeconfig"
        _wait(lambda: kubeconfig.exists() and self._answers(kubeconfig), "the control plane", 120)
        self.kubeconfig = kubeconfig
        self.client = Client.from_kubeconfig(kubeconfig)
        self.bootstrap = base / "bootstrap.kubeconfig"
        subprocess.run([sys.executable, "-m", "storage.cli", "token", "create", "--kubeconfig", str(kubeconfig),
                        "--bootstrap-kubeconfig", str(self.bootstrap)], check=True, capture_output=True)

    @staticmethod
    def _answers(kubeconfig: Path) -> bool:
        try:
            with Client.from_kubeconfig(kubeconfig) as client:
                client.list("nodes")
            return True
        except Exception:
            return False

    def start_agents(self) -> None:
        for host in self.fabric.hosts:
            self.agents.append(self._agent(host))
        _wait(lambda: self._ready_nodes() == len(self.fabric.hosts), f"{len(self.fabric.hosts)} nodes Ready", 600, 1)

    def _agent(self, host: Host) -> subprocess.Popen[bytes]:
        root = self.base / "hosts" / host.name
        pool = root / "pool"
        pool.mkdir(parents=True)
        argv = [sys.executable, "-m", "storage.cli", "agent", "--node", host.name, "--bootstrap-kubeconfig",
                str(self.bootstrap), "--data-dir", str(root / "agent"), "--pool", f"default={pool}:{self.pool_bytes}",
                "--address", host.address, "--pod-cidr", host.pod_cidr, "--pod-interface", "eth0",
                "--heartbeat", "10", "--log-format", "json"]
        log = open(root / "agent.log", "ab")
        proc = subprocess.Popen(self.fabric.argv_in(host, argv), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        log.close()
        return proc

    def _ready_nodes(self) -> int:
        items, _ = self.client.list("nodes")
        return sum(1 for n in items if any(c.get("type") == "Ready" and c.get("status") == "True"
                                             for c in (n.get("status") or {}).get("conditions") or []))

    def cpu_seconds(self) -> tuple[float, float]:
        """(control plane, all agents): user + system CPU seconds so far, children included."""
        def total(pid: int) -> float:
            try:
                proc = psutil.Process(pid)
                procs = [proc, *proc.children(recursive=True)]
            except psutil.NoSuchProcess:
                return 0.0
            out = 0.0
            for p in procs:
                try:
                    t = p.cpu_times()
                    out += t.user + t.system
                except psutil.NoSuchProcess:
                    continue
            return out
        assert self.serve is not None
        # An agent's runc children are the pods' processes: count the agent alone (the python process).
        agents = 0.0
        for proc in self.agents:
            for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=False)]:
                try:
                    if "storage.cli" in " ".join(p.cmdline()):
                        t = p.cpu_times()
                        agents += t.user + t.system
                except psutil.NoSuchProcess:
                    continue
        return total(self.serve.pid), agents

    def store_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.data.glob("*.db*"))

    def close(self) -> None:
        for proc in self.agents:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.agents:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if self.serve is not None and self.serve.poll() is None:
            self.serve.send_signal(signal.SIGTERM)
            try:
                self.serve.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.serve.pid, signal.SIGKILL)
        self.fabric.close()


def _pod(name: str, claim: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"terminationGracePeriodSeconds": 2, "containers": [
        {"name": "main", "image": "debian:12", "command": ["/bin/sh", "-c", LOOP]}]}
    if claim:
        spec["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
        spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                                            "labels": {"bench": "scale"}}, "spec": spec}


def _claim(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local",
                     "resources": {"requests": {"storage": "16Mi"}}}}


def phase(cluster: ScaleCluster, pods: int, clients: int, with_volumes: bool, prefix: str) -> dict[str, Any]:
    created: dict[str, float] = {}
    running_at: dict[str, float] = {}
    done = threading.Event()
    _, revision = cluster.client.list("pods", "default")

    def watch() -> None:
        since = str(revision)
        with Client.from_kubeconfig(cluster.kubeconfig) as client:
            while not done.is_set():
                try:
                    for event in client.watch("pods", "default", resource_version=since):
                        obj = event["object"]
                        since = obj["metadata"].get("resourceVersion") or since
                        name = obj["metadata"]["name"]
                        if (obj.get("status") or {}).get("phase") == "Running" and name not in running_at:
                            running_at[name] = time.monotonic()
                            if len(running_at) >= pods:
                                done.set()
                                return
                except (httpx.TransportError, TemporaryError) as exc:  # resumed where it was, as a reflector
                    print(f"  (pod watch ended: {exc!r}; resuming at {since})", flush=True)
                    time.sleep(1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    cpu_before = cluster.cpu_seconds()
    start = time.monotonic()

    def create(i: int) -> None:
        name = f"{prefix}-{i}"
        with_client = local.client

        def create_once(obj: dict[str, Any]) -> None:
            try:
                with_client.create(obj)
            except AlreadyExists:  # a create whose answer was lost the first time
                pass

        if with_volumes:
            _retrying(lambda: create_once(_claim(name)))
        _retrying(lambda: create_once(_pod(name, name if with_volumes else None)))
        created[name] = time.monotonic()

    local = threading.local()

    def init() -> None:
        local.client = Client.from_kubeconfig(cluster.kubeconfig)

    with ThreadPoolExecutor(clients, initializer=init) as pool:
        list(pool.map(create, range(pods)))
    all_created = time.monotonic() - start
    finished = done.wait(1800)
    elapsed = time.monotonic() - start
    cpu_after = cluster.cpu_seconds()
    latencies = sorted(running_at[n] - created[n] for n in running_at if n in created)
    items, _ = _retrying(lambda: cluster.client.list("pods", "default"))
    not_running = sum(1 for p in items if (p.get("status") or {}).get("phase") != "Running")
    events, _ = _retrying(lambda: cluster.client.list("events", "default"))
    failed = len({(e.get("involvedObject") or {}).get("name") for e in events if e.get("reason") == "FailedScheduling"})
    nodes_used = len({p["spec"].get("nodeName") for p in items if p["spec"].get("nodeName")})
    return {"pods": pods, "volumes": with_volumes, "all_created_s": round(all_created, 2),
            "all_running_s": round(elapsed, 2) if finished else None,
            "p50_s": round(statistics.median(latencies), 3) if latencies else None,
            "p99_s": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 3) if latencies else None,
            "control_plane_cpu_s": round(cpu_after[0] - cpu_before[0], 1),
            "agents_cpu_s": round(cpu_after[1] - cpu_before[1], 1),
            "failed_placements": failed, "not_running": not_running, "nodes_used": nodes_used}


def delete_all(cluster: ScaleCluster) -> None:
    for resource in ("pods", "persistentvolumeclaims"):
        items, _ = _retrying(lambda r=resource: cluster.client.list(r, "default"))
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda o, r=resource: _delete(cluster, r, o["metadata"]["name"]), items))
    _wait(lambda: not cluster.client.list("pods", "default")[0] and not cluster.client.list("persistentvolumes")[0],
          "everything deleted", 1800, 1)
    events, _ = _retrying(lambda: cluster.client.list("events", "default"))
    for e in events:
        _delete(cluster, "events", e["metadata"]["name"])


def _retrying(call: Any) -> Any:
    """``call()``, asked again with back-off when a busy API server does not answer in time."""
    for attempt in range(6):
        try:
            return call()
        except (httpx.TransportError, TemporaryError):
            if attempt == 5:
                raise
            time.sleep(2 ** attempt)


def _delete(cluster: ScaleCluster, resource: str, name: str) -> None:
    def delete() -> None:
        try:
            cluster.client.delete(resource, name, "default")
        except NotFound:  # also a delete whose answer was lost the first time
            pass
    _retrying(delete)


def failover(base: Path, rounds: int) -> dict[str, Any]:
    """failover.py's figures, run as its own process so that its replicas and PostgreSQL are its own."""
    out = base / "failover.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "failover.py"), "--rounds", str(rounds),
                           "--json", str(out)], text=True)
    if not out.exists():
        raise RuntimeError(f"failover.py exited {proc.returncode} without figures")
    figures: dict[str, Any] = json.loads(out.read_text())
    figures["aim_met"] = proc.returncode == 0
    return figures


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--failover-rounds", type=int, default=5)
    parser.add_argument("--json", default=None, help="Also write the figures to this file.")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces, loop devices, mounts, runc)")
        return 2
    base = Path(tempfile.mkdtemp(prefix="stowage-scale-"))
    cluster: ScaleCluster | None = None
    per_host = -(-args.pods // args.hosts)
    try:
        cluster = ScaleCluster(base, args.hosts, pool_bytes=max(1024, per_host * 2 * 16 + 256) * MiB)
        t0 = time.monotonic()
        cluster.start_agents()
        agents_ready = time.monotonic() - t0
        cluster.client.create({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                               "metadata": {"name": "local"}, "provisioner": "stowage.io/local",
                               "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete",
                               "parameters": {"fsType": "ext4"}})
        # Each phase is printed as it ends: a long run stopped later keeps what it had measured.
        print(f"agents ready: {args.hosts} in {agents_ready:.1f} s", flush=True)
        baseline = phase(cluster, args.pods, args.clients, False, "plain")
        print("baseline:", json.dumps(baseline), flush=True)
        delete_all(cluster)
        measured = phase(cluster, args.pods, args.clients, True, "vol")
        print("measured:", json.dumps(measured), flush=True)
        store = cluster.store_bytes()
        ratio = (measured["all_running_s"] / baseline["all_running_s"]
                 if measured["all_running_s"] and baseline["all_running_s"] else None)
        result = {"hosts": args.hosts, "agents_ready_s": round(agents_ready, 1), "baseline": baseline,
                  "measured": measured, "ratio_all_running": round(ratio, 2) if ratio else None,
                  "store_bytes": store, "cpus": os.cpu_count(), "load_avg": os.getloadavg()}
        delete_all(cluster)
        cluster.close()
        cluster = None
        if args.failover_rounds:
            result["failover"] = failover(base, args.failover_rounds)
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return 0
    finally:
        if cluster is not None:
            cluster.close()
        cleanup_tree(base)


if __name__ == "__main__":
    sys.exit(main())
