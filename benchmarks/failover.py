"""Leader failover of the control plane: kill -9 of the leading `stowage serve` replica (issue 17 item 1).

Three real `stowage serve` replicas on one PostgreSQL (a private server, as the tests start), with
the failover settings the README documents (lease 3 s, renew deadline 2 s, retry 0.5 s; Kubernetes'
defaults are 15 s / 10 s / 2 s). Each round kills the Lease holder with SIGKILL, creates a claim (hostpath
class, Immediate) through a survivor at once, and measures

* lease: kill -> a surviving replica holds the Lease ``kube-system/stowage-controller-manager``;
* acting: kill -> that claim is Bound, i.e. the new leader's controllers started from a fresh list and
  provisioned and bound it.

The killed replica is replaced by a fresh one before the next round, so every round starts with three.
Prints the median, min and max over the rounds (the issue asks for the median of 5 kills, under 5 s).

usage: python benchmarks/failover.py [--rounds 5] [--replicas 3] [--lease 3s --renew 2s --retry 500ms]
                                     [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "integration" / "ha"))
os.environ.setdefault("PYTHONPATH", str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--lease", default="3s")
    parser.add_argument("--renew", default="2s")
    parser.add_argument("--retry", default="500ms")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()

    import ha_support
    from ha_support import ReplicaSet, serve_env, wait_until
    from pgserver import PostgresServer

    ha_support.FAST_ELECTION = ("--leader-elect-lease-duration", args.lease, "--leader-elect-renew-deadline",
                                args.renew, "--leader-elect-retry-period", args.retry)
    lease_s: list[float] = []
    acting_s: list[float] = []
    with tempfile.TemporaryDirectory(prefix="stowage-bench-failover-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "hostpath").mkdir()
        pg = PostgresServer().start()
        cluster: ReplicaSet | None = None
        try:
            url = pg.create_database("bench_failover")
            env = serve_env(tmp / "home", STOWAGE_HOSTPATH_ROOT=str(tmp / "hostpath"))
            env["PYTHONPATH"] = str(REPO)
            cluster = ReplicaSet(tmp, url, env)
            serial = 0
            for _ in range(args.replicas):
                cluster.start(f"r{serial}")
                serial += 1
            with cluster.live()[0].http() as http:
                http.post("/apis/storage.k8s.io/v1/storageclasses", json={
                    "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "hp"},
                    "provisioner": "stowage.io/hostpath", "volumeBindingMode": "Immediate"}).raise_for_status()
            for round_no in range(args.rounds):
                while len(cluster.live()) < args.replicas:
                    cluster.start(f"r{serial}")
                    serial += 1
                leader = cluster.leader()
                time.sleep(1.5)  # the newcomers have seen the holder renew, as long-running followers have
                survivor = next(r for r in cluster.live() if r is not leader)
                with survivor.http() as http:
                    leader.kill()
                    killed = time.monotonic()
                    name = f"after-kill-{round_no}"
                    http.post("/api/v1/namespaces/default/persistentvolumeclaims", json={
                        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
                        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "hp",
                                 "resources": {"requests": {"storage": "1Mi"}}}}).raise_for_status()
                    alive = {r.name for r in cluster.live()}
                    new = wait_until(lambda alive=alive: (h := cluster.holder()) in alive and h, 30, "a new holder", 0.02)
                    lease_s.append(time.monotonic() - killed)

                    def bound(name: str = name) -> bool:
                        got = http.get(f"/api/v1/namespaces/default/persistentvolumeclaims/{name}").json()
                        return (got.get("status") or {}).get("phase") == "Bound"

                    wait_until(bound, 60, "the claim to be bound", 0.02)
                    acting_s.append(time.monotonic() - killed)
                print(f"round {round_no + 1}: killed {leader.name}, {new} leads after {lease_s[-1]:.2f}s, "
                      f"claim bound after {acting_s[-1]:.2f}s", flush=True)
        finally:
            if cluster is not None:
                cluster.stop_all()
            pg.stop()
    print(f"\nleader election: lease {args.lease}, renew deadline {args.renew}, retry period {args.retry}; "
          f"{args.replicas} replicas, {args.rounds} kills (SIGKILL of the Lease holder)")
    for label, values in (("new holder of the Lease", lease_s), ("its controllers bound a new claim", acting_s)):
        print(f"  {label:<36} median {statistics.median(values):.2f}s  min {min(values):.2f}s  "
              f"max {max(values):.2f}s")
    print(f"  load: {Path('/proc/loadavg').read_text().strip()}")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "replicas": args.replicas, "lease": args.lease, "renew": args.renew, "retry": args.retry,
            "lease_s": [round(v, 3) for v in lease_s], "acting_s": [round(v, 3) for v in acting_s],
            "lease_median_s": round(statistics.median(lease_s), 3),
            "acting_median_s": round(statistics.median(acting_s), 3)}, indent=2))
    return 0 if statistics.median(acting_s) < 5.0 else 1


if __name__ == "__main__":
    sys.exit(main())
