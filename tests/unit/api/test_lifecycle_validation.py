"""SEMANTICS LH4: a container's lifecycle hooks are validated as Kubernetes 1.30's validateHandler does."""
from __future__ import annotations

from typing import Any

import pytest

from storage.api.defaults import apply_defaults
from storage.api.validation import validate
from storage.errors import Invalid


def _pod(lifecycle: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return apply_defaults({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
                           "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "9"],
                                                    "lifecycle": lifecycle}], **spec}})


def _errors(pod: dict[str, Any]) -> list[str]:
    with pytest.raises(Invalid) as caught:
        validate(pod)
    return [e.message() for e in caught.value.errors]


def test_lh4_one_handler_type_per_hook() -> None:
    assert _errors(_pod({"postStart": {}})) == [
        "spec.containers[0].lifecycle.postStart: Required value: must specify a handler type"]
    assert _errors(_pod({"preStop": {"exec": {"command": ["true"]}, "sleep": {"seconds": 1}}})) == [
        "spec.containers[0].lifecycle.preStop.sleep: Forbidden: may not specify more than 1 handler type"]


def test_lh4_a_sleep_fits_in_the_grace_period() -> None:
    assert _errors(_pod({"preStop": {"sleep": {"seconds": 40}}})) == [
        "spec.containers[0].lifecycle.preStop.sleep: Invalid value: 40: must be greater than 0 and less than "
        "terminationGracePeriodSeconds (30)"]
    assert _errors(_pod({"preStop": {"sleep": {"seconds": 0}}}, terminationGracePeriodSeconds=5)) == [
        "spec.containers[0].lifecycle.preStop.sleep: Invalid value: 0: must be greater than 0 and less than "
        "terminationGracePeriodSeconds (5)"]
    validate(_pod({"preStop": {"sleep": {"seconds": 5}}, "postStart": {"httpGet": {"port": 80}}},
                  terminationGracePeriodSeconds=5))
