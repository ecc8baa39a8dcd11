"""The BackupSchedule controller: VolumeSnapshots of claims on a cron schedule, old ones pruned by retention.

``calculate_changes`` (pure) decides, from the schedule, the clock, the namespace's VolumeSnapshots and
claims, which snapshots to create (deterministic names, so a second pass or a second controller creates
nothing more), which to delete (the oldest ready ones beyond ``keepLast``/``keepWithin``; a snapshot not yet
ready only once it is past ``pendingDeadline``), the status, and when to look again (the next run, or the
moment a snapshot leaves the retention window). Missed runs after downtime collapse into one catch-up run,
as CronJob's controller does, unless ``startingDeadlineSeconds`` says it is too late. The reconciler is
thin: create, delete, write status with the read resourceVersion. SEMANTICS BC12-BC24.
"""
from __future__ import annotations

import copy
import hashlib
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Literal

import structlog

from storage.api.backup_schedule import (
    CLAIM_LABEL,
    DEFAULT_PENDING_DEADLINE,
    SCHEDULE_LABEL,
    SCHEDULED_AT_ANNOTATION,
    parse_duration,
    snapshot_name,
)
from storage.api.cron import cron_expression, latest_run_at_or_before, next_run_after, zone
from storage.api.selectors import selector_matches
from storage.api.timestamps import format_time, parse_time
from storage.controllers.base import Reconciler, Result, object_key, split_key
from storage.controllers.owners import publish
from storage.errors import AlreadyExists, NotFound

log = structlog.get_logger(__name__)

Obj = dict[str, Any]
Event = tuple[Obj, Literal["Normal", "Warning"], str, str]
SNAPSHOT_API_VERSION = "snapshot.storage.k8s.io/v1"
# A test hook (CI1): a number > 1 makes this controller's clock run that many times faster than real time
# from the moment the controller starts, so an end-to-end test sees `* * * * *` fire every 60/rate seconds
# through the real cron code, the real controllers and the real snapshotter. Unset (the default) = real time.
CLOCK_RATE_ENV = "STOWAGE_TEST_CLOCK_RATE"


@dataclass
class Changes:
    creates: list[Obj] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)  # VolumeSnapshot names in the schedule's namespace
    status: Obj | None = None  # the new status; None when the stored one is right
    requeue_after: float | None = None
    events: list[Event] = field(default_factory=list)


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def label_value(text: str) -> str:
    """A label value (<= 63 characters) standing for ``text``: itself, or a cut made unique by a hash."""
    if len(text) <= 63:
        return text
    return f"{text[:52]}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def taken_at(snapshot: Obj) -> datetime:
    """When a snapshot was scheduled (our annotation), else when it was cut or created."""
    annotations = _meta(snapshot).get("annotations") or {}
    for value in (annotations.get(SCHEDULED_AT_ANNOTATION), (snapshot.get("status") or {}).get("creationTime"),
                  _meta(snapshot).get("creationTimestamp")):
        when = parse_time(value)
        if when is not None:
            return when
    return datetime.fromtimestamp(0, timezone.utc)


def created_at(snapshot: Obj) -> datetime:
    """When the snapshot object was made: a late catch-up run's snapshot is new though its scheduled time is old."""
    return parse_time(_meta(snapshot).get("creationTimestamp")) or taken_at(snapshot)


def is_ready(snapshot: Obj) -> bool:
    return (snapshot.get("status") or {}).get("readyToUse") is True


def _claim_of(snapshot: Obj) -> str:
    return str(((snapshot.get("spec") or {}).get("source") or {}).get("persistentVolumeClaimName") or "")


def selected_claims(schedule: Obj, claims: list[Obj]) -> list[Obj]:
    """The claims a schedule backs up (BC16): ``claimName``, or every claim ``claimSelector`` matches."""
    spec = schedule.get("spec") or {}
    namespace = _meta(schedule).get("namespace") or ""
    here = [c for c in claims if (_meta(c).get("namespace") or "") == namespace]
    if spec.get("claimName"):
        return [c for c in here if _meta(c).get("name") == spec["claimName"]]
    selector = spec.get("claimSelector")
    if selector is None:
        return []
    return [c for c in here if selector_matches(selector, _meta(c).get("labels") or {})]


def _snapshot_for(schedule: Obj, claim: str, at: datetime) -> Obj:
    meta, spec = _meta(schedule), schedule.get("spec") or {}
    return {
        "apiVersion": SNAPSHOT_API_VERSION,
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": snapshot_name(str(meta["name"]), claim, at),
            "namespace": meta.get("namespace") or "",
            "labels": {SCHEDULE_LABEL: str(meta["name"]), CLAIM_LABEL: label_value(claim)},
            "annotations": {SCHEDULED_AT_ANNOTATION: format_time(at)},
        },
        "spec": {"volumeSnapshotClassName": spec.get("volumeSnapshotClassName"),
                 "source": {"persistentVolumeClaimName": claim}},
    }


def _ref(snapshot: Obj) -> Obj:
    meta = _meta(snapshot)
    ref = {"apiVersion": SNAPSHOT_API_VERSION, "kind": "VolumeSnapshot", "name": meta.get("name"),
           "namespace": meta.get("namespace")}
    if meta.get("uid"):
        ref["uid"] = meta["uid"]
    return ref


def calculate_changes(schedule: Obj, now: datetime, existing_snapshots: list[Obj], claims: list[Obj]) -> Changes:
    """Everything the controller should do for ``schedule`` at ``now`` (BC15-BC22).

    ``existing_snapshots``: the VolumeSnapshots of the schedule's namespace (others are ignored);
    ``claims``: its PersistentVolumeClaims.
    """
    meta, spec, status = _meta(schedule), schedule.get("spec") or {}, schedule.get("status") or {}
    name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
    changes = Changes()
    try:
        expr = cron_expression(str(spec.get("schedule") or ""))
        tz = zone(spec.get("timeZone"))
        retention = spec.get("retention") or {}
        keep_within = parse_duration(retention["keepWithin"]) if retention.get("keepWithin") else None
        pending_deadline = (parse_duration(retention["pendingDeadline"]) if retention.get("pendingDeadline")
                            else DEFAULT_PENDING_DEADLINE)
    except ValueError as exc:
        # Validation refuses these; an object stored before a rule existed waits for a fix.
        changes.events.append((schedule, "Warning", "InvalidSchedule", f"Cannot use the schedule: {exc}"))
        return changes
    keep_last = retention.get("keepLast")
    here = [s for s in existing_snapshots if (_meta(s).get("namespace") or "") == namespace]
    taken_names = {_meta(s).get("name") for s in here}
    mine = [s for s in here if (_meta(s).get("labels") or {}).get(SCHEDULE_LABEL) == name]
    live = [s for s in mine if not _meta(s).get("deletionTimestamp")]

    # --- creating (BC15-BC18) ---
    last_schedule = parse_time(status.get("lastScheduleTime"))
    new_last_schedule = last_schedule
    earliest = last_schedule or parse_time(meta.get("creationTimestamp")) or now
    due = latest_run_at_or_before(expr, now, tz)
    deleting_schedule = bool(meta.get("deletionTimestamp"))
    if due > earliest and not spec.get("suspend") and not deleting_schedule:
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None and (now - due).total_seconds() > deadline:
            changes.events.append((schedule, "Warning", "MissSchedule",
                                   f"Missed scheduled time to start a backup: {format_time(due)}"))
        else:
            new_last_schedule = due
            chosen = selected_claims(schedule, claims)
            if spec.get("claimName") and not chosen:
                changes.events.append((schedule, "Warning", "ClaimNotFound",
                                       f"persistentvolumeclaim \"{spec['claimName']}\" not found; no backup at "
                                       f"{format_time(due)}"))
            for claim in sorted(chosen, key=lambda c: str(_meta(c).get("name"))):
                claim_name = str(_meta(claim).get("name"))
                if _meta(claim).get("deletionTimestamp"):
                    continue
                if (claim.get("status") or {}).get("phase") != "Bound":
                    changes.events.append((schedule, "Warning", "ClaimNotBound",
                                           f"persistentvolumeclaim \"{claim_name}\" is not Bound; no backup at "
                                           f"{format_time(due)}"))
                    continue
                snap = _snapshot_for(schedule, claim_name, due)
                if _meta(snap)["name"] in taken_names:
                    continue  # this run's snapshot exists: a second pass creates nothing (BC15)
                changes.creates.append(snap)
                changes.events.append((schedule, "Normal", "SuccessfulCreate",
                                       f"Created VolumeSnapshot {_meta(snap)['name']}"))

    # --- retention (BC19-BC21), per claim ---
    recheck: list[datetime] = []
    by_claim: dict[str, list[Obj]] = {}
    for snap in live:
        by_claim.setdefault(_claim_of(snap), []).append(snap)
    for claim_name, snaps in sorted(by_claim.items()):
        ready = sorted((s for s in snaps if is_ready(s)), key=lambda s: (taken_at(s), _meta(s).get("name")),
                       reverse=True)
        keep: set[str] = set()
        if keep_last is None and keep_within is None:
            keep = {str(_meta(s).get("name")) for s in ready}
        if keep_last is not None:
            keep |= {str(_meta(s).get("name")) for s in ready[: int(keep_last)]}
        if keep_within is not None:
            for s in ready:
                if now - taken_at(s) <= keep_within:
                    keep.add(str(_meta(s).get("name")))
                    recheck.append(taken_at(s) + keep_within)
        if ready:
            keep.add(str(_meta(ready[0]).get("name")))  # the newest good backup of a claim is never pruned
        for s in reversed(ready):  # oldest first
            if _meta(s).get("name") not in keep:
                changes.deletes.append(str(_meta(s).get("name")))
        for s in snaps:
            if is_ready(s):
                continue
            expires = created_at(s) + pending_deadline
            if now >= expires:
                changes.deletes.append(str(_meta(s).get("name")))
                changes.events.append((schedule, "Warning", "BackupAbandoned",
                                       f"VolumeSnapshot {_meta(s).get('name')} of {claim_name} was not ready "
                                       f"within {retention.get('pendingDeadline') or '24h'}; deleted"))
            else:
                recheck.append(expires)

    # --- status (BC22) ---
    deleted = set(changes.deletes)
    active = [_ref(s) for s in live if not is_ready(s) and _meta(s).get("name") not in deleted]
    active += [_ref(s) for s in changes.creates]
    active.sort(key=lambda r: str(r["name"]))
    new_status = copy.deepcopy(status)
    if new_last_schedule is not None:
        new_status["lastScheduleTime"] = format_time(new_last_schedule)
    ready_times = [taken_at(s) for s in mine if is_ready(s)]
    old_success = parse_time(status.get("lastSuccessfulTime"))
    if ready_times and (old_success is None or max(ready_times) > old_success):
        new_status["lastSuccessfulTime"] = format_time(max(ready_times))
    if active:
        new_status["active"] = active
    else:
        new_status.pop("active", None)
    if new_status != status:
        changes.status = new_status

    # --- when to look again ---
    if not deleting_schedule:
        recheck.append(next_run_after(expr, now, tz))
    future = [t for t in recheck if t > now]
    if future:
        changes.requeue_after = max(0.0, (min(future) - now).total_seconds()) + 0.5
    return changes


def clock_rate() -> float:
    """``$STOWAGE_TEST_CLOCK_RATE`` (CI1), 1.0 when unset; a value that is not a number >= 1 is refused."""
    text = os.environ.get(CLOCK_RATE_ENV, "").strip()
    if not text:
        return 1.0
    try:
        rate = float(text)
    except ValueError:
        raise ValueError(f"{CLOCK_RATE_ENV}={text!r}: not a number") from None
    if not rate >= 1.0 or rate == float("inf"):
        raise ValueError(f"{CLOCK_RATE_ENV}={text!r}: must be a finite number >= 1")
    return rate


def scaled_clock(rate: float) -> Callable[[], datetime]:
    """A clock equal to the real one now that then runs ``rate`` times as fast (monotonic: never goes back)."""
    start, start_mono = datetime.now(timezone.utc), time.monotonic()
    return lambda: start + timedelta(seconds=(time.monotonic() - start_mono) * rate)


def schedule_clock(clock: Callable[[], datetime] | None, rate: float | None) -> tuple[float, Callable[[], datetime]]:
    """A scheduling controller's (rate, clock): the one given, else the real clock, run faster under CI1's hook."""
    rate = clock_rate() if rate is None else rate
    if clock is not None:
        return rate, clock
    if rate == 1.0:
        return rate, lambda: datetime.now(timezone.utc)
    return rate, scaled_clock(rate)


class BackupScheduleReconciler(Reconciler):
    name = "backupschedule"
    primary = "backupschedules"

    def __init__(self, ctx: Any, clock: Callable[[], datetime] | None = None, rate: float | None = None) -> None:
        super().__init__(ctx)
        self.rate, self.clock = schedule_clock(clock, rate)

    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        return {"volumesnapshots": self._schedule_of_snapshot, "persistentvolumeclaims": self._schedules_in_namespace}

    def _schedule_of_snapshot(self, snapshot: Obj) -> list[str]:
        owner = (_meta(snapshot).get("labels") or {}).get(SCHEDULE_LABEL)
        namespace = _meta(snapshot).get("namespace") or ""
        return [f"{namespace}/{owner}"] if owner else []

    def _schedules_in_namespace(self, claim: Obj) -> list[str]:
        return [object_key(s) for s in self.ctx.cache.list("backupschedules", _meta(claim).get("namespace") or "")]

    def reconcile(self, key: str) -> Result:
        namespace, name = split_key(key)
        cache, store = self.ctx.cache, self.ctx.store
        schedule = cache.get("backupschedules", namespace, name)
        if schedule is None:
            return Result()
        changes = calculate_changes(schedule, self.clock(), cache.list("volumesnapshots", namespace),
                                    cache.list("persistentvolumeclaims", namespace))
        for snap in changes.creates:
            try:
                publish(cache, "volumesnapshots", store.create("volumesnapshots", snap))
            except AlreadyExists:
                pass  # another pass made it: names are deterministic
        for snap_name in changes.deletes:
            try:
                store.delete("volumesnapshots", namespace, snap_name)
            except NotFound:
                pass
            log.info("backup_pruned", schedule=key, snapshot=snap_name)
        if changes.status is not None:
            updated = copy.deepcopy(schedule)
            updated["status"] = changes.status
            publish(cache, "backupschedules", store.update("backupschedules", updated))
        for obj, kind, reason, message in changes.events:
            self.ctx.events.record(obj, kind, reason, message)
        requeue = changes.requeue_after
        # The clock's seconds are 1/rate real seconds: wait real time, not clock time (CI1).
        return Result(requeue_after=None if requeue is None else requeue / self.rate)


# Picked up by storage.controllers.manager.DEFAULT_RECONCILERS.
RECONCILERS = [BackupScheduleReconciler]
