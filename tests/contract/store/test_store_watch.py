"""Store contract, watch: ordered, complete, no duplicates, across threads and processes.

Every test runs on SQLite and on PostgreSQL (fixture ``store``).
"""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from storage.errors import Gone
from storage.store.base import Watcher, WatchEvent
from storage.store.sql import SqlStore

PV = "persistentvolumes"
PVC = "persistentvolumeclaims"
WRITER = Path(__file__).with_name("writer_process.py")
TIMEOUT = 60.0  # generous upper bound for a slow machine; the tests end as soon as events arrive


def obj(name: str, namespace: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"metadata": meta, "spec": {"v": 0}}


def collect(watcher: Watcher, count: int) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    while len(events) < count:
        event = watcher.get(timeout=TIMEOUT)
        assert event is not None, f"only {len(events)} of {count} events arrived"
        events.append(event)
    return events


def assert_complete(events: list[WatchEvent], first: int, last: int) -> None:
    revisions = [e.revision for e in events]
    assert revisions == list(range(first, last + 1)), "revisions must be strictly increasing with no gap and no repeat"
    for event in events:
        assert event.object["metadata"]["resourceVersion"] == str(event.revision)


def test_watch_from_revision_replays_history_then_follows(store: SqlStore) -> None:
    created = store.create(PV, obj("a"))
    created["spec"]["v"] = 1
    store.update(PV, created)
    store.delete(PV, "", "a")
    with store.watch(PV, since=0) as watcher:
        assert [e.type for e in collect(watcher, 3)] == ["ADDED", "MODIFIED", "DELETED"]
        store.create(PV, obj("b"))
        live = collect(watcher, 1)[0]
        assert (live.type, live.object["metadata"]["name"], live.revision) == ("ADDED", "b", 4)
        assert watcher.get(timeout=0.1) is None
    with store.watch(PV, since=2) as watcher:
        assert [e.revision for e in collect(watcher, 2)] == [3, 4]


def test_watch_filters_by_resource_and_namespace(store: SqlStore) -> None:
    with store.watch(PVC, "b") as claims_in_b, store.watch(PV) as volumes, store.watch(None) as everything:
        store.create(PVC, obj("x", "a"))
        store.create(PV, obj("pv"))
        store.create(PVC, obj("y", "b"))
        assert [e.object["metadata"]["name"] for e in collect(claims_in_b, 1)] == ["y"]
        assert [e.object["metadata"]["name"] for e in collect(volumes, 1)] == ["pv"]
        assert [e.resource for e in collect(everything, 3)] == [PVC, PV, PVC]
        assert claims_in_b.get(timeout=0.05) is None and volumes.get(timeout=0.05) is None


def test_deleted_event_carries_last_object_with_new_revision(store: SqlStore) -> None:
    store.create(PVC, {"metadata": {"name": "c", "namespace": "ns", "finalizers": ["f"], "labels": {"k": "v"}}, "spec": {}})
    with store.watch(PVC, since=store.current_revision()) as watcher:
        marked = store.delete(PVC, "ns", "c")
        modified = collect(watcher, 1)[0]
        assert modified.type == "MODIFIED" and modified.object["metadata"]["deletionTimestamp"]
        marked["metadata"]["finalizers"] = []
        store.update(PVC, marked)
        deleted = collect(watcher, 1)[0]
        assert deleted.type == "DELETED"
        assert deleted.object["metadata"]["labels"] == {"k": "v"}
        assert deleted.revision == store.current_revision() == modified.revision + 1


def test_list_then_watch_misses_nothing(store: SqlStore) -> None:
    """A controller's informer: list, then watch from the list's revision while writers run."""
    stop = threading.Event()
    written: list[str] = []

    def writer() -> None:
        i = 0
        while not stop.is_set() or i < 30:
            store.create(PV, obj(f"w{i}"))
            written.append(f"w{i}")
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 10:
            threading.Event().wait(0.005)
        items, revision = store.list(PV)
    finally:
        stop.set()
        thread.join()
    seen = {o["metadata"]["name"] for o in items}
    with store.watch(PV, since=revision) as watcher:
        events = collect(watcher, store.current_revision() - revision)
    added = [e.object["metadata"]["name"] for e in events]
    assert seen.isdisjoint(added), "an object in the list must not come again as ADDED"
    assert sorted(seen | set(added)) == sorted(written)


def test_concurrent_threads_and_another_process_no_missed_or_duplicated_events(store: SqlStore) -> None:
    threads_n, per_thread, process_n = 4, 40, 40
    since = store.current_revision()
    with store.watch(None, since=since) as watcher:
        proc = subprocess.Popen([sys.executable, str(WRITER), store.url, PVC, "proc", str(process_n)])
        try:

            def write(t: int) -> None:
                for i in range(per_thread):
                    created = store.create(PV, obj(f"t{t}-{i}"))
                    created["spec"]["v"] = 1
                    store.update(PV, created, check_version=False)

            threads = [threading.Thread(target=write, args=(t,)) for t in range(threads_n)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert proc.wait(timeout=TIMEOUT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        expected = threads_n * per_thread * 2 + process_n * 2 + len(range(0, process_n, 3))
        assert store.current_revision() == since + expected
        events = collect(watcher, expected)
        assert watcher.get(timeout=0.1) is None
    assert_complete(events, since + 1, since + expected)
    names = {(e.resource, e.object["metadata"]["name"]) for e in events if e.type == "ADDED"}
    assert len(names) == threads_n * per_thread + process_n


def test_watch_wakes_for_writes_of_another_process(store: SqlStore) -> None:
    """The watcher is already waiting when the other process writes (NOTIFY on PostgreSQL, polling on SQLite)."""
    with store.watch(PVC, "ns", since=store.current_revision()) as watcher:
        proc = subprocess.run([sys.executable, str(WRITER), store.url, PVC, "other", "3"], timeout=TIMEOUT)
        assert proc.returncode == 0
        events = collect(watcher, 3 * 2 + 1)
    assert [(e.type, e.object["metadata"]["name"]) for e in events[:3]] == [("ADDED", "other-0"), ("MODIFIED", "other-0"), ("DELETED", "other-0")]
    assert_complete(events, 1, 7)


def test_watch_older_than_compaction_is_gone(store: SqlStore) -> None:
    for i in range(10):
        store.create(PV, obj(f"p{i}"))
    assert store.compact(keep=4) == 6
    with pytest.raises(Gone) as info:
        store.watch(PV, since=5)
    assert info.value.message == "too old resource version: 5 (6)"
    assert info.value.code == 410
    with store.watch(PV, since=6) as watcher:
        assert [e.revision for e in collect(watcher, 4)] == [7, 8, 9, 10]
    assert store.compact(keep=100) == 6, "compaction never moves backwards"


def test_events_are_compacted_automatically(store_url: str) -> None:
    small = SqlStore(store_url, keep_events=5, compact_every=20)
    try:
        for i in range(45):
            small.create(PV, obj(f"p{i}"))
        with pytest.raises(Gone):
            small.watch(PV, since=0)
        with small.watch(PV, since=40) as watcher:
            assert [e.revision for e in collect(watcher, 5)] == [41, 42, 43, 44, 45]
    finally:
        small.close()


def test_close_unblocks_a_waiting_get(store: SqlStore) -> None:
    watcher = store.watch(PV)
    result: list[object] = []
    reader = threading.Thread(target=lambda: result.append(watcher.get(timeout=None)))
    reader.start()
    watcher.close()
    reader.join(timeout=TIMEOUT)
    assert not reader.is_alive() and result == [None]


def test_many_watchers_share_one_poller(store: SqlStore) -> None:
    before = threading.active_count()
    watchers = [store.watch(PV) for _ in range(200)]
    try:
        assert threading.active_count() - before <= 2, "watchers must not each start a thread"
        store.create(PV, obj("shared"))
        for watcher in watchers:
            assert collect(watcher, 1)[0].object["metadata"]["name"] == "shared"
    finally:
        for watcher in watchers:
            watcher.close()


def test_event_objects_are_private_to_each_watcher(store: SqlStore) -> None:
    with store.watch(PV) as first, store.watch(PV) as second:
        store.create(PV, obj("a"))
        collect(first, 1)[0].object["metadata"]["name"] = "mutated"
        assert collect(second, 1)[0].object["metadata"]["name"] == "a"


def test_shared_watchers_get_one_event_and_private_ones_their_own(store: SqlStore) -> None:
    """An API server's streams only read their events: one decoded event (and its encodings) serves them all."""
    with store.watch(PV, shared=True) as a, store.watch(PV, shared=True) as b, store.watch(PV) as private:
        store.create(PV, obj("a"))
        first, second, own = collect(a, 1)[0], collect(b, 1)[0], collect(private, 1)[0]
        assert first is second
        assert first.encoded is second.encoded
        assert own is not first and own.object is not first.object
        assert own == first, "a private copy holds the same change"
        own.object["metadata"]["name"] = "mutated"
        assert first.object["metadata"]["name"] == "a"


def test_shared_watchers_from_a_backlog_still_see_every_change_once(store: SqlStore) -> None:
    """A watcher that starts behind (its backlog read at registration) and a live one agree event for event."""
    start = store.current_revision()
    with store.watch(PV, shared=True) as live:
        for i in range(5):
            store.create(PV, obj(f"b{i}"))
        live_events = collect(live, 5)
        with store.watch(PV, since=start, shared=True) as late:
            late_events = collect(late, 5)
    assert_complete(live_events, start + 1, start + 5)
    assert [e.revision for e in late_events] == [e.revision for e in live_events]
    assert [e.object for e in late_events] == [e.object for e in live_events]


def test_a_watch_resumed_from_far_back_does_not_hold_up_the_others(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a new watch reads its history (an agent reconnecting to a busy server with an old
    resourceVersion), the live watches keep receiving changes: the history is not read under the lock
    that the poller needs."""
    start = store.current_revision()
    for i in range(3):
        store.create(PVC, obj(f"old{i}", "ns"))
    reading, release = threading.Event(), threading.Event()
    real_events = store._events

    def slow_history(after: int, upto: int | None, limit: int = 1000, resource: str | None = None,
                     **how: Any) -> Any:
        if resource == PVC and not release.is_set():
            reading.set()
            release.wait(TIMEOUT)
        return real_events(after, upto, limit, resource, **how)

    with store.watch(PV) as live:
        monkeypatch.setattr(store, "_events", slow_history)
        opened: list[Watcher] = []
        resumer = threading.Thread(target=lambda: opened.append(store.watch(PVC, since=start)), daemon=True)
        resumer.start()
        try:
            assert reading.wait(TIMEOUT), "the resumed watch never read its history"
            store.create(PV, obj("while-reading"))
            event = live.get(timeout=10)
            assert event is not None and event.object["metadata"]["name"] == "while-reading"
        finally:
            release.set()
            resumer.join(TIMEOUT)
        [resumed] = opened
        with resumed:
            assert [e.object["metadata"]["name"] for e in collect(resumed, 3)] == ["old0", "old1", "old2"]


def test_postgres_cross_process_wakeup_is_notify_not_polling(store_url: str) -> None:
    """With polling effectively off, only LISTEN/NOTIFY can deliver another process's writes."""
    if store_url.startswith("sqlite"):
        pytest.skip("SQLite has no notification channel between processes: it polls")
    quiet = SqlStore(store_url, poll_interval=3600)
    try:
        with quiet.watch(PVC, since=0) as watcher:
            collect_started = threading.Event()

            def write_later() -> None:
                collect_started.wait(TIMEOUT)
                subprocess.run([sys.executable, str(WRITER), store_url, PVC, "notified", "1"], timeout=TIMEOUT, check=True)

            writer = threading.Thread(target=write_later)
            writer.start()
            collect_started.set()
            events = collect(watcher, 3)
            writer.join()
        assert [e.type for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    finally:
        quiet.close()
