"""batch/v1 Jobs through the real kubectl against a real ``stowage up`` (SEMANTICS J1–J12): pods run in runc
to completion, on real volumes, and kubectl's create/wait/get/logs/describe/delete read them as they read
Kubernetes' jobs."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import pytest
import yaml

from stowage_e2e import Stowage, poll
from support import kubectl_binary
from test_kubectl_session import Kubectl, rows

pytestmark = [pytest.mark.root, pytest.mark.slow]

VERSION = "1.37"

# A dbench-style run: a claim, and a job whose pods append to it; three completions, two at a time.
CLAIM_AND_JOB = """
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: jobs-local}
provisioner: stowage.io/local
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
parameters: {fsType: ext4}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: results}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: jobs-local
  resources: {requests: {storage: 64Mi}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: writer}
spec:
  completions: 3
  parallelism: 2
  backoffLimit: 2
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: w
        image: busybox
        command: [sh, -c, 'echo "run $HOSTNAME" >> /results/runs.txt; sync']
        volumeMounts: [{name: results, mountPath: /results}]
      volumes:
      - {name: results, persistentVolumeClaim: {claimName: results}}
"""


@pytest.fixture(scope="module")
def kubectl(start_stowage: Callable[[list[Path]], Stowage], tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    kubectl_binary(VERSION)
    stowage = start_stowage([])
    return Kubectl(VERSION, stowage.kubeconfig, tmp_path_factory.mktemp("kubectl-home"))


def job(kubectl: Kubectl, name: str) -> dict:
    return json.loads(kubectl("get", "job", name, "-o", "json"))


def test_j1_kubectl_create_job_runs_to_completion_and_reads_like_kubernetes(kubectl: Kubectl) -> None:
    assert kubectl("create", "job", "hello", "--image=busybox", "--", "sh", "-c", "echo hi from the job").strip() \
        == "job.batch/hello created"
    waited = kubectl("wait", "--for=condition=complete", "job/hello", "--timeout=120s", timeout=150)
    assert waited.strip() == "job.batch/hello condition met"

    table = rows(kubectl("get", "jobs"))
    assert table[0] == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    [row] = [r for r in table[1:] if r[0] == "hello"]
    assert row[1:3] == ["Complete", "1/1"]
    wide = rows(kubectl("get", "job", "hello", "-o", "wide"))
    assert wide[0][-3:] == ["CONTAINERS", "IMAGES", "SELECTOR"] and wide[1][-2] == "busybox"

    obj = job(kubectl, "hello")
    uid = obj["metadata"]["uid"]
    # J2: the generated selector names the job's uid, and its pods carry it.
    assert obj["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert obj["spec"]["template"]["metadata"]["labels"]["job-name"] == "hello"
    assert obj["spec"]["backoffLimit"] == 6 and obj["spec"]["completionMode"] == "NonIndexed"
    status = obj["status"]
    assert status["succeeded"] == 1 and "active" not in status and status["ready"] == 0
    assert status["startTime"] <= status["completionTime"]
    complete = {c["type"]: c for c in status["conditions"]}
    assert complete["Complete"]["status"] == "True" and complete["SuccessCriteriaMet"]["status"] == "True"

    # kubectl finds the job's pod through its selector.
    assert kubectl("logs", "job/hello").strip() == "hi from the job"
    pods = rows(kubectl("get", "pods", "-l", f"batch.kubernetes.io/controller-uid={uid}"))
    assert len(pods) == 2 and pods[1][0].startswith("hello-") and pods[1][2] == "Completed"

    described = kubectl("describe", "job", "hello")
    assert "Pods Statuses:    0 Active (0 Ready) / 1 Succeeded / 0 Failed" in described, described
    assert "SuccessfulCreate" in described and "Completed" in described

    # J10: kubectl deletes in the background: the pods go with the job.
    assert kubectl("delete", "job", "hello").strip() == 'job.batch "hello" deleted from default namespace'
    poll("the job's pod removed", lambda: "No resources found" in kubectl.run(
        "get", "pods", "-l", f"batch.kubernetes.io/controller-uid={uid}").stderr or None, 60)


def test_j4_completions_and_parallelism_on_a_provisioned_volume(kubectl: Kubectl) -> None:
    applied = kubectl("apply", "-f", "-", stdin=CLAIM_AND_JOB)
    assert applied.splitlines() == ["storageclass.storage.k8s.io/jobs-local created",
                                    "persistentvolumeclaim/results created", "job.batch/writer created"]
    kubectl("wait", "--for=condition=complete", "job/writer", "--timeout=150s", timeout=180)
    [row] = [r for r in rows(kubectl("get", "jobs"))[1:] if r[0] == "writer"]
    assert row[1:3] == ["Complete", "3/3"]
    obj = job(kubectl, "writer")
    assert obj["status"]["succeeded"] == 3 and "failed" not in obj["status"]
    # Each completion's pod wrote one line to the claim's volume.
    reader = """
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  restartPolicy: Never
  containers:
  - {name: r, image: busybox, command: [cat, /results/runs.txt], volumeMounts: [{name: results, mountPath: /results}]}
  volumes: [{name: results, persistentVolumeClaim: {claimName: results}}]
"""
    kubectl("apply", "-f", "-", stdin=reader)
    kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/reader", "--timeout=120s", timeout=150)
    lines = kubectl("logs", "reader").splitlines()
    assert len(lines) == 3 and all(line.startswith("run writer-") for line in lines), lines
    kubectl("delete", "pod/reader", "job/writer", "pvc/results", "storageclass/jobs-local", timeout=180)


def test_j5_a_failing_job_stops_at_its_backoff_limit(kubectl: Kubectl) -> None:
    manifest = """
apiVersion: batch/v1
kind: Job
metadata: {name: broken}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: b, image: busybox, command: [sh, -c, 'echo failing; exit 3']}]
"""
    kubectl("apply", "-f", "-", stdin=manifest)
    waited = kubectl("wait", "--for=condition=failed", "job/broken", "--timeout=120s", timeout=150)
    assert waited.strip() == "job.batch/broken condition met"
    [row] = [r for r in rows(kubectl("get", "jobs"))[1:] if r[0] == "broken"]
    assert row[1:3] == ["Failed", "0/1"]
    status = job(kubectl, "broken")["status"]
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["reason"] == "BackoffLimitExceeded" and failed["message"] == "Job has reached the specified backoff limit"
    assert status["failed"] == 1 and "succeeded" not in status
    # Only the one pod ran: no replacement after the limit.
    pods = rows(kubectl("get", "pods", "-l", "job-name=broken"))
    assert len(pods) == 2 and pods[1][2] == "Error", pods
    events = kubectl("get", "events", "--field-selector", "involvedObject.name=broken")
    assert "BackoffLimitExceeded" in events
    kubectl("delete", "job", "broken")


def test_j11_an_indexed_job_gives_each_pod_its_index(kubectl: Kubectl) -> None:
    manifest = """
apiVersion: batch/v1
kind: Job
metadata: {name: indexed}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      containers: [{name: i, image: busybox, command: [sh, -c, 'echo "index $JOB_COMPLETION_INDEX on $(hostname)"']}]
"""
    kubectl("apply", "-f", "-", stdin=manifest)
    kubectl("wait", "--for=condition=complete", "job/indexed", "--timeout=150s", timeout=180)
    status = job(kubectl, "indexed")["status"]
    assert status["completedIndexes"] == "0-2" and status["succeeded"] == 3
    names = kubectl("get", "pods", "-l", "job-name=indexed", "-o", "jsonpath={.items[*].metadata.name}").split()
    seen = sorted(kubectl("logs", name).strip() for name in names)
    assert seen == [f"index {i} on indexed-{i}" for i in range(3)], seen
    kubectl("delete", "job", "indexed")


def test_j6_j7_deadline_and_suspend(kubectl: Kubectl) -> None:
    slow = """
apiVersion: batch/v1
kind: Job
metadata: {name: slow}
spec:
  activeDeadlineSeconds: 3
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers: [{name: s, image: busybox, command: [sleep, "600"]}]
"""
    kubectl("apply", "-f", "-", stdin=slow)
    kubectl("wait", "--for=condition=failed", "job/slow", "--timeout=120s", timeout=150)
    failed = {c["type"]: c for c in job(kubectl, "slow")["status"]["conditions"]}["Failed"]
    assert failed["reason"] == "DeadlineExceeded" and failed["message"] == "Job was active longer than specified deadline"
    # The running pod was stopped, not left running.
    poll("the deadline's pod gone", lambda: kubectl(
        "get", "pods", "-l", "job-name=slow", "-o", "jsonpath={.items[*].status.phase}").strip() in ("", "Failed") or None, 60)
    kubectl("delete", "job", "slow")

    held = """
apiVersion: batch/v1
kind: Job
metadata: {name: held}
spec:
  suspend: true
  template:
    spec:
      restartPolicy: OnFailure
      containers: [{name: h, image: busybox, command: [sh, -c, 'echo resumed']}]
"""
    kubectl("apply", "-f", "-", stdin=held)
    kubectl("wait", "--for=condition=suspended", "job/held", "--timeout=60s", timeout=90)
    [row] = [r for r in rows(kubectl("get", "jobs"))[1:] if r[0] == "held"]
    assert row[1:3] == ["Suspended", "0/1"]
    assert "No resources found" in kubectl.run("get", "pods", "-l", "job-name=held").stderr
    kubectl("patch", "job", "held", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    kubectl("wait", "--for=condition=complete", "job/held", "--timeout=120s", timeout=150)
    suspended = {c["type"]: c for c in job(kubectl, "held")["status"]["conditions"]}["Suspended"]
    assert suspended["status"] == "False" and suspended["reason"] == "JobResumed"
    assert kubectl("logs", "job/held").strip() == "resumed"
    kubectl("delete", "job", "held")


def test_j9_a_finished_job_with_a_ttl_is_deleted_with_its_pods(kubectl: Kubectl) -> None:
    manifest = """
apiVersion: batch/v1
kind: Job
metadata: {name: brief}
spec:
  ttlSecondsAfterFinished: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: b, image: busybox, command: ["true"]}]
"""
    kubectl("apply", "-f", "-", stdin=manifest)
    poll("the finished job deleted", lambda: "NotFound" in kubectl.run("get", "job", "brief").stderr or None, 120)
    poll("its pod deleted", lambda: "No resources found" in kubectl.run(
        "get", "pods", "-l", "job-name=brief").stderr or None, 60)


def test_j3_kubectl_reports_kubernetes_refusals(kubectl: Kubectl) -> None:
    always = """
apiVersion: batch/v1
kind: Job
metadata: {name: wrong}
spec:
  template:
    spec:
      containers: [{name: w, image: busybox}]
"""
    done = kubectl.run("apply", "-f", "-", stdin=always)
    assert done.returncode == 1
    assert 'spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"' in done.stderr
    kubectl("create", "job", "fixed", "--image=busybox", "--", "true")
    changed = kubectl.run("patch", "job", "fixed", "--type=merge", "-p", '{"spec":{"completions":5}}')
    assert changed.returncode == 1 and "spec.completions: Invalid value: 5: field is immutable" in changed.stderr
    kubectl("delete", "job", "fixed")


DOCS = Path(__file__).parent.parent / "api" / "k8s_docs_manifests" / "10-batch.yaml"


def documented(name: str) -> str:
    """One of the documentation's batch examples, as YAML."""
    [doc] = [d for d in yaml.safe_load_all(DOCS.read_text()) if d and d["metadata"]["name"] == name]
    return yaml.safe_dump(doc)


def test_j13_the_documented_pod_failure_policy_fails_the_job_on_exit_code_42(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", stdin=documented("job-pod-failure-policy-example"))
    kubectl("wait", "--for=condition=failed", "job/job-pod-failure-policy-example", "--timeout=120s", timeout=150)
    status = job(kubectl, "job-pod-failure-policy-example")["status"]
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["reason"] == "PodFailurePolicy"
    assert re.fullmatch(r"Container main for pod default/job-pod-failure-policy-example-\w+ failed with exit code 42 "
                        r"matching FailJob rule at index 0", failed["message"]), failed["message"]
    # The job stopped at the first failure: far fewer than its 12 completions ran, none succeeded.
    assert "succeeded" not in status and 1 <= status["failed"] <= 3
    kubectl("delete", "job", "job-pod-failure-policy-example")


def test_j11_the_documented_indexed_job_reverses_one_word_per_index(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", stdin=documented("indexed-job"))
    kubectl("wait", "--for=condition=complete", "job/indexed-job", "--timeout=150s", timeout=180)
    assert job(kubectl, "indexed-job")["status"]["completedIndexes"] == "0-4"
    pods = json.loads(kubectl("get", "pods", "-l", "job-name=indexed-job", "-o", "json"))["items"]
    by_index = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p["metadata"]["name"]
                for p in pods if p["status"]["phase"] == "Succeeded"}
    words = {i: kubectl("logs", name, "-c", "worker").strip() for i, name in by_index.items()}
    assert words == {"0": "oof", "1": "rab", "2": "zab", "3": "xuq", "4": "zyx"}, words
    kubectl("delete", "job", "indexed-job")


def test_j15_the_documented_backoff_limit_per_index_fails_only_the_even_indexes(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", stdin=documented("job-backoff-limit-per-index-example"))
    kubectl("wait", "--for=condition=failed", "job/job-backoff-limit-per-index-example", "--timeout=150s", timeout=180)
    status = job(kubectl, "job-backoff-limit-per-index-example")["status"]
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert (failed["reason"], failed["message"]) == ("FailedIndexes", "Job has failed indexes")
    assert status["failedIndexes"] == "0,2,4,6,8" and status["completedIndexes"] == "1,3,5,7,9"
    # Each even index ran twice (its limit is one failure), each odd one once.
    assert status["failed"] == 10 and status["succeeded"] == 5
    pods = json.loads(kubectl("get", "pods", "-l", "job-name=job-backoff-limit-per-index-example", "-o", "json"))
    retries = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"]
                     for p in pods["items"] if p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "0")
    assert retries == ["0", "1"], retries
    kubectl("delete", "job", "job-backoff-limit-per-index-example")
