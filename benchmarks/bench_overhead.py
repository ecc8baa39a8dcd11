"""``stowage bench`` against fio run directly on the same mounted filesystem, same jobs, same run.

Claim: on a loop-backed pool with direct I/O, the figures ``stowage bench`` reports are within 5% of
fio's own when fio runs on the host on the very filesystem the benchmark pod used (BN26).

How: ``stowage up`` with a local class; one claim held mounted by a sleeping pod. Then, for each
round and each job, a pair back to back: ``stowage bench --claim overhead --jobs JOB`` (fio in a pod,
its JSON through the pod log, parsed and summarised by Stowage) and fio run by this script on the
agent's host mount of the same volume, prepared the same way (BN30: the test file written in full
first; BN31: the fdatasync job on a new file of its own) with the argv Stowage uses and the test size
it chose. The order is ABBA: a job's pair runs bench first in even rounds and direct first in odd
ones, and neighbouring jobs start with opposite sides, so neither side always follows a pod's
start or teardown (this host is shared; pairs close in time cancel its load drift). Each job's
ratio is the median over rounds of the pair ratios bench ÷ direct of its headline figure (IOPS,
MiB/s, or p50 latency), shown with the pair ratios' min–max and the ratio of the two sides' medians.
Both sides' fio disk statistics must name the same device, else the run is void.

``--controls`` adds two sides to every pair, each fio on the host mount again with a part of a pod's
sandbox and nothing else (benchmarks/sandboxed.py): "cgroup" runs it from a fresh cgroup of the block
I/O controller (cgroup v1 ``blkio``, or v2 ``io`` where the root enables it); "seccomp" under the
RuntimeDefault seccomp filter a pod gets, from the group a pod's I/O comes from: on cgroup v1 the
host's own (PF97: a pod's processes stay in the agent's blkio group), on v2 that fresh cgroup. Their
ratios split a gap into the kernel's cost of I/O issued from a cgroup other than the root (the loop
driver queues it through a worker of that cgroup's own: what PF97 spares a pod on v1, what it pays on
v2), the cost of the filter on every system call, and what is left for the pod and Stowage's
machinery: bench ÷ seccomp (BN36). The headline ratio is unchanged: bench ÷ direct.

``--pool-backing tmpfs`` puts the pool's directory, and so the volume's image file under its loop
device, on a tmpfs: the loop device still runs with direct I/O (tmpfs takes O_DIRECT since Linux 6.6;
the run is void unless the kernel reports dio on), but reads and writes memory, so what the ratios
show is the pod's own cost on fio and not this host's virtual disk, whose run-to-run spread on the
sequential and fdatasync jobs is larger than the 5% the claim is about. ``disk`` (the default)
keeps the pool on the host's filesystem.

usage: python benchmarks/bench_overhead.py [--rounds 6] [--runtime 8] [--ramp 2] [--size 1Gi]
                                           [--pool-backing disk|tmpfs] [--controls] [--out FILE]
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
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

from raw_volume import wait
from support import stowage_executable

from sandboxed import BlockIOGroup
from statefulset import Up
from storage.api.quantity import quantity_value
from storage.cli.bench import jobs as jobmod
from storage.cli.bench.stats import parse_fio
from storage.system import loop, mounts

HEADLINE = {"iops": ("read_iops", "write_iops"), "bandwidth": ("read_bw_mib", "write_bw_mib"),
            "latency": ("read_clat_p50_us", "write_clat_p50_us"), "mixed": ("read_iops",),
            "fsync": ("sync_lat_p50_us",)}
AIM = 0.05
CLAIM = "overhead"


def manifests(size: str = "1Gi") -> list[dict[str, Any]]:
    sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "bench-local"},
          "provisioner": "stowage.io/local", "volumeBindingMode": "WaitForFirstConsumer",
          "reclaimPolicy": "Delete", "parameters": {"fsType": "ext4"}}
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": CLAIM, "namespace": "default"},
             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "bench-local",
                      "resources": {"requests": {"storage": size}}}}
    holder = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holder", "namespace": "default"},
              "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                  "name": "sleep", "image": "debian:12", "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 60 & wait $!; done"],
                  "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                  "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": CLAIM}}]}}
    return [sc, claim, holder]


def headline(job: jobmod.Job, figures: dict[str, float]) -> dict[str, float]:
    return {f: figures[f] for f in HEADLINE[job.kind] if f in figures}


def bench_side(up: Up, args: argparse.Namespace, job: jobmod.Job, out_dir: Path) -> tuple[dict[str, float], int, list[str]]:
    """One ``stowage bench --claim`` run of one job: its headline figures, the test size it chose, the
    disks fio saw."""
    cmd = [stowage_executable(), "bench", "--claim", CLAIM, "--jobs", job.name, "--repeats", "1", "--runtime",
           str(args.runtime), "--ramp", str(args.ramp), "--output-dir", str(out_dir),
           "--kubeconfig", str(up.data_dir / "kubeconfig")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"stowage bench failed: {proc.stderr[-2000:]}")
    doc = json.loads((out_dir / "result.json").read_text())
    s = doc["classes"][0]["nodes"][0]["jobs"][job.name]
    return ({f: s["figures"][f]["median"] for f in HEADLINE[job.kind] if f in s["figures"]},
            int(doc["settings"]["size_bytes"]), sorted(s.get("disks") or []))


CONTROLS = ("cgroup", "seccomp")


def direct_side(mount: Path, args: argparse.Namespace, job: jobmod.Job, size: int,
                group: BlockIOGroup | None = None, control: str = "") -> tuple[dict[str, float], list[str]]:
    """The same job with fio on the host mount of the same volume: the pod's path, preparation, argv and size;
    with ``group``, the measured fio runs inside that cgroup (the prefill does not), under the pod's seccomp
    filter too for the "seccomp" control."""
    s = jobmod.Settings(size=size, runtime=args.runtime, ramp=args.ramp, repeats=1)
    scratch = mount / "stowage-bench"  # the very path the pod uses
    scratch.mkdir(exist_ok=True)
    data = str(scratch / "fio.dat")
    target = jobmod.target_for(job, data)
    try:
        if target == data:  # BN30, as the pod's script does before its first job
            subprocess.run(jobmod.prefill_argv(s, data), capture_output=True, text=True, timeout=900, check=True)
        argv = jobmod.fio_argv(job, s, target)
        proc = subprocess.run(group.wrap(argv, control == "seccomp") if group else argv, capture_output=True, text=True, timeout=900, check=True)
        report = json.loads(proc.stdout[proc.stdout.find("{"):])
        parsed = parse_fio(report)
        return headline(job, parsed["figures"]), sorted(parsed.get("disks") or [])
    finally:
        subprocess.run(["rm", "-rf", str(scratch)], check=False)


def run_controls(mount: Path, args: argparse.Namespace, job: jobmod.Job, size: int | None,
                 group: BlockIOGroup | None, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """The control sides of one pair, in the order given; none without a cgroup (no ``--controls``)."""
    if group is None:
        return {}
    assert size is not None
    return {name: direct_side(mount, args, job, size, group, name)[0] for name in names}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--runtime", type=int, default=8)
    parser.add_argument("--ramp", type=int, default=2)
    parser.add_argument("--size", default="1Gi", help="the claim's size (the test file is 75%% of it)")
    parser.add_argument("--jobs", default=",".join(jobmod.BY_NAME))
    parser.add_argument("--pool-backing", choices=("disk", "tmpfs"), default="disk",
                        help="where the pool's image files live (see above)")
    parser.add_argument("--controls", action="store_true",
                        help="also run fio on the host in a block I/O cgroup, and under the pod's seccomp filter (see above)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    chosen = jobmod.select(args.jobs.split(","))
    base = Path(tempfile.mkdtemp(prefix="stowage-bench-overhead-"))
    # Room for the claim's image and the pool's headroom; tmpfs pages are only used once written.
    up = Up(base, pool_tmpfs=2 * quantity_value(args.size) if args.pool_backing == "tmpfs" else None)
    pairs: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {}
    controls: dict[str, list[dict[str, dict[str, float]]]] = {}  # with --controls: per pair, each control's figures
    order: dict[str, list[str]] = {}
    size: int | None = None
    disks: set[tuple[str, ...]] = set()
    load = [os.getloadavg()[0]]
    group: BlockIOGroup | None = None
    try:
        group = BlockIOGroup() if args.controls else None
        for obj in manifests(args.size):
            up.client.create(obj)
        def running() -> dict[str, Any] | None:
            p = up.client.get("pods", "holder", "default")
            return p if (p.get("status") or {}).get("phase") == "Running" else None
        pod = wait(running, "the holder pod Running", 300)
        mount = up.volume_dir(pod)
        entry = mounts.top_mount(mount)
        if entry is None or not loop.direct_io_enabled(entry.source):
            raise RuntimeError(f"the volume's loop device {entry and entry.source} is not in direct I/O mode; the run is void")
        started = time.monotonic()
        for r in range(args.rounds):
            for k, job in enumerate(chosen):
                out_dir = base / f"bench-{r}-{job.name}"
                # ABBA; the very first pair is bench first, so the test size Stowage chose is known.
                bench_first = (r + k) % 2 == 0 or size is None
                # The controls run next to the direct side, away from the bench run: B D C S / S C D B.
                if bench_first:
                    b, size_b, disks_b = bench_side(up, args, job, out_dir)
                    size = size if size is not None else size_b
                    d, disks_d = direct_side(mount, args, job, size)
                    c = run_controls(mount, args, job, size, group, CONTROLS)
                else:
                    assert size is not None
                    c = run_controls(mount, args, job, size, group, CONTROLS[::-1])
                    d, disks_d = direct_side(mount, args, job, size)
                    b, size_b, disks_b = bench_side(up, args, job, out_dir)
                if c:
                    controls.setdefault(job.name, []).append(c)
                if size_b != size:
                    raise RuntimeError(f"stowage bench chose {size_b} bytes, the direct side ran {size}")
                if disks_b != disks_d:
                    raise RuntimeError(f"{job.name}: fio saw {disks_b} in the pod and {disks_d} on the host")
                disks.add(tuple(disks_b))
                pairs.setdefault(job.name, []).append((b, d))
                order.setdefault(job.name, []).append(("BD" if bench_first else "DB") if group is None else ("BDCS" if bench_first else "SCDB"))
            load.append(os.getloadavg()[0])
            print(f"round {r + 1}/{args.rounds} done after {time.monotonic() - started:.0f}s, "
                  f"load {load[-1]:.1f}", file=sys.stderr)
    finally:
        up.close()
        if group is not None:
            group.close()
    ratios: dict[str, dict[str, float]] = {}
    rows = []
    for name, ps in pairs.items():
        for fig in ps[0][0]:
            rs = [b[fig] / d[fig] for b, d in ps]
            ratio = statistics.median(rs)
            ratios.setdefault(name, {})[fig] = ratio
            mb, md = statistics.median(b[fig] for b, _ in ps), statistics.median(d[fig] for _, d in ps)
            rows.append((name, fig, mb, md, ratio, min(rs), max(rs), mb / md))
    # On a tmpfs pool a QD1 request completes inside io_submit: fio's completion latency is then a few
    # hundred nanoseconds on both sides, a reading of its clock, not of the I/O, and its ratio means nothing.
    unmeasurable = {(r[0], r[1]) for r in rows if r[1].endswith("_us") and max(r[2], r[3]) < 1.0}
    worst = max((abs(r[4] - 1) for r in rows if (r[0], r[1]) not in unmeasurable), default=0.0)
    print(f"{'job':16} {'figure':18} {'stowage bench':>14} {'fio direct':>12} {'ratio':>7} {'pair min-max':>13} {'of medians':>10}")
    for name, fig, b, d, r, lo, hi, rm in rows:
        note = "  (under 1 us on both sides: not counted)" if (name, fig) in unmeasurable else ""
        print(f"{name:16} {fig:18} {b:14.1f} {d:12.1f} {r:7.3f} {lo:6.3f}-{hi:5.3f} {rm:10.3f}{note}")
    # Each a median over rounds of the ratio within a round: the cgroup's cost, the filter's, the rest.
    control_rows = []
    # The filter's side against the side run from the same group: direct where a pod shares the host's (PF97).
    filter_base = "direct" if group is not None and group.pods_share_host_group else "cgroup"
    for name, cs in controls.items():
        ps = pairs[name]
        for fig in cs[0]["cgroup"]:
            def med(top: Any, bottom: Any) -> float:
                return statistics.median(top(b, d, c)[fig] / bottom(b, d, c)[fig] for (b, d), c in zip(ps, cs))
            control_rows.append((name, fig, statistics.median(c["cgroup"][fig] for c in cs),
                                 statistics.median(c["seccomp"][fig] for c in cs),
                                 med(lambda b, d, c: c["cgroup"], lambda b, d, c: d),
                                 med(lambda b, d, c: c["seccomp"], lambda b, d, c: d if filter_base == "direct" else c["cgroup"]),
                                 med(lambda b, d, c: b, lambda b, d, c: c["seccomp"])))
    if control_rows:
        print(f"{'job':16} {'figure':18} {'fio in cgroup':>14} {'+ seccomp':>10} {'cgroup/direct':>14} "
              f"{'seccomp/' + filter_base:>15} {'bench/seccomp':>14}")
        for name, fig, cm, sm, cost, filt, rest in control_rows:
            print(f"{name:16} {fig:18} {cm:14.1f} {sm:10.1f} {cost:14.3f} {filt:15.3f} {rest:14.3f}")
    print(f"worst deviation {worst:.1%} (aim: within {AIM:.0%}); median of {args.rounds} paired ratios per job "
          f"({args.runtime} s runs after a {args.ramp} s ramp, ABBA order); pool on {args.pool_backing}; disks {sorted(disks)}; "
          f"1-min load {min(load):.1f}-{max(load):.1f}")
    result = {"pool_backing": args.pool_backing, "rounds": args.rounds, "runtime": args.runtime, "ramp": args.ramp, "size_bytes": size,
              "claim_size": args.size, "load_1min": load, "disks": sorted(disks), "ratios": ratios,
              "spread": {n: {f: [lo, hi] for nn, f, _, _, _, lo, hi, _ in rows if nn == n} for n in pairs},
              "ratio_of_medians": {n: {f: rm for nn, f, _, _, _, _, _, rm in rows if nn == n} for n in pairs},
              "not_counted": sorted(f"{n}/{f}" for n, f in unmeasurable),
              "worst_deviation": worst, "within_aim": worst <= AIM, "order": order,
              "pairs": {k: [{"bench": b, "direct": d, **(controls[k][i] if k in controls else {})}
                            for i, (b, d) in enumerate(v)] for k, v in pairs.items()},
              "controls": {n: {f: {"cgroup_over_direct": cost, f"seccomp_over_{filter_base}": filt, "bench_over_seccomp": rest}
                               for nn, f, _, _, cost, filt, rest in control_rows if nn == n} for n in controls},
              "pod_blkio_group": ("host" if filter_base == "direct" else "own") if controls else None}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0 if worst <= AIM else 1


if __name__ == "__main__":
    sys.exit(main())
