"""The node agent's memory with N pods and N volumes, measured the same way every time (issue 16, item 4).

Method (PF40):

- a fresh cluster (API server on SQLite and the controllers in this process, the local provisioner)
  and a fresh ``stowage agent`` process with its own data dir, node and pool, left idle until settled:
  the "idle" figure;
- N/2 claims + pods (16Mi ext4 volumes on the local pool, WaitForFirstConsumer, one container idling
  in ``sleep``) created at once and waited until all are Running; the agent left to settle; measured;
  then the other N/2 the same way, and measured again;
- "settled": the first sample 10 s after the last pod went Running (a pod is polled slowly once it has
  not changed for 5 s, and the agent hands its heap's free pages back once syncs have stopped for 5 s,
  PF45), then a sample every 5 s until two consecutive samples are within 1% of each other (at most 120 s);
- the figure is VmRSS from /proc/PID/status of the agent process alone: not its children (runc, the
  containers' shims and containers, fuse daemons), which are separate processes. Beside it, for insight
  only: USS and PSS (psutil ``memory_full_info``: without, and with a share of, the shared libraries'
  pages), VmHWM (the peak RSS so far: the burst's high-water mark) and the thread count;
- the slope: (RSS at N - RSS at N/2) / (N/2), per pod with its volume.

Why earlier figures disagreed (131 MiB with 50 pods against 73 MiB with 100): the old (c) of
``provision.py`` read psutil's RSS at the instant the last pod went Running (sync workers and start-up
work still live) or, when ``--rss-pods`` differed from ``--burst``, after the whole burst of (b) had been
created and deleted, so the agent carried that burst's high-water mark (glibc and CPython keep freed
memory resident). The same code, with 100 pods measured each way in one session: 108.6 MiB at the
instant, 127.4 MiB with 50 pods after a burst of 100.

Standalone: ``python benchmarks/agent_memory.py [--pods 100]`` (root: loop devices, mounts, runc).
``provision.py --rss-pods N [--only-rss]`` runs the same measurement.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import psutil  # noqa: E402

from cluster import BenchCluster, quiet_logs, running  # noqa: E402
from raw_volume import GiB, wait  # noqa: E402
from support import cleanup_tree  # noqa: E402

SETTLE_INTERVAL = 5.0  # seconds between samples
SETTLE_FIRST = 10.0  # seconds after the last pod went Running before the first sample
SETTLE_TOLERANCE = 0.01
SETTLE_TIMEOUT = 120.0
AIM_MIB = 80.0


class LocalBench(BenchCluster):
    """One agent with a local pool and a WaitForFirstConsumer ext4 class, as provision.py's."""

    def __init__(self, base: Path) -> None:
        super().__init__(base, local_provisioner=True)

    def start_local_agent(self, pool_bytes: int) -> None:
        self.start_agent(pool_bytes=pool_bytes)
        self.client.create({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "local"},
                            "provisioner": "stowage.io/local", "volumeBindingMode": "WaitForFirstConsumer",
                            "reclaimPolicy": "Delete", "parameters": {"fsType": "ext4"}})


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def vm_rss(pid: int) -> int:
    """VmRSS of one process (not its children), in bytes, as the kernel accounts it."""
    return int(_status(pid)["VmRSS"].split()[0]) * 1024


def agent_memory(pid: int) -> dict[str, float]:
    """Wait until the agent's RSS has settled, then its figures in MiB (see the method above)."""
    time.sleep(SETTLE_FIRST)
    began, last = time.monotonic(), vm_rss(pid)
    while True:
        time.sleep(SETTLE_INTERVAL)
        current = vm_rss(pid)
        if abs(current - last) <= SETTLE_TOLERANCE * last or time.monotonic() - began > SETTLE_TIMEOUT:
            break
        last = current
    full = psutil.Process(pid).memory_full_info()
    status = _status(pid)
    mib = float(1 << 20)
    return {"rss": current / mib, "uss": full.uss / mib, "pss": full.pss / mib,
            "hwm": int(status["VmHWM"].split()[0]) * 1024 / mib, "threads": float(status["Threads"]),
            "settled_after": SETTLE_FIRST + time.monotonic() - began}


def describe(m: dict[str, float]) -> str:
    return (f"RSS {m['rss']:.1f} MiB (USS {m['uss']:.1f}, PSS {m['pss']:.1f}, peak {m['hwm']:.1f}; "
            f"{m['threads']:.0f} threads; settled after {m['settled_after']:.0f}s)")


def measure_agent_memory(base: Path, pods: int) -> list[tuple[int, dict[str, float]]]:
    """A fresh cluster and agent: idle, then pods/2 and pods pods Running and settled; printed and returned."""
    bench = LocalBench(base)
    figures: list[tuple[int, dict[str, float]]] = []
    try:
        bench.start_local_agent(pool_bytes=1 * GiB + pods * 16 * (1 << 20))
        assert bench.agent is not None
        pid = bench.agent.pid
        idle = agent_memory(pid)
        figures.append((0, idle))
        print(f"(c) agent idle: {describe(idle)}", flush=True)
        made = 0
        for step in sorted({max(1, pods // 2), pods}):
            start = time.perf_counter()
            for i in range(made, step):
                bench.claim_and_pod(f"r{i}", "local", size="16Mi")
            made = step
            wait(lambda: bench.count("pods", running) == step, "the pods Running", 900, 0.5)
            to_running = time.perf_counter() - start
            m = agent_memory(pid)
            figures.append((step, m))
            print(f"(c) agent with {step} pods and {step} volumes: {describe(m)}; these pods Running after "
                  f"{to_running:.1f}s", flush=True)
        if len(figures) == 3:
            (n1, m1), (n2, m2) = figures[1:]
            print(f"(c) slope {(m2['rss'] - m1['rss']) / (n2 - n1) * 1024:.0f} KiB of RSS per pod + volume "
                  f"({n1} -> {n2} pods); idle {idle['rss']:.1f} MiB; aim at {pods} pods: < {AIM_MIB:.0f} MiB", flush=True)
        bench.delete_all()
        return figures
    finally:
        bench.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=100)
    args = parser.parse_args()
    quiet_logs()
    if os.geteuid() != 0:
        print("needs root (loop devices, mounts, runc)")
        return 2
    base = Path(tempfile.mkdtemp(prefix="stowage-bench-"))
    try:
        measure_agent_memory(base, args.pods)
        return 0
    finally:
        cleanup_tree(base)


if __name__ == "__main__":
    raise SystemExit(main())
