"""`kubectl get pods` columns as kube-apiserver's printPod computes them (SEMANTICS K8): the first init
container not done names the state, sidecars count among the containers, a gated pod shows SchedulingGated."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from storage.api.printing import _pod

NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=timezone.utc)


def _row(spec: dict[str, Any], status: dict[str, Any], **meta: Any) -> list[str]:
    obj = {"metadata": {"name": "p", "creationTimestamp": "2026-12-07T11:00:00Z", **meta}, "spec": spec,
           "status": status}
    return _pod(obj, NOW)[1:4]


SPEC = {"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "c"}]}
DONE = {"terminated": {"exitCode": 0, "reason": "Completed"}}


def test_k20_init_containers_name_the_state_until_they_are_done() -> None:
    running = {"phase": "Pending", "initContainerStatuses": [
        {"name": "i1", "state": DONE}, {"name": "i2", "state": {"running": {}}}],
        "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "PodInitializing"}}}]}
    assert _row(SPEC, running) == ["0/1", "Init:1/2", "0"]
    crashing = {"phase": "Pending", "initContainerStatuses": [
        {"name": "i1", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
         "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-12-07T11:58:00Z"}}}]}
    assert _row(SPEC, crashing) == ["0/1", "Init:CrashLoopBackOff", "3 (2m ago)"]
    failed = {"phase": "Failed", "initContainerStatuses": [{"name": "i1", "state": {"terminated": {"exitCode": 2}}}]}
    assert _row(SPEC, failed) == ["0/1", "Init:ExitCode:2", "0"]
    started = {"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"},
                                                  {"type": "Ready", "status": "True"}],
               "initContainerStatuses": [{"name": "i1", "state": DONE}, {"name": "i2", "state": DONE}],
               "containerStatuses": [{"name": "c", "ready": True, "state": {"running": {}}}]}
    assert _row(SPEC, started) == ["1/1", "Running", "0"]


def test_k20_sidecars_count_as_containers_and_do_not_hold_the_state() -> None:
    spec = {"initContainers": [{"name": "log", "restartPolicy": "Always"}], "containers": [{"name": "c"}]}
    status = {"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
              "initContainerStatuses": [{"name": "log", "started": True, "ready": True, "restartCount": 1,
                                         "state": {"running": {}},
                                         "lastState": {"terminated": {"exitCode": 1,
                                                                      "finishedAt": "2026-12-07T11:00:00Z"}}}],
              "containerStatuses": [{"name": "c", "ready": True, "state": {"running": {}}}]}
    assert _row(spec, status) == ["2/2", "Running", "1 (60m ago)"]


def test_k20_gates_completion_and_deletion() -> None:
    gated = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                                                 "reason": "SchedulingGated"}]}
    assert _row({"containers": [{"name": "c"}]}, gated) == ["0/1", "SchedulingGated", "0"]
    two = {"containers": [{"name": "a"}, {"name": "b"}]}
    half = {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}], "containerStatuses": [
        {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        {"name": "b", "ready": True, "state": {"running": {}}}]}
    assert _row(two, half) == ["1/2", "NotReady", "0"]
    succeeded = {"phase": "Succeeded", "containerStatuses": [{"name": "c", "state": DONE}]}
    deleted = "2026-12-07T11:59:00Z"
    assert _row({"containers": [{"name": "c"}]}, succeeded, deletionTimestamp=deleted)[1] == "Completed"
    running = {"phase": "Running", "containerStatuses": [{"name": "c", "ready": True, "state": {"running": {}}}]}
    assert _row({"containers": [{"name": "c"}]}, running, deletionTimestamp=deleted)[1] == "Terminating"
