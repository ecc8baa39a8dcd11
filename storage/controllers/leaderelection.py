"""Leader election of the controller manager through a ``coordination.k8s.io/v1`` Lease (SEMANTICS HA1-HA6).

Every ``stowage serve`` replica on one store serves the API; only the holder of
the Lease ``kube-system/stowage-controller-manager`` runs the controllers. The
algorithm is client-go's ``leaderelection`` package:

* a candidate reads the Lease every ``retry_period``; it takes it when there is
  none, when it holds it already, or when the Lease was not renewed for
  ``lease_duration`` as observed on the candidate's own clock (the holder's
  ``renewTime`` is not trusted across hosts' clocks);
* every write is an update at the read ``resourceVersion``, so two candidates
  cannot both take the same Lease: the loser gets a Conflict and stays a follower;
* the leader renews every ``retry_period``; once no renewal has succeeded for
  ``renew_deadline`` it steps down: its controllers stop and its store refuses
  their writes (the fence, HA4) before anyone else may take the Lease
  (``renew_deadline < lease_duration``);
* a leader that stops cleanly releases the Lease (empty holder, 1 s duration),
  so the next replica need not wait out the lease.

The new leader starts its controllers from a fresh list: they are
level-triggered, so whatever the old leader left half done is found again.
"""
from __future__ import annotations

import copy
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from storage.errors import (
    AlreadyExists,
    Conflict,
    NotFound,
    StowageError,
    TemporaryError,
)

log = structlog.get_logger(__name__)

LEASE_NAMESPACE = "kube-system"
LEASE_NAME = "stowage-controller-manager"
# How late a new leader may notice that its cache finished its first listing, or that its term ended,
# while it waits for the cache to show the Lease it took (a Lease reaching the cache wakes it at once).
CATCH_UP_BACKSTOP = 0.1


@dataclass(frozen=True)
class LeaderElectionConfig:
    """kube-controller-manager's --leader-elect-* flags (defaults: Kubernetes' own, 15 s / 10 s / 2 s)."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    namespace: str = LEASE_NAMESPACE
    name: str = LEASE_NAME

    def check(self) -> None:
        """ValueError naming the flag when the timings cannot keep two leaders apart."""
        if self.retry_period <= 0:
            raise ValueError("--leader-elect-retry-period: must be greater than zero")
        if self.renew_deadline <= self.retry_period:
            raise ValueError("--leader-elect-renew-deadline: must be greater than --leader-elect-retry-period")
        if self.lease_duration <= self.renew_deadline:
            # Otherwise a follower could take the Lease while the old leader still thinks it leads.
            raise ValueError("--leader-elect-lease-duration: must be greater than --leader-elect-renew-deadline")


def default_identity() -> str:
    """hostname_uuid, as kube-controller-manager's: unique per process, readable by an operator."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def micro_time(moment: datetime | None = None) -> str:
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NotLeader(TemporaryError):
    """A controller write after this replica stopped leading (HA4): dropped, the new leader redoes it."""


class LeaderElector:
    """Takes and keeps the Lease; ``leading()`` is the fence every controller write checks."""

    def __init__(self, store: Any, config: LeaderElectionConfig, identity: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        config.check()
        self.store = store
        self.config = config
        self.identity = identity or default_identity()
        self._clock = clock
        # What this replica last saw of the Lease, and when on its own clock (client-go's observedTime).
        self._observed_version: str | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None  # last successful acquire/renew while leading
        self.acquired_version = 0  # the store revision of this replica's taking of the Lease

    # ---- the fence -------------------------------------------------------------------------
    def leading(self) -> bool:
        """True while the last successful renewal is younger than the renew deadline."""
        renewed = self._renewed_at
        return renewed is not None and self._clock() - renewed < self.config.renew_deadline

    # ---- one attempt -----------------------------------------------------------------------
    def try_acquire_or_renew(self) -> bool:
        """One read-modify-write of the Lease; True when this replica holds it afterwards."""
        now = self._clock()
        stamp = micro_time()
        duration = max(1, round(self.config.lease_duration))
        try:
            lease = self.store.get("leases", self.config.namespace, self.config.name)
        except NotFound:
            lease = None
        if lease is None:
            try:
                created = self.store.create("leases", {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.config.name, "namespace": self.config.namespace},
                    "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": duration,
                             "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0},
                })
            except AlreadyExists:
                return False
            self.acquired_version = int((created.get("metadata") or {}).get("resourceVersion") or 0)
            self._won(now)
            return True
        version = (lease.get("metadata") or {}).get("resourceVersion")
        if version != self._observed_version:
            self._observed_version, self._observed_at = version, now
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        held_for = float(spec.get("leaseDurationSeconds") or duration)
        mine = holder == self.identity
        if holder and not mine and now - self._observed_at < held_for:
            return False  # someone else holds a live Lease
        updated = copy.deepcopy(lease)
        new_spec = updated.setdefault("spec", {})
        if not mine:
            new_spec["acquireTime"] = stamp
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        new_spec.update(holderIdentity=self.identity, leaseDurationSeconds=duration, renewTime=stamp)
        try:
            stored = self.store.update("leases", updated)
        except (Conflict, NotFound):
            return False
        self._observed_version, self._observed_at = (stored.get("metadata") or {}).get("resourceVersion"), now
        if not mine:
            self.acquired_version = int((stored.get("metadata") or {}).get("resourceVersion") or 0)
            log.info("leader_elected", lease=f"{self.config.namespace}/{self.config.name}", identity=self.identity,
                     previous=holder or None, transitions=new_spec["leaseTransitions"])
        self._won(now)
        return True

    def _won(self, now: float) -> None:
        self._renewed_at = now

    def release(self) -> None:
        """Give the Lease up at once (client-go's ReleaseOnCancel), if this replica still holds it."""
        self._renewed_at = None
        try:
            lease = self.store.get("leases", self.config.namespace, self.config.name)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"].update(holderIdentity="", leaseDurationSeconds=1, renewTime=micro_time())
            self.store.update("leases", lease)
            log.info("leader_released", identity=self.identity)
        except StowageError as exc:
            log.info("leader_release_failed", error=str(exc))

    # ---- the loop --------------------------------------------------------------------------
    def _attempt(self) -> bool:
        try:
            return self.try_acquire_or_renew()
        except Exception as exc:  # noqa: BLE001 - the store is down: a missed renewal, not a crash
            log.warning("leader_election_error", error=repr(exc))
            return False

    def run(self, stop: threading.Event, on_started_leading: Callable[[threading.Event], None]) -> None:
        """Campaign until ``stop``; each term runs ``on_started_leading(term_stop)`` in a thread and ends by
        setting ``term_stop`` and joining it, before this replica campaigns again."""
        while not stop.is_set():
            if not self._attempt():
                stop.wait(self.config.retry_period)
                continue
            log.info("started_leading", identity=self.identity)
            term_stop = threading.Event()
            term = threading.Thread(target=on_started_leading, args=(term_stop,), name="leader-term", daemon=True)
            term.start()
            while not stop.is_set():
                stop.wait(self.config.retry_period)
                if stop.is_set():
                    break
                if self._attempt():
                    continue
                # Keep retrying until the renew deadline passes; leading() turns false at the same moment.
                if not self.leading():
                    log.warning("stopped_leading", identity=self.identity, reason="renew deadline passed")
                    break
            self._renewed_at = None  # the fence closes before the controllers are even told
            term_stop.set()
            term.join(timeout=60)
            if stop.is_set():
                self.release()
                return


class FencedStore:
    """The store as the leader's controllers see it: writes refused once ``leading()`` is false (HA4).

    Reads and watches pass through. A refused write raises NotLeader, a TemporaryError: the
    controller requeues it, and its stop comes before the retry."""

    _WRITES = frozenset({"create", "update", "delete", "update_status", "patch"})

    def __init__(self, store: Any, leading: Callable[[], bool]) -> None:
        self._store = store
        self._leading = leading
        self._crash = WriteCrash.from_env()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name in self._WRITES and callable(attr):
            def fenced(*args: Any, **kwargs: Any) -> Any:
                if not self._leading():
                    raise NotLeader("this replica no longer leads the controllers", delay=1.0)
                result = attr(*args, **kwargs)
                if self._crash is not None:
                    self._crash.after(name, args[0] if args else "")
                return result
            return fenced
        return attr


class WriteCrash:
    """Fault injection for failover tests: SIGKILL this process right after the Nth write a named
    controller makes through the fenced store, the worst moment for the next leader (HA5).

    ``STOWAGE_FAULT_KILL_AFTER_WRITE=<controller>:<resource>:<verb>:<N>``, e.g.
    ``statefulset:pods:create:2``; the controller is known by its worker threads' names."""

    ENV = "STOWAGE_FAULT_KILL_AFTER_WRITE"

    def __init__(self, controller: str, resource: str, verb: str, count: int) -> None:
        self.controller, self.resource, self.verb, self.count = controller, resource, verb, count
        self._seen = 0
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> WriteCrash | None:
        spec = os.environ.get(cls.ENV, "")
        if not spec:
            return None
        controller, resource, verb, count = spec.rsplit(":", 3)
        return cls(controller, resource, verb, int(count))

    def after(self, verb: str, resource: str) -> None:
        if verb != self.verb or resource != self.resource:
            return
        thread = threading.current_thread().name
        if not thread.startswith(self.controller + "-"):
            return
        with self._lock:
            self._seen += 1
            if self._seen < self.count:
                return
        log.warning("fault_injection_kill", controller=self.controller, resource=resource, verb=verb, write=self._seen)
        os.kill(os.getpid(), signal.SIGKILL)


def run_elected_manager(store: Any, stop: threading.Event, config: LeaderElectionConfig, options: Any = None,
                        identity: str | None = None, workers: int = 2) -> None:
    """The controller manager of a replica: a warm standby while following, its workers only while leading.

    Every replica keeps a controller manager's cache listed and watched (HA9), so a new leader need not
    list the whole store before acting. Before its workers start, the cache must have seen the Lease at
    the revision this replica took it: everything the old leader committed came before that revision,
    and the watch delivers in revision order, so the cache is as fresh as a new list would be. After a
    term, the manager is dropped and a new one lists afresh for the next candidacy."""
    from storage.controllers.manager import DEFAULT_RECONCILERS, ControllerManager

    elector = LeaderElector(store, config, identity or os.environ.get("STOWAGE_LEADER_IDENTITY"))
    log.info("leader_election_started", lease=f"{config.namespace}/{config.name}", identity=elector.identity,
             lease_duration=config.lease_duration, renew_deadline=config.renew_deadline,
             retry_period=config.retry_period)
    fenced = FencedStore(store, elector.leading)

    def warm() -> Any:
        manager = ControllerManager(fenced, DEFAULT_RECONCILERS, workers=workers,
                                    component="stowage-controller-manager", options=options)
        manager.start_informer()
        return manager

    current = [warm()]

    def caught_up(manager: Any) -> bool:
        if not manager.synced.is_set():
            return False
        lease = manager.cache.get("leases", config.namespace, config.name)
        version = int(((lease or {}).get("metadata") or {}).get("resourceVersion") or 0)
        return version >= elector.acquired_version

    def lead(term_stop: threading.Event) -> None:
        manager = current[0]
        try:
            lease_seen = threading.Event()
            manager.cache.add_handler("leases", lambda *_: lease_seen.set())
            while not term_stop.is_set() and not caught_up(manager):
                # Woken when a Lease reaches the cache (ours at the revision we took it, usually within
                # milliseconds); the backstop covers the first listing's end and the term's.
                lease_seen.wait(CATCH_UP_BACKSTOP)
                lease_seen.clear()
            if term_stop.is_set():
                return
            manager.start_workers()
            log.info("controllers_started", controllers=[c.reconciler.name for c in manager.controllers])
            term_stop.wait()
        finally:
            manager.stop()
            log.info("controllers_stopped")
            if not stop.is_set():
                current[0] = warm()

    try:
        elector.run(stop, lead)
    finally:
        current[0].stop()
