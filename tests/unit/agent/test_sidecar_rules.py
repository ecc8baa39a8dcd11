"""SD2-SD5: the pod worker's decisions about sidecar containers, without runc."""
from __future__ import annotations

from storage.agent.runtime.sidecars import (any_regular_started, incomplete_inits, is_sidecar, next_sidecar_to_stop,
                                            regular_containers_done)

SIDECAR = {"name": "logshipper", "restartPolicy": "Always"}
INIT = {"name": "prep"}


def running(name: str, started: bool) -> dict:
    return {"name": name, "state": {"running": {"startedAt": "t"}}, "started": started}


def terminated(name: str, code: int) -> dict:
    return {"name": name, "state": {"terminated": {"exitCode": code}}, "started": False}


def waiting(name: str) -> dict:
    return {"name": name, "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "started": False}


def test_sd1_only_restart_policy_always_makes_a_sidecar() -> None:
    assert is_sidecar(SIDECAR)
    assert not is_sidecar(INIT)
    assert not is_sidecar({"name": "x", "restartPolicy": "Never"})


def test_sd2_a_sidecar_is_done_for_initialization_once_started_a_regular_one_once_completed() -> None:
    specs = [SIDECAR, INIT]
    assert incomplete_inits(specs, [running("logshipper", False), waiting("prep")]) == ["logshipper", "prep"]
    assert incomplete_inits(specs, [running("logshipper", True), running("prep", False)]) == ["prep"]
    assert incomplete_inits(specs, [running("logshipper", True), terminated("prep", 1)]) == ["prep"]
    assert incomplete_inits(specs, [running("logshipper", True), terminated("prep", 0)]) == []
    # A sidecar that ended (and waits to restart) is not started now.
    assert incomplete_inits(specs, [waiting("logshipper"), terminated("prep", 0)]) == ["logshipper"]


def test_sd2_a_regular_container_that_ran_keeps_the_pod_initialized() -> None:
    assert any_regular_started([running("main", True)])
    assert any_regular_started([terminated("main", 0)])
    assert not any_regular_started([waiting("main")])
    assert not any_regular_started([])


def test_sd4_sidecars_stop_once_every_regular_container_has_ended_for_good() -> None:
    assert regular_containers_done("Never", False, [True, True])
    assert regular_containers_done("OnFailure", False, [True])
    assert not regular_containers_done("Never", False, [True, False])
    assert not regular_containers_done("Always", False, [True])  # never the case: such containers restart
    assert not regular_containers_done("Never", False, [])
    assert regular_containers_done("Never", True, [False])  # an init container failed for good


def test_sd4_sd5_sidecars_stop_last_declared_first() -> None:
    order = [("a", True), ("b", True), ("c", True)]
    assert next_sidecar_to_stop(order) == "c"
    assert next_sidecar_to_stop([("a", True), ("b", True), ("c", False)]) == "b"
    assert next_sidecar_to_stop([("a", False), ("b", False)]) is None
