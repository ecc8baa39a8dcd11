"""The BackupSchedule controller against a real API server, with a fake clock (SEMANTICS BC12-BC22).

Objects go in through the API (validation, defaulting), the reconciler reads them through the controller
manager's cache and writes through the store as every controller does; the clock is a variable the test
moves, so hours of schedule pass without a sleep. The snapshot controller's part (readyToUse) is played by
the test through the status subresource.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from storage.api.backup_schedule import SCHEDULE_LABEL
from storage.api.timestamps import format_time, parse_time
from storage.controllers.backup_schedule import BackupScheduleReconciler
from storage.controllers.base import ControllerContext
from storage.controllers.events import StoreEventRecorder
from storage.controllers.manager import InformerCache
from storage.errors import Invalid

NS = "default"
RESOURCES = ("backupschedules", "volumesnapshots", "persistentvolumeclaims")


class Harness:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.client = server.client()
        self.now = datetime.now(timezone.utc)
        self.cache = InformerCache()
        ctx = ControllerContext(store=server.store, cache=self.cache, events=StoreEventRecorder(server.store))
        self.reconciler = BackupScheduleReconciler(ctx, clock=lambda: self.now)

    def reconcile(self, name: str = "hourly") -> float | None:
        for resource in RESOURCES:  # the informer's listing, taken now
            self.cache.replace(resource, self.server.store.list(resource)[0])
        return self.reconciler.reconcile(f"{NS}/{name}").requeue_after

    def snapshots(self, name: str = "hourly") -> list[dict[str, Any]]:
        items = self.client.list("volumesnapshots", NS, label_selector=f"{SCHEDULE_LABEL}={name}")[0]
        return sorted(items, key=lambda s: s["metadata"]["name"])

    def mark_ready(self) -> None:
        for snap in self.snapshots():
            if not (snap.get("status") or {}).get("readyToUse"):
                snap["status"] = {"readyToUse": True, "restoreSize": "1Gi", "creationTime": format_time(self.now)}
                self.client.update_status(snap)

    def schedule(self, name: str = "hourly") -> dict[str, Any]:
        return self.client.get("backupschedules", name, NS)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    from serverutil import running_server

    with running_server(tmp_path) as server:
        h = Harness(server)
        for name, tier, bound in (("db", "data", True), ("cache", "scratch", True), ("logs", "data", False)):
            claim = h.client.create({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": NS, "labels": {"tier": tier}},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                         "storageClassName": "manual"}})
            if bound:
                claim["status"] = {"phase": "Bound"}
                h.client.update_status(claim)
        yield h


def _schedule(name: str = "hourly", **spec: Any) -> dict[str, Any]:
    body = {"schedule": "0 * * * *", "claimSelector": {"matchLabels": {"tier": "data"}},
            "volumeSnapshotClassName": "backups", "retention": {"keepLast": 2}, **spec}
    return {"apiVersion": "backup.stowage.io/v1alpha1", "kind": "BackupSchedule",
            "metadata": {"name": name, "namespace": NS}, "spec": body}


def _top_of_next_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def test_runs_once_per_slot_catches_up_once_and_prunes_the_oldest(harness: Harness) -> None:
    """BC15-BC19, BC22: one snapshot per selected Bound claim and slot, deterministic names, a second pass adds
    nothing, five missed hours give one catch-up run, keepLast 2 deletes the oldest ready one."""
    harness.client.create(_schedule())
    created = parse_time(harness.schedule()["metadata"]["creationTimestamp"])
    assert created is not None

    harness.now = created + timedelta(seconds=5)
    assert harness.reconcile() is not None
    assert harness.snapshots() == [], "no slot has passed since the schedule was created"

    slot1 = _top_of_next_hour(created)
    harness.now = slot1 + timedelta(seconds=20)
    requeue = harness.reconcile()
    snaps = harness.snapshots()
    assert [s["metadata"]["name"] for s in snaps] == [f"hourly-db-{slot1:%Y%m%d%H%M}"]  # logs is not Bound
    assert snaps[0]["spec"] == {"volumeSnapshotClassName": "backups", "source": {"persistentVolumeClaimName": "db"}}
    assert requeue is not None and 3500 < requeue <= 3600.5  # the next slot, no polling
    status = harness.schedule()["status"]
    assert status["lastScheduleTime"] == format_time(slot1)
    assert [r["name"] for r in status["active"]] == [snaps[0]["metadata"]["name"]]

    harness.reconcile()
    assert len(harness.snapshots()) == 1, "a second pass in the same slot made another snapshot"

    harness.mark_ready()
    harness.now = slot1 + timedelta(hours=5, minutes=10)  # the controller was down for five slots
    harness.reconcile()
    slot6 = slot1 + timedelta(hours=5)
    names = [s["metadata"]["name"] for s in harness.snapshots()]
    assert names == [f"hourly-db-{slot1:%Y%m%d%H%M}", f"hourly-db-{slot6:%Y%m%d%H%M}"]
    status = harness.schedule()["status"]
    assert status["lastScheduleTime"] == format_time(slot6)
    assert status["lastSuccessfulTime"] == format_time(slot1)

    harness.mark_ready()
    harness.now = slot6 + timedelta(hours=1, seconds=1)
    harness.reconcile()  # makes the third; the oldest goes once the new one is ready, not before
    assert len(harness.snapshots()) == 3
    harness.mark_ready()
    harness.reconcile()
    slot7 = slot6 + timedelta(hours=1)
    assert [s["metadata"]["name"] for s in harness.snapshots()] == [
        f"hourly-db-{slot6:%Y%m%d%H%M}", f"hourly-db-{slot7:%Y%m%d%H%M}"]
    status = harness.schedule()["status"]
    assert "active" not in status and status["lastSuccessfulTime"] == format_time(slot7)
    reasons = {e["reason"] for e in harness.client.list("events", NS)[0]
               if e["involvedObject"].get("name") == "hourly"}
    assert {"SuccessfulCreate", "ClaimNotBound"} <= reasons


def test_suspend_and_starting_deadline(harness: Harness) -> None:
    """BC17/BC18: a suspended schedule creates nothing; after resuming, a slot older than
    startingDeadlineSeconds is skipped with a MissSchedule event, a newer one runs."""
    harness.client.create(_schedule("paused", claimName="db", claimSelector=None, suspend=True,
                                    startingDeadlineSeconds=600))
    created = parse_time(harness.schedule("paused")["metadata"]["creationTimestamp"])
    assert created is not None
    slot = _top_of_next_hour(created)
    harness.now = slot + timedelta(minutes=30)
    harness.reconcile("paused")
    assert harness.snapshots("paused") == []
    obj = harness.schedule("paused")
    obj["spec"]["suspend"] = False
    harness.client.update(obj)
    harness.reconcile("paused")
    assert harness.snapshots("paused") == [], "a slot 30 minutes old is past a 10 minute starting deadline"
    assert any(e["reason"] == "MissSchedule" for e in harness.client.list("events", NS)[0])
    harness.now = slot + timedelta(hours=1, minutes=5)
    harness.reconcile("paused")
    assert [s["metadata"]["name"] for s in harness.snapshots("paused")] == [
        f"paused-db-{slot + timedelta(hours=1):%Y%m%d%H%M}"]


@pytest.mark.parametrize(("field", "value", "path"), [
    ("schedule", "61 * * * *", "spec.schedule"),
    ("schedule", "* * * *", "spec.schedule"),
    ("schedule", "0 0 * * * *", "spec.schedule"),
    ("retention", {"keepLast": 0}, "spec.retention.keepLast"),
    ("retention", {"keepWithin": "a week"}, "spec.retention.keepWithin"),
])
def test_bad_schedules_are_422_naming_the_field(harness: Harness, field: str, value: Any, path: str) -> None:
    """BC13: a bad cron expression or retention is refused with 422 naming the field."""
    with pytest.raises(Invalid) as caught:
        harness.client.create(_schedule("bad", **{field: value}))
    assert caught.value.code == 422
    assert path in str(caught.value)


def test_claim_name_and_selector_are_exclusive(harness: Harness) -> None:
    """BC13: exactly one of claimName and claimSelector."""
    with pytest.raises(Invalid) as caught:
        harness.client.create(_schedule("both", claimName="db"))
    assert "spec.claimSelector" in str(caught.value)
    body = _schedule("neither")
    del body["spec"]["claimSelector"]
    with pytest.raises(Invalid) as caught:
        harness.client.create(body)
    assert "spec.claimName" in str(caught.value)


def test_the_controller_manager_runs_it() -> None:
    """BC12: `stowage up`'s controller manager includes the BackupSchedule controller."""
    from storage.controllers.manager import DEFAULT_RECONCILERS

    assert BackupScheduleReconciler in DEFAULT_RECONCILERS


def test_test_clock_rate_scales_the_clock_and_the_requeue(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """CI1: STOWAGE_TEST_CLOCK_RATE speeds the controller's clock up and divides its (clock-time) requeue delay
    into real seconds; decisions are the same; a bad value is refused."""
    import time

    from storage.controllers.backup_schedule import CLOCK_RATE_ENV, clock_rate, scaled_clock

    harness.client.create(_schedule())
    harness.now = datetime(2026, 1, 1, 10, 20, tzinfo=timezone.utc)
    real_rate = harness.reconcile()
    assert real_rate == pytest.approx(40 * 60 + 0.5)  # the next run is 11:00
    harness.reconciler = BackupScheduleReconciler(harness.reconciler.ctx, clock=lambda: harness.now, rate=6)
    assert harness.reconcile() == pytest.approx(real_rate / 6)

    monkeypatch.delenv(CLOCK_RATE_ENV, raising=False)
    assert clock_rate() == 1.0
    monkeypatch.setenv(CLOCK_RATE_ENV, "6")
    assert clock_rate() == 6.0
    assert BackupScheduleReconciler(harness.reconciler.ctx).rate == 6.0
    for bad in ("fast", "0.5", "-2", "nan", "inf"):
        monkeypatch.setenv(CLOCK_RATE_ENV, bad)
        with pytest.raises(ValueError, match=CLOCK_RATE_ENV):
            clock_rate()

    clock = scaled_clock(100.0)
    before_real, before = datetime.now(timezone.utc), clock()
    assert abs((before - before_real).total_seconds()) < 1.0  # starts at the real time
    time.sleep(0.05)
    assert (clock() - before).total_seconds() >= 100 * 0.05 * 0.99
