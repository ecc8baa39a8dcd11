"""The pure quota and limit-range rules (SEMANTICS QL2-QL7)."""
from __future__ import annotations

from fractions import Fraction
from typing import Any

from storage.api import quota
from storage.controllers.resourcequota import calculate_changes

GI = 1024 ** 3


def _claim(name: str, size: str, cls: str | None = "gold", **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"resources": {"requests": {"storage": size}}}
    if cls is not None:
        spec["storageClassName"] = cls
    return {"metadata": {"name": name, "namespace": "ns", **extra}, "spec": spec}


def _quota(hard: dict[str, str], used: dict[str, str] | None) -> dict[str, Any]:
    status: dict[str, Any] = {"hard": hard}
    if used is not None:
        status["used"] = used
    return {"metadata": {"name": "q1", "namespace": "ns"}, "spec": {"hard": hard}, "status": status}


def test_ql3_claim_charges_storage_class_and_counts() -> None:
    assert quota.usage("persistentvolumeclaims", _claim("a", "5Gi")) == {
        "count/persistentvolumeclaims": 1, "persistentvolumeclaims": 1, "requests.storage": 5 * GI,
        "gold.storageclass.storage.k8s.io/requests.storage": 5 * GI,
        "gold.storageclass.storage.k8s.io/persistentvolumeclaims": 1,
    }


def test_ql3_object_counts_and_finished_pods() -> None:
    assert quota.usage("deployments", {"metadata": {"name": "d"}}) == {"count/deployments.apps": 1}
    assert quota.usage("configmaps", {"metadata": {"name": "c"}}) == {"count/configmaps": 1, "configmaps": 1}
    assert quota.usage("pods", {"status": {"phase": "Succeeded"}}) == {}
    assert quota.resource_of("count/deployments.apps") == "deployments"
    assert quota.resource_of("gold.storageclass.storage.k8s.io/requests.storage") == "persistentvolumeclaims"
    assert quota.resource_of("requests.cpu") is None


def test_ql4_exceeded_quota_message_is_kubernetes_wording() -> None:
    q = _quota({"requests.storage": "10Gi"}, {"requests.storage": "8Gi"})
    used, refusal = quota.charge(q, quota.delta("persistentvolumeclaims", _claim("data", "5Gi"), None))
    assert used is None
    assert refusal == ("exceeded quota: q1, requested: requests.storage=5Gi, used: requests.storage=8Gi, "
                       "limited: requests.storage=10Gi")


def test_ql4_charge_within_quota_adds_to_used() -> None:
    q = _quota({"requests.storage": "10Gi", "persistentvolumeclaims": "2"},
               {"requests.storage": "8Gi", "persistentvolumeclaims": "1"})
    used, refusal = quota.charge(q, quota.delta("persistentvolumeclaims", _claim("data", "2Gi"), None))
    assert refusal is None
    assert used == {"requests.storage": "10Gi", "persistentvolumeclaims": "2"}


def test_ql4_quota_without_used_refuses_as_status_unknown() -> None:
    _, refusal = quota.charge(_quota({"requests.storage": "1Gi"}, None), {"requests.storage": Fraction(1)})
    assert refusal == "status unknown for quota: q1, resources: requests.storage"


def test_ql4_resize_charges_only_the_growth() -> None:
    assert quota.delta("persistentvolumeclaims", _claim("a", "3Gi"), _claim("a", "1Gi")) == {
        "requests.storage": 2 * GI, "gold.storageclass.storage.k8s.io/requests.storage": 2 * GI}
    assert quota.delta("persistentvolumeclaims", _claim("a", "1Gi"), _claim("a", "1Gi")) == {}


def test_ql5_used_counts_claims_being_deleted_until_gone() -> None:
    hard = {"requests.storage": "10Gi", "persistentvolumeclaims": "5",
            "gold.storageclass.storage.k8s.io/requests.storage": "4Gi"}
    claims = [_claim("a", "1Gi"), _claim("b", "2Gi", cls=None, deletionTimestamp="2024-01-01T00:00:00Z")]
    status = calculate_changes(_quota(hard, None), {"persistentvolumeclaims": claims})
    assert status == {"hard": hard, "used": {"requests.storage": "3Gi", "persistentvolumeclaims": "2",
                                             "gold.storageclass.storage.k8s.io/requests.storage": "1Gi"}}
    assert calculate_changes(_quota(hard, status["used"]), {"persistentvolumeclaims": claims}) is None


def test_ql7_claim_below_min_or_above_max_is_refused_with_kubernetes_words() -> None:
    lr = {"spec": {"limits": [{"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "10Gi"}}]}}
    assert quota.claim_limit_violations([lr], _claim("a", "500Mi")) == [
        "minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"]
    assert quota.claim_limit_violations([lr], _claim("a", "20Gi")) == [
        "maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"]
    assert quota.claim_limit_violations([lr], _claim("a", "5Gi")) == []
    container_only = {"spec": {"limits": [{"type": "Container", "max": {"storage": "1Mi"}}]}}
    assert quota.claim_limit_violations([container_only], _claim("a", "5Gi")) == []


def test_ql6_limit_range_bounds_must_be_ordered() -> None:
    bad = {"spec": {"limits": [{"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"},
                                "default": {"cpu": "3"}},
                               {"type": "PersistentVolumeClaim"}]}}
    errors = {(path, detail) for _, path, _, detail in quota.limit_range_errors(bad)}
    assert ("spec.limits[0].min.cpu", "min value 2 is greater than max value 1") in errors
    assert ("spec.limits[0].default.cpu", "default value 3 is greater than max value 1") in errors
    assert ("spec.limits[1]", "either minimum or maximum storage value is required, but neither was provided") in errors
    good = {"spec": {"limits": [{"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "2Gi"}}]}}
    assert quota.limit_range_errors(good) == []
