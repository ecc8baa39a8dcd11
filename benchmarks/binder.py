"""Claim binder: the index against Kubernetes' per-claim scan, and end-to-end binding.

1. Decisions per second of ``find_best_volume`` (index) and of
   ``find_best_volume_linear`` (a faithful port of Kubernetes'
   findByClaim/FindMatchingVolume) over 1,000 / 10,000 / 100,000 volumes:
   mixed classes, sizes and access-mode sets, 30% of claims with selectors.
   Both must give the same answers (checked on every decision measured).
2. End to end: N static volumes then N claims created through the real API
   server (HTTP), one POST per object from C client processes (one keep-alive
   connection each, each answer read before the next request, as kubectl and
   client-go do); the API server and the binder (``run_controllers``) each run
   in their own process on their own store connection, as deployed. Time from
   the first claim POST until every claim is Bound (counted in the database),
   on SQLite and on PostgreSQL.
   (Kubernetes, kubernetes/kubernetes#133352: 10,000 pairs p50 453 s.)

usage: python benchmarks/binder.py [--sizes 1000,10000,100000] [--pairs 10000] [--backend sqlite|postgres|all] [--skip-e2e] [--clients 4]
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
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


def _controllers_process(store_url: str, stop: Any, ready: Any) -> None:
    """Child: the binder controllers on their own store connection, as ``stowage controllers`` runs them."""
    import logging
    import threading as th

    import structlog

    from storage.controllers.binder import BINDER_RECONCILERS
    from storage.controllers.manager import run_controllers
    from storage.store import open_store

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    store = open_store(store_url)
    stop_event = th.Event()
    th.Thread(target=lambda: (stop.wait(), stop_event.set()), daemon=True).start()
    try:
        run_controllers(store, stop_event, reconcilers=list(BINDER_RECONCILERS), ready=ready, workers=2)
    finally:
        store.close()


def _count_phase(store: Any, resource: str, phase: str) -> int:
    """Rows whose status has ``phase``: a count in the database, so the watcher costs the run little CPU."""
    from sqlalchemy import text

    with store._reader.connect() as conn:  # benchmark-only peek at the store's own tables
        return int(conn.execute(text("SELECT count(*) FROM stowage_objects WHERE resource = :r AND body LIKE :p"),
                                {"r": resource, "p": f'%"phase":"{phase}"%'}).scalar_one())


def end_to_end(store_url: str, pairs: int, tmp: Path, clients: int) -> dict[str, float]:
    """API server, binder controllers and ``clients`` HTTP clients each in their own process."""
    import multiprocessing as mp

    from api_load import ApiServerProcess, create_through_api
    from storage.store import open_store

    rng = random.Random(7)
    store = open_store(store_url)  # schema first, so the two processes do not race to create it
    server = ApiServerProcess(store_url, tmp / "api", tls=True)
    ctx = mp.get_context("spawn")
    stop, ready = ctx.Event(), ctx.Event()
    controllers = ctx.Process(target=_controllers_process, args=(store_url, stop, ready), daemon=True)
    controllers.start()
    # A perfect matching exists and greedy smallest-fit finds it: claim i has volume i's class and exact
    # mode set (searched first, and holding as many volumes as claims), and asks for no more than any volume.
    vols = [make_volume(i, rng, for_api=True) for i in range(pairs)]
    claims = []
    for i, v in enumerate(vols):
        claims.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": f"claim-{i:06d}", "namespace": "default"},
                       "spec": {"accessModes": v["spec"]["accessModes"], "storageClassName": v["spec"]["storageClassName"],
                                "resources": {"requests": {"storage": "500Mi"}}}})

    def wait_count(resource: str, phase: str) -> None:
        while _count_phase(store, resource, phase) < pairs:
            if not controllers.is_alive():
                raise RuntimeError("the controllers process died")
            time.sleep(0.05)

    try:
        if not ready.wait(60):
            raise RuntimeError("controllers did not start")
        t0 = time.perf_counter()
        t_vols = create_through_api(server.port, server.token, server.ca_pem, [("/api/v1/persistentvolumes", v) for v in vols],
                                    clients)
        wait_count("persistentvolumes", "Available")
        t_avail = time.perf_counter() - t0
        t1 = time.perf_counter()
        t_claims = create_through_api(server.port, server.token, server.ca_pem,
                                      [("/api/v1/namespaces/default/persistentvolumeclaims", c) for c in claims], clients)
        wait_count("persistentvolumeclaims", "Bound")
        t_bound = time.perf_counter() - t1
    finally:
        stop.set()
        controllers.join(60)
        if controllers.is_alive():
            controllers.kill()
        server.stop()
        store.close()
    return {"create_volumes": t_vols, "volumes_available": t_avail, "create_claims": t_claims, "all_bound": t_bound}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--clients", type=int, default=4, help="client processes, one keep-alive connection each")
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
                r = end_to_end(url(), args.pairs, tmp / backend, args.clients)
                print(f"{backend:<9} create volumes {r['create_volumes']:.1f}  all Available {r['volumes_available']:.1f}  "
                      f"create claims {r['create_claims']:.1f}  claims created->all Bound {r['all_bound']:.1f}  "
                      f"(Kubernetes p50: 453 s)", flush=True)
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
