"""The Lease-based leader election of the controller manager, on a real store with a test clock (SEMANTICS HA)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.controllers.leaderelection import (
    FencedStore,
    LeaderElectionConfig,
    LeaderElector,
    NotLeader,
)
from storage.store.sql import SqlStore

CONFIG = LeaderElectionConfig(lease_duration=3.0, renew_deadline=2.0, retry_period=0.5)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqlStore]:
    store = SqlStore(f"sqlite:///{tmp_path / 'stowage.db'}")
    try:
        yield store
    finally:
        store.close()


def lease(store: SqlStore) -> dict:
    return store.get("leases", "kube-system", "stowage-controller-manager")["spec"]


def test_ha_one_holder_until_the_lease_expires_on_the_followers_clock(sqlite_store: SqlStore) -> None:
    """HA1, HA2: the first candidate creates the Lease; another takes it only once it went unrenewed for
    leaseDurationSeconds as the follower observed it, and the transition is counted."""
    clock = Clock()
    a = LeaderElector(sqlite_store, CONFIG, "a", clock=clock)
    b = LeaderElector(sqlite_store, CONFIG, "b", clock=clock)
    assert a.try_acquire_or_renew() and a.leading()
    assert not b.try_acquire_or_renew() and not b.leading()
    first = lease(sqlite_store)
    assert (first["holderIdentity"], first["leaseDurationSeconds"], first["leaseTransitions"]) == ("a", 3, 0)
    for _ in range(6):  # a renews every retry period: b never takes over
        clock.now += 0.5
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()
    assert lease(sqlite_store)["renewTime"] > first["renewTime"]
    # a dies: b saw the last renewal at its own "now"; not yet expired 2.9 s later, expired after 3 s.
    clock.now += 2.9
    assert not b.try_acquire_or_renew()
    assert not a.leading()  # a's renew deadline (2 s) passed long before b may take over: the fence is shut
    clock.now += 0.2
    assert b.try_acquire_or_renew() and b.leading()
    taken = lease(sqlite_store)
    assert (taken["holderIdentity"], taken["leaseTransitions"]) == ("b", 1)
    assert taken["acquireTime"] > first["acquireTime"]
    assert b.acquired_version == int(sqlite_store.get("leases", "kube-system",
                                                      "stowage-controller-manager")["metadata"]["resourceVersion"])
    # a comes back: b's Lease is live, a stays a follower.
    assert not a.try_acquire_or_renew()


def test_ha_release_hands_over_without_waiting(sqlite_store: SqlStore) -> None:
    """HA6: a leader that stops releases the Lease (no holder), which a follower takes on its next try."""
    clock = Clock()
    a = LeaderElector(sqlite_store, CONFIG, "a", clock=clock)
    b = LeaderElector(sqlite_store, CONFIG, "b", clock=clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    a.release()
    assert lease(sqlite_store)["holderIdentity"] == ""
    assert not a.leading()
    assert b.try_acquire_or_renew()


def test_ha_fenced_store_refuses_writes_after_leadership_is_lost(sqlite_store: SqlStore) -> None:
    """HA4: once the renew deadline passes, controller writes fail (NotLeader, a retryable error); reads work."""
    clock = Clock()
    a = LeaderElector(sqlite_store, CONFIG, "a", clock=clock)
    fenced = FencedStore(sqlite_store, a.leading)
    with pytest.raises(NotLeader):
        fenced.create("configmaps", {"metadata": {"name": "early", "namespace": "default"}})
    assert a.try_acquire_or_renew()
    fenced.create("configmaps", {"metadata": {"name": "ok", "namespace": "default"}})
    clock.now += CONFIG.renew_deadline
    with pytest.raises(NotLeader):
        fenced.create("configmaps", {"metadata": {"name": "late", "namespace": "default"}})
    assert [o["metadata"]["name"] for o in fenced.list("configmaps", "default")[0]] == ["ok"]


@pytest.mark.parametrize("config, flag", [
    (LeaderElectionConfig(3, 3, 1), "--leader-elect-lease-duration"),
    (LeaderElectionConfig(15, 2, 2), "--leader-elect-renew-deadline"),
    (LeaderElectionConfig(15, 10, 0), "--leader-elect-retry-period"),
])
def test_ha_timings_that_allow_two_leaders_are_refused(config: LeaderElectionConfig, flag: str) -> None:
    """HA2: lease duration > renew deadline > retry period, or a follower could take a Lease still in use."""
    with pytest.raises(ValueError, match=flag):
        config.check()
