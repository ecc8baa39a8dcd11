"""Sidecar containers (init containers with ``restartPolicy: Always``, SEMANTICS SD2-SD5) in real runc pods."""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from storage.agent.runtime import StaticEnvSources

NO_SOURCES = StaticEnvSources({}, {})
# A shell that runs until SIGTERM, then records that it got one in /v/stops.
LOOP = "while :; do sleep 1 & wait $!; done"


def sidecar(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "debian:12", "restartPolicy": "Always", "command": ["sh", "-c", script],
            "volumeMounts": [{"name": "v", "mountPath": "/v"}], **extra}


def container(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "debian:12", "command": ["sh", "-c", script],
            "volumeMounts": [{"name": "v", "mountPath": "/v"}], **extra}


def stops_on_term(name: str) -> str:
    return f"trap 'echo {name} >> /v/stops; exit 0' TERM; {LOOP}"


def make_pod(name: str, init: list[dict[str, Any]], containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())},
            "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 5, "initContainers": init,
                     "containers": containers, **spec}}


def uid_of(pod: dict[str, Any]) -> str:
    return str(pod["metadata"]["uid"])


def status_of(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in status.get("initContainerStatuses", []) + status["containerStatuses"] if c["name"] == name)


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def state(status: dict[str, Any], name: str) -> str:
    return next(iter(status_of(status, name)["state"]))


def test_sd2_sd3_a_sidecar_runs_beside_the_init_containers_after_it_and_its_readiness_gates_the_pods(harness, tmp_path):
    """SD2: the sidecar counts as done for the init sequence once started, so the init container after it runs
    while it does (and sees it), then the main container; SD3: the sidecar's readinessProbe is part of the
    pod's Ready, and its status is in initContainerStatuses."""
    rt = harness.runtime()
    pod = make_pod("web", [
        sidecar("proxy", f"touch /v/proxy-up; {LOOP}",
                readinessProbe={"exec": {"command": ["test", "-f", "/v/proxy-ready"]}, "periodSeconds": 1}),
        container("prep", "test -f /v/proxy-up && echo saw-proxy > /v/prep"),
    ], [container("main", LOOP)])
    rt.sync_pod(pod, {"v": str(tmp_path)}, NO_SOURCES, [])
    status = harness.wait(rt, uid_of(pod), lambda s: s["phase"] == "Running" and state(s, "main") == "running",
                          "the main container running")
    assert (tmp_path / "prep").read_text() == "saw-proxy\n"
    assert condition(status, "Initialized")["status"] == "True"
    proxy = status_of(status, "proxy")
    assert "running" in proxy["state"] and proxy["started"] is True and proxy["restartCount"] == 0
    assert status_of(status, "prep")["state"]["terminated"]["exitCode"] == 0
    # The sidecar is not ready: neither is the pod, and the condition names it.
    status = harness.wait(rt, uid_of(pod), lambda s: status_of(s, "main")["ready"], "main ready")
    assert status_of(status, "proxy")["ready"] is False
    ready = condition(status, "Ready")
    assert ready["status"] == "False" and ready["message"] == "containers with unready status: [proxy]"
    (tmp_path / "proxy-ready").touch()
    status = harness.wait(rt, uid_of(pod), lambda s: condition(s, "Ready")["status"] == "True", "Ready")
    assert status_of(status, "proxy")["ready"] is True
    assert condition(status, "ContainersReady")["status"] == "True"


def test_sd2_a_sidecars_startup_probe_holds_the_main_container_back(harness, tmp_path):
    """SD2: a sidecar with a startupProbe is done for the sequence only once the probe succeeded."""
    rt = harness.runtime()
    pod = make_pod("slow", [sidecar("proxy", LOOP, startupProbe={
        "exec": {"command": ["test", "-f", "/v/up"]}, "periodSeconds": 1, "failureThreshold": 600})],
        [container("main", f"touch /v/main-ran; {LOOP}")])
    rt.sync_pod(pod, {"v": str(tmp_path)}, NO_SOURCES, [])
    harness.wait(rt, uid_of(pod), lambda s: state(s, "proxy") == "running", "the sidecar running")
    time.sleep(1.5)  # a couple of probe periods: the main container must still wait
    status = rt.pod_status(uid_of(pod))
    assert status is not None and state(status, "main") == "waiting" and not (tmp_path / "main-ran").exists()
    assert status["phase"] == "Pending" and status_of(status, "proxy")["started"] is False
    initialized = condition(status, "Initialized")
    assert initialized["status"] == "False"
    assert initialized["message"] == "containers with incomplete status: [proxy]"
    (tmp_path / "up").touch()
    status = harness.wait(rt, uid_of(pod), lambda s: state(s, "main") == "running", "the main container running")
    assert status_of(status, "proxy")["started"] is True and condition(status, "Initialized")["status"] == "True"


def test_sd3_a_sidecar_that_exits_is_restarted_while_the_main_container_runs_on(harness, tmp_path):
    """SD3: restarted whenever it ends, even with exit code 0 in a restartPolicy Never pod, with the back-off;
    the main container is not touched and the pod stays Running and initialized."""
    rt = harness.runtime()
    pod = make_pod("flaky", [sidecar("shipper", "echo run >> /v/runs; sleep 0.3; exit 0")],
                   [container("main", LOOP)], restartPolicy="Never")
    rt.sync_pod(pod, {"v": str(tmp_path)}, NO_SOURCES, [])
    status = harness.wait(rt, uid_of(pod), lambda s: status_of(s, "shipper")["restartCount"] >= 2,
                          "the sidecar's restarts")
    main = status_of(status, "main")
    assert "running" in main["state"] and main["restartCount"] == 0
    assert status["phase"] == "Running" and condition(status, "Initialized")["status"] == "True"
    assert status_of(status, "shipper")["lastState"]["terminated"]["exitCode"] == 0
    assert len((tmp_path / "runs").read_text().split()) >= 3


def test_sd4_a_job_pod_succeeds_once_its_main_container_exits_0_and_its_sidecars_are_stopped_last_first(harness, tmp_path):
    """SD4: the main container's exit 0 (restartPolicy Never) stops the sidecars with SIGTERM, the last declared
    first; the phase is the main container's (the sidecars' exit codes do not count), final only then."""
    rt = harness.runtime()
    pod = make_pod("job", [sidecar("first", stops_on_term("first")), sidecar("second", stops_on_term("second"))],
                   [container("work", "sleep 0.5; echo done > /v/work")], restartPolicy="Never")
    rt.sync_pod(pod, {"v": str(tmp_path)}, NO_SOURCES, [])
    status = harness.wait(rt, uid_of(pod), lambda s: s["phase"] == "Succeeded", "Succeeded")
    assert (tmp_path / "stops").read_text() == "second\nfirst\n"
    assert status_of(status, "work")["state"]["terminated"]["exitCode"] == 0
    for name in ("first", "second"):
        assert "terminated" in status_of(status, name)["state"], status_of(status, name)
        assert status_of(status, name)["restartCount"] == 0
    assert condition(status, "Initialized")["status"] == "True"


def test_sd4_a_failed_job_pod_is_failed_and_a_sidecar_ignoring_sigterm_is_killed_at_the_grace_period(harness, tmp_path):
    """SD4: a sidecar that ignores SIGTERM (a PID 1 without a handler) is killed when the grace period ends; the
    pod is Failed from its main container's exit code, whatever the sidecar's."""
    rt = harness.runtime()
    pod = make_pod("failing", [sidecar("stubborn", "exec sleep 1000")], [container("work", "exit 3")],
                   restartPolicy="Never", terminationGracePeriodSeconds=1)
    rt.sync_pod(pod, {"v": str(tmp_path)}, NO_SOURCES, [])
    status = harness.wait(rt, uid_of(pod), lambda s: s["phase"] == "Failed", "Failed")
    assert status_of(status, "work")["state"]["terminated"]["exitCode"] == 3
    assert status_of(status, "stubborn")["state"]["terminated"]["exitCode"] == 137


def test_sd5_deletion_stops_the_main_container_first_then_the_sidecars_last_declared_first(harness, tmp_path):
    """SD5: the sidecars get their SIGTERM only once the main container has ended (it takes its time here),
    then one after the other, the last declared first."""
    rt = harness.runtime()
    pod = make_pod("deleted", [sidecar("first", stops_on_term("first")), sidecar("second", stops_on_term("second"))],
                   [container("main", f"trap 'sleep 0.5; echo main >> /v/stops; exit 0' TERM; {LOOP}")])
    rt.sync_pod(pod, {"v": str(tmp_path)}, NO_SOURCES, [])
    harness.wait(rt, uid_of(pod), lambda s: state(s, "main") == "running", "the main container running")
    final = rt.kill_pod(uid_of(pod), 10)
    assert final is not None
    assert Path(tmp_path / "stops").read_text() == "main\nsecond\nfirst\n"
    assert all("terminated" in status_of(final, n)["state"] for n in ("main", "first", "second"))
