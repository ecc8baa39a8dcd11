"""``stowage bench`` against fio run directly on the same mounted filesystem, same jobs, same run.

Claim: on a loop-backed pool with direct I/O, the figures ``stowage bench`` reports are within 5% of
fio's own when fio runs on the host on the very filesystem the benchmark pod used (BN26).

How: ``stowage up`` with a local class; one claim held mounted by a sleeping pod. Then, for each
round and each job, a pair back to back (order alternating between rounds, so neither side always
goes first): ``stowage bench --claim overhead --jobs JOB`` (fio in a pod, its JSON through the pod
log, parsed and summarised by Stowage) and fio run by this script on the agent's host mount of the
same volume with the argv Stowage uses and the test size it chose. Pairs close in time cancel the
machine's load drift (this host is shared); each job's ratio is the median over rounds of the pair
ratios bench ÷ direct of its headline figure (IOPS, MiB/s, or p50 latency).

usage: python benchmarks/bench_overhead.py [--rounds 5] [--runtime 3] [--ramp 1] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

from raw_volume import wait
from support import stowage_executable

from statefulset import Up
from storage.cli.bench import jobs as jobmod
from storage.cli.bench.stats import parse_fio

HEADLINE = {"iops": ("read_iops", "write_iops"), "bandwidth": ("read_bw_mib", "write_bw_mib"),
            "latency": ("read_clat_p50_us", "write_clat_p50_us"), "mixed": ("read_iops",),
            "fsync": ("sync_lat_p50_us",)}
AIM = 0.05
CLAIM = "overhead"


def manifests() -> list[dict[str, Any]]:
    sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "bench-local"},
          "provisioner": "stowage.io/local", "volumeBindingMode": "WaitForFirstConsumer",
          "reclaimPolicy": "Delete", "parameters": {"fsType": "ext4"}}
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": CLAIM, "namespace": "default"},
             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "bench-local",
                      "resources": {"requests": {"storage": "2Gi"}}}}
    holder = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holder", "namespace": "default"},
              "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                  "name": "sleep", "image": "debian:12", "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 60 & wait $!; done"],
                  "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                  "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": CLAIM}}]}}
    return [sc, claim, holder]


def headline(job: jobmod.Job, figures: dict[str, float]) -> dict[str, float]:
    return {f: figures[f] for f in HEADLINE[job.kind] if f in figures}


def bench_side(up: Up, args: argparse.Namespace, job: jobmod.Job, out_dir: Path) -> tuple[dict[str, float], int]:
    """One ``stowage bench --claim`` run of one job; its headline figures, and the test size it chose."""
    cmd = [stowage_executable(), "bench", "--claim", CLAIM, "--jobs", job.name, "--repeats", "1", "--runtime",
           str(args.runtime), "--ramp", str(args.ramp), "--output-dir", str(out_dir),
           "--kubeconfig", str(up.data_dir / "kubeconfig")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"stowage bench failed: {proc.stderr[-2000:]}")
    doc = json.loads((out_dir / "result.json").read_text())
    s = doc["classes"][0]["nodes"][0]["jobs"][job.name]
    return {f: s["figures"][f]["median"] for f in HEADLINE[job.kind] if f in s["figures"]}, int(doc["settings"]["size_bytes"])


def direct_side(mount: Path, args: argparse.Namespace, job: jobmod.Job, size: int) -> dict[str, float]:
    """The same job with fio on the host mount of the same volume, the same argv and size."""
    s = jobmod.Settings(size=size, runtime=args.runtime, ramp=args.ramp, repeats=1)
    scratch = mount / "stowage-bench"  # the very path the pod uses
    scratch.mkdir(exist_ok=True)
    try:
        argv = jobmod.fio_argv(job, s, str(scratch / "fio.dat"))
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=True)
        return headline(job, parse_fio(json.loads(proc.stdout[proc.stdout.find("{"):]))["figures"])
    finally:
        subprocess.run(["rm", "-rf", str(scratch)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runtime", type=int, default=3)
    parser.add_argument("--ramp", type=int, default=1)
    parser.add_argument("--jobs", default=",".join(jobmod.BY_NAME))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    chosen = jobmod.select(args.jobs.split(","))
    base = Path(tempfile.mkdtemp(prefix="stowage-bench-overhead-"))
    up = Up(base)
    pairs: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {}
    try:
        for obj in manifests():
            up.client.create(obj)
        pod = wait(lambda: (lambda p: p if (p.get("status") or {}).get("phase") == "Running" else None)(
            up.client.get("pods", "holder", "default")), "the holder pod Running", 300)
        mount = up.volume_dir(pod)
        started = time.monotonic()
        for r in range(args.rounds):
            for k, job in enumerate(chosen):
                out_dir = base / f"bench-{r}-{job.name}"
                if (r + k) % 2 == 0:
                    b, size = bench_side(up, args, job, out_dir)
                    d = direct_side(mount, args, job, size)
                else:
                    size = jobmod.settings(2 << 30, 0, quick=False, repeats=1, runtime=None, ramp=None).size
                    size = json.loads(next(base.glob("bench-*/result.json")).read_text())["settings"]["size_bytes"] \
                        if any(base.glob("bench-*/result.json")) else size
                    d = direct_side(mount, args, job, int(size))
                    b, _ = bench_side(up, args, job, out_dir)
                pairs.setdefault(job.name, []).append((b, d))
            print(f"round {r + 1}/{args.rounds} done after {time.monotonic() - started:.0f}s", file=sys.stderr)
    finally:
        up.close()
    ratios: dict[str, dict[str, float]] = {}
    rows = []
    for name, ps in pairs.items():
        for fig in ps[0][0]:
            ratio = statistics.median(b[fig] / d[fig] for b, d in ps)
            ratios.setdefault(name, {})[fig] = ratio
            rows.append((name, fig, statistics.median(b[fig] for b, _ in ps), statistics.median(d[fig] for _, d in ps), ratio))
    worst = max(abs(r[4] - 1) for r in rows)
    print(f"{'job':16} {'figure':18} {'stowage bench':>14} {'fio direct':>12} {'ratio':>7}")
    for name, fig, b, d, r in rows:
        print(f"{name:16} {fig:18} {b:14.1f} {d:12.1f} {r:7.3f}")
    print(f"worst deviation {worst:.1%} (aim: within {AIM:.0%}); median of {args.rounds} paired ratios per job")
    result = {"rounds": args.rounds, "runtime": args.runtime, "ramp": args.ramp, "ratios": ratios,
              "worst_deviation": worst, "within_aim": worst <= AIM,
              "pairs": {k: [{"bench": b, "direct": d} for b, d in v] for k, v in pairs.items()}}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0 if worst <= AIM else 1


if __name__ == "__main__":
    sys.exit(main())
