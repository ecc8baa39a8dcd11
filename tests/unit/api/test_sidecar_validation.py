"""SD1: a container's own restartPolicy, and what a sidecar may have that a regular init container may not,
refused with Kubernetes' words."""
from __future__ import annotations

import pytest

from storage.api.validation import validate
from storage.errors import Invalid

PROBE = {"exec": {"command": ["true"]}}
HOOK = {"exec": {"command": ["true"]}}


def pod(init: list[dict], containers: list[dict] | None = None, **spec: object) -> dict:
    body = {"initContainers": init, "containers": containers or [{"name": "main", "image": "busybox"}], **spec}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "namespace": "default"}, "spec": body}


def messages(obj: dict) -> list[str]:
    with pytest.raises(Invalid) as exc:
        validate(obj, None)
    return [e.message() for e in exc.value.errors]


def test_sd1_a_sidecar_may_have_probes_and_lifecycle_hooks() -> None:
    sidecar = {"name": "logshipper", "image": "alpine", "restartPolicy": "Always", "livenessProbe": PROBE,
               "readinessProbe": PROBE, "startupProbe": PROBE, "lifecycle": {"postStart": HOOK, "preStop": HOOK}}
    validate(pod([sidecar]), None)  # no error
    validate(pod([sidecar], restartPolicy="Never"), None)  # a Job's pod too


def test_sd1_a_regular_init_container_may_not_have_probes_or_hooks() -> None:
    init = {"name": "prep", "image": "alpine", "livenessProbe": PROBE, "readinessProbe": PROBE,
            "startupProbe": PROBE, "lifecycle": {"preStop": HOOK}}
    assert messages(pod([init])) == [
        f"spec.initContainers[0].{field}: Forbidden: may not be set for init containers without restartPolicy=Always"
        for field in ("livenessProbe", "readinessProbe", "startupProbe", "lifecycle")]


def test_sd1_restart_policy_is_always_on_init_containers_and_absent_elsewhere() -> None:
    assert messages(pod([{"name": "prep", "image": "alpine", "restartPolicy": "OnFailure"}])) == [
        'spec.initContainers[0].restartPolicy: Unsupported value: "OnFailure": supported values: "Always"']
    assert messages(pod([], [{"name": "main", "image": "busybox", "restartPolicy": "Always"}])) == [
        "spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers"]


def test_sd1_a_sidecars_probes_are_checked_as_a_containers() -> None:
    sidecar = {"name": "s", "image": "alpine", "restartPolicy": "Always",
               "livenessProbe": {"exec": {"command": ["true"]}, "successThreshold": 2}}
    assert messages(pod([sidecar])) == ["spec.initContainers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"]
