"""The CronJob controller's pure plan (``storage.controllers.cronjob.calculate_changes``), rule by rule
(SEMANTICS CJ4–CJ9)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from storage.api.timestamps import format_time
from storage.controllers.cronjob import SCHEDULED_TIMESTAMP, calculate_changes, job_name

NOW = datetime(2026, 12, 5, 12, 0, 30, tzinfo=timezone.utc)


def at(seconds: float) -> str:
    return format_time(NOW + timedelta(seconds=seconds))


def a_cronjob(schedule: str = "*/5 * * * *", created: float = -3600, **spec: Any) -> dict[str, Any]:
    base = {"schedule": schedule, "concurrencyPolicy": "Allow", "suspend": False, "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 1, "jobTemplate": {
                "metadata": {"labels": {"team": "a"}},
                "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "b"}]}}}}}
    base.update(spec)
    return {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "cj", "namespace": "default", "uid": "cj-uid", "creationTimestamp": at(created)},
            "spec": base, "status": {}}


def a_job(name: str, uid: str, state: str | None = None, started: float = -100) -> dict[str, Any]:
    status: dict[str, Any] = {"startTime": at(started)}
    if state is not None:
        status["conditions"] = [{"type": state, "status": "True"}]
        if state == "Complete":
            status["completionTime"] = at(started + 10)
    return {"metadata": {"name": name, "namespace": "default", "uid": uid}, "status": status}


def test_cj4_the_newest_missed_time_runs_once_and_the_next_one_is_waited_for() -> None:
    plan = calculate_changes(a_cronjob(), [], NOW)
    assert plan.scheduled == datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)  # 11:05 ... 12:00 collapse into one
    job = plan.create
    assert job is not None and job["metadata"]["name"] == f"cj-{int(plan.scheduled.timestamp()) // 60}"
    assert job["metadata"]["labels"] == {"team": "a"}
    assert job["metadata"]["annotations"][SCHEDULED_TIMESTAMP] == "2026-12-05T12:00:00Z"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    assert plan.requeue_after == 270.0  # 12:05:00


def test_cj4_a_time_already_run_is_not_run_again() -> None:
    cronjob = a_cronjob()
    cronjob["status"] = {"lastScheduleTime": "2026-12-05T12:00:00Z"}
    plan = calculate_changes(cronjob, [], NOW)
    assert plan.create is None and plan.requeue_after == 270.0
    # Created after the last scheduled time: nothing is due yet.
    assert calculate_changes(a_cronjob(created=-10), [], NOW).create is None


def test_cj4_a_start_later_than_the_starting_deadline_is_missed_not_run() -> None:
    """As Kubernetes: times older than the deadline are not looked at, so 12:00 is skipped at 12:00:30."""
    late = calculate_changes(a_cronjob(startingDeadlineSeconds=10), [], NOW)
    assert late.create is None and late.requeue_after == 270.0
    assert calculate_changes(a_cronjob(startingDeadlineSeconds=60), [], NOW).create is not None


def test_cj4_the_time_zone_moves_the_schedule() -> None:
    plan = calculate_changes(a_cronjob("0 13 * * *", created=-86400, timeZone="Europe/Berlin"), [], NOW)
    assert plan.scheduled == datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)  # 13:00 in Berlin in winter
    assert plan.create is not None
    assert plan.create["metadata"]["annotations"][SCHEDULED_TIMESTAMP] == "2026-12-05T13:00:00+01:00"


def test_cj6_finished_jobs_leave_the_active_list_and_successes_are_remembered() -> None:
    cronjob = a_cronjob()
    cronjob["status"] = {"lastScheduleTime": "2026-12-05T12:00:00Z", "active": [
        {"name": "cj-1", "uid": "j1"}, {"name": "cj-2", "uid": "j2"}, {"name": "gone", "uid": "j3"}]}
    plan = calculate_changes(cronjob, [a_job("cj-1", "j1", "Complete"), a_job("cj-2", "j2")], NOW)
    assert [r["uid"] for r in plan.status["active"]] == ["j2"]
    assert plan.status["lastSuccessfulTime"] == at(-90)
    assert ("Normal", "SawCompletedJob", "Saw completed job: cj-1, condition: Complete") in plan.events
    assert ("Normal", "MissingJob", "Active job went missing: gone") in plan.events


def test_cj7_a_suspended_cronjob_starts_nothing() -> None:
    assert calculate_changes(a_cronjob(suspend=True), [], NOW).create is None


def test_cj8_concurrency_policies() -> None:
    running = a_job("cj-old", "j-old")
    for policy, creates, deletes in (("Allow", True, []), ("Forbid", False, []), ("Replace", True, ["cj-old"])):
        cronjob = a_cronjob(concurrencyPolicy=policy)
        cronjob["status"] = {"active": [{"name": "cj-old", "uid": "j-old"}], "lastScheduleTime": at(-600)}
        plan = calculate_changes(cronjob, [running], NOW)
        assert (plan.create is not None, plan.delete) == (creates, deletes), policy
    forbid = a_cronjob(concurrencyPolicy="Forbid")
    forbid["status"] = {"active": [{"name": "cj-old", "uid": "j-old"}], "lastScheduleTime": at(-600)}
    assert ("Normal", "JobAlreadyActive",
            "Not starting job because prior execution is running and concurrency policy is Forbid") in \
        calculate_changes(forbid, [running], NOW).events


def test_cj9_history_beyond_the_limits_goes_oldest_first() -> None:
    cronjob = a_cronjob(successfulJobsHistoryLimit=2, failedJobsHistoryLimit=0)
    cronjob["status"] = {"lastScheduleTime": "2026-12-05T12:00:00Z"}
    jobs = [a_job(f"ok-{i}", f"u{i}", "Complete", started=-1000 + i) for i in range(4)]
    jobs.append(a_job("bad", "ub", "Failed"))
    plan = calculate_changes(cronjob, jobs, NOW)
    assert plan.delete == ["ok-0", "ok-1", "bad"]


def test_cj5_job_names_hold_the_scheduled_minute() -> None:
    assert job_name(a_cronjob(), datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)) == "cj-29941200"


def test_cj2_cj4_an_every_schedule_counts_from_the_creation_then_from_the_last_run() -> None:
    """As robfig/cron's ConstantDelaySchedule under Kubernetes' mostRecentScheduleTime: ``@every 90s`` runs
    90 s after the creation, then every 90 s after that; missed runs collapse into the newest."""
    created = -200.0  # NOW - 200 s: runs are due at -110, -20, +70, ...
    plan = calculate_changes(a_cronjob("@every 90s", created=created), [], NOW)
    assert plan.scheduled == NOW + timedelta(seconds=-20)
    assert plan.create is not None and plan.requeue_after == 90 - 20
    # After that run the next is 90 s after it, not 90 s after now.
    ran = a_cronjob("@every 90s", created=created)
    ran["status"] = {"lastScheduleTime": at(-20)}
    waited = calculate_changes(ran, [], NOW)
    assert waited.create is None and waited.requeue_after == 70
    # A long gap: the newest of the missed times runs, once.
    ran["status"] = {"lastScheduleTime": at(-2000)}
    late = calculate_changes(ran, [], NOW)
    assert late.scheduled == NOW + timedelta(seconds=-2000 + 90 * 22) and late.requeue_after == 70
    # Go's duration forms: fractions are cut to whole seconds, less than a second is one second.
    assert calculate_changes(a_cronjob("@every 1m30.9s", created=created), [], NOW).scheduled == plan.scheduled


def test_cj2_an_every_schedule_with_a_bad_duration_is_an_unparseable_schedule_event() -> None:
    plan = calculate_changes(a_cronjob("@every 5x"), [], NOW)
    assert plan.create is None
    assert plan.events == [("Warning", "UnparseableSchedule", "unparseable schedule: '@every 5x' : failed to parse "
                            'duration @every 5x: time: unknown unit "x" in duration "5x"')]
