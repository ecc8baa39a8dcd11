"""EBS volumes through Stowage against the bare boto3 calls, both on moto's EC2 server in one run.

(1) Baseline: the calls a careful script makes for N volumes, one after another:
    create_volume xN, the ``volume_available`` waiter over all ids, attach_volume xN
    (spread over the node instances, a free device name each), the ``volume_in_use``
    waiter; seconds until all available and until all attached. Then its cleanup
    (detach xN, waiter, delete xN), counted apart.
(2) Stowage, Immediate class (``kubernetes.io/aws-ebs``): N claims created one after
    another (as ``kubectl apply`` of one file); seconds until all are Bound (against
    "all available").
(3) Stowage, WaitForFirstConsumer class (``ebs.csi.aws.com``, what EKS users write):
    N claims + N pods the same way; seconds until all claims are Bound, all
    VolumeAttachments attached (against "all attached") and all pods Running with
    the volume formatted and mounted (against "all attached" too: this side also
    formats, mounts and starts a container).

Every EC2 request is counted by operation at moto's side (a WSGI wrapper around
the server's app), so the figures say what the provisioner really sends, retries
included (a throttled call that botocore retries counts twice), however it builds
its boto3 client (it makes its own boto3 Session, which a hook on boto3's default
session would not see). The control plane (API server on
SQLite, controllers, the EBS provisioner) runs in this process, configured for
moto only through the standard AWS_* environment; each node is an EC2 instance
(``run_instances``) and a ``stowage agent`` process started with
``--provider-id aws:///<zone>/<instance id>`` (the cloud node controller's job
on EKS). ``SimulatedDisks`` plays EC2's part on each node: an attached volume shows
up as a real loop device under the agent's ``--dev-disk-dir``.

Times come from watches opened before each clock starts; each phase also records
its EC2 calls, create latencies, load average and CPU seconds (this process, moto
included, and the agents). One claim is provisioned and deleted before anything is
timed, and ``--rounds`` repeats all phases (times then are medians).

Nodes: Kubernetes' default EBS attach limit is 39 volumes per node, so N volumes
get ceil(N / 39) nodes (3 for 100), as they would on EC2, rather than one node
with a raised limit.

Everything is deleted afterwards (pods, claims, VolumeAttachments, the volumes
in moto, loop devices, temp dirs), also on failure; the JSON records any volume
left in moto. Needs root (loop devices, mounts, runc).

usage: python benchmarks/attach.py [--claims 100] [--rounds 1] [--nodes K] [--out FILE] [--quick]
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from statistics import median
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import boto3  # noqa: E402
import psutil  # noqa: E402
import httpx  # noqa: E402
import structlog  # noqa: E402
from moto.server import DomainDispatcherApplication, ThreadedMotoServer, create_backend_app  # noqa: E402
from werkzeug.serving import WSGIRequestHandler, make_server  # noqa: E402

from attach_harness import SimulatedDisks, ebs_link  # noqa: E402
from provisioners import registry as provisioner_registry  # noqa: E402
from provisioners.aws_ebs import AwsEbsProvisioner  # noqa: E402
from raw_volume import wait  # noqa: E402
from serverutil import running_server  # noqa: E402
from storage.controllers.manager import run_controllers  # noqa: E402
from storage.errors import AlreadyExists, NotFound  # noqa: E402
from storage.system import loop, mounts  # noqa: E402
from support import cleanup_tree  # noqa: E402

Obj = dict[str, Any]
REGION = "us-east-1"
ZONE = "us-east-1a"
ATTACH_LIMIT = 39  # Kubernetes' default attachable-volumes-aws-ebs
LOOP = "trap 'exit 0' TERM; while true; do sleep 60 & wait $!; done"
# The names Kubernetes' AWS device allocator hands out (/dev/xvdba ... /dev/xvdcz): 52 per instance.
CLAIMS = "/api/v1/namespaces/default/persistentvolumeclaims"
PODS = "/api/v1/namespaces/default/pods"
ATTACHMENTS = "/apis/storage.k8s.io/v1/volumeattachments"
DEVICE_NAMES = [f"/dev/xvd{a}{b}" for a in "bc" for b in "abcdefghijklmnopqrstuvwxyz"]


# ---- moto's EC2, every request counted ------------------------------------------------------

class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:  # one line per request would drown the output
        pass


class _CountActions:
    """WSGI wrapper: counts each EC2 request by its ``Action`` (a Query API form field)."""

    def __init__(self, app: Any, counts: Counter[str], lock: threading.Lock, latency: float = 0.0) -> None:
        self.app, self.counts, self.lock, self.latency = app, counts, lock, latency

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        environ["wsgi.input"] = io.BytesIO(body)  # the app reads it again
        fields = parse_qs(body.decode("utf-8", "replace")) or parse_qs(environ.get("QUERY_STRING", ""))
        action = (fields.get("Action") or ["(none)"])[0]
        with self.lock:
            self.counts[action] += 1
        if self.latency:  # each request has its own thread: a delay, not a queue
            time.sleep(self.latency)
        return self.app(environ, start_response)


class CountingMotoServer(ThreadedMotoServer):
    """moto's threaded server on 127.0.0.1 (a free port) with a request count per EC2 operation."""

    def __init__(self, latency: float = 0.0) -> None:
        super().__init__("127.0.0.1", 0, verbose=False)
        self.latency = latency
        self.counts: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def _server_entry(self) -> None:  # ThreadedMotoServer's own, with the counting wrapper and no request log
        app = _CountActions(DomainDispatcherApplication(create_backend_app), self.counts, self._count_lock, self.latency)
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=_QuietHandler)
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    @staticmethod
    def forget_deleted_volumes_tags() -> int:
        """moto keeps the tags of deleted volumes, and its tag-filtered DescribeVolumes scans every tag ever
        set, so each round would run slower than the one before; EC2 drops them with the volume. Between
        phases (never timed), drop them here too. Its backends live in this process (ThreadedMotoServer)."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.ec2.models import ec2_backends

        backend = ec2_backends[DEFAULT_ACCOUNT_ID][REGION]
        stale = [rid for rid in list(backend.tags) if rid.startswith("vol-") and rid not in backend.volumes]
        for rid in stale:
            backend.tags.pop(rid, None)
        return len(stale)

    def snapshot(self) -> Counter[str]:
        with self._count_lock:
            return Counter(self.counts)

    def since(self, before: Counter[str]) -> dict[str, int]:
        now = self.snapshot()
        return {k: now[k] - before[k] for k in sorted(now) if now[k] - before[k]}


# ---- (1) the baseline -------------------------------------------------------------------------

def baseline(ec2: Any, moto: CountingMotoServer, instances: list[str], n: int) -> Obj:
    """create xN, wait, attach xN, wait: seconds and calls; then the cleanup, counted apart."""
    ids: list[str] = []
    placement: dict[str, tuple[str, str]] = {}  # volume -> (instance, device)
    try:
        before = moto.snapshot()
        cpu_before = cpu_seconds([os.getpid()])
        start = time.perf_counter()
        for _ in range(n):
            ids.append(ec2.create_volume(AvailabilityZone=ZONE, Size=1, VolumeType="gp3")["VolumeId"])
        # The waiter polls DescribeVolumes for all ids at once; a 1 s delay instead of its 15 s default so a
        # slow first answer would not penalise the baseline (on moto the first answer already says available).
        ec2.get_waiter("volume_available").wait(VolumeIds=ids, WaiterConfig={"Delay": 1, "MaxAttempts": 600})
        available = time.perf_counter() - start
        calls_available = moto.since(before)
        for i, volume_id in enumerate(ids):
            instance, device = instances[i % len(instances)], DEVICE_NAMES[i // len(instances)]
            ec2.attach_volume(VolumeId=volume_id, InstanceId=instance, Device=device)
            placement[volume_id] = (instance, device)
        ec2.get_waiter("volume_in_use").wait(VolumeIds=ids, WaiterConfig={"Delay": 1, "MaxAttempts": 600})
        attached = time.perf_counter() - start
        calls = moto.since(before)
        cpu_used = round(cpu_seconds([os.getpid()]) - cpu_before, 2)
    finally:
        before_cleanup = moto.snapshot()
        for volume_id, (instance, device) in placement.items():
            # The real API needs only the volume id; moto also wants the instance.
            ec2.detach_volume(VolumeId=volume_id, InstanceId=instance, Device=device)
        if placement:
            ec2.get_waiter("volume_available").wait(VolumeIds=list(placement),
                                                    WaiterConfig={"Delay": 1, "MaxAttempts": 600})
        for volume_id in ids:
            ec2.delete_volume(VolumeId=volume_id)
    return {"seconds_all_available": available, "seconds_all_attached": attached, "load_1min": os.getloadavg()[0],
            "cpu_seconds_script_and_moto": cpu_used,
            "calls_to_available": calls_available, "calls_to_attached": calls,
            "calls_cleanup": moto.since(before_cleanup)}


# ---- the cluster ----------------------------------------------------------------------------

class Tracker:
    """Watches one collection (``path``, e.g. /api/v1/namespaces/default/pods) and records when each object
    first satisfies ``done`` (perf_counter seconds). Returns once its watch is open, so a clock started
    after it misses nothing. Each watch lasts 2 s (server side) and the next resumes from the last
    revision, so nothing is missed and stop() never closes a socket another thread is reading."""

    def __init__(self, client: Any, path: str, done: Callable[[Obj], bool]) -> None:
        self.client, self.path, self.done = client, path, done
        self.first: dict[str, float] = {}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._open = threading.Event()
        self._rv = self._relist()
        self._thread = threading.Thread(target=self._run, name=f"track-{path}", daemon=True)
        self._thread.start()
        if not self._open.wait(60):
            raise TimeoutError(f"could not watch {path}")

    def _relist(self) -> str:
        response = self.client.http.get(self.path)
        response.raise_for_status()
        listing = response.json()
        for obj in listing.get("items") or []:
            self._see(obj)
        return str(listing["metadata"]["resourceVersion"])

    def _see(self, obj: Obj) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        if name not in self.first and self.done(obj):
            with self._changed:
                self.first[name] = time.perf_counter()
                self._changed.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                params = {"watch": "true", "resourceVersion": self._rv, "timeoutSeconds": "2"}
                with self.client.http.stream("GET", self.path, params=params,
                                             timeout=httpx.Timeout(30.0, read=None)) as response:
                    response.raise_for_status()
                    self._open.set()
                    for raw in response.iter_lines():
                        if not raw.strip():
                            continue
                        event = json.loads(raw)
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":  # e.g. the revision was compacted: list again
                            self._rv = self._relist()
                            break
                        self._rv = str((obj.get("metadata") or {}).get("resourceVersion") or self._rv)
                        if event.get("type") != "DELETED":
                            self._see(obj)
            except Exception:  # a dropped watch: watch again from the last revision
                if self._stop.wait(0.05):
                    return

    def wait_for(self, names: Iterable[str], timeout: float) -> float:
        """The time the last of ``names`` got done; TimeoutError naming how many did not."""
        wanted = set(names)
        with self._changed:
            if not self._changed.wait_for(lambda: wanted <= self.first.keys(), timeout=timeout):
                missing = len(wanted - self.first.keys())
                raise TimeoutError(f"{self.path}: {missing} of {len(wanted)} not done after {timeout:.0f}s")
            return max(self.first[n] for n in wanted)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.close()


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU of these processes and of the children they waited for (mkfs, mount, runc)."""
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


class CpuMeter:
    """CPU seconds the control plane (this process: API server, controllers, the provisioner, and moto's
    server, which runs here too) and the agents spend between start() and stop()."""

    def __init__(self, cluster: "Cluster") -> None:
        self.agents = [a.pid for a in cluster.agents]
        self.start = (cpu_seconds([os.getpid()]), cpu_seconds(self.agents))

    def stop(self) -> dict[str, float]:
        return {"control_plane_and_moto": round(cpu_seconds([os.getpid()]) - self.start[0], 2),
                "agents": round(cpu_seconds(self.agents) - self.start[1], 2)}


def bound(claim: Obj) -> bool:
    return (claim.get("status") or {}).get("phase") == "Bound"


def running(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"


def attached(va: Obj) -> bool:
    return bool((va.get("status") or {}).get("attached"))


class Cluster:
    """API server + controllers in this process, one ``stowage agent`` process and SimulatedDisks per node."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._server_cm = running_server(base)
        self.server = self._server_cm.__enter__()
        self.client = self.server.client()
        self.stop = threading.Event()
        # As `stowage up` registers it: with a node lookup, so a detach finds a node's instance by providerID.
        # Its boto3 client takes moto's address from this process's AWS_* environment.
        provisioner_registry.register(AwsEbsProvisioner(nodes=self._node))
        ready = threading.Event()
        self.controllers = threading.Thread(target=run_controllers, args=(self.server.store, self.stop),
                                            kwargs={"ready": ready}, daemon=True)
        self.controllers.start()
        if not ready.wait(60):
            raise TimeoutError("the controllers did not start")
        self.agents: list[subprocess.Popen[bytes]] = []
        self.disks: list[SimulatedDisks] = []

    def _node(self, name: str) -> Obj | None:
        try:
            return self.server.store.get("nodes", "", name)  # type: ignore[no-any-return]
        except NotFound:
            return None

    def _bootstrap(self, node: str) -> Path:
        from storage.api.bootstrap_tokens import new_bootstrap_token
        from storage.client.kubeconfig import write_kubeconfig

        token, secret = new_bootstrap_token(3600, f"benchmark agent {node}")
        self.client.create(secret)
        return write_kubeconfig(self.base / f"{node}.bootstrap.kubeconfig", self.server.url, token,
                                ca_data=self.server.ca_pem)

    def add_node(self, node: str, index: int, instance_id: str) -> None:
        home = self.base / node
        dev_disk = home / "dev-disk"
        disks = SimulatedDisks(self.server.client(), node=node, dev_disk=dev_disk, backing=home / "disks",
                               link_for=ebs_link)
        disks.__enter__()
        self.disks.append(disks)
        pool = home / "pool"
        pool.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(home / "agent.log", "ab") as log:  # the agent keeps its own descriptor
            self.agents.append(subprocess.Popen(
                [sys.executable, "-m", "storage.cli", "agent", "--node", node,
                 "--bootstrap-kubeconfig", str(self._bootstrap(node)), "--data-dir", str(home / "agent"),
                 "--pool", f"default={pool}:1Gi", "--zone", ZONE, "--dev-disk-dir", str(dev_disk),
                 "--pod-cidr", f"127.{200 + index}.0.0/24", "--heartbeat", "5",
                 # What the cloud node controller sets on EKS: the Node's instance.
                 "--provider-id", f"aws:///{ZONE}/{instance_id}"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, env=env))

        def ready() -> bool:
            obj = self.client.get("nodes", node)
            conditions = (obj.get("status") or {}).get("conditions") or []
            return (any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
                    and (obj.get("spec") or {}).get("providerID") == f"aws:///{ZONE}/{instance_id}")
        wait(ready, f"node {node} Ready", 120)

    def create_class(self, name: str, provisioner: str, mode: str) -> None:
        try:
            self.client.create({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
                                "provisioner": provisioner, "volumeBindingMode": mode, "reclaimPolicy": "Delete",
                                "parameters": {"type": "gp3", "fsType": "ext4"}})
        except AlreadyExists:  # the round before made it
            pass

    def claim(self, name: str, storage_class: str) -> None:
        self.client.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                            "metadata": {"name": name, "namespace": "default"},
                            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                                     "resources": {"requests": {"storage": "1Gi"}}}})

    def pod(self, name: str, claim: str) -> None:
        self.client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                            "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
                                "name": "main", "image": "debian:12", "command": ["/bin/sh", "-c", LOOP],
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}})

    def delete_all(self, timeout: float = 600) -> None:
        """Pods, then claims; waits until the volumes and attachments are gone (the provisioner deleted them)."""
        for resource in ("pods", "persistentvolumeclaims"):
            items, _ = self.client.list(resource, "default")
            for obj in items:
                try:
                    self.client.delete(resource, obj["metadata"]["name"], "default")
                except NotFound:
                    pass
        wait(lambda: not self.client.list("pods", "default")[0] and not self.client.list("persistentvolumes")[0]
             and not self.client.list("volumeattachments")[0], "pods, volumes and attachments deleted", timeout, 0.2)

    def close(self) -> list[str]:
        problems = []
        for agent in self.agents:
            if agent.poll() is None:
                agent.send_signal(signal.SIGTERM)
                try:
                    agent.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(agent.pid, signal.SIGKILL)
                    agent.wait(10)
                    problems.append(f"agent {agent.pid} killed")
        for disks in self.disks:
            disks.__exit__(None, None, None)
            problems += disks.errors
        self.stop.set()
        self.controllers.join(30)
        provisioner_registry.unregister(AwsEbsProvisioner.name)
        self._server_cm.__exit__(None, None, None)
        return problems


# ---- (2) and (3) ------------------------------------------------------------------------------

def timed(create: Callable[[str], Any], names: list[str]) -> dict[str, float]:
    """Calls ``create`` for each name in turn (as ``kubectl apply`` of one file does); its latency percentiles."""
    seconds = []
    for name in names:
        t = time.perf_counter()
        create(name)
        seconds.append(time.perf_counter() - t)
    seconds.sort()
    return {"p50": round(seconds[len(seconds) // 2], 4), "p90": round(seconds[int(len(seconds) * 0.9)], 4),
            "max": round(seconds[-1], 4)}


def warm_up(cluster: Cluster, timeout: float) -> None:
    """One claim provisioned and deleted before anything is timed: the provisioner's boto3 client (its
    service model alone takes a few tenths of a second to load) exists in a control plane that has run for
    a while, as the baseline's client exists before its clock starts."""
    cluster.create_class("ebs-warm-up", "kubernetes.io/aws-ebs", "Immediate")
    cluster.claim("warm-up", "ebs-warm-up")
    wait(lambda: bound(cluster.client.get("persistentvolumeclaims", "warm-up", "default")), "the warm-up claim", timeout)
    cluster.delete_all(timeout)


def stowage_immediate(cluster: Cluster, moto: CountingMotoServer, n: int, timeout: float) -> Obj:
    cluster.create_class("ebs-immediate", "kubernetes.io/aws-ebs", "Immediate")
    claims = Tracker(cluster.server.client(), CLAIMS, bound)
    try:
        before = moto.snapshot()
        cpu = CpuMeter(cluster)
        start = time.perf_counter()
        names = [f"imm-{i}" for i in range(n)]
        latencies = timed(lambda name: cluster.claim(name, "ebs-immediate"), names)
        created = time.perf_counter() - start
        all_bound = claims.wait_for(names, timeout) - start
        calls = moto.since(before)
        cpu_used = cpu.stop()
        load = os.getloadavg()[0]
    finally:
        claims.stop()
    before_cleanup = moto.snapshot()
    cluster.delete_all(timeout)
    return {"seconds_created": created, "create_latency": latencies, "seconds_all_bound": all_bound,
            "load_1min": load, "cpu_seconds": cpu_used, "calls_to_bound": calls, "calls_cleanup": moto.since(before_cleanup)}


def stowage_pods(cluster: Cluster, moto: CountingMotoServer, n: int, timeout: float) -> Obj:
    cluster.create_class("ebs", "ebs.csi.aws.com", "WaitForFirstConsumer")
    claims = Tracker(cluster.server.client(), CLAIMS, bound)
    pods = Tracker(cluster.server.client(), PODS, running)
    vas = Tracker(cluster.server.client(), ATTACHMENTS, attached)
    try:
        before = moto.snapshot()
        cpu = CpuMeter(cluster)
        start = time.perf_counter()
        names = [f"wffc-{i}" for i in range(n)]
        latencies = timed(lambda name: (cluster.claim(name, "ebs"), cluster.pod(name, name)), names)
        created = time.perf_counter() - start
        all_bound = claims.wait_for(names, timeout) - start
        all_running = pods.wait_for(names, timeout) - start
        calls = moto.since(before)
        cpu_used = cpu.stop()
        load = os.getloadavg()[0]
        attachments = [va["metadata"]["name"] for va in cluster.client.list("volumeattachments")[0]]
        all_attached = vas.wait_for(attachments, 1) - start
    finally:
        claims.stop()
        pods.stop()
        vas.stop()
    placed = Counter(p["spec"].get("nodeName", "") for p in cluster.client.list("pods", "default")[0])
    check_mounted(cluster, names)
    before_cleanup = moto.snapshot()
    cluster.delete_all(timeout)
    return {"seconds_created": created, "create_latency": latencies, "seconds_all_bound": all_bound,
            "seconds_all_attached": all_attached,
            "seconds_all_running": all_running, "load_1min": load, "cpu_seconds": cpu_used,
            "attachments": len(attachments), "pods_per_node": dict(placed),
            "calls_to_running": calls, "calls_cleanup": moto.since(before_cleanup)}


def check_mounted(cluster: Cluster, names: list[str]) -> None:
    """Each pod's volume is a mounted ext4 on one of the simulated disks (a real format and mount)."""
    devices = {d for disks in cluster.disks for d in disks.devices.values()}
    for name in names:
        pod = cluster.client.get("pods", name, "default")
        home = cluster.base / pod["spec"]["nodeName"] / "agent" / "pods" / pod["metadata"]["uid"] / "volumes"
        target = next(home.glob("*/data"), None)
        entry = mounts.top_mount(target) if target else None
        if entry is None or entry.fstype != "ext4":
            raise AssertionError(f"pod {name}: no ext4 volume mounted at {target}")
        if devices and entry.source not in devices:
            raise AssertionError(f"pod {name}: {entry.source} is not an attached disk ({sorted(devices)[:3]}...)")


# ---- the run --------------------------------------------------------------------------------

def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("inf")


def calls_table(left: dict[str, int], right: dict[str, int], titles: tuple[str, str]) -> str:
    ops = sorted(set(left) | set(right))
    width = max([len(o) for o in ops] + [9])
    lines = [f"    {'operation':<{width}}  {titles[0]:>10}  {titles[1]:>10}"]
    lines += [f"    {op:<{width}}  {left.get(op, 0):>10}  {right.get(op, 0):>10}" for op in ops]
    lines.append(f"    {'total':<{width}}  {sum(left.values()):>10}  {sum(right.values()):>10}")
    return "\n".join(lines)


def configure_aws(url: str) -> dict[str, str | None]:
    """Standard AWS environment for this process and its children; the previous values, to restore."""
    values = {"AWS_ENDPOINT_URL": url, "AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing",
              "AWS_SECRET_ACCESS_KEY": "testing"}
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):  # a real account's settings must not leak into the run
        previous[k] = os.environ.pop(k, None)
    return previous


def one_round(cluster: Cluster, ec2: Any, moto: CountingMotoServer, instances: list[str], n: int, nodes: int,
              timeout: float) -> Obj:
    """The bare sequence, the two Stowage phases, and the bare sequence again (so a change of load on a
    shared machine shows on both sides: the round's baseline is the mean of the two)."""
    before = baseline(ec2, moto, instances, n)
    print(f"(1) bare boto3, {n} volumes one after another: all available after "
          f"{before['seconds_all_available']:.2f}s, all attached after {before['seconds_all_attached']:.2f}s", flush=True)
    moto.forget_deleted_volumes_tags()
    imm = stowage_immediate(cluster, moto, n, timeout)
    print(f"(2) Stowage, Immediate class, {n} claims created in {imm['seconds_created']:.2f}s: all Bound after "
          f"{imm['seconds_all_bound']:.2f}s (CPU seconds {imm['cpu_seconds']})", flush=True)
    moto.forget_deleted_volumes_tags()
    wffc = stowage_pods(cluster, moto, n, timeout)
    print(f"(3) Stowage, WaitForFirstConsumer class, {n} claims + {n} pods on {nodes} node(s) created in "
          f"{wffc['seconds_created']:.2f}s (claim + pod latency p50 {wffc['create_latency']['p50'] * 1000:.0f} ms, "
          f"max {wffc['create_latency']['max'] * 1000:.0f} ms): all Bound after {wffc['seconds_all_bound']:.2f}s, "
          f"all attached after {wffc['seconds_all_attached']:.2f}s, all Running after {wffc['seconds_all_running']:.2f}s "
          f"(pods per node: {wffc['pods_per_node']}; CPU seconds {wffc['cpu_seconds']})", flush=True)
    after = baseline(ec2, moto, instances, n)
    print(f"(1') bare boto3 again: all available after {after['seconds_all_available']:.2f}s, all attached after "
          f"{after['seconds_all_attached']:.2f}s", flush=True)
    return {"baseline": before, "immediate": imm, "wait_for_first_consumer": wffc, "baseline_after": after,
            "bare_available": (before["seconds_all_available"] + after["seconds_all_available"]) / 2,
            "bare_attached": (before["seconds_all_attached"] + after["seconds_all_attached"]) / 2}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--claims", type=int, default=None, help="volumes per phase (default 100, 3 with --quick)")
    parser.add_argument("--nodes", type=int, default=None,
                        help=f"nodes/instances (default: ceil(claims / {ATTACH_LIMIT}), the default EBS attach limit)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 claims unless --claims says otherwise")
    parser.add_argument("--baseline-only", action="store_true", help="only the bare boto3 sequence (no cluster)")
    parser.add_argument("--ec2-latency-ms", type=float, default=0.0,
                        help="delay moto adds to every request (moto answers in a few ms; EC2's API takes tens to "
                             "hundreds); default 0")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of all phases (times: medians)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds each phase may take")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/results/attach-<UTC>.json)")
    args = parser.parse_args(argv)
    n = args.claims if args.claims is not None else (3 if args.quick else 100)
    nodes = args.nodes or max(1, math.ceil(n / ATTACH_LIMIT))
    if os.geteuid() != 0:
        print("needs root (loop devices, mounts, runc)")
        return 2
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    stamp = dt.datetime.now(dt.timezone.utc)
    out = args.out or REPO / "benchmarks" / "results" / f"attach-{stamp:%Y%m%dT%H%M%SZ}.json"

    moto = CountingMotoServer(latency=args.ec2_latency_ms / 1000)
    moto.start()
    previous_env = configure_aws(moto.url)
    base = Path(tempfile.mkdtemp(prefix="stowage-bench-attach-"))
    cluster: Cluster | None = None
    result: Obj = {"benchmark": "attach", "date": stamp.isoformat(timespec="seconds"), "claims": n, "nodes": nodes,
                   "ec2_latency_ms": args.ec2_latency_ms,
                   "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()}}
    problems: list[str] = []
    root_volumes: set[str] | None = None
    try:
        ec2 = boto3.client("ec2")
        reservation = ec2.run_instances(ImageId="ami-12c6146b", MinCount=nodes, MaxCount=nodes, InstanceType="m5.large",
                                        Placement={"AvailabilityZone": ZONE})
        instances = [i["InstanceId"] for i in reservation["Instances"]]
        root_volumes = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}

        if args.baseline_only:
            result["baseline"] = bare = baseline(ec2, moto, instances, n)
            print(f"(1) bare boto3, {n} volumes one after another: all available after "
                  f"{bare['seconds_all_available']:.2f}s, all attached after {bare['seconds_all_attached']:.2f}s")
            result["ok"] = True
            return 0

        cluster = Cluster(base)
        for index, instance_id in enumerate(instances):
            cluster.add_node(f"node-{index}", index, instance_id)
        warm_up(cluster, args.timeout)
        rounds: list[Obj] = []
        result["rounds"] = rounds
        for r in range(args.rounds):
            rounds.append(one_round(cluster, ec2, moto, instances, n, nodes, args.timeout))
        first = rounds[0]
        # Call counts are the first round's (every round makes the same calls); times are medians over rounds.
        result.update({k: first[k] for k in ("baseline", "immediate", "wait_for_first_consumer", "baseline_after")})
        imm_bound = median(r["immediate"]["seconds_all_bound"] for r in rounds)
        attached_s = median(r["wait_for_first_consumer"]["seconds_all_attached"] for r in rounds)
        running_s = median(r["wait_for_first_consumer"]["seconds_all_running"] for r in rounds)
        bare_available = median(r["bare_available"] for r in rounds)
        bare_attached = median(r["bare_attached"] for r in rounds)
        base_result, imm, wffc = first["baseline"], first["immediate"], first["wait_for_first_consumer"]
        result["medians"] = {"stowage_all_bound_immediate": imm_bound, "stowage_all_attached": attached_s,
                             "stowage_all_running": running_s, "bare_all_available": bare_available,
                             "bare_all_attached": bare_attached}
        result["ratios"] = ratios = {
            "bound_vs_available": ratio(imm_bound, bare_available),
            "attached_vs_attached": ratio(attached_s, bare_attached),
            "running_vs_attached": ratio(running_s, bare_attached),
            "per_round_bound_vs_available": [ratio(r["immediate"]["seconds_all_bound"], r["bare_available"]) for r in rounds],
            "per_round_running_vs_attached": [ratio(r["wait_for_first_consumer"]["seconds_all_running"], r["bare_attached"])
                                              for r in rounds],
            "calls_bound_vs_available": ratio(sum(imm["calls_to_bound"].values()),
                                              sum(base_result["calls_to_available"].values())),
            "calls_running_vs_attached": ratio(sum(wffc["calls_to_running"].values()),
                                               sum(base_result["calls_to_attached"].values())),
        }
        of = f" (medians of {len(rounds)} rounds)" if len(rounds) > 1 else ""
        print(f"Immediate{of}: all Bound {imm_bound:.2f}s vs bare all available {bare_available:.2f}s: "
              f"{ratios['bound_vs_available']}x (aim <= 1.2x); EC2 calls:")
        print(calls_table(base_result["calls_to_available"], imm["calls_to_bound"], ("bare", "stowage")))
        print(f"WaitForFirstConsumer{of}: all attached {attached_s:.2f}s vs bare all attached {bare_attached:.2f}s: "
              f"{ratios['attached_vs_attached']}x; all Running {running_s:.2f}s: {ratios['running_vs_attached']}x "
              f"(aim <= 1.2x); EC2 calls:")
        print(calls_table(base_result["calls_to_attached"], wffc["calls_to_running"], ("bare", "stowage")))
        print("Cleanup EC2 calls (bare: detach, wait, delete; Stowage: the pods and claims deleted):")
        print(calls_table(base_result["calls_cleanup"], wffc["calls_cleanup"], ("bare", "stowage")), flush=True)
        result["ok"] = True
        return 0
    except BaseException as exc:
        result["ok"] = False
        result["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if cluster is not None:
            try:
                if result.get("ok") is not True:
                    cluster.delete_all(120)  # what a failed phase left behind
            except Exception as exc:
                problems.append(f"delete after failure: {exc}")
            problems += cluster.close()
        try:
            ec2 = boto3.client("ec2")
            left = [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"] if v["VolumeId"] not in (root_volumes or ())]
        except Exception as exc:  # moto itself failed: nothing to count
            left = [f"(unknown: {exc})"]
        result["leaked_volumes"] = left
        if left:
            problems.append(f"{len(left)} volume(s) left in EC2: {', '.join(left[:5])}{' ...' if len(left) > 5 else ''}")
        cleanup_tree(base)
        if mounts.mounts_under(base) or loop.loops_under(base):
            problems.append(f"mounts or loop devices left under {base}")
        result["cleanup_problems"] = problems
        result["temp_dir"] = str(base)
        result["temp_dir_removed"] = not base.exists()
        moto.stop()
        for k, v in previous_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {out}" + (f"; cleanup problems: {problems}" if problems else ""), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
