"""The controller runtime pieces: work queue de-duplication and delays, event aggregation."""
from __future__ import annotations

import threading

from storage.controllers.events import StoreEventRecorder, events_for
from storage.controllers.manager import WorkQueue


def test_queue_deduplicates_and_never_hands_a_key_to_two_workers():
    q = WorkQueue()
    try:
        q.add("a"); q.add("a"); q.add("b")
        assert len(q) == 2
        assert q.get() == "a"
        q.add("a")  # while processing: parked, not handed out again
        assert q.get() == "b"
        assert len(q) == 0
        q.done("a")
        assert q.get() == "a"
        q.done("a"); q.done("b")
        assert q.idle()
    finally:
        q.shutdown()


def test_pc5_a_ranked_queue_hands_out_the_highest_rank_first_fifo_among_equals():
    ranks = {"low-1": 0, "high": 1000, "low-2": 0, "critical": 2000001000, "retry": 5}
    q = WorkQueue(base_delay=0.001, rank=lambda key: ranks[key])
    try:
        for key in ("low-1", "high", "low-2", "critical"):
            q.add(key)
        assert len(q) == 4
        assert [q.get() for _ in range(4)] == ["critical", "high", "low-1", "low-2"]
        for key in ("low-1", "high", "low-2", "critical"):
            q.done(key)
        # A key re-queued while it was processed, or by a timer, keeps its rank.
        q.add("low-1")
        assert q.get() == "low-1"
        q.add("low-1")
        q.add_after("retry", 0.01)
        q.done("low-1")
        got: list[str] = []
        got.append(q.get() or "")
        q.done(got[0])
        got.append(q.get() or "")
        assert sorted(got) == ["low-1", "retry"]
        q.done(got[1])
        assert q.idle()
    finally:
        q.shutdown()


def test_queue_add_after_and_backoff_deliver_without_polling():
    q = WorkQueue(base_delay=0.001)
    try:
        got = threading.Event()
        result: list[str] = []

        def worker():
            result.append(q.get())
            got.set()

        threading.Thread(target=worker, daemon=True).start()
        q.add_after("later", 0.01)
        assert got.wait(10)
        assert result == ["later"]
        # Each failure doubles the base delay; jitter keeps each delay within [0.5, 1.5) of it.
        delays = [q.add_rate_limited("x") for _ in range(6)]
        for n, delay in enumerate(delays):
            base = 0.001 * 2**n
            assert 0.5 * base <= delay < 1.5 * base, (n, delay)
        q.forget("x")
        assert 0.0005 <= q.add_rate_limited("x") < 0.0015  # forget resets the back-off
    finally:
        q.shutdown()


def test_queue_keeps_one_pending_timer_per_key_the_earliest():
    """A key that fails again, or is re-queued by events, while its retry is pending is retried once per
    delay, not once per attempt (client-go's delaying queue)."""
    q = WorkQueue()
    try:
        for _ in range(5):
            q.add_after("k", 60.0)
        q.add_after("k", 120.0)
        assert q.pending_timers() == 1
        q.add_after("k", 0.05)  # earlier: replaces the pending one
        assert q.pending_timers() == 1
        assert q.get() == "k"
        q.done("k")
        assert q.pending_timers() == 0 and q.idle()  # the replaced 60 s timer does not count, nor fire
        q.add_after("other", 0.05)
        assert q.get() == "other"  # what is due next is "other", not a second "k"
        q.done("other")
    finally:
        q.shutdown()


def test_pf80_a_key_queued_wakes_one_idle_worker_not_all(monkeypatch):
    """PF80: with eight workers idle in get(), each add wakes one of them (and the timer thread none):
    eight adds take eight wake-ups, where a wake-up of every waiter per add took 8 x 8 + 8."""
    q = WorkQueue()
    wakeups = 0
    count_lock = threading.Lock()
    real_wait = q._cond.wait

    def counted_wait(timeout=None):
        nonlocal wakeups
        result = real_wait(timeout)
        with count_lock:
            wakeups += 1
        return result

    monkeypatch.setattr(q._cond, "wait", counted_wait)
    got: list[str] = []
    release = threading.Event()

    def worker():
        key = q.get()
        got.append(key)
        release.wait(10)  # hold it, so the worker is not waiting again when the next key comes
        q.done(key)

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(8)]
    try:
        for t in workers:
            t.start()
        while len(q._cond._waiters) < 8:  # every worker asleep in get()
            threading.Event().wait(0.001)
        for i in range(8):
            before = len(got)
            q.add(f"k{i}")
            while len(got) == before:
                threading.Event().wait(0.001)
        assert sorted(got) == [f"k{i}" for i in range(8)]
        assert wakeups == 8, wakeups
        # A timer wakes the timer thread only; once it fired its key waits in the queue (all eight workers
        # hold a key), and no worker was woken for the timer's setting or firing.
        q.add_after("timed", 0.01)
        while len(q) == 0:
            threading.Event().wait(0.001)
        assert q.pending_timers() == 0 and wakeups == 8, wakeups
    finally:
        release.set()
        for t in workers:
            t.join(10)
        q.shutdown()


def test_event_repeats_bump_count(store):
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c", "namespace": "default", "uid": "u-1", "resourceVersion": "3"}}
    rec = StoreEventRecorder(store, component="persistentvolume-controller")
    rec.record(pvc, "Normal", "FailedBinding", "no persistent volumes available for this claim and no storage class is set")
    rec.record(pvc, "Normal", "FailedBinding", "no persistent volumes available for this claim and no storage class is set")
    rec.record(pvc, "Warning", "ProvisioningFailed", "x")
    events = events_for(store, pvc)
    assert sorted((e["reason"], e["count"]) for e in events) == [("FailedBinding", 2), ("ProvisioningFailed", 1)]
    e = next(e for e in events if e["reason"] == "FailedBinding")
    assert e["involvedObject"] == {"kind": "PersistentVolumeClaim", "name": "c", "namespace": "default", "uid": "u-1",
                                   "apiVersion": "v1", "resourceVersion": "3"}
    assert e["source"]["component"] == "persistentvolume-controller" and e["type"] == "Normal"
    assert e["firstTimestamp"] and e["lastTimestamp"]


def test_cache_write_through_of_a_version_older_than_its_deletion_is_ignored():
    """A reconciler publishing what it wrote just before someone deleted the object
    must not resurrect it in the cache (it would be reconciled forever as a ghost)."""
    from storage.controllers.manager import InformerCache

    cache = InformerCache()
    pv = {"metadata": {"name": "v", "resourceVersion": "5"}}
    cache.apply("persistentvolumes", "ADDED", pv)
    cache.apply("persistentvolumes", "DELETED", {"metadata": {"name": "v", "resourceVersion": "7"}})
    cache.write_through("persistentvolumes", {"metadata": {"name": "v", "resourceVersion": "6"}})
    assert cache.get("persistentvolumes", "", "v") is None
    # A genuinely new object of the same name (a later revision) is accepted.
    cache.apply("persistentvolumes", "ADDED", {"metadata": {"name": "v", "resourceVersion": "9"}})
    assert cache.get("persistentvolumes", "", "v")["metadata"]["resourceVersion"] == "9"


def test_pf86_keyed_is_a_copy_of_the_cache_by_namespace_and_name():
    """PF86: the scheduler's maps of every claim and volume come from ``keyed``: the cache's keys, copied at
    once; what the cache learns afterwards does not change a copy handed out, nor a change to a copy the cache."""
    from storage.controllers.manager import InformerCache

    cache = InformerCache()
    claim = {"metadata": {"name": "c", "namespace": "ns", "resourceVersion": "1"}}
    pv = {"metadata": {"name": "v", "resourceVersion": "2"}}
    cache.apply("persistentvolumeclaims", "ADDED", claim)
    cache.apply("persistentvolumes", "ADDED", pv)
    claims = cache.keyed("persistentvolumeclaims")
    assert claims == {("ns", "c"): claim} and cache.keyed("persistentvolumes") == {("", "v"): pv}
    assert cache.keyed("storageclasses") == {}
    cache.apply("persistentvolumeclaims", "ADDED", {"metadata": {"name": "d", "namespace": "ns", "resourceVersion": "3"}})
    claims.pop(("ns", "c"))
    assert claims == {}
    assert sorted(cache.keyed("persistentvolumeclaims")) == [("ns", "c"), ("ns", "d")]
