"""The controller runtime: one shared informer, per-reconciler work queues, workers.

The informer lists every resource, then follows one ``store.watch(None)``
stream into an in-memory cache (re-listing on Gone). Each change is turned
into keys for the reconcilers that care (their primary resource, and the
mappers of ``Reconciler.watches``). A key is queued at most once at a time and
never processed by two workers at once; errors back off per key with jitter.
Nothing polls: workers block on their queue, timers on a heap.
"""
from __future__ import annotations

import importlib

import heapq
import itertools
import random
import threading
from collections import deque
from typing import Any, Callable, Iterable

import structlog

from storage.api.registry import RESOURCES
from storage.api.selectors import parse_label_selector
from storage.controllers.base import ControllerContext, ControllerOptions, Reconciler, object_key
from storage.controllers.events import StoreEventRecorder
from storage.errors import NotFound, Conflict, Gone, TemporaryError
from storage.store.base import Store, WatchEvent

log = structlog.get_logger(__name__)

Handler = Callable[[str, dict[str, Any] | None, dict[str, Any] | None], None]


def _rv(obj: dict[str, Any] | None) -> int | None:
    if not obj:
        return None
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion"))
    except (TypeError, ValueError):
        return None


def _nskey(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta["name"])


class InformerCache:
    """The ``Cache`` of storage/controllers/base.py, plus change handlers and write-through.

    Write-through lets a reconciler publish what it just wrote so the next
    decision in this process sees it before the watch event arrives; an
    older version (from a lagging event) never replaces a newer one.
    """

    def __init__(self, on_change: Handler | None = None) -> None:
        self._lock = threading.RLock()
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self._handlers: dict[str, list[Handler]] = {}
        # The revision at which each recently deleted object went away: a write-through
        # of an older version (written just before the deletion) must not bring back a ghost.
        self._tombstones: dict[tuple[str, str, str], int] = {}
        # Called after the handlers for every accepted change, whether it came
        # from the watch or from a write-through (which makes the later watch
        # event a no-op, so it must wake the controllers itself).
        self.on_change = on_change

    # -- read side (Cache protocol)
    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects.get(resource, {}).get((namespace or "", name))

    def keyed(self, resource: str) -> dict[tuple[str, str], dict[str, Any]]:
        with self._lock:
            return dict(self._objects.get(resource, {}))

    def list(self, resource: str, namespace: str | None = None, label_selector: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._objects.get(resource, {}).values())
        if namespace is not None:
            items = [o for o in items if ((o.get("metadata") or {}).get("namespace") or "") == namespace]
        if label_selector:
            selector = parse_label_selector(label_selector)
            items = [o for o in items if selector.matches((o.get("metadata") or {}).get("labels"))]
        return items

    # -- handlers: called under the cache lock, in change order; keep them cheap
    def add_handler(self, resource: str, handler: Handler) -> None:
        """``handler(resource, old, new)`` for every change; called at once for every object already cached."""
        with self._lock:
            self._handlers.setdefault(resource, []).append(handler)
            for obj in self._objects.get(resource, {}).values():
                handler(resource, None, obj)

    def _notify(self, resource: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        for handler in self._handlers.get(resource, ()):
            handler(resource, old, new)
        if self.on_change is not None:
            self.on_change(resource, old, new)

    # -- write side
    def apply(self, resource: str, event_type: str, obj: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None] | None:
        """Apply a change; return (old, new) or None when it was stale."""
        key = _nskey(obj)
        with self._lock:
            objects = self._objects.setdefault(resource, {})
            old = objects.get(key)
            old_rv, new_rv = _rv(old), _rv(obj)
            if old_rv is not None and new_rv is not None and new_rv < old_rv:
                return None
            if event_type == "DELETED":
                if old is None:
                    return None
                if old_rv is not None and new_rv is not None and old_rv > new_rv:
                    return None
                del objects[key]
                self._bury(resource, key, max(r for r in (old_rv, new_rv, 0) if r is not None))
                self._notify(resource, old, None)
                return (old, None)
            if old is not None and old_rv is not None and old_rv == new_rv:
                return None
            if old is None:
                buried = self._tombstones.get((resource, *key))
                if buried is not None:
                    if new_rv is None or new_rv <= buried:
                        return None
                    del self._tombstones[(resource, *key)]
            objects[key] = obj
            self._notify(resource, old, obj)
            return (old, obj)

    def write_through(self, resource: str, obj: dict[str, Any]) -> None:
        self.apply(resource, "MODIFIED", obj)

    def forget(self, resource: str, namespace: str, name: str) -> None:
        """Drop an object we just deleted (its DELETED event will be a no-op)."""
        with self._lock:
            old = self._objects.get(resource, {}).pop((namespace or "", name), None)
            if old is not None:
                self._bury(resource, (namespace or "", name), _rv(old) or 0)
                self._notify(resource, old, None)

    _MAX_TOMBSTONES = 50_000

    def _bury(self, resource: str, key: tuple[str, str], revision: int) -> None:
        self._tombstones[(resource, *key)] = revision
        if len(self._tombstones) > self._MAX_TOMBSTONES:
            # Oldest first: a write-through older than this many deletions is long settled.
            for stale in list(self._tombstones)[: len(self._tombstones) - self._MAX_TOMBSTONES]:
                del self._tombstones[stale]

    def replace(self, resource: str, items: list[dict[str, Any]]) -> list[tuple[dict[str, Any] | None, dict[str, Any] | None]]:
        """Swap in a fresh listing; return the differences as (old, new) pairs."""
        changes: list[tuple[dict[str, Any] | None, dict[str, Any] | None]] = []
        fresh = {_nskey(o): o for o in items}
        with self._lock:
            current = self._objects.setdefault(resource, {})
            for key in list(current):
                if key not in fresh:
                    old = current.pop(key)
                    self._notify(resource, old, None)
                    changes.append((old, None))
            for key, obj in fresh.items():
                old = current.get(key)
                if old is not None and _rv(old) is not None and _rv(obj) is not None and _rv(old) >= _rv(obj):  # type: ignore[operator]
                    continue
                current[key] = obj
                self._notify(resource, old, obj)
                changes.append((old, obj))
        return changes


class WorkQueue:
    """De-duplicating queue: a key waits at most once, and is never handed to two workers at once."""

    def __init__(self, base_delay: float = 0.005, max_delay: float = 300.0,
                 rank: Callable[[str], int] | None = None) -> None:
        """``rank``: when given, a waiting key of a higher rank is handed out first (FIFO among equals), as
        Kubernetes' scheduler takes pods of a higher priority first (PC5)."""
        # One lock, two conditions: a key queued wakes one worker (PF80), a timer set wakes the timer thread.
        # With one condition for both, every add woke every worker of the controller and the timer thread
        # (notify_all), and all but one found nothing to do and went back to sleep.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # workers wait here for a key
        self._timer_cond = threading.Condition(self._lock)  # the timer thread waits here
        self._queue: deque[str] = deque()
        self._rank = rank
        self._ranked: list[tuple[int, int, str]] = []  # (-rank, arrival, key) when ranked
        # Each waiting key's rank, taken when it was added: ``rank`` reads the informer cache, whose lock is
        # never taken under this queue's (the informer holds its own while it adds keys here).
        self._ranks: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._failures: dict[str, int] = {}
        self._shutdown = False
        self._held = False
        self._timers: list[tuple[float, int, str]] = []
        # One pending timer per key, the earliest (as client-go's delaying queue): a key that fails again
        # while its own retry is pending, or is re-queued by events meanwhile, would otherwise gather a
        # timer per attempt and be retried that many times per delay.
        self._due: dict[str, float] = {}
        self._seq = itertools.count()
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._timer_thread = threading.Thread(target=self._run_timers, name="workqueue-timers", daemon=True)
        self._timer_thread.start()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._ranked)

    def _push(self, key: str) -> None:
        """Queue ``key`` for a worker (the lock held)."""
        if self._rank is None:
            self._queue.append(key)
        else:
            heapq.heappush(self._ranked, (-self._ranks.get(key, 0), next(self._seq), key))
        self._cond.notify()

    def _waiting(self) -> bool:
        return bool(self._queue or self._ranked)

    def hold(self) -> None:
        """Keys queue up but none is handed out until ``release``: workers wait for the first listing, as
        Kubernetes' controllers wait for their caches to sync, so a ranked queue orders what was there."""
        with self._cond:
            self._held = True

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()

    def _ranking(self, key: str) -> int | None:
        return self._rank(key) if self._rank is not None else None

    def add(self, key: str) -> None:
        rank = self._ranking(key)
        with self._cond:
            if self._shutdown or key in self._dirty:
                return
            if rank is not None:
                self._ranks[key] = rank
            self._dirty.add(key)
            if key not in self._processing:
                self._push(key)

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        import time

        rank = self._ranking(key)
        with self._cond:
            if self._shutdown:
                return
            if rank is not None:
                self._ranks[key] = rank
            due = time.monotonic() + delay
            pending = self._due.get(key)
            if pending is not None and pending <= due:
                return
            self._due[key] = due  # an earlier one replaces it; the later heap entry is skipped when due
            heapq.heappush(self._timers, (due, next(self._seq), key))
            self._timer_cond.notify()

    def pending_timers(self) -> int:
        with self._cond:
            return len(self._due)

    def add_rate_limited(self, key: str) -> float:
        with self._cond:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        delay = min(self.max_delay, self.base_delay * (2**n))
        delay = delay * (0.5 + random.random())  # jitter spreads retries of many replicas
        self.add_after(key, delay)
        return delay

    def num_requeues(self, key: str) -> int:
        """How many times in a row ``key`` has failed and waits with back-off (client-go's NumRequeues)."""
        with self._cond:
            return self._failures.get(key, 0)

    def in_progress(self, key: str) -> bool:
        """A worker holds ``key`` now."""
        with self._cond:
            return key in self._processing

    def forget(self, key: str) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def get(self) -> str | None:
        with self._cond:
            while (self._held or not self._waiting()) and not self._shutdown:
                self._cond.wait()
            if self._shutdown:
                return None
            key = self._queue.popleft() if self._queue else heapq.heappop(self._ranked)[2]
            if key not in self._due:  # a pending retry still needs the rank its add_after took
                self._ranks.pop(key, None)
            self._processing.add(key)
            self._dirty.discard(key)
            return key

    def done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._push(key)

    def idle(self) -> bool:
        with self._cond:
            return not self._waiting() and not self._processing and not self._due

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
            self._timer_cond.notify_all()
        self._timer_thread.join(timeout=5)

    def _run_timers(self) -> None:
        import time

        with self._cond:
            while not self._shutdown:
                if not self._timers:
                    self._timer_cond.wait()
                    continue
                due, _, key = self._timers[0]
                now = time.monotonic()
                if due > now:
                    self._timer_cond.wait(due - now)
                    continue
                heapq.heappop(self._timers)
                if self._due.get(key) != due:
                    continue  # replaced by an earlier timer for the key, which has fired already
                del self._due[key]
                if key not in self._dirty:
                    self._dirty.add(key)
                    if key not in self._processing:
                        self._push(key)


class _Controller:
    def __init__(self, reconciler: Reconciler, workers: int) -> None:
        self.reconciler = reconciler
        # A reconciler that orders its keys (the scheduler, by pod priority) defines ``rank(key)``.
        self.queue = WorkQueue(rank=getattr(reconciler, "rank", None))
        self.workers = workers
        self.watches = reconciler.watches()
        self.threads: list[threading.Thread] = []

    def keys_for(self, resource: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> set[str]:
        keys: set[str] = set()
        if not self.reconciler.relevant(resource, old, new):
            return keys
        objs = [o for o in (old, new) if o is not None]
        if resource == self.reconciler.primary:
            keys.update(object_key(o) for o in objs)
        mapper = self.watches.get(resource)
        if mapper is not None:
            for o in objs:
                keys.update(mapper(o))
        return keys

    def start(self, stop: threading.Event) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"{self.reconciler.name}-{i}", daemon=True)
            t.start()
            self.threads.append(t)

    def _work(self) -> None:
        name = self.reconciler.name
        while True:
            key = self.queue.get()
            if key is None:
                return
            try:
                result = self.reconciler.reconcile(key)
            except Conflict:
                self.queue.done(key)
                self.queue.add(key)  # someone else wrote first: re-read and retry now
                continue
            except NotFound as exc:
                # The object went away between the cache read and the write: its own
                # event (or the next resync) brings whatever is left to do.
                self.queue.forget(key)
                self.queue.done(key)
                log.debug("reconcile_gone", controller=name, key=key, error=str(exc))
                continue
            except TemporaryError as exc:
                self.queue.done(key)
                self.queue.add_after(key, exc.delay)
                log.info("reconcile_retry", controller=name, key=key, delay=exc.delay, error=str(exc))
                continue
            except Exception as exc:
                self.queue.done(key)
                delay = self.queue.add_rate_limited(key)
                log.warning("reconcile_failed", controller=name, key=key, retry_in=round(delay, 3), error=repr(exc))
                continue
            self.queue.forget(key)
            self.queue.done(key)
            if result is not None and result.requeue_after is not None:
                self.queue.add_after(key, result.requeue_after)


DEFAULT_RESYNC_SECONDS = 30.0


class ControllerManager:
    def __init__(self, store: Store, reconcilers: Iterable[type[Reconciler]], *, workers: int = 2,
                 component: str = "stowage-controller-manager", resources: Iterable[str] | None = None,
                 resync_seconds: float = DEFAULT_RESYNC_SECONDS, options: ControllerOptions | None = None) -> None:
        self.store = store
        self.cache = InformerCache(on_change=self._dispatch)
        self.events = StoreEventRecorder(store, component=component)
        self.ctx = ControllerContext(store=store, cache=self.cache, events=self.events,
                                     options=options or ControllerOptions())
        # A reconciler that blocks on a backend (provisioning calls a node agent or a
        # cloud API) asks for more workers through a ``workers`` class attribute.
        self.controllers = [_Controller(cls(self.ctx), max(workers, getattr(cls, "workers", workers)))
                            for cls in reconcilers]
        self.resync_seconds = resync_seconds
        self.resources = list(resources) if resources is not None else [r.plural for r in RESOURCES if r.stored]
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _dispatch(self, resource: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        for controller in self.controllers:
            for key in controller.keys_for(resource, old, new):
                controller.queue.add(key)

    def _list_all(self) -> int:
        revisions = []
        for resource in self.resources:
            items, revision = self.store.list(resource)
            revisions.append(revision)
            self.cache.replace(resource, items)
        return min(revisions) if revisions else self.store.current_revision()

    def _run_informer(self) -> None:
        wanted = set(self.resources)
        failures = 0
        for controller in self.controllers:
            controller.queue.hold()
        while not self._stop.is_set():
            try:
                revision = self._list_all()
                self.synced.set()
                for controller in self.controllers:
                    controller.queue.release()
                with self.store.watch(None, since=revision) as watcher:
                    failures = 0
                    while not self._stop.is_set():
                        event: WatchEvent | None = watcher.get(timeout=0.5)
                        if event is None:
                            continue
                        if event.resource not in wanted:
                            continue
                        self.cache.apply(event.resource, event.type, event.object)
            except Gone:
                log.info("informer_relist", reason="watch revision compacted")
            except Exception as exc:
                failures += 1
                delay = min(30.0, 0.1 * 2**failures) * (0.5 + random.random())
                log.warning("informer_failed", error=repr(exc), retry_in=round(delay, 2))
                self._stop.wait(delay)

    def start(self) -> None:
        self.start_workers()
        self.start_informer()

    def start_informer(self) -> None:
        """List and watch into the cache; keys queue up for workers (a warm standby runs only this, HA9)."""
        self._thread = threading.Thread(target=self._run_informer, name="informer", daemon=True)
        self._thread.start()

    def start_workers(self) -> None:
        for controller in self.controllers:
            controller.start(self._stop)
        threading.Thread(target=self._warm_up, name="controller-warm-up", daemon=True).start()
        if self.resync_seconds > 0:
            threading.Thread(target=self._resync, name="resync", daemon=True).start()

    def _warm_up(self) -> None:
        for controller in self.controllers:
            if self._stop.is_set():
                return
            try:
                controller.reconciler.warm_up()
            except Exception as exc:  # the first reconcile loads it, and reports, as before
                log.warning("warm_up_failed", controller=controller.reconciler.name, error=repr(exc))

    def _resync(self) -> None:
        """Hand every cached object to its reconciler again, now and then.

        Reconcilers are level-triggered, so this only costs a look; it heals a
        change whose event mapped to no key (e.g. a claim deleted before its
        volume's claimRef was visible), as Kubernetes' informer resync does.
        """
        while not self._stop.wait(self.resync_seconds):
            for controller in self.controllers:
                for obj in self.cache.list(controller.reconciler.primary):
                    controller.queue.add(object_key(obj))

    def stop(self) -> None:
        self._stop.set()
        for controller in self.controllers:
            controller.queue.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for controller in self.controllers:
            for t in controller.threads:
                t.join(timeout=10)

    def idle(self) -> bool:
        return all(c.queue.idle() for c in self.controllers)


def _default_reconcilers() -> list[type[Reconciler]]:
    from storage.controllers.binder import ALL_RECONCILERS
    from storage.controllers.node_lifecycle import NodeLifecycleReconciler
    from storage.controllers.scheduler import SchedulerReconciler

    # The node lifecycle controller also mirrors spec.unschedulable as its NoSchedule taint (L3, E13).
    found: list[type[Reconciler]] = [*ALL_RECONCILERS, SchedulerReconciler, NodeLifecycleReconciler]
    # Workload controllers live in their own modules; each exports RECONCILERS.
    for module_name in ("statefulset.controller", "storage.controllers.endpoints",
                        "storage.controllers.workloads", "storage.controllers.gc",
                        "storage.controllers.deployment", "storage.controllers.namespace",
                        "storage.controllers.serviceaccounts", "storage.controllers.disruption",
                        "storage.controllers.attachdetach", "storage.controllers.snapshot",
                        "storage.controllers.ephemeral"):
        module = importlib.import_module(module_name)
        found += list(getattr(module, "RECONCILERS", []))
    # BackupSchedules (SEMANTICS BC12): on its own line so other controllers' additions merge cleanly.
    found += list(importlib.import_module("storage.controllers.backup_schedule").RECONCILERS)
    # Opt-in recovery of local volumes on lost nodes (SEMANTICS LR).
    found += list(importlib.import_module("storage.controllers.local_recovery").RECONCILERS)
    # ResourceQuota status (SEMANTICS QL5): on its own line so other controllers' additions merge cleanly.
    found += list(importlib.import_module("storage.controllers.resourcequota").RECONCILERS)
    # Jobs and CronJobs (SEMANTICS J1-J15, CJ1-CJ10).
    found += list(importlib.import_module("storage.controllers.job").RECONCILERS)
    found += list(importlib.import_module("storage.controllers.cronjob").RECONCILERS)
    # EndpointSlices of Services (SEMANTICS EPS1-EPS5).
    found += list(importlib.import_module("storage.controllers.endpointslices").RECONCILERS)
    # VolumeAttributesClasses: the modify and protection controllers (SEMANTICS VAC4-VAC6).
    found += list(importlib.import_module("storage.controllers.volume_attributes").RECONCILERS)
    # CSIStorageCapacity objects from drivers' GetCapacity (SEMANTICS SCAP2).
    found += list(importlib.import_module("storage.controllers.storage_capacity").RECONCILERS)
    # HorizontalPodAutoscalers (SEMANTICS HPA3-HPA7).
    found += list(importlib.import_module("storage.controllers.hpa").RECONCILERS)
    return found


# Later controllers (scheduler, statefulset, endpoints, ...) append themselves here.
DEFAULT_RECONCILERS: list[type[Reconciler]] = _default_reconcilers()


def run_controllers(store: Store, stop_event: threading.Event, *, reconcilers: list[type[Reconciler]] | None = None,
                    workers: int = 2, component: str = "stowage-controller-manager",
                    ready: threading.Event | None = None, manager_out: list[ControllerManager] | None = None,
                    options: ControllerOptions | None = None,
                    resync_seconds: float = DEFAULT_RESYNC_SECONDS) -> None:
    """Run the reconcilers against ``store`` until ``stop_event`` is set.

    ``ready`` is set once the first listing is in the cache; ``manager_out``
    receives the manager (tests and benchmarks inspect its cache and queues).
    """
    manager = ControllerManager(store, DEFAULT_RECONCILERS if reconcilers is None else reconcilers,
                                workers=workers, component=component, options=options, resync_seconds=resync_seconds)
    if manager_out is not None:
        manager_out.append(manager)
    manager.start()
    log.info("controllers_started", controllers=[c.reconciler.name for c in manager.controllers])
    try:
        if ready is not None:
            while not stop_event.is_set() and not manager.synced.wait(0.1):
                pass
            ready.set()
        stop_event.wait()
    finally:
        manager.stop()
        log.info("controllers_stopped")


def main(argv: list[str] | None = None) -> int:
    """``python -m storage.controllers.manager STORE [--binder-only]``: run until SIGTERM/SIGINT."""
    import argparse
    import signal

    from storage.store import open_store

    parser = argparse.ArgumentParser(prog="stowage-controllers")
    parser.add_argument("store", help="store path or URL")
    parser.add_argument("--binder-only", action="store_true", help="run only the claim and volume binders")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    store = open_store(args.store)
    try:
        chosen = None
        if args.binder_only:
            from storage.controllers.binder import BINDER_RECONCILERS

            chosen = list(BINDER_RECONCILERS)
        run_controllers(store, stop, reconcilers=chosen, workers=args.workers)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
