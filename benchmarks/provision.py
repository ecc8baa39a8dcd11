"""Provisioning through Stowage against doing the same work by hand.

(a) ``apply`` of a claim (1 GiB ext4, WaitForFirstConsumer, local pool) and a pod
    until a watch on pods shows it Running with the volume mounted, against the raw
    command sequence doing the same: truncate, losetup --direct-io=on, mkfs.ext4, mount,
    bind mount, and a runc container (overlay of / on a tmpfs, as the agent's
    runtime does) running a shell; the ratio of medians over several rounds. The raw
    container is ``runc spec``'s: no user namespace and no seccomp filter, which the
    agent's pods have (RuntimeDefault costs runc about 7 ms per start here, PF71). Where the time
    goes is printed beside the ratio: the bare side's steps (the volume, the mounts, the container),
    and when Stowage's stages were reached (both creates returned, the claim's node selected, its PV
    created, the claim Bound, the pod Running), medians over the rounds.
(b) N claims + N pods created at once: seconds until all claims are Bound and
    until all pods are Running, and each pod's start-up latency (its create call returning -> the
    watch showing it Running, both on this process's clock) as p50/p99. Against it, in the same run
    and before it, the bare work for N volumes and N containers (16 MiB: truncate, losetup
    --direct-io=on, mkfs.ext4, mount, bind mount, the overlay root, ``runc run -d``) done by a thread
    pool as wide as the agent's pod set-up pool (``POD_SYNC_WORKERS``); the ratio all-Running / bare.
(c) the node agent's memory with N pods and N volumes (``--rss-pods N``), measured the same way
    every time by ``agent_memory.py`` (its docstring gives the method), on a cluster of its own
    before (a) and (b), so that nothing else has shaped the agent's heap.

The control plane (API server on SQLite, controllers) runs in this process; the
agent runs as its own ``stowage agent`` process. Everything is cleaned up.

usage: python benchmarks/provision.py [--rounds 5] [--burst 500] [--rss-pods 100] [--only-burst | --only-rss]
                                     [--profile DIR]

``--profile DIR`` (needs pyinstrument and py-spy) writes where the burst's time goes: a py-spy
sampling of every thread of the agent process and of this process (the control plane) into DIR.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import psutil  # noqa: E402

from agent_memory import measure_agent_memory  # noqa: E402
from cluster import LOOP, BenchCluster, quiet_logs, running  # noqa: E402
from raw_volume import GiB, create_volume, make_device, mount_pod_root, run, runc_bundle, wait  # noqa: E402
from storage.agent.agent import POD_SYNC_WORKERS  # noqa: E402
from storage.system import mounts  # noqa: E402
from spy import Sampler, missing  # noqa: E402
from support import cleanup_tree  # noqa: E402


# ---- (a) the raw baseline -----------------------------------------------------------------

def _bundle(work: Path) -> tuple[Path, Path, Path, Path]:
    """One pod's directories and its runc bundle, made before the clock starts: (image, mount point,
    pod volume, scratch)."""
    (work / "bundle").mkdir(parents=True)
    image, mnt, bind = work / "vol.img", work / "mnt", work / "pod-data"
    scratch, rootfs = work / "scratch", work / "bundle" / "rootfs"
    for d in (mnt, bind, scratch, rootfs):
        d.mkdir(parents=True, exist_ok=True)
    runc_bundle(work / "bundle", rootfs, bind, LOOP)
    return image, mnt, bind, scratch


def raw_once(base: Path, i: int) -> tuple[float, dict[str, float]]:
    """Seconds for the bare sequence, and where they went: the volume (truncate, losetup, mkfs), the
    mounts and the container (``runc run -d`` until ``runc state`` says running), each in seconds."""
    work = base / f"raw{i}"
    image, mnt, bind, scratch = _bundle(work)
    rootfs = work / "bundle" / "rootfs"
    root = work / "runc"
    start = time.perf_counter()
    device = make_device(image)
    made = time.perf_counter()
    run("mount", device, str(mnt))
    mount_pod_root(mnt, bind, scratch, rootfs)
    mounted = time.perf_counter()
    # Detached, the container inherits runc's stdio: give it none, or a captured pipe never closes.
    subprocess.run(["runc", "--root", str(root), "run", "-d", "--bundle", str(work / "bundle"), f"raw{i}"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait(lambda: json.loads(run("runc", "--root", str(root), "state", f"raw{i}"))["status"] == "running", "raw container")
    end = time.perf_counter()
    return end - start, {"volume": made - start, "mounts": mounted - made, "runc": end - mounted}


# ---- (b) the raw baseline: N volumes and containers by a pool as wide as the agent's ----------

def raw_burst(base: Path, n: int, width: int, size: int = 16 << 20) -> float:
    """Seconds for ``n`` volumes + containers made by ``width`` threads; bundles are prepared first."""
    root = base / "runc"
    items = [(i, _bundle(base / f"b{i}")) for i in range(n)]

    def one(item: tuple[int, tuple[Path, Path, Path, Path]]) -> None:
        i, (image, mnt, bind, scratch) = item
        create_volume(image, mnt, size)
        mount_pod_root(mnt, bind, scratch, base / f"b{i}" / "bundle" / "rootfs", "size=16m")
        subprocess.run(["runc", "--root", str(root), "run", "-d", "--bundle", str(base / f"b{i}" / "bundle"), f"rb{i}"],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait(lambda: json.loads(run("runc", "--root", str(root), "state", f"rb{i}"))["status"] == "running",
             "raw container", 120, 0.01)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=width) as pool:
        list(pool.map(one, items))
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 200 is the 198th value)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, -(-len(ordered) * q // 100) - 1))] if ordered else float("nan")


class RunningWatch:
    """Watches on pods, claims and volumes: when (this clock) each pod was first seen scheduled and
    Running, each claim first seen with its selected node and Bound, and its volume first seen -- the
    stages of a pod's start-up."""

    def __init__(self, bench: "Bench") -> None:
        self.clients = [bench.server.client(), bench.server.client(), bench.server.client()]
        self.seen: dict[str, float] = {}  # pod Running
        self.scheduled: dict[str, float] = {}  # pod spec.nodeName
        self.selected: dict[str, float] = {}  # claim's selected-node annotation
        self.provisioned: dict[str, float] = {}  # the claim's PV created (by claimRef's name)
        self.bound: dict[str, float] = {}  # claim Bound
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(c, r), daemon=True)
                        for c, r in zip(self.clients, ("pods", "persistentvolumeclaims", "persistentvolumes"))]
        for t in self.threads:
            t.start()

    def _observe(self, resource: str, obj: dict) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        now = time.perf_counter()
        if resource == "pods":
            if (obj.get("spec") or {}).get("nodeName"):
                self.scheduled.setdefault(name, now)
            if running(obj):
                self.seen.setdefault(name, now)
        elif resource == "persistentvolumes":
            claim = (obj.get("spec") or {}).get("claimRef") or {}
            if claim.get("name"):
                self.provisioned.setdefault(claim["name"], now)
        else:
            if "volume.kubernetes.io/selected-node" in ((obj.get("metadata") or {}).get("annotations") or {}):
                self.selected.setdefault(name, now)
            if (obj.get("status") or {}).get("phase") == "Bound":
                self.bound.setdefault(name, now)

    def _run(self, client: object, resource: str) -> None:
        # Short watches resumed from the last revision seen: each ends within 5 s of close(), and a
        # resumed one does not list everything again.
        revision: str | None = None
        while not self.stop.is_set():
            try:
                namespace = None if resource == "persistentvolumes" else "default"
                for event in client.watch(resource, namespace, resource_version=revision, timeout=5):  # type: ignore[attr-defined]
                    obj = event.get("object") or {}
                    revision = (obj.get("metadata") or {}).get("resourceVersion") or revision
                    self._observe(resource, obj)
                    if self.stop.is_set():
                        return
            except Exception:  # compacted (Gone) or cut: watch again from a listing
                revision = None
                time.sleep(0.1)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)
        for c in self.clients:
            c.close()

    def stages(self, created_at: dict[str, float]) -> str:
        """p50/p99 of each stage's own duration over the pods: create -> claim's node selected -> claim
        Bound -> pod Running (the last one is the agent's part: volume set-up and container start)."""
        def fmt(label: str, values: list[float]) -> str:
            return f"{label} p50 {percentile(values, 50):.1f}s p99 {percentile(values, 99):.1f}s" if values else f"{label} -"
        names = [k for k in created_at if k in self.selected and k in self.bound and k in self.seen]
        return ", ".join([
            fmt("create->selected", [self.selected[k] - created_at[k] for k in names]),
            fmt("selected->bound", [self.bound[k] - self.selected[k] for k in names]),
            fmt("bound->running", [self.seen[k] - max(self.bound[k], self.scheduled.get(k, 0.0)) for k in names]),
        ])


def profiles(out: Path, bench: "Bench") -> Sampler:
    """py-spy of the agent process and of this process (the control plane) while the burst runs."""
    assert bench.agent is not None
    return Sampler(out, {"agent": bench.agent.pid, "control-plane": os.getpid()})


# ---- the cluster under test -----------------------------------------------------------------

class Bench(BenchCluster):
    """The local pool's cluster: the controllers with the local provisioner, one agent with a pool."""

    def __init__(self, base: Path) -> None:
        super().__init__(base, local_provisioner=True)

    def start_agent(self, pool_bytes: int) -> None:  # type: ignore[override]
        super().start_agent(pool_bytes=pool_bytes)
        self.client.create({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "local"},
                            "provisioner": "stowage.io/local", "volumeBindingMode": "WaitForFirstConsumer",
                            "reclaimPolicy": "Delete", "parameters": {"fsType": "ext4"}})

    def claim_and_pod(self, name: str, size: str) -> None:  # type: ignore[override]
        super().claim_and_pod(name, "local", size=size)


def stowage_once(bench: Bench, i: int, watch: RunningWatch) -> tuple[float, dict[str, float]]:
    """One claim and pod; the clock stops when the watch shows the pod Running. (Until 2026-12-03 it
    stopped at the first GET every 20 ms that showed it Running, which added about 10 ms on average
    to Stowage's side only: the raw side's first ``runc state`` already finds its container running.)
    Also returns when each stage was reached, in seconds from the start: both creates returned, the
    claim's node selected (the scheduler), its PV created (the provisioner: the volume made on the node),
    the claim Bound (the binder)."""
    name = f"single-{i}"
    start = time.perf_counter()
    bench.claim_and_pod(name, "1Gi")
    created = time.perf_counter()
    wait(lambda: name in watch.seen, "the pod Running", interval=0.005)
    elapsed = watch.seen[name] - start
    assert running(bench.client.get("pods", name, "default")), "the pod is Running by a fresh read too"
    entry = mounts.top_mount(bench.pod_volume(name))
    assert entry is not None and entry.fstype == "ext4", "the volume is mounted"
    return elapsed, {"created": created - start, "selected": watch.selected[name] - start,
                     "PV created": watch.provisioned[name] - start, "bound": watch.bound[name] - start}


def medians_ms(splits: list[dict[str, float]]) -> str:
    return ", ".join(f"{k} {1000 * statistics.median(s[k] for s in splits):.0f}" for k in splits[0])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--rss-pods", type=int, default=100)
    parser.add_argument("--only-burst", action="store_true", help="skip (a) and (c)")
    parser.add_argument("--profile", type=Path, default=None, help="write py-spy profiles of the burst here")
    parser.add_argument("--only-rss", action="store_true", help="measure (c) only")
    args = parser.parse_args()
    quiet_logs()
    if os.geteuid() != 0:
        print("needs root (loop devices, mounts, runc)")
        return 2
    if args.profile is not None:
        problem = missing()
        if problem is not None:
            print(problem)
            return 2
        args.profile.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="stowage-bench-"))
    bench: Bench | None = None
    try:
        if not args.only_burst and args.rss_pods > 0:
            # (c) first, on its own cluster: its agent has seen nothing but its own pods.
            measure_agent_memory(base / "rss", args.rss_pods)
            cleanup_tree(base / "rss")
        if args.only_rss:
            return 0
        if args.only_burst:
            args.rounds = 0
        raw_runs = [raw_once(base, i) for i in range(args.rounds)]
        raw = [t for t, _ in raw_runs]
        cleanup_raw = [p for p in base.iterdir()]
        for p in cleanup_raw:
            cleanup_tree(p)
        bench = Bench(base / "cluster")
        bench.start_agent(pool_bytes=max(4, args.rounds + 1) * GiB + args.burst * 16 * (1 << 20))
        ours: list[float] = []
        stages: list[dict[str, float]] = []
        single_watch = RunningWatch(bench)
        try:
            for i in range(args.rounds):
                elapsed, reached = stowage_once(bench, i, single_watch)
                ours.append(elapsed)
                stages.append(reached)
        finally:
            single_watch.close()
        bench.delete_all()
        if ours:
            print(f"(a) claim+pod to Running with a new 1Gi ext4 volume: stowage median {statistics.median(ours):.3f}s "
              f"(runs {', '.join(f'{t:.3f}' for t in ours)}); raw commands with runc median {statistics.median(raw):.3f}s; "
                  f"ratio {statistics.median(ours) / statistics.median(raw):.2f}x (aim <= 1.3x)", flush=True)
            # Where the time goes: the bare side's steps, and when Stowage's stages were reached.
            print(f"    raw steps, medians in ms: {medians_ms([split for _, split in raw_runs])}", flush=True)
            print(f"    stowage stages reached, medians in ms after the start: {medians_ms(stages)}, "
                  f"Running {1000 * statistics.median(ours):.0f}", flush=True)

        n = args.burst
        if n <= 0:
            return 0
        raw_dir = base / "raw-burst"
        raw_dir.mkdir()
        try:
            bare = raw_burst(raw_dir, n, POD_SYNC_WORKERS)
        finally:
            cleanup_tree(raw_dir)
        watch = RunningWatch(bench)
        agent_proc = psutil.Process(bench.agent.pid)  # type: ignore[union-attr]
        cpu0 = (agent_proc.cpu_times(), psutil.Process().cpu_times())
        profiler = profiles(args.profile, bench) if args.profile else None
        created_at: dict[str, float] = {}
        start = time.perf_counter()
        for i in range(n):
            bench.claim_and_pod(f"b{i}", "16Mi")
            created_at[f"b{i}"] = time.perf_counter()
        created = time.perf_counter() - start
        # Progress from the watches, not by listing: a list of every pod and claim twice a second costs
        # the control plane (in this process, on the same cores) more CPU than some controllers do.
        bound_at = None
        while True:
            bound = sum(1 for k in created_at if k in watch.bound)
            if bound_at is None and bound == n:
                bound_at = time.perf_counter() - start
            if all(k in watch.seen for k in created_at):
                break
            if time.perf_counter() - start > 1800:
                raise TimeoutError(f"burst: {bound}/{n} bound after 1800s")
            time.sleep(0.05)
        all_running = time.perf_counter() - start
        cpu1 = (agent_proc.cpu_times(), psutil.Process().cpu_times())
        if profiler is not None:
            profiler.finish()
        # The watch's word checked against a listing: every pod Running and every claim Bound.
        assert bench.count("pods", running) == n, "every pod Running"
        assert bench.count("persistentvolumeclaims", lambda c: (c.get("status") or {}).get("phase") == "Bound") == n
        latency = [watch.seen[k] - created_at[k] for k in created_at]
        if bound_at is None:
            bound_at = all_running
        print(f"(b) {n} claims + {n} pods (WaitForFirstConsumer) created in {created:.1f}s: all Bound after "
              f"{bound_at:.1f}s, all Running after {all_running:.1f}s; bare {n} volumes + containers with "
              f"{POD_SYNC_WORKERS} threads {bare:.1f}s; ratio {all_running / bare:.2f}x (aim <= 2x); per-pod "
              f"create -> Running p50 {percentile(latency, 50):.1f}s p99 {percentile(latency, 99):.1f}s "
              f"(load {os.getloadavg()[0]:.2f})", flush=True)
        print(f"    stages: {watch.stages(created_at)}", flush=True)
        cpu = [(b.user + b.system - a.user - a.system, b.children_user + b.children_system - a.children_user - a.children_system)
               for a, b in zip(cpu0, cpu1)]
        print(f"    CPU seconds: agent {cpu[0][0]:.1f} (+ its commands {cpu[0][1]:.1f}), control plane and this "
              f"benchmark {cpu[1][0]:.1f}", flush=True)
        watch.close()
        bench.delete_all()
        return 0
    finally:
        if bench is not None:
            bench.close()
            if args.profile:
                shutil.copy(base / "cluster" / "agent.log", args.profile / "agent.log")
        cleanup_tree(base)


if __name__ == "__main__":
    raise SystemExit(main())
