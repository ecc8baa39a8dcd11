"""Job: pods of a template run to completion (SEMANTICS J1–J15).

``calculate_changes`` is pure: from a job, its pods and the time it decides
which pods to create or delete, the job's next status, the events to record,
when to look again, and whether a finished job's time to live is over. The
reconciler only reads the cache and carries the plan out; every status write
carries the resourceVersion it was computed from, so two reconcilers at once
cannot both count the same pods.

Counts come from the job's pods that exist: Kubernetes also keeps a finished
pod counted after it is deleted, through its ``batch.kubernetes.io/job-tracking``
finalizer; Stowage does not put that finalizer on pods (see the README's
differences).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

import structlog

from storage.api import batch
from storage.api.conditions import condition, is_true
from storage.api.timestamps import format_time, parse_time
from storage.controllers.base import Reconciler, Result, defaulted_tolerations, split_key
from storage.controllers.owners import controller_key, publish
from storage.controllers.workloads import create_pod, delete_pod, owned_pods, pod_from_template
from storage.errors import Conflict, NotFound

Obj = dict[str, Any]
log = structlog.get_logger(__name__)

# Kubernetes' DefaultJobPodFailureBackOff and MaxJobPodFailureBackOff.
FAILURE_BACKOFF = 10.0
MAX_FAILURE_BACKOFF = 600.0


@dataclass
class JobPlan:
    create: list[int | None] = field(default_factory=list)  # completion indexes (None: NonIndexed)
    delete: list[Obj] = field(default_factory=list)
    status: Obj = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    requeue_after: float | None = None
    expired: bool = False  # J9: finished longer ago than ttlSecondsAfterFinished
    # J15: each index's counted failures so far, which its next pod carries (backoffLimitPerIndex only).
    index_failures: dict[int, int] = field(default_factory=dict)


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _phase(pod: Obj) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def _terminating(pod: Obj) -> bool:
    return bool(_meta(pod).get("deletionTimestamp"))


def _finished_at(pod: Obj) -> datetime | None:
    """When a finished pod's last container ended, as the kubelet reports it."""
    status = pod.get("status") or {}
    ends = [parse_time(((cs.get("state") or {}).get("terminated") or {}).get("finishedAt"))
            for cs in status.get("containerStatuses") or []]
    known = [e for e in ends if e is not None]
    return max(known) if known else parse_time(_meta(pod).get("creationTimestamp"))


def _restarts(pod: Obj) -> int:
    status = pod.get("status") or {}
    return sum(int(cs.get("restartCount") or 0)
               for key in ("initContainerStatuses", "containerStatuses") for cs in status.get(key) or [])


def _condition(status: Obj, kind: str, value: str, reason: str, message: str, now: str) -> bool:
    """Sets a condition; True when it changed. The transition time moves only when the status does."""
    conditions: list[Obj] = status.setdefault("conditions", [])
    for cond in conditions:
        if cond.get("type") == kind:
            if cond.get("status") == value and cond.get("reason") == reason:
                return False
            moved = cond.get("status") != value
            cond.update({"status": value, "reason": reason, "message": message, "lastProbeTime": now})
            if moved:
                cond["lastTransitionTime"] = now
            return True
    conditions.append({"type": kind, "status": value, "lastProbeTime": now, "lastTransitionTime": now,
                       "reason": reason, "message": message})
    return True


def _failure_delay(failed: list[Obj], succeeded: list[Obj], now: datetime) -> float:
    """J6: seconds before a replacement may start, doubling with each failure since the last success (Kubernetes'
    pod failure back-off: 10 s, 20 s, ... at most 10 min)."""
    last_success = max((t for t in (_finished_at(p) for p in succeeded) if t), default=None)
    recent = [t for t in (_finished_at(p) for p in failed) if t and (last_success is None or t > last_success)]
    if not recent:
        return 0.0
    delay = min(FAILURE_BACKOFF * 2 ** (len(recent) - 1), MAX_FAILURE_BACKOFF)
    return max(0.0, (max(recent) + timedelta(seconds=delay) - now).total_seconds())


def _failure(spec: Obj, *, fail_job: str | None, failed: int, restarts: int, failed_indexes: set[int] | None,
             done: set[int]) -> tuple[str, str] | None:
    """J5: why the job fails (reason, message), first reason first, as Kubernetes checks them.
    ``failed_indexes`` is None unless the job has ``backoffLimitPerIndex``."""
    backoff_limit = int(spec.get("backoffLimit") if spec.get("backoffLimit") is not None else batch.DEFAULT_BACKOFF_LIMIT)
    on_failure = ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy") == "OnFailure"
    if fail_job is not None:
        return ("PodFailurePolicy", fail_job)
    if failed > backoff_limit or (on_failure and backoff_limit >= 0 and failed + restarts > backoff_limit and restarts):
        return ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    if failed_indexes is None:
        return None
    if spec.get("maxFailedIndexes") is not None and len(failed_indexes) > int(spec["maxFailedIndexes"]):
        return ("MaxFailedIndexesExceeded", "Job has exceeded the specified maximal number of failed indexes")
    if failed_indexes and len(done | failed_indexes) >= int(spec.get("completions") or 0):
        return ("FailedIndexes", "Job has failed indexes")
    return None


def _pods_to_run(job: Obj, *, active: list[Obj], terminating: list[Obj], succeeded: int, done: set[int],
                 failed_indexes: set[int]) -> tuple[list[int | None], list[Obj]]:
    """J4: the pods to add now (their completion indexes; None for NonIndexed) and the running ones to remove."""
    spec = job.get("spec") or {}
    completions = spec.get("completions")
    parallelism = int(spec.get("parallelism") if spec.get("parallelism") is not None else 1)
    replacing = spec.get("podReplacementPolicy") == "Failed" and terminating
    if batch.is_indexed(job):
        busy = {batch.pod_index(p) for p in active + (terminating if replacing else [])}
        wanted = [i for i in range(int(completions or 0)) if i not in done and i not in busy and i not in failed_indexes]
        surplus = [p for p in active if (i := batch.pod_index(p)) is None or not isinstance(completions, int)
                   or i >= completions or i in done | failed_indexes]
        room = parallelism - (len(active) - len(surplus)) - (len(terminating) if replacing else 0)
        return list(wanted[: max(0, room)]), surplus
    if completions is None:
        # J4: after a work queue's first success the running pods finish their share; none is added.
        want = parallelism if succeeded == 0 else len(active)
    else:
        want = min(parallelism, int(completions) - succeeded)
    have = len(active) + (len(terminating) if replacing else 0)
    # As Kubernetes: the pods that started last go first.
    newest = sorted(active, key=lambda p: _meta(p).get("creationTimestamp") or "", reverse=True)
    return [None] * max(0, want - have), newest[: max(0, have - want)]


def calculate_changes(job: Obj, pods: list[Obj], now: datetime) -> JobPlan:
    """The plan for one job; ``pods`` are the pods it controls."""
    spec = job.get("spec") or {}
    stamp = format_time(now)
    status: Obj = copy.deepcopy(job.get("status") or {})
    plan = JobPlan(status=status)
    indexed = batch.is_indexed(job)
    completions = spec.get("completions")

    def in_range(pod: Obj) -> bool:
        index = batch.pod_index(pod)
        return index is not None and isinstance(completions, int) and index < completions

    succeeded_pods = [p for p in pods if _phase(p) == "Succeeded"]
    # J13: a failure the pod failure policy ignores is not counted; one it says fails the job, does.
    fail_job: str | None = None
    failed_pods = []
    per_index = spec.get("backoffLimitPerIndex") if indexed else None
    failed_indexes: set[int] = set()
    by_index: dict[int, list[Obj]] = {}
    for pod in sorted((p for p in pods if _phase(p) == "Failed"), key=lambda p: (_finished_at(p) or now, _meta(p)["name"])):
        message, counted, action = batch.match_pod_failure_policy(spec.get("podFailurePolicy"), pod)
        if action == "FailJob" and fail_job is None:
            fail_job = message
        if counted:
            failed_pods.append(pod)
            if per_index is not None and in_range(pod):
                by_index.setdefault(int(batch.pod_index(pod) or 0), []).append(pod)
                if action == "FailIndex":
                    failed_indexes.add(int(batch.pod_index(pod) or 0))
    running = [p for p in pods if _phase(p) not in ("Succeeded", "Failed")]
    active = [p for p in running if not _terminating(p)]
    terminating = [p for p in running if _terminating(p)]
    if indexed:
        done = {i for p in succeeded_pods if in_range(p) and (i := batch.pod_index(p)) is not None}
        succeeded = len(done)
    else:
        done = set()
        succeeded = len(succeeded_pods)
    failed = len(failed_pods)
    if per_index is not None:
        # J15: an index fails past its own backoff limit, or at once by a FailIndex rule.
        failed_indexes |= {i for i, lost in by_index.items() if len(lost) > int(per_index)}
        failed_indexes -= done
        plan.index_failures = {i: len(lost) for i, lost in by_index.items()}

    def counts(active_: list[Obj], terminating_: list[Obj], created: int = 0) -> None:
        _counts(status, active=active_, terminating=terminating_, succeeded=succeeded, failed=failed, done=done,
                indexed=indexed, created=created)
        if per_index is not None:
            status["failedIndexes"] = batch.format_indexes(failed_indexes)

    finished = is_true(job, "Complete") or is_true(job, "Failed")
    if finished:
        plan.delete = list(active)  # J8: a finished job runs nothing
        counts([], terminating + active)
        _expiry(job, spec, status, now, plan)
        return plan

    if spec.get("suspend") is True:
        # J7: a suspended job keeps no pods running; resuming starts its clock again.
        plan.delete = list(active)
        if _condition(status, "Suspended", "True", "JobSuspended", "Job suspended", stamp):
            plan.events.append(("Normal", "Suspended", "Job suspended"))
        counts([], terminating + active)
        return plan
    if is_true(job, "Suspended"):
        _condition(status, "Suspended", "False", "JobResumed", "Job resumed", stamp)
        plan.events.append(("Normal", "Resumed", "Job resumed"))
        status["startTime"] = stamp
    status.setdefault("startTime", stamp)

    failure = _failure(spec, fail_job=fail_job, failed=failed, restarts=sum(_restarts(p) for p in active),
                       failed_indexes=failed_indexes if per_index is not None else None, done=done)
    deadline = spec.get("activeDeadlineSeconds")
    started = parse_time(status.get("startTime")) or now
    if failure is None and isinstance(deadline, int):
        left = (started + timedelta(seconds=deadline) - now).total_seconds()
        if left <= 0:
            failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
        else:
            plan.requeue_after = left

    success = ("CompletionsReached", "Reached expected number of succeeded pods")
    if indexed:
        complete = isinstance(completions, int) and succeeded >= completions
        rule = batch.success_policy_rule(spec.get("successPolicy"), done)
        if not complete and rule is not None:
            complete, success = True, ("SuccessPolicy", f"Matched rules at index {rule}")
    elif completions is None:
        # J4: a work queue is done once one pod succeeded and none still runs.
        complete = succeeded > 0 and not active
    else:
        complete = succeeded >= completions

    if failure is not None or is_true(job, "FailureTarget"):
        target = condition(job, "FailureTarget") or {"reason": "BackoffLimitExceeded"}
        reason, message = failure or (target.get("reason") or "", target.get("message") or "")
        plan.delete = list(active)
        if _condition(status, "FailureTarget", "True", reason, message, stamp):
            plan.events.append(("Warning", reason, message))
        if not active and not terminating:
            _condition(status, "Failed", "True", reason, message, stamp)
        counts([], terminating + active)
        plan.requeue_after = None
        return plan

    if complete or is_true(job, "SuccessCriteriaMet"):
        plan.delete = list(active)
        if is_true(job, "SuccessCriteriaMet"):
            met = condition(job, "SuccessCriteriaMet") or {}
            success = (met.get("reason") or success[0], met.get("message") or success[1])
        _condition(status, "SuccessCriteriaMet", "True", *success, stamp)
        if not active and not terminating:
            _condition(status, "Complete", "True", *success, stamp)
            status["completionTime"] = stamp
            plan.events.append(("Normal", "Completed", "Job completed"))
        counts([], terminating + active)
        plan.requeue_after = None
        _expiry(job, spec, status, now, plan)
        return plan

    missing, surplus = _pods_to_run(job, active=active, terminating=terminating, succeeded=succeeded, done=done,
                                    failed_indexes=failed_indexes)
    plan.delete.extend(surplus)
    if missing and per_index is not None:
        # J15: each index waits out the back-off of its own failures.
        waits = {i: _failure_delay(by_index.get(int(i or 0), []), [], now) for i in missing}
        plan.create = [i for i in missing if waits[i] <= 0]
        later = [w for w in waits.values() if w > 0]
        if later:
            plan.requeue_after = min([*later, *([plan.requeue_after] if plan.requeue_after else [])])
    elif missing:
        delay = _failure_delay(failed_pods, succeeded_pods, now)
        if delay > 0:
            plan.requeue_after = min(delay, plan.requeue_after) if plan.requeue_after else delay
        else:
            plan.create = missing
    left_active = [p for p in active if p not in plan.delete]
    counts(left_active, terminating + [p for p in active if p in plan.delete], len(plan.create))
    return plan


def _counts(status: Obj, *, active: list[Obj], terminating: list[Obj], succeeded: int, failed: int, done: set[int],
            indexed: bool, created: int = 0) -> None:
    """Kubernetes writes active, succeeded and failed only when not zero; ready and terminating always."""
    for key, value in (("active", len(active) + created), ("succeeded", succeeded), ("failed", failed)):
        if value:
            status[key] = value
        else:
            status.pop(key, None)
    status["ready"] = sum(1 for p in active if is_true(p, "Ready"))
    status["terminating"] = len(terminating)
    status.setdefault("uncountedTerminatedPods", {})
    if indexed:
        status["completedIndexes"] = batch.format_indexes(done)


def _expiry(job: Obj, spec: Obj, status: Obj, now: datetime, plan: JobPlan) -> None:
    """J9: a finished job with ``ttlSecondsAfterFinished`` is deleted, with its pods, that long after it ended."""
    ttl = spec.get("ttlSecondsAfterFinished")
    if not isinstance(ttl, int) or _meta(job).get("deletionTimestamp"):
        return
    ended = None
    for cond in status.get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            ended = parse_time(cond.get("lastTransitionTime"))
    if ended is None:
        return
    left = (ended + timedelta(seconds=ttl) - now).total_seconds()
    if left <= 0:
        plan.expired = True
    else:
        plan.requeue_after = left


def job_pod(job: Obj, index: int | None, failures: int | None = None) -> Obj:
    """A new pod of ``job``; an Indexed job's pod carries its index as Kubernetes' job controller writes it (J11),
    and, under backoffLimitPerIndex, the failures of its index so far (J15)."""
    name = _meta(job)["name"]
    template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
    prefix = f"{name}-" if index is None else f"{name}-{index}-"
    pod = pod_from_template(job, template, "batch/v1", "Job", prefix)
    if index is not None:
        pod["metadata"].setdefault("annotations", {})[batch.COMPLETION_INDEX] = str(index)
        pod["metadata"]["labels"][batch.COMPLETION_INDEX] = str(index)
        if failures is not None:
            pod["metadata"]["annotations"][batch.INDEX_FAILURE_COUNT] = str(failures)
        pod_spec = pod["spec"]
        if not pod_spec.get("hostname"):
            pod_spec["hostname"] = f"{name}-{index}"
        env_var = {"name": batch.COMPLETION_INDEX_ENV, "valueFrom": {"fieldRef": {
            "apiVersion": "v1", "fieldPath": f"metadata.annotations['{batch.COMPLETION_INDEX}']"}}}
        for key in ("initContainers", "containers"):
            for container in pod_spec.get(key) or []:
                env = container.setdefault("env", [])
                if not any(e.get("name") == batch.COMPLETION_INDEX_ENV for e in env):
                    env.append(copy.deepcopy(env_var))
    return pod


class JobReconciler(Reconciler):
    name = "job"
    primary = "jobs"

    def __init__(self, ctx: Any, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(ctx)
        self.clock = clock or (lambda: datetime.now(timezone.utc))

    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        return {"pods": lambda pod: controller_key(pod, "Job")}

    def reconcile(self, key: str) -> Result:
        namespace, name = split_key(key)
        job = self.ctx.cache.get("jobs", namespace, name)
        if job is None or _meta(job).get("deletionTimestamp"):
            return Result()
        pods = owned_pods(self.ctx, job, (job.get("spec") or {}).get("selector"), "batch/v1", "Job")
        plan = calculate_changes(job, pods, self.clock())
        for pod in plan.delete:
            delete_pod(self.ctx, job, pod)
        if plan.status != (job.get("status") or {}):
            updated = copy.deepcopy(job)
            updated["status"] = plan.status
            try:
                job = publish(self.ctx.cache, "jobs", self.ctx.store.update("jobs", updated))
            except (Conflict, NotFound):
                return Result(requeue_after=0.1)  # a newer job or another worker's write: plan again from it
        per_index = (job.get("spec") or {}).get("backoffLimitPerIndex") is not None
        for index in plan.create:
            failures = plan.index_failures.get(int(index), 0) if per_index and index is not None else None
            new = job_pod(job, index, failures)
            new["spec"] = defaulted_tolerations(self.ctx, new["spec"])
            create_pod(self.ctx, job, new)
        for type_, reason, message in plan.events:
            self.ctx.events.record(job, type_, reason, message)  # type: ignore[arg-type]
        if plan.expired:
            self._expire(job)
            return Result()
        return Result(requeue_after=plan.requeue_after)

    def _expire(self, job: Obj) -> None:
        meta = _meta(job)
        try:
            # The garbage collector removes its pods: the deletion is a background one, as Kubernetes' TTL controller.
            self.ctx.store.delete("jobs", meta.get("namespace", ""), meta["name"],
                                  resource_version=str(meta.get("resourceVersion") or "") or None)
            log.info("job_expired", namespace=meta.get("namespace"), job=meta["name"])
        except (NotFound, Conflict):
            return


# Picked up by storage.controllers.manager.DEFAULT_RECONCILERS.
RECONCILERS = [JobReconciler]
