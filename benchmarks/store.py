"""Store throughput against raw SQLAlchemy Core on the same database.

Claim: create, update (with a resourceVersion precondition) and list of
PersistentVolumes through ``SqlStore`` stay within 2x of raw SQLAlchemy Core
writing the same rows into a same-shaped table, on SQLite and on PostgreSQL.

Fair baseline: the store commits each API write in its own transaction, so the
raw baseline commits one row per transaction too, with the same durability
settings (SQLite WAL + synchronous=NORMAL; the same PostgreSQL server). A
second baseline with every row in one transaction is printed for information.
Raw rows are serialized with ``json.dumps`` and listed rows parsed with
``json.loads``, as any application storing these objects would.

usage: python benchmarks/store.py [--count 10000] [--backend sqlite|postgres|all]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from sqlalchemy import BigInteger, Column, MetaData, String, Table, Text, bindparam, create_engine, event, insert, select, update  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from storage.store.sql import SqlStore  # noqa: E402

PV = "persistentvolumes"
LIST_ROUNDS = 5


def make_pv(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"pv-{i:05d}", "labels": {"tier": "gold" if i % 2 else "bronze", "zone": f"z{i % 3}"}},
        "spec": {
            "capacity": {"storage": f"{1 + i % 100}Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "local",
            "local": {"path": f"/var/lib/stowage/pool/pv-{i:05d}"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-1"]}]}]}},
        },
        "status": {"phase": "Available"},
    }


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def raw_table() -> tuple[MetaData, Table]:
    md = MetaData()
    table = Table(
        "raw_objects",
        md,
        Column("resource", String(128), primary_key=True),
        Column("namespace", String(253), primary_key=True),
        Column("name", String(253), primary_key=True),
        Column("uid", String(36), nullable=False),
        Column("resource_version", BigInteger, nullable=False),
        Column("body", Text, nullable=False),
    )
    return md, table


def raw_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url)
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:  # the store's own durability settings
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def bench_raw(url: str, count: int, one_transaction: bool) -> dict[str, float]:
    engine = raw_engine(url)
    md, table = raw_table()
    md.drop_all(engine)
    md.create_all(engine)
    objs = [make_pv(i) for i in range(count)]
    ins = insert(table)
    # The same optimistic-concurrency check the store makes: the row must still be at the version read.
    upd = (
        update(table)
        .where(table.c.resource == PV, table.c.namespace == "", table.c.name == bindparam("k_name"))
        .where(table.c.resource_version == bindparam("k_rv"))
        .values(resource_version=table.c.resource_version + 1, body=bindparam("b_body"))
    )
    sel = select(table.c.resource_version, table.c.body).where(table.c.resource == PV)

    def row(i: int, o: dict[str, Any]) -> dict[str, Any]:
        return {"resource": PV, "namespace": "", "name": o["metadata"]["name"], "uid": str(uuid.uuid4()), "resource_version": 1, "body": json.dumps(o)}

    def create() -> None:
        if one_transaction:
            with engine.begin() as conn:
                for i, o in enumerate(objs):
                    conn.execute(ins, row(i, o))
        else:
            for i, o in enumerate(objs):
                with engine.begin() as conn:
                    conn.execute(ins, row(i, o))

    def modify() -> None:
        def params(o: dict[str, Any]) -> dict[str, Any]:
            o["spec"]["capacity"]["storage"] = "200Gi"
            return {"k_name": o["metadata"]["name"], "k_rv": 1, "b_body": json.dumps(o)}

        if one_transaction:
            with engine.begin() as conn:
                for o in objs:
                    assert conn.execute(upd, params(o)).rowcount == 1
        else:
            for o in objs:
                with engine.begin() as conn:
                    assert conn.execute(upd, params(o)).rowcount == 1

    def listing() -> None:
        for _ in range(LIST_ROUNDS):
            with engine.connect() as conn:
                items = [json.loads(body) for _, body in conn.execute(sel)]
            assert len(items) == count

    result = {"create": timed(create), "update": timed(modify), "list": timed(listing) / LIST_ROUNDS}
    md.drop_all(engine)
    engine.dispose()
    return result


def bench_store(url: str, count: int) -> dict[str, float]:
    store = SqlStore(url)
    objs = [make_pv(i) for i in range(count)]
    created: list[dict[str, Any]] = []

    def create() -> None:
        for o in objs:
            created.append(store.create(PV, o))

    def modify() -> None:
        for o in created:
            o["spec"]["capacity"]["storage"] = "200Gi"
            store.update(PV, o)  # carries the resourceVersion from create: checked

    def listing() -> None:
        for _ in range(LIST_ROUNDS):
            items, _ = store.list(PV)
            assert len(items) == count

    try:
        return {"create": timed(create), "update": timed(modify), "list": timed(listing) / LIST_ROUNDS}
    finally:
        store.close()


def run_backend(name: str, url_for: Callable[[str], str], count: int) -> list[tuple[str, str, float, float, float]]:
    stowage = bench_store(url_for("stowage"), count)
    raw = bench_raw(url_for("raw"), count, one_transaction=False)
    raw_one = bench_raw(url_for("raw_one"), count, one_transaction=True)
    return [(name, op, stowage[op], raw[op], raw_one[op]) for op in ("create", "update", "list")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="all")
    args = parser.parse_args()
    rows: list[tuple[str, str, float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="stowage-bench-") as tmp:
        if args.backend in ("sqlite", "all"):
            rows += run_backend("sqlite", lambda label: f"sqlite:///{tmp}/{label}.db", args.count)
        if args.backend in ("postgres", "all"):
            from pgserver import PostgresServer, PostgresUnavailable

            try:
                server = PostgresServer()
            except PostgresUnavailable as exc:
                print(f"postgres: skipped ({exc})")
            else:
                with server:
                    rows += run_backend("postgres", lambda label: server.create_database(f"bench_{label}"), args.count)
    n = args.count
    print(f"\n{n} PersistentVolumes; raw = SQLAlchemy Core, one row per transaction (as the store commits)")
    header = f"{'backend':<9} {'op':<7} {'stowage s':>10} {'ops/s':>9} {'raw s':>9} {'ratio':>6} {'raw 1-tx s':>11}"
    print(header)
    print("-" * len(header))
    for backend, op, s, r, r1 in rows:
        per = f"{n / s:,.0f}" if op != "list" else f"{1 / s:,.1f}"
        print(f"{backend:<9} {op:<7} {s:>10.3f} {per:>9} {r:>9.3f} {s / r:>6.2f} {r1:>11.3f}")
    print("ratio = stowage time / raw time (aim: <= 2.0); list = one full list of all objects, mean of", LIST_ROUNDS)


if __name__ == "__main__":
    main()
