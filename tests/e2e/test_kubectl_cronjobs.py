"""batch/v1 CronJobs through the real kubectl against a real ``stowage up`` (SEMANTICS CJ1–CJ10).

The controller's clock runs RATE times as fast (the CI1 test hook, which also drives BackupSchedules), so
``* * * * *`` fires every 60/RATE seconds through the real cron code, controllers and runc pods.
"""
from __future__ import annotations

import calendar
import json
import time
from typing import Callable

import pytest

from stowage_e2e import Stowage, poll
from support import kubectl_binary
from test_kubectl_session import Kubectl

pytestmark = [pytest.mark.root, pytest.mark.slow]

VERSION = "1.37"
RATE = 20
PERIOD = 60 / RATE  # real seconds between two runs of an every-minute schedule


@pytest.fixture(scope="module")
def kubectl(start_stowage: Callable[..., Stowage], tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    kubectl_binary(VERSION)
    stowage = start_stowage([], {"STOWAGE_TEST_CLOCK_RATE": str(RATE)})
    return Kubectl(VERSION, stowage.kubeconfig, tmp_path_factory.mktemp("kubectl-home"))


def jobs_of(kubectl: Kubectl, cronjob: str) -> list[dict]:
    items = json.loads(kubectl("get", "jobs", "-o", "json"))["items"]
    return [j for j in items if any(r.get("kind") == "CronJob" and r.get("name") == cronjob
                                    for r in j["metadata"].get("ownerReferences") or [])]


def cronjob(kubectl: Kubectl, name: str) -> dict:
    return json.loads(kubectl("get", "cronjob", name, "-o", "json"))


def complete(job: dict) -> bool:
    return any(c["type"] == "Complete" and c["status"] == "True" for c in job.get("status", {}).get("conditions") or [])


def test_cj4_kubectl_create_cronjob_runs_on_schedule_and_keeps_three_successes(kubectl: Kubectl) -> None:
    made = kubectl("create", "cronjob", "tick", "--image=busybox", "--schedule=* * * * *", "--", "sh", "-c", "echo tick")
    assert made.strip() == "cronjob.batch/tick created"
    obj = cronjob(kubectl, "tick")
    spec = obj["spec"]
    assert (spec["concurrencyPolicy"], spec["suspend"], spec["successfulJobsHistoryLimit"],
            spec["failedJobsHistoryLimit"]) == ("Allow", False, 3, 1)
    # CJ9: after more than three successful runs, the three newest are kept.
    seen: set[str] = set()

    def five_runs() -> bool:
        seen.update(j["metadata"]["name"] for j in jobs_of(kubectl, "tick"))
        return len(seen) >= 5

    poll("five runs of the schedule", lambda: five_runs() or None, 120)

    def trimmed() -> list[dict] | None:
        jobs = jobs_of(kubectl, "tick")
        done = sorted((j for j in jobs if complete(j)), key=lambda j: j["metadata"]["name"])
        return done if len(done) == 3 and len(jobs) <= 4 else None

    kept = poll("the history trimmed to three", trimmed, 60)
    # The oldest runs went, not newer ones: the first run seen is gone and nothing
    # older than the oldest kept success is left (a newer run may still be active).
    # Names carry the scheduled minute, so they sort by age.
    names = {j["metadata"]["name"] for j in jobs_of(kubectl, "tick")}
    oldest_kept = min(j["metadata"]["name"] for j in kept)
    assert sorted(seen)[0] not in names
    assert oldest_kept > sorted(seen)[0]
    assert all(name >= oldest_kept for name in names), (names, oldest_kept)
    for job in kept:
        minutes = int(job["metadata"]["name"].rsplit("-", 1)[1])
        # CJ5: named for its scheduled minute, which its annotation names too.
        stamp = job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        assert calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")) == minutes * 60, stamp
    status = cronjob(kubectl, "tick")["status"]
    assert status["lastScheduleTime"] and status["lastSuccessfulTime"]

    out = kubectl("get", "cronjobs").splitlines()
    assert out[0].split() == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"]
    [row] = [line for line in out[1:] if line.startswith("tick ")]
    assert "* * * * *" in row and "<none>" in row and "False" in row
    assert kubectl("logs", f"job/{kept[-1]['metadata']['name']}").strip() == "tick"

    # CJ7: suspended, it starts nothing more.
    kubectl("patch", "cronjob", "tick", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    time.sleep(PERIOD)  # a run already due may still start
    before = {j["metadata"]["name"] for j in jobs_of(kubectl, "tick")}
    time.sleep(3 * PERIOD)
    after = {j["metadata"]["name"] for j in jobs_of(kubectl, "tick")}
    assert after <= before, after - before

    # kubectl's manual run: a job made from the template now, owned by the CronJob.
    assert kubectl("create", "job", "by-hand", "--from=cronjob/tick").strip() == "job.batch/by-hand created"
    kubectl("wait", "--for=condition=complete", "job/by-hand", "--timeout=120s", timeout=150)
    manual = json.loads(kubectl("get", "job", "by-hand", "-o", "json"))
    assert manual["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert kubectl("logs", "job/by-hand").strip() == "tick"

    # Deleting the CronJob in the background takes its jobs and their pods.
    kubectl("delete", "cronjob", "tick")
    poll("the cronjob's jobs deleted", lambda: not jobs_of(kubectl, "tick") or None, 60)


def test_cj2_cj4_an_every_schedule_runs_at_its_interval(kubectl: Kubectl) -> None:
    made = kubectl("create", "cronjob", "ev", "--image=busybox", "--schedule=@every 2m", "--", "sh", "-c", "echo every")
    assert made.strip() == "cronjob.batch/ev created"
    [row] = [line for line in kubectl("get", "cj").splitlines() if line.startswith("ev ")]
    assert row.split()[1:3] == ["@every", "2m"], row

    def stamps() -> list[int] | None:
        found = sorted(calendar.timegm(time.strptime(
            j["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"], "%Y-%m-%dT%H:%M:%SZ"))
            for j in jobs_of(kubectl, "ev"))
        return found if len(found) >= 3 else None

    # 2 minutes of the controller's clock are 6 s here. Runs count from the creation and then from the last
    # run, not from the wall clock's minutes (a run the controller reached late collapses into the next).
    created = calendar.timegm(time.strptime(cronjob(kubectl, "ev")["metadata"]["creationTimestamp"],
                                            "%Y-%m-%dT%H:%M:%SZ"))
    seen = poll("three runs of @every 2m", stamps, 90)
    assert len(set(seen)) == len(seen) and all((stamp - created) % 120 == 0 for stamp in seen), (created, seen)
    kubectl("delete", "cronjob", "ev")
    poll("its jobs deleted", lambda: not jobs_of(kubectl, "ev") or None, 60)


def test_cj8_forbid_keeps_one_run_at_a_time(kubectl: Kubectl) -> None:
    manifest = """
apiVersion: batch/v1
kind: CronJob
metadata: {name: lone}
spec:
  schedule: "* * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          terminationGracePeriodSeconds: 1
          containers: [{name: s, image: busybox, command: [sleep, "600"]}]
"""
    kubectl("apply", "-f", "-", stdin=manifest)
    poll("the first run", lambda: len((cronjob(kubectl, "lone").get("status") or {}).get("active") or []) == 1 or None, 60)
    poll("a run held back", lambda: "JobAlreadyActive" in kubectl(
        "get", "events", "--field-selector", "involvedObject.name=lone") or None, 60)
    assert len(jobs_of(kubectl, "lone")) == 1
    assert len(cronjob(kubectl, "lone")["status"]["active"]) == 1
    kubectl("delete", "cronjob", "lone")
    poll("its job deleted", lambda: not jobs_of(kubectl, "lone") or None, 60)


def test_cj2_kubectl_reports_kubernetes_refusals(kubectl: Kubectl) -> None:
    bad = kubectl.run("create", "cronjob", "bad", "--image=busybox", "--schedule=61 * * * *")
    assert bad.returncode == 1 and 'spec.schedule: Invalid value: "61 * * * *"' in bad.stderr, bad.stderr
    zone = kubectl.run("apply", "-f", "-", stdin="""
apiVersion: batch/v1
kind: CronJob
metadata: {name: zoned}
spec:
  schedule: "0 3 * * *"
  timeZone: Mars/Olympus
  jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}}}
""")
    assert zone.returncode == 1 and "spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus" \
        in zone.stderr, zone.stderr
    ok = kubectl("apply", "-f", "-", stdin="""
apiVersion: batch/v1
kind: CronJob
metadata: {name: zoned}
spec:
  schedule: "0 3 * * *"
  timeZone: Europe/Berlin
  jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}}}
""")
    assert ok.strip() == "cronjob.batch/zoned created"
    [row] = [line for line in kubectl("get", "cj").splitlines() if line.startswith("zoned ")]
    assert "0 3 * * *" in row and "Europe/Berlin" in row
    described = kubectl("describe", "cronjob", "zoned")
    assert "Schedule:                      0 3 * * *" in described, described
    assert "Concurrency Policy:            Allow" in described and "Suspend:                       False" in described
    assert "cronjob.batch/zoned" in kubectl("get", "all")
    kubectl("delete", "cronjob", "zoned")
