"""SQLite group commit: concurrent writers share a transaction, fail alone, and are acknowledged
only once that transaction is committed (docs/semantics.md PF50-PF53)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from storage.errors import AlreadyExists, Conflict, NotFound
from storage.store.sql import SqlStore

PV = "persistentvolumes"
WRITER = Path(__file__).with_name("groupcommit_writer.py")


def pv(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, **spec}}


@pytest.fixture
def sqlite_store(tmp_path: Path):
    store = SqlStore(f"sqlite:///{tmp_path}/group.db")
    try:
        yield store
    finally:
        store.close()


def _queued_batch(store: SqlStore, writes: list[Callable[[], Any]]) -> list[Any]:
    """Run ``writes`` on their own threads so they all land in one group commit: the write lock is
    held until every one of them is queued. Returns each write's result or exception."""
    group = store._group
    results: list[Any] = [None] * len(writes)

    def run(i: int) -> None:
        try:
            results[i] = writes[i]()
        except Exception as exc:  # the test inspects which writes failed
            results[i] = exc

    lock = store._write_lock
    assert lock is not None
    before = group.batches
    with lock:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(writes))]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(group._queue) < len(writes) and time.monotonic() < deadline:
            time.sleep(0.01)  # the leader drains the queue only once it holds the lock: all wait queued
        assert len(group._queue) == len(writes), "every write must be queued while the lock is held"
    for thread in threads:
        thread.join(30)
    assert group.batches == before + 1, "the queued writes must commit as one transaction"
    return results


def test_concurrent_writes_share_one_transaction_and_a_conflict_fails_alone(sqlite_store: SqlStore) -> None:
    """PF50, PF52: one batch; the stale update 409s and the taken name 409s, every other write commits."""
    store = sqlite_store
    original = store.create(PV, pv("base"))
    base = store.update(PV, dict(original, spec={**original["spec"], "moved": 1}))
    store.create(PV, pv("taken"))
    fresh = dict(base, spec={**base["spec"], "touched": 1})
    stale = dict(original, spec={**original["spec"], "stale": 1})  # written against the version before "moved"
    start = store.current_revision()
    writes: list[Callable[[], Any]] = [lambda i=i: store.create(PV, pv(f"new-{i}")) for i in range(6)]
    writes.append(lambda: store.update(PV, stale))
    writes.append(lambda: store.create(PV, pv("taken")))
    writes.append(lambda: store.update(PV, fresh))
    results = _queued_batch(store, writes)

    created = results[:6]
    assert all(isinstance(r, dict) for r in created), created
    assert isinstance(results[6], Conflict) and results[6].code == 409
    assert isinstance(results[7], AlreadyExists) and results[7].code == 409
    assert isinstance(results[8], dict) and results[8]["spec"]["touched"] == 1
    # Every committed write has its own revision, contiguous: failed ones took none.
    revisions = sorted(int(r["metadata"]["resourceVersion"]) for r in [*created, results[8]])
    assert revisions == list(range(start + 1, start + 8))
    assert store.current_revision() == start + 7
    for i in range(6):
        assert store.get(PV, "", f"new-{i}")["metadata"]["resourceVersion"] == created[i]["metadata"]["resourceVersion"]
    assert "stale" not in store.get(PV, "", "base")["spec"]
    # The watch history holds exactly the committed writes, in revision order.
    watcher = store.watch(PV, since=start)
    try:
        seen = [watcher.get(timeout=5) for _ in range(7)]
    finally:
        watcher.close()
    assert [e.revision for e in seen if e is not None] == revisions


def test_a_failing_delete_in_a_batch_leaves_the_others(sqlite_store: SqlStore) -> None:
    """PF52: a NotFound raised inside the shared transaction is that write's alone."""
    store = sqlite_store
    store.create(PV, pv("gone-soon"))
    results = _queued_batch(store, [lambda: store.delete(PV, "", "missing"),
                                    lambda: store.delete(PV, "", "gone-soon"),
                                    lambda: store.create(PV, pv("after"))])
    assert isinstance(results[0], NotFound)
    assert isinstance(results[1], dict) and isinstance(results[2], dict)
    with pytest.raises(NotFound):
        store.get(PV, "", "gone-soon")
    assert store.get(PV, "", "after")["metadata"]["name"] == "after"


def test_a_lone_writer_commits_at_once(sqlite_store: SqlStore) -> None:
    """PF50: no waiting for company: one write is one transaction, at once."""
    store = sqlite_store
    before = store._group.batches
    started = time.monotonic()
    for i in range(20):
        store.create(PV, pv(f"solo-{i}"))
    assert store._group.batches == before + 20
    assert time.monotonic() - started < 20  # a generous bound: the point is no batching delay stalls it


def test_a_failed_commit_acknowledges_nothing(sqlite_store: SqlStore, tmp_path: Path) -> None:
    """PF51: when the database cannot take the transaction, every write of the batch fails and none
    is visible. Another connection holding SQLite's write lock makes BEGIN IMMEDIATE fail."""
    import sqlite3

    store = SqlStore(f"sqlite:///{tmp_path}/locked.db", busy_timeout=0.2)
    other = sqlite3.connect(f"{tmp_path}/locked.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        results = _queued_batch_unlocked(store, [lambda i=i: store.create(PV, pv(f"x-{i}")) for i in range(4)])
        other.execute("ROLLBACK")
        assert all(isinstance(r, Exception) and getattr(r, "code", None) == 503 for r in results), results
        for i in range(4):
            with pytest.raises(NotFound):
                store.get(PV, "", f"x-{i}")
    finally:
        other.close()
        store.close()


def _queued_batch_unlocked(store: SqlStore, writes: list[Callable[[], Any]]) -> list[Any]:
    results: list[Any] = [None] * len(writes)

    def run(i: int) -> None:
        try:
            results[i] = writes[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(writes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_kill_9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    """PF51, PF53: a writer process with 8 threads (so its commits are batched) is killed with
    SIGKILL mid-stream; every write it acknowledged (printed after ``create`` returned) is in the
    database when it is opened again, and the database passes its integrity check."""
    db = tmp_path / "crash.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(WRITER), f"sqlite:///{db}", "8"], stdout=subprocess.PIPE,
                            env=env, text=True)
    acknowledged: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while len(acknowledged) < 400 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acknowledged.append(line.strip())
        os.kill(proc.pid, signal.SIGKILL)  # while the threads are still writing
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert len(acknowledged) >= 400, "the writer must have acknowledged writes before it was killed"
    assert proc.returncode == -signal.SIGKILL
    store = SqlStore(f"sqlite:///{db}")
    try:
        assert store.corrupt is None
        items, _ = store.list(PV)
        names = {o["metadata"]["name"] for o in items}
        missing = [name for name in acknowledged if name not in names]
        assert not missing, f"{len(missing)} acknowledged writes lost: {missing[:5]}"
    finally:
        store.close()
