"""The Job controller's pure plan (``storage.controllers.job.calculate_changes``), rule by rule (SEMANTICS J4–J9)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from storage.api import batch
from storage.api.timestamps import format_time
from storage.controllers.job import calculate_changes, job_pod

NOW = datetime(2026, 12, 5, 12, 0, 0, tzinfo=timezone.utc)


def at(seconds: float) -> str:
    return format_time(NOW + timedelta(seconds=seconds))


def a_job(**spec: Any) -> dict[str, Any]:
    base = {"completions": 1, "parallelism": 1, "backoffLimit": 6, "completionMode": "NonIndexed", "suspend": False,
            "podReplacementPolicy": "TerminatingOrFailed",
            "template": {"metadata": {"labels": {"job-name": "j"}},
                         "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}
    base.update(spec)
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "j", "namespace": "default", "uid": "u-1", "resourceVersion": "5"},
            "spec": base, "status": {}}


def a_pod(name: str, phase: str = "Running", *, finished: float = -100, created: float = -200,
          index: int | None = None, terminating: bool = False, ready: bool = True, restarts: int = 0) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "creationTimestamp": at(created)}
    if index is not None:
        meta["annotations"] = {batch.COMPLETION_INDEX: str(index)}
    if terminating:
        meta["deletionTimestamp"] = at(0)
    status: dict[str, Any] = {"phase": phase, "containerStatuses": [{"name": "c", "restartCount": restarts}]}
    if phase in ("Succeeded", "Failed"):
        status["containerStatuses"][0]["state"] = {"terminated": {"finishedAt": at(finished)}}
    if phase == "Running" and ready:
        status["conditions"] = [{"type": "Ready", "status": "True"}]
    return {"metadata": meta, "status": status}


def conditions(plan_status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in plan_status.get("conditions") or []}


def test_j4_a_new_job_starts_as_many_pods_as_parallelism_allows_up_to_its_completions() -> None:
    plan = calculate_changes(a_job(completions=5, parallelism=2), [], NOW)
    assert plan.create == [None, None]
    assert plan.status["active"] == 2 and plan.status["startTime"] == format_time(NOW)
    plan = calculate_changes(a_job(completions=5, parallelism=2),
                             [a_pod(f"p{i}", "Succeeded") for i in range(4)], NOW)
    assert plan.create == [None] and plan.status["succeeded"] == 4


def test_j4_reaching_the_completions_completes_the_job_once_nothing_runs() -> None:
    job = a_job(completions=2, parallelism=2)
    plan = calculate_changes(job, [a_pod("a", "Succeeded"), a_pod("b", "Succeeded"), a_pod("c")], NOW)
    assert [p["metadata"]["name"] for p in plan.delete] == ["c"]
    held = conditions(plan.status)
    assert held["SuccessCriteriaMet"]["status"] == "True" and "Complete" not in held
    job["status"] = plan.status
    plan = calculate_changes(job, [a_pod("a", "Succeeded"), a_pod("b", "Succeeded")], NOW)
    held = conditions(plan.status)
    assert held["Complete"]["reason"] == "CompletionsReached" and plan.status["completionTime"] == format_time(NOW)
    assert ("Normal", "Completed", "Job completed") in plan.events and not plan.create


def test_j4_a_work_queue_starts_no_pod_after_a_success_and_completes_when_the_rest_end() -> None:
    job = a_job(completions=None, parallelism=3)
    plan = calculate_changes(job, [a_pod("a", "Succeeded"), a_pod("b")], NOW)
    assert not plan.create and not plan.delete and "conditions" not in plan.status
    plan = calculate_changes(job, [a_pod("a", "Succeeded"), a_pod("b", "Succeeded")], NOW)
    assert conditions(plan.status)["Complete"]["status"] == "True"


def test_j5_failures_beyond_the_backoff_limit_fail_the_job_and_stop_its_pods() -> None:
    job = a_job(completions=3, parallelism=2, backoffLimit=1)
    pods = [a_pod("f1", "Failed"), a_pod("f2", "Failed"), a_pod("r")]
    plan = calculate_changes(job, pods, NOW)
    assert [p["metadata"]["name"] for p in plan.delete] == ["r"] and not plan.create
    held = conditions(plan.status)
    assert held["FailureTarget"]["reason"] == "BackoffLimitExceeded" and "Failed" not in held
    assert ("Warning", "BackoffLimitExceeded", "Job has reached the specified backoff limit") in plan.events
    job["status"] = plan.status
    plan = calculate_changes(job, pods[:2], NOW)  # the stopped pod is gone
    assert conditions(plan.status)["Failed"]["status"] == "True" and plan.status["failed"] == 2


def test_j5_restarts_count_against_the_limit_under_on_failure() -> None:
    job = a_job(backoffLimit=2)
    job["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    assert "conditions" not in calculate_changes(job, [a_pod("p", restarts=2)], NOW).status
    plan = calculate_changes(job, [a_pod("p", restarts=3)], NOW)
    assert conditions(plan.status)["FailureTarget"]["reason"] == "BackoffLimitExceeded"


def test_j6_a_replacement_waits_out_the_doubling_failure_backoff() -> None:
    job = a_job(backoffLimit=6)
    plan = calculate_changes(job, [a_pod("f1", "Failed", finished=-4)], NOW)
    assert not plan.create and plan.requeue_after is not None and abs(plan.requeue_after - 6) < 0.01
    assert calculate_changes(job, [a_pod("f1", "Failed", finished=-11)], NOW).create == [None]
    two = [a_pod("f1", "Failed", finished=-30), a_pod("f2", "Failed", finished=-15)]
    plan = calculate_changes(job, two, NOW)  # 20 s after the second failure
    assert not plan.create and abs((plan.requeue_after or 0) - 5) < 0.01


def test_j6_active_deadline_fails_a_running_job_and_is_waited_for_until_then() -> None:
    job = a_job(activeDeadlineSeconds=30)
    job["status"] = {"startTime": at(-10)}
    plan = calculate_changes(job, [a_pod("p")], NOW)
    assert not plan.delete and abs((plan.requeue_after or 0) - 20) < 0.01
    job["status"] = {"startTime": at(-31)}
    plan = calculate_changes(job, [a_pod("p")], NOW)
    assert [p["metadata"]["name"] for p in plan.delete] == ["p"]
    assert conditions(plan.status)["FailureTarget"]["reason"] == "DeadlineExceeded"


def test_j7_suspending_stops_the_pods_and_resuming_restarts_the_clock() -> None:
    job = a_job(suspend=True)
    job["status"] = {"startTime": at(-50)}
    plan = calculate_changes(job, [a_pod("p")], NOW)
    assert [p["metadata"]["name"] for p in plan.delete] == ["p"] and not plan.create
    assert conditions(plan.status)["Suspended"]["reason"] == "JobSuspended"
    assert plan.status["terminating"] == 1 and "active" not in plan.status
    job["status"], job["spec"]["suspend"] = plan.status, False
    plan = calculate_changes(job, [], NOW + timedelta(seconds=5))
    assert conditions(plan.status)["Suspended"] == {**conditions(plan.status)["Suspended"], "status": "False",
                                                     "reason": "JobResumed"}
    assert plan.status["startTime"] == at(5) and plan.create == [None]


def test_j8_a_finished_job_starts_nothing_and_stops_what_still_runs() -> None:
    job = a_job(completions=2)
    job["status"] = {"conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": at(-5)}]}
    plan = calculate_changes(job, [a_pod("late")], NOW)
    assert not plan.create and [p["metadata"]["name"] for p in plan.delete] == ["late"]


def test_j9_the_time_to_live_runs_from_the_end_of_the_job() -> None:
    job = a_job(ttlSecondsAfterFinished=60)
    job["status"] = {"conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": at(-50)}]}
    plan = calculate_changes(job, [], NOW)
    assert not plan.expired and abs((plan.requeue_after or 0) - 10) < 0.01
    assert calculate_changes(job, [], NOW + timedelta(seconds=11)).expired


def test_j11_an_indexed_job_runs_each_missing_index_once_and_reports_them() -> None:
    job = a_job(completions=5, parallelism=2, completionMode="Indexed")
    pods = [a_pod("a", "Succeeded", index=0), a_pod("b", "Succeeded", index=2), a_pod("c", index=1),
            a_pod("d", "Failed", finished=-60, index=3)]
    plan = calculate_changes(job, pods, NOW)
    assert plan.create == [3] and plan.status["completedIndexes"] == "0,2" and plan.status["succeeded"] == 2
    pod = job_pod(job, 3)
    assert pod["metadata"]["generateName"] == "j-3-" and pod["spec"]["hostname"] == "j-3"
    assert pod["metadata"]["annotations"][batch.COMPLETION_INDEX] == "3"
    [env] = pod["spec"]["containers"][0]["env"]
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == f"metadata.annotations['{batch.COMPLETION_INDEX}']"


def test_j12_indexes_are_written_in_kubernetes_compressed_form() -> None:
    assert batch.format_indexes([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"
    assert batch.parse_indexes("0-2,5,7-8") == {0, 1, 2, 5, 7, 8}
    assert batch.format_indexes([]) == ""


def test_j4_an_unchanged_job_plans_nothing_twice() -> None:
    """Level-triggered: planning again from the status it wrote changes nothing."""
    job = a_job(completions=3, parallelism=3)
    pods = [a_pod("a", ready=False), a_pod("b", "Succeeded")]
    first = calculate_changes(job, pods, NOW)
    job["status"] = first.status
    second = calculate_changes(job, pods, NOW + timedelta(seconds=1))
    assert second.status == first.status and not second.events
    # The reconciler puts the pods it creates in its cache at once, so the next pass sees them.
    assert first.create == second.create == [None] and first.status["ready"] == 0 and first.status["active"] == 2


def failed_with(name: str, code: int, *, finished: float = -100, conditions: list[dict[str, Any]] | None = None,
                container: str = "main") -> dict[str, Any]:
    pod = a_pod(name, "Failed", finished=finished)
    pod["status"]["containerStatuses"] = [{"name": container, "restartCount": 0, "state": {"terminated": {
        "exitCode": code, "finishedAt": at(finished)}}}]
    if conditions:
        pod["status"]["conditions"] = conditions
    return pod


POLICY = {"rules": [
    {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}},
]}


def test_j13_a_fail_job_rule_fails_the_job_at_the_first_matching_pod() -> None:
    job = a_job(completions=12, parallelism=3, backoffLimit=6, podFailurePolicy=POLICY)
    plan = calculate_changes(job, [failed_with("p1", 42), a_pod("p2")], NOW)
    held = conditions(plan.status)
    assert held["FailureTarget"]["reason"] == "PodFailurePolicy"
    assert held["FailureTarget"]["message"] == ("Container main for pod default/p1 failed with exit code 42 "
                                                "matching FailJob rule at index 0")
    assert [p["metadata"]["name"] for p in plan.delete] == ["p2"] and not plan.create


def test_j13_an_ignored_failure_is_not_counted_and_is_replaced_at_once() -> None:
    job = a_job(backoffLimit=0, podFailurePolicy=POLICY)
    disrupted = failed_with("p1", 137, finished=-1, conditions=[{"type": "DisruptionTarget", "status": "True"}])
    plan = calculate_changes(job, [disrupted], NOW)
    assert "conditions" not in plan.status and "failed" not in plan.status
    assert plan.create == [None]  # no back-off: the failure does not count
    # Exit code 1 matches no rule: counted as usual, past backoffLimit 0.
    plan = calculate_changes(job, [failed_with("p1", 1)], NOW)
    assert conditions(plan.status)["FailureTarget"]["reason"] == "BackoffLimitExceeded"
    # Exit code 3 matches the Count rule: counted too.
    assert calculate_changes(job, [failed_with("p1", 3)], NOW).status["failed"] == 1


def test_j14_a_success_policy_completes_an_indexed_job_early() -> None:
    job = a_job(completions=5, parallelism=5, completionMode="Indexed",
                successPolicy={"rules": [{"succeededIndexes": "0,2-3", "succeededCount": 2}]})
    pods = [a_pod("a", "Succeeded", index=0), a_pod("b", index=1), a_pod("c", "Succeeded", index=3)]
    plan = calculate_changes(job, pods, NOW)
    held = conditions(plan.status)
    assert (held["SuccessCriteriaMet"]["reason"], held["SuccessCriteriaMet"]["message"]) == (
        "SuccessPolicy", "Matched rules at index 0")
    assert [p["metadata"]["name"] for p in plan.delete] == ["b"] and not plan.create and "Complete" not in held
    job["status"] = plan.status
    plan = calculate_changes(job, pods[::2], NOW)
    assert conditions(plan.status)["Complete"]["reason"] == "SuccessPolicy"
    assert batch.success_policy_rule({"rules": [{"succeededCount": 3}]}, {0, 3}) is None


def indexed_failure(name: str, index: int, code: int = 1, finished: float = -100) -> dict[str, Any]:
    pod = failed_with(name, code, finished=finished)
    pod["metadata"]["annotations"] = {batch.COMPLETION_INDEX: str(index)}
    return pod


def test_j15_each_index_has_its_own_backoff_limit_and_back_off() -> None:
    job = a_job(completions=3, parallelism=3, completionMode="Indexed", backoffLimitPerIndex=1,
                backoffLimit=batch.MAX_INT32)
    # Index 0 failed once (its back-off passed), index 1 twice (past its limit of 1), index 2 succeeded.
    pods = [indexed_failure("a", 0, finished=-100), indexed_failure("b", 1, finished=-60),
            indexed_failure("c", 1, finished=-30), a_pod("d", "Succeeded", index=2)]
    plan = calculate_changes(job, pods, NOW)
    assert plan.create == [0] and plan.index_failures == {0: 1, 1: 2}
    assert plan.status["failedIndexes"] == "1" and plan.status["completedIndexes"] == "2"
    assert "conditions" not in plan.status
    # Index 0's replacement is under way; a fresh failure of it waits out 10 s first.
    fresh = [indexed_failure("a", 0, finished=-4), *pods[1:]]
    plan = calculate_changes(job, fresh, NOW)
    assert not plan.create and abs((plan.requeue_after or 0) - 6) < 0.01
    # Every index succeeded or failed: the job fails, naming the failed indexes.
    done = [*pods[1:], a_pod("e", "Succeeded", index=0)]
    plan = calculate_changes(job, done, NOW)
    assert conditions(plan.status)["FailureTarget"]["reason"] == "FailedIndexes"
    assert conditions(plan.status)["FailureTarget"]["message"] == "Job has failed indexes"


def test_j15_max_failed_indexes_fails_the_job_early() -> None:
    job = a_job(completions=4, parallelism=4, completionMode="Indexed", backoffLimitPerIndex=0,
                maxFailedIndexes=1, backoffLimit=batch.MAX_INT32)
    plan = calculate_changes(job, [indexed_failure("a", 0), indexed_failure("b", 3), a_pod("c", index=1)], NOW)
    held = conditions(plan.status)
    assert held["FailureTarget"]["reason"] == "MaxFailedIndexesExceeded"
    assert [p["metadata"]["name"] for p in plan.delete] == ["c"] and plan.status["failedIndexes"] == "0,3"


def test_j15_a_fail_index_rule_fails_only_that_index() -> None:
    policy = {"rules": [{"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [7]}}]}
    job = a_job(completions=2, parallelism=2, completionMode="Indexed", backoffLimitPerIndex=3,
                backoffLimit=batch.MAX_INT32, podFailurePolicy=policy)
    plan = calculate_changes(job, [indexed_failure("a", 0, code=7), a_pod("b", index=1)], NOW)
    assert plan.status["failedIndexes"] == "0" and not plan.create and "conditions" not in plan.status
    pod = job_pod(job, 1, failures=2)
    assert pod["metadata"]["annotations"][batch.INDEX_FAILURE_COUNT] == "2"
