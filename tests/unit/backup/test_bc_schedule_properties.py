"""Properties of the BackupSchedule controller's pure ``calculate_changes`` (SEMANTICS BC15-BC22)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.api.backup_schedule import SCHEDULE_LABEL, SCHEDULED_AT_ANNOTATION
from storage.api.cron import latest_run_at_or_before
from storage.api.timestamps import format_time, parse_time
from storage.controllers.backup_schedule import Changes, calculate_changes, created_at, is_ready, taken_at

NS = "apps"
BASE = datetime(2026, 1, 1, tzinfo=timezone.utc)
CRONS = ["*/5 * * * *", "0 * * * *", "30 2 * * *", "0 0 * * 0", "15,45 */2 * * 1-5", "@daily"]
CLAIMS = ["db", "logs", "web"]


def _claim(name: str, bound: bool, tier: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "labels": {"tier": tier}},
            "status": {"phase": "Bound" if bound else "Pending"}}


def _snapshot(name: str, schedule: str, claim: str, at: datetime, ready: bool, namespace: str = NS) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "labels": {SCHEDULE_LABEL: schedule},
                         "annotations": {SCHEDULED_AT_ANNOTATION: format_time(at)},
                         "creationTimestamp": format_time(at)},
            "spec": {"source": {"persistentVolumeClaimName": claim}, "volumeSnapshotClassName": "backups"},
            "status": {"readyToUse": ready}}


@st.composite
def worlds(draw: st.DrawFn) -> tuple[dict[str, Any], datetime, list[dict[str, Any]], list[dict[str, Any]]]:
    now = BASE + timedelta(minutes=draw(st.integers(0, 60 * 24 * 60)), seconds=draw(st.integers(0, 59)))
    created = now - timedelta(minutes=draw(st.integers(0, 60 * 24 * 30)))
    spec: dict[str, Any] = {"schedule": draw(st.sampled_from(CRONS)), "volumeSnapshotClassName": "backups"}
    if draw(st.booleans()):
        spec["claimName"] = draw(st.sampled_from(CLAIMS + ["missing"]))
    else:
        spec["claimSelector"] = {"matchLabels": {"tier": draw(st.sampled_from(["data", "other"]))}}
    retention: dict[str, Any] = {}
    if draw(st.booleans()):
        retention["keepLast"] = draw(st.integers(1, 5))
    if draw(st.booleans()):
        retention["keepWithin"] = draw(st.sampled_from(["30m", "6h", "2d"]))
    if draw(st.booleans()):
        retention["pendingDeadline"] = draw(st.sampled_from(["1h", "12h"]))
    spec["retention"] = retention
    spec["suspend"] = draw(st.booleans()) if draw(st.integers(0, 3)) == 0 else False
    if draw(st.integers(0, 3)) == 0:
        spec["startingDeadlineSeconds"] = draw(st.integers(0, 7200))
    status: dict[str, Any] = {}
    if draw(st.booleans()):
        status["lastScheduleTime"] = format_time(created + (now - created) * draw(st.floats(0, 1)))
    schedule = {"metadata": {"name": "nightly", "namespace": NS, "creationTimestamp": format_time(created)},
                "spec": spec, "status": status}
    claims = [_claim(c, draw(st.booleans()) or c == "db", draw(st.sampled_from(["data", "other"]))) for c in CLAIMS]
    snapshots = []
    for i in range(draw(st.integers(0, 14))):
        claim = draw(st.sampled_from(CLAIMS))
        at = now - timedelta(minutes=draw(st.integers(0, 60 * 24 * 5)))
        owner = draw(st.sampled_from(["nightly", "nightly", "nightly", "other"]))
        namespace = NS if draw(st.integers(0, 5)) else "elsewhere"
        snapshots.append(_snapshot(f"snap-{i}", owner, claim, at, draw(st.booleans()), namespace))
    return schedule, now, snapshots, claims


def _apply(schedule: dict[str, Any], snapshots: list[dict[str, Any]], changes: Changes, now: datetime
           ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The world after the reconciler carried ``changes`` out (deletes take effect at once; the store stamps
    creationTimestamp on what it creates)."""
    gone = set(changes.deletes)
    for snap in changes.creates:
        snap["metadata"]["creationTimestamp"] = format_time(now)
    kept = [s for s in snapshots if not (s["metadata"]["namespace"] == NS and s["metadata"]["name"] in gone)]
    after = dict(schedule)
    if changes.status is not None:
        after = {**schedule, "status": changes.status}
    return after, kept + changes.creates


def _mine(snapshots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in snapshots if s["metadata"]["namespace"] == NS
            and s["metadata"]["labels"].get(SCHEDULE_LABEL) == "nightly"]


_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(worlds())
def test_a_second_pass_changes_nothing(world: Any) -> None:
    """BC15/BC18: after the changes are carried out, the same decision at the same moment does nothing."""
    schedule, now, snapshots, claims = world
    first = calculate_changes(schedule, now, snapshots, claims)
    schedule2, snapshots2 = _apply(schedule, snapshots, first, now)
    second = calculate_changes(schedule2, now, snapshots2, claims)
    assert second.creates == []
    assert second.deletes == []
    assert second.status is None


@_SETTINGS
@given(worlds())
def test_creates_one_catch_up_run_per_bound_selected_claim(world: Any) -> None:
    """BC15-BC17: at most one snapshot per claim, all for the newest scheduled time <= now, deterministic names,
    labelled with the schedule; none while suspended or past the starting deadline."""
    schedule, now, snapshots, claims = world
    spec = schedule["spec"]
    changes = calculate_changes(schedule, now, snapshots, claims)
    due = latest_run_at_or_before(spec["schedule"].replace("@daily", "0 0 * * *"), now)
    claims_made = [c["spec"]["source"]["persistentVolumeClaimName"] for c in changes.creates]
    assert len(claims_made) == len(set(claims_made))
    bound = {c["metadata"]["name"] for c in claims if c["status"]["phase"] == "Bound"}
    assert set(claims_made) <= bound
    if spec.get("claimName"):
        assert set(claims_made) <= {spec["claimName"]}
    else:
        wanted = spec["claimSelector"]["matchLabels"]["tier"]
        assert all(c["metadata"]["labels"]["tier"] == wanted for c in claims if c["metadata"]["name"] in claims_made)
    for snap in changes.creates:
        meta = snap["metadata"]
        assert parse_time(meta["annotations"][SCHEDULED_AT_ANNOTATION]) == due
        claim = snap["spec"]["source"]["persistentVolumeClaimName"]
        assert meta["name"] == f"nightly-{claim}-{due.strftime('%Y%m%d%H%M')}"
        assert meta["labels"][SCHEDULE_LABEL] == "nightly" and meta["namespace"] == NS
        assert snap["spec"]["volumeSnapshotClassName"] == "backups"
    if changes.creates:
        assert not spec.get("suspend")
        earliest = parse_time(schedule["status"].get("lastScheduleTime")) or parse_time(
            schedule["metadata"]["creationTimestamp"])
        assert due > earliest
        if spec.get("startingDeadlineSeconds") is not None:
            assert (now - due).total_seconds() <= spec["startingDeadlineSeconds"]
        assert changes.status is not None and parse_time(changes.status["lastScheduleTime"]) == due


@_SETTINGS
@given(worlds())
def test_retention_deletes_only_the_oldest_ready_beyond_the_limits(world: Any) -> None:
    """BC19-BC21: only this schedule's snapshots in its namespace; a not-ready one only past pendingDeadline;
    per claim the newest ready survives, keepLast newest ready survive, and every deleted ready one is older
    than every kept ready one outside keepWithin."""
    schedule, now, snapshots, claims = world
    retention = schedule["spec"]["retention"]
    changes = calculate_changes(schedule, now, snapshots, claims)
    by_name = {s["metadata"]["name"]: s for s in _mine(snapshots)}
    assert set(changes.deletes) <= set(by_name), "deleted a snapshot of another schedule or namespace"
    assert len(changes.deletes) == len(set(changes.deletes))
    pending_limit = {"1h": timedelta(hours=1), "12h": timedelta(hours=12)}.get(
        retention.get("pendingDeadline", ""), timedelta(hours=24))
    window = {"30m": timedelta(minutes=30), "6h": timedelta(hours=6), "2d": timedelta(days=2)}.get(
        retention.get("keepWithin", ""))
    for name in changes.deletes:
        snap = by_name[name]
        if not is_ready(snap):
            assert now - created_at(snap) >= pending_limit
        elif window is not None:
            assert now - taken_at(snap) > window
    for claim in CLAIMS:
        ready = sorted((s for s in by_name.values() if is_ready(s)
                        and s["spec"]["source"]["persistentVolumeClaimName"] == claim),
                       key=lambda s: (taken_at(s), s["metadata"]["name"]), reverse=True)
        if not ready:
            continue
        deleted = [s for s in ready if s["metadata"]["name"] in changes.deletes]
        kept = [s for s in ready if s["metadata"]["name"] not in changes.deletes]
        assert ready[0] in kept, "the newest ready backup of a claim was deleted"
        if retention.get("keepLast"):
            assert len(kept) >= min(retention["keepLast"], len(ready))
        elif window is None:
            assert not deleted, "no retention limit, yet a ready backup was deleted"
        if deleted:
            assert max(taken_at(s) for s in deleted) <= min(taken_at(s) for s in kept)


@_SETTINGS
@given(worlds())
def test_active_lists_the_not_ready_ones_and_requeue_is_before_the_next_run(world: Any) -> None:
    """BC22: status.active = this schedule's snapshots not ready yet (and the ones just created); the controller
    looks again no later than the next scheduled time."""
    schedule, now, snapshots, claims = world
    changes = calculate_changes(schedule, now, snapshots, claims)
    status = changes.status if changes.status is not None else schedule["status"]
    expected = {s["metadata"]["name"] for s in _mine(snapshots) if not is_ready(s)} - set(changes.deletes)
    expected |= {s["metadata"]["name"] for s in changes.creates}
    assert {r["name"] for r in status.get("active") or []} == expected
    from storage.api.cron import next_run_after

    nxt = next_run_after(schedule["spec"]["schedule"].replace("@daily", "0 0 * * *"), now)
    assert changes.requeue_after is not None
    assert 0 < changes.requeue_after <= (nxt - now).total_seconds() + 0.5
