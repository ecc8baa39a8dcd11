"""AA4: seccomp and AppArmor profile fields and the AppArmor annotations, refused with Kubernetes' words
(validateSeccompProfileField, validateAppArmorProfileField, ValidateAppArmorPodAnnotations)."""
from __future__ import annotations

from typing import Any

import pytest

from storage.api.validation import validate
from storage.errors import Invalid


def pod(security: dict[str, Any] | None = None, container_security: dict[str, Any] | None = None,
        annotations: dict[str, str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": "busybox"}
    if container_security is not None:
        container["securityContext"] = container_security
    spec: dict[str, Any] = {"containers": [container]}
    if security is not None:
        spec["securityContext"] = security
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p1", "namespace": "default", "annotations": annotations or {}}, "spec": spec}


def messages(obj: dict[str, Any]) -> list[str]:
    with pytest.raises(Invalid) as exc:
        validate(obj, None)
    return [e.message() for e in exc.value.errors]


def test_aa4_profile_fields() -> None:
    validate(pod({"seccompProfile": {"type": "RuntimeDefault"}, "appArmorProfile": {"type": "RuntimeDefault"}}))
    validate(pod(container_security={"appArmorProfile": {"type": "Localhost", "localhostProfile": "k8s-deny"}}))
    assert messages(pod({"appArmorProfile": {"type": "Localhost"}})) == [
        "spec.securityContext.appArmorProfile.localhostProfile: Required value: must be set when AppArmor type is "
        "Localhost"]
    assert messages(pod(container_security={"seccompProfile": {"type": "Sometimes"}})) == [
        'spec.containers[0].securityContext.seccompProfile.type: Unsupported value: "Sometimes": supported values: '
        '"Unconfined", "RuntimeDefault", "Localhost"']
    assert messages(pod({"appArmorProfile": {"type": "RuntimeDefault", "localhostProfile": "x"}})) == [
        'spec.securityContext.appArmorProfile.localhostProfile: Invalid value: "x": can only be set when AppArmor '
        'type is Localhost']
    assert messages(pod({"seccompProfile": {}})) == [
        "spec.securityContext.seccompProfile.type: Required value: type is required when seccompProfile is set"]
    assert messages(pod({"seccompProfile": {"type": "Localhost", "localhostProfile": "../etc/x"}})) == [
        "spec.securityContext.seccompProfile.localhostProfile: Invalid value: \"../etc/x\": must not contain '..'"]


def test_aa4_apparmor_annotations() -> None:
    validate(pod(annotations={"container.apparmor.security.beta.kubernetes.io/c": "localhost/k8s-deny"}))
    assert messages(pod(annotations={"container.apparmor.security.beta.kubernetes.io/c": "enforce-please"})) == [
        'metadata.annotations[container.apparmor.security.beta.kubernetes.io/c]: Invalid value: "enforce-please": '
        'invalid AppArmor profile name: "enforce-please"']
    assert messages(pod(annotations={"container.apparmor.security.beta.kubernetes.io/x": "runtime/default"})) == [
        'metadata.annotations[container.apparmor.security.beta.kubernetes.io/x]: Invalid value: "x": container not '
        'found']
