"""Provisioning through Stowage against doing the same work by hand.

(a) ``apply`` of a claim (1 GiB ext4, WaitForFirstConsumer, local pool) and a pod
    until the pod is Running with the volume mounted, against the raw command
    sequence doing the same: truncate, losetup --direct-io=on, mkfs.ext4, mount,
    bind mount, and a runc container (overlay of / on a tmpfs, as the agent's
    runtime does) running a shell; the ratio of medians over several rounds.
(b) N claims + N pods created at once: seconds until all claims are Bound and
    until all pods are Running.
(c) the node agent's memory with N pods and N volumes (``--rss-pods N``), measured the same way
    every time by ``agent_memory.py`` (its docstring gives the method), on a cluster of its own
    before (a) and (b), so that nothing else has shaped the agent's heap.

The control plane (API server on SQLite, controllers) runs in this process; the
agent runs as its own ``stowage agent`` process. Everything is cleaned up.

usage: python benchmarks/provision.py [--rounds 5] [--burst 500] [--rss-pods 100] [--only-rss]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from agent_memory import measure_agent_memory  # noqa: E402
from cluster import LOOP, BenchCluster, quiet_logs, running  # noqa: E402
from raw_volume import GiB, create_volume, mount_pod_root, run, wait  # noqa: E402
from storage.system import mounts  # noqa: E402
from support import cleanup_tree  # noqa: E402


# ---- (a) the raw baseline -----------------------------------------------------------------

def raw_once(base: Path, i: int) -> float:
    work = base / f"raw{i}"
    (work / "bundle").mkdir(parents=True)
    image, mnt, bind = work / "vol.img", work / "mnt", work / "pod-data"
    scratch, rootfs = work / "scratch", work / "bundle" / "rootfs"
    for d in (mnt, bind, scratch, rootfs):
        d.mkdir(parents=True, exist_ok=True)
    run("runc", "spec", "--bundle", str(work / "bundle"))  # prepared in advance, as an image would be
    config_path = work / "bundle" / "config.json"
    config = json.loads(config_path.read_text())
    config["process"]["args"] = ["/bin/sh", "-c", LOOP]
    config["process"]["terminal"] = False
    config["root"] = {"path": str(rootfs), "readonly": False}
    config["mounts"].append({"destination": "/data", "type": "bind", "source": str(bind), "options": ["rbind", "rw"]})
    config_path.write_text(json.dumps(config))
    root = work / "runc"
    start = time.perf_counter()
    create_volume(image, mnt)
    mount_pod_root(mnt, bind, scratch, rootfs)
    # Detached, the container inherits runc's stdio: give it none, or a captured pipe never closes.
    subprocess.run(["runc", "--root", str(root), "run", "-d", "--bundle", str(work / "bundle"), f"raw{i}"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait(lambda: json.loads(run("runc", "--root", str(root), "state", f"raw{i}"))["status"] == "running", "raw container")
    return time.perf_counter() - start


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


def stowage_once(bench: Bench, i: int) -> float:
    name = f"single-{i}"
    start = time.perf_counter()
    bench.claim_and_pod(name, "1Gi")
    wait(lambda: running(bench.client.get("pods", name, "default")), "the pod Running")
    elapsed = time.perf_counter() - start
    entry = mounts.top_mount(bench.pod_volume(name))
    assert entry is not None and entry.fstype == "ext4", "the volume is mounted"
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--rss-pods", type=int, default=100)
    parser.add_argument("--only-rss", action="store_true", help="measure (c) only")
    args = parser.parse_args()
    quiet_logs()
    if os.geteuid() != 0:
        print("needs root (loop devices, mounts, runc)")
        return 2
    base = Path(tempfile.mkdtemp(prefix="stowage-bench-"))
    bench: Bench | None = None
    try:
        # (c) first, on its own cluster: its agent has seen nothing but its own pods.
        measure_agent_memory(base / "rss", args.rss_pods)
        cleanup_tree(base / "rss")
        if args.only_rss:
            return 0
        raw = [raw_once(base, i) for i in range(args.rounds)]
        cleanup_raw = [p for p in base.iterdir()]
        for p in cleanup_raw:
            cleanup_tree(p)
        bench = Bench(base / "cluster")
        bench.start_agent(pool_bytes=max(4, args.rounds + 1) * GiB + args.burst * 16 * (1 << 20))
        ours = []
        for i in range(args.rounds):
            ours.append(stowage_once(bench, i))
        bench.delete_all()
        print(f"(a) claim+pod to Running with a new 1Gi ext4 volume: stowage median {statistics.median(ours):.3f}s "
              f"(runs {', '.join(f'{t:.3f}' for t in ours)}); raw commands with runc median {statistics.median(raw):.3f}s; "
              f"ratio {statistics.median(ours) / statistics.median(raw):.2f}x (aim <= 1.5x)", flush=True)

        n = args.burst
        start = time.perf_counter()
        for i in range(n):
            bench.claim_and_pod(f"b{i}", "16Mi")
        created = time.perf_counter() - start
        bound_at = None
        while True:
            bound = bench.count("persistentvolumeclaims", lambda c: (c.get("status") or {}).get("phase") == "Bound")
            if bound_at is None and bound == n:
                bound_at = time.perf_counter() - start
            if bench.count("pods", running) == n:
                break
            if time.perf_counter() - start > 1800:
                raise TimeoutError(f"burst: {bound}/{n} bound after 1800s")
            time.sleep(0.5)
        all_running = time.perf_counter() - start
        print(f"(b) {n} claims + {n} pods (WaitForFirstConsumer) created in {created:.1f}s: all Bound after "
              f"{bound_at:.1f}s, all Running after {all_running:.1f}s (aim < 60s)", flush=True)
        bench.delete_all()
        return 0
    finally:
        if bench is not None:
            bench.close()
        cleanup_tree(base)


if __name__ == "__main__":
    raise SystemExit(main())
