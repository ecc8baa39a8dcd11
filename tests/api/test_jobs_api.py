"""batch/v1 Jobs through the API server: Kubernetes' defaults, the generated selector, and its refusals
(SEMANTICS J1–J3, J10)."""
from __future__ import annotations

from typing import Any

import httpx

from apiobjects import causes

JOBS = "/apis/batch/v1/namespaces/default/jobs"


def a_job(name: str, **spec: Any) -> dict[str, Any]:
    template = {"metadata": {"labels": {"app": name}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": template, **spec}}


def test_j1_j2_defaults_and_a_selector_naming_the_jobs_uid(http: httpx.Client) -> None:
    made = http.post(JOBS, json=a_job("defaults"))
    assert made.status_code == 201, made.text
    job = made.json()
    uid, spec = job["metadata"]["uid"], job["spec"]
    assert {k: spec[k] for k in ("completions", "parallelism", "backoffLimit", "completionMode", "suspend",
                                 "podReplacementPolicy", "manualSelector")} == {
        "completions": 1, "parallelism": 1, "backoffLimit": 6, "completionMode": "NonIndexed", "suspend": False,
        "podReplacementPolicy": "TerminatingOrFailed", "manualSelector": False}
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    wanted = {"app": "defaults", "controller-uid": uid, "batch.kubernetes.io/controller-uid": uid,
              "job-name": "defaults", "batch.kubernetes.io/job-name": "defaults"}
    assert spec["template"]["metadata"]["labels"] == wanted
    # As Kubernetes, where defaulting shares the template's label map with the job.
    assert job["metadata"]["labels"] == wanted
    assert http.get(f"{JOBS}/defaults").json()["spec"] == spec
    # A work queue: parallelism alone leaves completions unset.
    queue = http.post(JOBS, json=a_job("queue", parallelism=3)).json()["spec"]
    assert "completions" not in queue and queue["parallelism"] == 3


def test_j2_a_selector_of_ones_own_needs_manual_selector(http: httpx.Client) -> None:
    own = {"matchLabels": {"app": "mine"}}
    assert causes(http.post(JOBS, json=a_job("mine", selector=own))) == [
        'spec.selector: Invalid value: {"matchLabels":{"app":"mine"}}: `selector` not auto-generated']
    made = http.post(JOBS, json=a_job("mine", selector=own, manualSelector=True))
    assert made.status_code == 201, made.text
    assert made.json()["spec"]["selector"] == own and "job-name" not in made.json()["spec"]["template"]["metadata"]["labels"]
    assert causes(http.post(JOBS, json=a_job("nosel", manualSelector=True))) == ["spec.selector: Required value"]
    wrong = a_job("named")
    wrong["spec"]["template"]["metadata"]["labels"]["job-name"] = "other"
    assert causes(http.post(JOBS, json=wrong)) == ["spec.template.metadata.labels[job-name]: Invalid value: \"other\": "
                                                   "must be 'named'"]


def test_j3_refusals_name_the_field_and_the_reason(http: httpx.Client) -> None:
    always = a_job("always")
    always["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    assert causes(http.post(JOBS, json=always)) == [
        'spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"']
    assert causes(http.post(JOBS, json=a_job("indexed", completionMode="Indexed", parallelism=2))) == [
        "spec.completions: Required value: when completion mode is Indexed"]
    assert causes(http.post(JOBS, json=a_job("negative", backoffLimit=-1, parallelism=-2))) == [
        "spec.parallelism: Invalid value: -2: must be greater than or equal to 0",
        "spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0"]
    assert causes(http.post(JOBS, json=a_job("mode", completionMode="Sometimes"))) == [
        'spec.completionMode: Unsupported value: "Sometimes": supported values: "NonIndexed", "Indexed"']
    long_name = "x" * 62
    assert causes(http.post(JOBS, json=a_job(long_name, completionMode="Indexed", completions=10))) == [
        f"metadata.name: Invalid value: \"{long_name}\": will not able to create pod with invalid DNS label: "
        f"{long_name}-9"]
    # Nothing of a refused job was stored.
    assert [j["metadata"]["name"] for j in http.get(JOBS).json()["items"]
            if j["metadata"]["name"] in ("always", "indexed", "negative", "mode", long_name)] == []


def test_j3_what_decides_the_pods_cannot_change_but_parallelism_and_suspend_can(http: httpx.Client) -> None:
    assert http.post(JOBS, json=a_job("fixed", completions=4, parallelism=2)).status_code == 201
    merge = {"Content-Type": "application/merge-patch+json"}
    assert causes(http.patch(f"{JOBS}/fixed", json={"spec": {"completions": 5}}, headers=merge)) == [
        "spec.completions: Invalid value: 5: field is immutable"]
    changed = http.patch(f"{JOBS}/fixed", json={"spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "debian:12"}]}}}}, headers=merge)
    assert [c.split(":")[0] for c in causes(changed)] == ["spec.template"]
    assert "field is immutable" in causes(changed)[0]
    ok = http.patch(f"{JOBS}/fixed", json={"spec": {"parallelism": 3, "suspend": True}}, headers=merge)
    assert ok.status_code == 200, ok.text
    assert (ok.json()["spec"]["parallelism"], ok.json()["spec"]["suspend"]) == (3, True)


def test_j10_a_delete_without_a_propagation_policy_orphans_the_pods(http: httpx.Client) -> None:
    """batch/v1's default, as Kubernetes: the job goes, its pods stay, released from it."""
    job = http.post(JOBS, json=a_job("leaver")).json()
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "leaver-pod", "ownerReferences": [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "leaver", "uid": job["metadata"]["uid"], "controller": True}]},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}
    assert http.post("/api/v1/namespaces/default/pods", json=pod).status_code == 201
    deleted = http.delete(f"{JOBS}/leaver")
    assert deleted.status_code == 200, deleted.text
    assert "orphan" in deleted.json()["metadata"]["finalizers"]


CRONJOBS = "/apis/batch/v1/namespaces/default/cronjobs"


def a_cronjob(name: str, **spec: Any) -> dict[str, Any]:
    job_template = {"spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                                                   "containers": [{"name": "c", "image": "busybox"}]}}}}
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": job_template, **spec}}


def test_cj1_cronjob_defaults_leave_the_job_spec_to_the_jobs(http: httpx.Client) -> None:
    made = http.post(CRONJOBS, json=a_cronjob("nightly"))
    assert made.status_code == 201, made.text
    spec = made.json()["spec"]
    assert (spec["concurrencyPolicy"], spec["suspend"], spec["successfulJobsHistoryLimit"],
            spec["failedJobsHistoryLimit"]) == ("Allow", False, 3, 1)
    job_spec = spec["jobTemplate"]["spec"]
    # Kubernetes defaults the template's pods, not its job spec: a job made from it gets those when created.
    assert "backoffLimit" not in job_spec and "completions" not in job_spec and "selector" not in job_spec
    assert job_spec["template"]["spec"]["dnsPolicy"] == "ClusterFirst"


def test_cj2_cj3_cronjob_refusals(http: httpx.Client) -> None:
    assert causes(http.post(CRONJOBS, json=a_cronjob("nosched", schedule=""))) == ["spec.schedule: Required value"]
    assert causes(http.post(CRONJOBS, json=a_cronjob("tz", schedule="CRON_TZ=UTC 0 * * * *"))) == [
        'spec.schedule: Invalid value: "CRON_TZ=UTC 0 * * * *": must have 5 fields (minute hour day-of-month month '
        'day-of-week), not 6',
        'spec.schedule: Invalid value: "CRON_TZ=UTC 0 * * * *": cannot use TZ or CRON_TZ in schedule, use timeZone '
        'field instead']
    # CJ2: robfig/cron's @every descriptor with a Go duration, refused in its words when the duration is bad.
    assert causes(http.post(CRONJOBS, json=a_cronjob("every", schedule="@every 5x"))) == [
        'spec.schedule: Invalid value: "@every 5x": failed to parse duration @every 5x: time: unknown unit "x" in '
        'duration "5x"']
    every = http.post(CRONJOBS, json=a_cronjob("every", schedule="@every 1h30m"))
    assert every.status_code == 201 and every.json()["spec"]["schedule"] == "@every 1h30m", every.text
    assert causes(http.post(CRONJOBS, json=a_cronjob("zone", timeZone="Local"))) == [
        'spec.timeZone: Invalid value: "Local": timeZone must be an explicit time zone as defined in '
        'https://www.iana.org/time-zones']
    assert causes(http.post(CRONJOBS, json=a_cronjob("policy", concurrencyPolicy="Sometimes"))) == [
        'spec.concurrencyPolicy: Unsupported value: "Sometimes": supported values: "Allow", "Forbid", "Replace"']
    assert causes(http.post(CRONJOBS, json=a_cronjob("x" * 53))) == [
        f'metadata.name: Invalid value: "{"x" * 53}": must be no more than 52 characters']
    selected = a_cronjob("selected")
    selected["spec"]["jobTemplate"]["spec"]["selector"] = {"matchLabels": {"a": "b"}}
    assert causes(http.post(CRONJOBS, json=selected)) == [
        'spec.jobTemplate.spec.selector: Invalid value: {"matchLabels":{"a":"b"}}: `selector` will be auto-generated']
    always = a_cronjob("always")
    always["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    assert causes(http.post(CRONJOBS, json=always)) == [
        'spec.jobTemplate.spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"']


def test_j1_a_status_sent_with_a_new_job_is_dropped(http: httpx.Client) -> None:
    """As Kubernetes' job strategy: only the controller writes a job's status; a Complete condition sent by
    its creator would otherwise keep the job from ever running a pod."""
    sent = a_job("claims-done")
    sent["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    made = http.post(JOBS, json=sent)
    assert made.status_code == 201, made.text
    assert not made.json().get("status")
    assert not http.get(f"{JOBS}/claims-done").json().get("status")
