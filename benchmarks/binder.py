"""Claim binder: the index against Kubernetes' per-claim scan, and end-to-end binding.

1. Decisions per second of ``find_best_volume`` (index) and of
   ``find_best_volume_linear`` (a faithful port of Kubernetes'
   findByClaim/FindMatchingVolume) over 1,000 / 10,000 / 100,000 volumes:
   mixed classes, sizes and access-mode sets, 30% of claims with selectors.
   Both must give the same answers (checked on every decision measured).
2. End to end: N static volumes then N claims created through the real API
   server (HTTP), the binder running through ``run_controllers``; time until
   every claim is Bound, on SQLite and on PostgreSQL.
   (Kubernetes, kubernetes/kubernetes#133352: 10,000 pairs p50 453 s.)

usage: python benchmarks/binder.py [--sizes 1000,10000,100000] [--pairs 10000] [--backend sqlite|postgres|all] [--skip-e2e]
"""
from __future__ import annotations

import argparse
import random
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

from storage.controllers.binder_index import VolumeIndex, find_best_volume, find_best_volume_linear  # noqa: E402

MODES = [["ReadWriteOnce"], ["ReadWriteOnce", "ReadOnlyMany"], ["ReadWriteMany"], ["ReadWriteOnce", "ReadWriteMany"],
         ["ReadOnlyMany"], ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"]]
CLASSES = ["", "fast", "slow", "archive"]
SIZES = [f"{n}Gi" for n in (1, 2, 5, 10, 20, 50, 100, 200, 500)] + ["1500Mi", "750Mi"]
ZONES = ["a", "b", "c"]


def make_volume(i: int, rng: random.Random, *, for_api: bool = False) -> dict[str, Any]:
    labels = {"zone": rng.choice(ZONES), "tier": rng.choice(["gold", "silver"])}
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"pv-{i:06d}", "labels": labels},
            "spec": {"capacity": {"storage": rng.choice(SIZES)}, "accessModes": rng.choice(MODES),
                     "storageClassName": rng.choice(CLASSES), "local": {"path": f"/mnt/disks/{i}"}},
            "status": {"phase": "Available"}} if not for_api else {
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"pv-{i:06d}", "labels": labels},
            "spec": {"capacity": {"storage": rng.choice(SIZES)}, "accessModes": rng.choice(MODES),
                     "storageClassName": rng.choice(CLASSES), "hostPath": {"path": f"/mnt/disks/{i}"}}}


def make_claim(i: int, rng: random.Random) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": [rng.choice(["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany"])],
                            "storageClassName": rng.choice(CLASSES), "resources": {"requests": {"storage": rng.choice(SIZES)}}}
    if rng.random() < 0.3:
        spec["selector"] = rng.choice([
            {"matchLabels": {"zone": rng.choice(ZONES)}},
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold"]}]},
            {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": [rng.choice(ZONES)]}]},
        ])
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": f"claim-{i:06d}", "namespace": "default", "uid": f"uid-{i}"}, "spec": spec}


def decisions(n_volumes: int, budget_s: float = 4.0) -> tuple[float, float]:
    rng = random.Random(n_volumes)
    volumes = sorted((make_volume(i, rng) for i in range(n_volumes)), key=lambda v: v["metadata"]["name"])
    claims = [make_claim(i, rng) for i in range(2000)]
    index = VolumeIndex(volumes)

    def rate(fn) -> tuple[float, list[Any]]:
        answers = []
        start = time.perf_counter()
        count = 0
        while True:
            answers.append(fn(claims[count % len(claims)]))
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed > budget_s or count >= len(claims) * 5:
                return count / elapsed, answers

    linear_rate, linear_answers = rate(lambda c: find_best_volume_linear(c, volumes, False))
    index_rate, index_answers = rate(lambda c: find_best_volume(c, index, delay_binding=False))
    for a, b in zip(linear_answers, index_answers):
        assert (a and a["metadata"]["name"]) == (b and b["metadata"]["name"]), "index and scan disagree"
    return index_rate, linear_rate


def end_to_end(store_url: str, pairs: int, tmp: Path) -> dict[str, float]:
    from storage.apiserver.server import start_in_thread
    from storage.controllers.binder import BINDER_RECONCILERS
    from storage.controllers.manager import ControllerManager, run_controllers
    from storage.store import open_store

    rng = random.Random(7)
    store = open_store(store_url)
    server = start_in_thread(store, host="127.0.0.1", port=0, data_dir=tmp / "api")
    controller_store = open_store(store_url)
    stop = threading.Event()
    ready = threading.Event()
    out: list[ControllerManager] = []
    thread = threading.Thread(target=run_controllers, args=(controller_store, stop),
                              kwargs={"reconcilers": list(BINDER_RECONCILERS), "ready": ready, "manager_out": out, "workers": 2},
                              daemon=True)
    thread.start()
    ready.wait(60)
    manager = out[0]
    # A perfect matching exists and greedy smallest-fit finds it: claim i has volume i's class and exact
    # mode set (searched first, and holding as many volumes as claims), and asks for no more than any volume.
    vols = [make_volume(i, rng, for_api=True) for i in range(pairs)]
    claims = []
    for i, v in enumerate(vols):
        claims.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": f"claim-{i:06d}", "namespace": "default"},
                       "spec": {"accessModes": v["spec"]["accessModes"], "storageClassName": v["spec"]["storageClassName"],
                                "resources": {"requests": {"storage": "500Mi"}}}})
    clients = [server.client() for _ in range(4)]

    def create_all(objs: list[dict[str, Any]]) -> None:
        with ThreadPoolExecutor(len(clients)) as pool:
            list(pool.map(lambda k: [clients[k].create(o) for o in objs[k::len(clients)]], range(len(clients))))

    def bound_count() -> int:
        return sum(1 for c in manager.cache.list("persistentvolumeclaims")
                   if (c.get("status") or {}).get("phase") == "Bound")

    def available_count() -> int:
        return sum(1 for v in manager.cache.list("persistentvolumes")
                   if (v.get("status") or {}).get("phase") == "Available")

    try:
        t0 = time.perf_counter()
        create_all(vols)
        t_vols = time.perf_counter() - t0
        while available_count() < pairs:
            time.sleep(0.05)
        t_avail = time.perf_counter() - t0
        t1 = time.perf_counter()
        create_all(claims)
        t_claims = time.perf_counter() - t1
        while bound_count() < pairs:
            time.sleep(0.05)
        t_bound = time.perf_counter() - t1
    finally:
        stop.set()
        thread.join(60)
        for c in clients:
            c.close()
        server.stop()
        controller_store.close()
        store.close()
    return {"create_volumes": t_vols, "volumes_available": t_avail, "create_claims": t_claims, "all_bound": t_bound}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args()
    import structlog
    import logging

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    print("decisions per second: find_best_volume (index) vs Kubernetes' linear scan (port)")
    print(f"{'volumes':>8} {'index/s':>12} {'scan/s':>10} {'ratio':>8}")
    for n in (int(s) for s in args.sizes.split(",")):
        index_rate, linear_rate = decisions(n)
        print(f"{n:>8} {index_rate:>12,.0f} {linear_rate:>10,.1f} {index_rate / linear_rate:>7,.0f}x", flush=True)
    if args.skip_e2e:
        return
    print(f"\nend to end through the API: {args.pairs} volumes, then {args.pairs} claims; seconds")
    with tempfile.TemporaryDirectory(prefix="stowage-bench-binder-") as tmp_name:
        tmp = Path(tmp_name)
        targets: list[tuple[str, Any]] = []
        if args.backend in ("sqlite", "all"):
            targets.append(("sqlite", lambda: f"sqlite:///{tmp}/binder.db"))
        server = None
        if args.backend in ("postgres", "all"):
            from pgserver import PostgresServer, PostgresUnavailable

            try:
                server = PostgresServer()
                server.start()
                targets.append(("postgres", lambda: server.create_database("bench_binder")))
            except PostgresUnavailable as exc:
                print(f"postgres: skipped ({exc})")
                server = None
        try:
            for backend, url in targets:
                (tmp / backend).mkdir()
                r = end_to_end(url(), args.pairs, tmp / backend)
                print(f"{backend:<9} create volumes {r['create_volumes']:.1f}  all Available {r['volumes_available']:.1f}  "
                      f"create claims {r['create_claims']:.1f}  claims created->all Bound {r['all_bound']:.1f}  "
                      f"(Kubernetes p50: 453 s)", flush=True)
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
