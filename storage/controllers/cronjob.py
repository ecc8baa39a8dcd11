"""CronJob: a Job from a template at each time of a cron schedule (SEMANTICS CJ1–CJ10).

``calculate_changes`` is pure, as Kubernetes' cronjob controller v2 decides: from the CronJob, the jobs it
controls and the time, which job to make for the newest unmet scheduled time (its name holds that time in
minutes, so a second pass or a second controller makes nothing more), which jobs to delete (a Replace
policy's running ones, finished ones beyond the history limits), the next status, the events and when to
look again (the next scheduled time). The reconciler creates, deletes and writes the status with the
resourceVersion it read.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any, Callable, Iterable

import structlog

from storage.api.conditions import is_true
from storage.api.cron import cron_expression, most_recent_run, next_run_after, zone
from storage.api.defaults import apply_defaults
from storage.api.quota_admission import admit_controller_create
from storage.api.timestamps import format_time, parse_time
from storage.controllers.backup_schedule import schedule_clock
from storage.controllers.base import Reconciler, Result, split_key
from storage.controllers.owners import controller_key, is_controlled_by, make_controller_ref, publish
from storage.errors import AlreadyExists, Conflict, Forbidden, NotFound, TooManyRequests

Obj = dict[str, Any]
log = structlog.get_logger(__name__)

SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"
# Kubernetes' limit on missed start times it works out before it says the clock must be wrong.
MANY_MISSED = 100


@dataclass
class CronPlan:
    create: Obj | None = None
    scheduled: datetime | None = None  # the time ``create`` is for
    delete: list[str] = field(default_factory=list)  # job names in the CronJob's namespace
    status: Obj = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    requeue_after: float | None = None


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def job_name(cronjob: Obj, scheduled: datetime) -> str:
    """CJ5: ``<cronjob>-<scheduled time in minutes since the epoch>``."""
    return f"{_meta(cronjob)['name']}-{int(scheduled.timestamp()) // 60}"


def job_for(cronjob: Obj, scheduled: datetime, tz: Any) -> Obj:
    """Kubernetes' getJobFromTemplate2: the template's labels, annotations and spec, owned by the CronJob."""
    template = (cronjob.get("spec") or {}).get("jobTemplate") or {}
    tmeta = template.get("metadata") or {}
    annotations = dict(tmeta.get("annotations") or {})
    annotations[SCHEDULED_TIMESTAMP] = scheduled.astimezone(tz).isoformat(timespec="seconds").replace("+00:00", "Z")
    meta: Obj = {"name": job_name(cronjob, scheduled), "namespace": _meta(cronjob).get("namespace") or "default",
                 "annotations": annotations, "ownerReferences": [make_controller_ref(cronjob, "batch/v1", "CronJob")]}
    if tmeta.get("labels"):
        meta["labels"] = dict(tmeta["labels"])
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
            "spec": copy.deepcopy(template.get("spec") or {})}


def _finished_type(job: Obj) -> str | None:
    return next((kind for kind in ("Complete", "Failed") if is_true(job, kind)), None)


def _ref(job: Obj) -> Obj:
    meta = _meta(job)
    return {"kind": "Job", "namespace": meta.get("namespace"), "name": meta["name"], "uid": meta.get("uid"),
            "apiVersion": "batch/v1", "resourceVersion": meta.get("resourceVersion")}


def _history(jobs: list[Obj], kind: str, limit: Any) -> list[str]:
    """The names of finished jobs of ``kind`` beyond ``limit``, oldest first (Kubernetes orders by start time)."""
    if not isinstance(limit, int):
        return []
    done = [j for j in jobs if _finished_type(j) == kind and not _meta(j).get("deletionTimestamp")]
    done.sort(key=lambda j: ((j.get("status") or {}).get("startTime") is None,
                             (j.get("status") or {}).get("startTime") or "", _meta(j)["name"]))
    return [_meta(j)["name"] for j in done[: max(0, len(done) - limit)]]


def calculate_changes(cronjob: Obj, jobs: list[Obj], now: datetime) -> CronPlan:
    """The plan for one CronJob; ``jobs`` are those it controls (the active ones the cache lags on included)."""
    spec = cronjob.get("spec") or {}
    status: Obj = copy.deepcopy(cronjob.get("status") or {})
    plan = CronPlan(status=status)
    active: list[Obj] = list(status.get("active") or [])
    by_uid = {_meta(j).get("uid"): j for j in jobs}

    # CJ6: the active list follows the jobs; a finished one leaves it, its success is remembered.
    for job in sorted(jobs, key=lambda j: _meta(j)["name"]):
        uid, name = _meta(job).get("uid"), _meta(job)["name"]
        listed = any(ref.get("uid") == uid for ref in active)
        finished = _finished_type(job)
        if finished is None and not listed:
            plan.events.append(("Warning", "UnexpectedJob", f"Saw a job that the controller did not create or forgot: {name}"))
        elif finished is not None:
            if listed:
                active = [ref for ref in active if ref.get("uid") != uid]
                plan.events.append(("Normal", "SawCompletedJob", f"Saw completed job: {name}, condition: {finished}"))
            completed = (job.get("status") or {}).get("completionTime")
            if finished == "Complete" and completed:
                last = parse_time(status.get("lastSuccessfulTime"))
                moment = parse_time(completed)
                if last is None or (moment is not None and moment > last):
                    status["lastSuccessfulTime"] = completed
    for ref in list(active):
        if ref.get("uid") not in by_uid:
            active.remove(ref)
            plan.events.append(("Normal", "MissingJob", f"Active job went missing: {ref.get('name')}"))
    _set_active(status, active)

    # CJ9: history beyond the limits goes, oldest first.
    for kind, key in (("Complete", "successfulJobsHistoryLimit"), ("Failed", "failedJobsHistoryLimit")):
        for name in _history(jobs, kind, spec.get(key)):
            plan.delete.append(name)
            plan.events.append(("Normal", "SuccessfulDelete", f"Deleted job {name}"))

    if _meta(cronjob).get("deletionTimestamp") or spec.get("suspend") is True:
        return plan  # CJ7: nothing new starts; the status still follows the jobs
    try:
        tz = zone(spec.get("timeZone"))
    except ValueError as exc:
        plan.events.append(("Warning", "UnknownTimeZone", f"invalid timeZone: {spec.get('timeZone')!r}: {exc}"))
        return plan
    try:
        expr = cron_expression(str(spec.get("schedule") or ""), every=True)
        # CJ4: the newest scheduled time after the last one (or the creation), within the starting deadline;
        # the next look is one schedule after the newest time regardless of the deadline, as Kubernetes'.
        last = parse_time(status.get("lastScheduleTime")) or parse_time(_meta(cronjob).get("creationTimestamp")) or now
        newest, missed_since_last = most_recent_run(expr, last, now, tz)
        deadline = spec.get("startingDeadlineSeconds")
        earliest = max(last, now - timedelta(seconds=deadline)) if isinstance(deadline, int) else last
        scheduled, missed = most_recent_run(expr, earliest, now, tz) if earliest != last else (newest, missed_since_last)
    except ValueError as exc:
        plan.events.append(("Warning", "UnparseableSchedule", f"unparseable schedule: {spec.get('schedule')!r} : {exc}"))
        return plan
    base = newest or (last if missed_since_last == 0 else now)
    plan.requeue_after = max(0.0, (next_run_after(expr, base, tz) - now).total_seconds())
    if scheduled is None:
        return plan
    if missed > MANY_MISSED:
        plan.events.append(("Warning", "TooManyMissedTimes", "too many missed start times. Set or decrease "
                            ".spec.startingDeadlineSeconds or check clock skew"))
    if isinstance(deadline, int) and scheduled + timedelta(seconds=deadline) < now:
        plan.events.append(("Warning", "MissSchedule",
                            f"Missed scheduled time to start a job: {format_datetime(scheduled.astimezone(timezone.utc))}"))
        return plan
    name = job_name(cronjob, scheduled)
    if any(ref.get("name") == name for ref in active) or parse_time(status.get("lastScheduleTime")) == scheduled:
        return plan
    policy = spec.get("concurrencyPolicy") or "Allow"
    if policy == "Forbid" and active:
        plan.events.append(("Normal", "JobAlreadyActive",
                            "Not starting job because prior execution is running and concurrency policy is Forbid"))
        return plan
    if policy == "Replace":
        for ref in active:
            plan.delete.append(str(ref.get("name")))
            plan.events.append(("Normal", "SuccessfulDelete", f"Deleted job {ref.get('name')}"))
        _set_active(status, [])
    plan.create = job_for(cronjob, scheduled, tz)
    plan.scheduled = scheduled
    return plan


def _set_active(status: Obj, active: list[Obj]) -> None:
    if active:
        status["active"] = active
    else:
        status.pop("active", None)


class CronJobReconciler(Reconciler):
    name = "cronjob"
    primary = "cronjobs"

    def __init__(self, ctx: Any, clock: Callable[[], datetime] | None = None, rate: float | None = None) -> None:
        super().__init__(ctx)
        # CI1's test hook, shared with BackupSchedules: a faster clock for end-to-end tests only.
        self.rate, self.clock = schedule_clock(clock, rate)

    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        return {"jobs": lambda job: controller_key(job, "CronJob")}

    def reconcile(self, key: str) -> Result:
        namespace, name = split_key(key)
        cronjob = self.ctx.cache.get("cronjobs", namespace, name)
        if cronjob is None:
            return Result()
        jobs = [j for j in self.ctx.cache.list("jobs", namespace) if is_controlled_by(j, cronjob)]
        seen = {_meta(j).get("uid") for j in jobs}
        for ref in (cronjob.get("status") or {}).get("active") or []:
            if ref.get("uid") not in seen:  # the cache may lag the store: ask it before calling a job missing
                try:
                    job = self.ctx.store.get("jobs", namespace, str(ref.get("name")))
                except NotFound:
                    continue
                if is_controlled_by(job, cronjob):
                    jobs.append(job)
        plan = calculate_changes(cronjob, jobs, self.clock())
        for job_name_ in plan.delete:
            try:
                # Background deletion: the garbage collector removes the job's pods.
                self.ctx.store.delete("jobs", namespace, job_name_)
            except NotFound:
                pass
        if plan.create is not None and plan.scheduled is not None:
            made = self._create(cronjob, plan.create)
            if made is None:
                return Result(requeue_after=self._real(plan.requeue_after))
            active = list(plan.status.get("active") or [])
            if not any(ref.get("uid") == _meta(made).get("uid") for ref in active):
                active.append(_ref(made))
            _set_active(plan.status, active)
            plan.status["lastScheduleTime"] = format_time(plan.scheduled)
        if plan.status != (cronjob.get("status") or {}):
            updated = copy.deepcopy(cronjob)
            updated["status"] = plan.status
            try:
                publish(self.ctx.cache, "cronjobs", self.ctx.store.update("cronjobs", updated))
            except (Conflict, NotFound):
                return Result(requeue_after=0.1)  # planned from an old CronJob: plan again from the new one
        for type_, reason, message in plan.events:
            self.ctx.events.record(cronjob, type_, reason, message)  # type: ignore[arg-type]
        return Result(requeue_after=self._real(plan.requeue_after))

    def _real(self, seconds: float | None) -> float | None:
        # The schedule's seconds are 1/rate real seconds under the test clock; a little later than the
        # scheduled second, so the next pass finds that time due.
        return None if seconds is None else seconds / self.rate + 0.05

    def _create(self, cronjob: Obj, job: Obj) -> Obj | None:
        """The job for this time, made now or earlier by this CronJob; None when it cannot be made."""
        meta = _meta(job)
        try:
            admitted = admit_controller_create(self.ctx.store, "jobs", apply_defaults(job))
            created = publish(self.ctx.cache, "jobs", self.ctx.store.create("jobs", admitted))
        except AlreadyExists:
            # CJ5: the name holds the time, so a job of this name is this run's, made by an earlier pass.
            try:
                existing = self.ctx.store.get("jobs", meta["namespace"], meta["name"])
            except NotFound:
                return None
            return existing if is_controlled_by(existing, cronjob) else None
        except (Forbidden, TooManyRequests) as err:
            self.ctx.events.record(cronjob, "Warning", "FailedCreate", f"Error creating job: {err}")
            raise
        self.ctx.events.record(cronjob, "Normal", "SuccessfulCreate", f"Created job {meta['name']}")
        return created


# Picked up by storage.controllers.manager.DEFAULT_RECONCILERS.
RECONCILERS = [CronJobReconciler]
