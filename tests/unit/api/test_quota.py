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
    # A finished pod is still stored: count/pods counts it, pods and compute resources do not (QL11).
    assert quota.usage("pods", {"status": {"phase": "Succeeded"}}) == {"count/pods": 1}
    assert quota.resource_of("count/deployments.apps") == "deployments"
    assert quota.resource_of("gold.storageclass.storage.k8s.io/requests.storage") == "persistentvolumeclaims"
    assert quota.resource_of("requests.cpu") == "pods"
    assert quota.resource_of("requests.nvidia.com/gpu") is None


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


# --- Pods: LimitRange defaults and limits, compute quota (QL10-QL13) -------------------------------------------


def _pod(*containers: dict[str, Any], init: tuple[dict[str, Any], ...] = (), phase: str = "Running",
         overhead: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers)}
    if init:
        spec["initContainers"] = list(init)
    if overhead:
        spec["overhead"] = overhead
    return {"metadata": {"name": "p", "namespace": "ns"}, "spec": spec, "status": {"phase": phase}}


def _c(name: str, requests: dict[str, str] | None = None, limits: dict[str, str] | None = None,
       **extra: Any) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return {"name": name, "resources": resources, **extra}


def _limit_range(*items: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "lr"}, "spec": {"limits": list(items)}}


MI = 1024 ** 2


def test_ql10_limit_range_item_defaults_follow_max_default_and_min() -> None:
    item = {"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}, "default": {"memory": "1Gi"}}
    assert quota.limit_range_item_defaults(item) == {
        **item, "default": {"cpu": "2", "memory": "1Gi"}, "defaultRequest": {"cpu": "2", "memory": "1Gi"}}
    only_min = {"type": "Container", "min": {"memory": "64Mi"}}
    assert quota.limit_range_item_defaults(only_min) == {**only_min, "defaultRequest": {"memory": "64Mi"}}
    pod_item = {"type": "Pod", "max": {"cpu": "2"}}
    assert quota.limit_range_item_defaults(pod_item) == pod_item


def test_ql10_defaults_fill_only_what_is_missing_and_annotate() -> None:
    lr = _limit_range({"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"},
                       "defaultRequest": {"cpu": "250m"}})
    pod = _pod(_c("c"), _c("d", limits={"cpu": "1"}), init=(_c("i", requests={"cpu": "100m"}),))
    out = quota.default_pod_resources(pod, [lr])
    c, d = out["spec"]["containers"]
    assert c["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"},
                              "limits": {"cpu": "500m", "memory": "256Mi"}}
    # d's cpu limit makes its cpu request (Kubernetes' pod defaulting) before the LimitRange is consulted.
    assert d["resources"] == {"requests": {"cpu": "1", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}}
    assert out["spec"]["initContainers"][0]["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}
    assert out["metadata"]["annotations"][quota.LIMIT_RANGER_ANNOTATION] == (
        "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c; "
        "memory request for container d; memory limit for container d; memory request for init container i; "
        "cpu, memory limit for init container i")
    assert pod["spec"]["containers"][0]["resources"] == {}  # the caller's pod is not modified
    assert "annotations" not in quota.default_pod_resources(pod, [])["metadata"]


def test_ql13_container_min_max_and_ratio_in_kubernetes_words() -> None:
    lr = _limit_range({"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "64Mi"},
                       "maxLimitRequestRatio": {"cpu": "2"}})
    pod = _pod(_c("c", requests={"cpu": "500m", "memory": "32Mi"}, limits={"cpu": "2", "memory": "32Mi"}))
    errors = quota.pod_limit_violations(lr, pod)
    assert errors == ["minimum memory usage per Container is 64Mi, but request is 32Mi",
                      "maximum cpu usage per Container is 1, but limit is 2",
                      "cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000"]
    assert quota.aggregate(errors + errors) == "[" + ", ".join(errors) + "]"  # repeated messages once
    bare = quota.pod_limit_violations(lr, _pod(_c("c")))
    assert bare == ["minimum memory usage per Container is 64Mi.  No request is specified",
                    "maximum cpu usage per Container is 1.  No limit is specified",
                    "cpu max limit to request ratio per Container is 2, but no request is specified or request is 0"]
    fits = _pod(_c("c", requests={"cpu": "500m", "memory": "64Mi"}, limits={"cpu": "1000m", "memory": "1Gi"}))
    assert quota.pod_limit_violations(lr, fits) == []


def test_ql13_pod_item_judges_the_sum_of_containers() -> None:
    lr = _limit_range({"type": "Pod", "max": {"memory": "1Gi"}})
    two = _pod(_c("a", limits={"memory": "1Gi"}), _c("b", limits={"memory": "1Gi"}))
    assert quota.pod_limit_violations(lr, two) == ["maximum memory usage per Pod is 1Gi, but limit is 2Gi"]
    one = _pod(_c("a", limits={"memory": "512Mi"}), init=(_c("i", limits={"memory": "1Gi"}),))
    assert quota.pod_limit_violations(lr, one) == []


def test_ql11_pod_compute_usage_is_max_of_app_sum_and_init_containers() -> None:
    pod = _pod(_c("a", requests={"cpu": "250m", "memory": "64Mi"}, limits={"cpu": "500m"}),
               _c("b", requests={"cpu": "250m", "memory": "64Mi"}),
               init=(_c("i", requests={"cpu": "1", "memory": "32Mi"}, limits={"ephemeral-storage": "1Gi"}),))
    assert quota.usage("pods", pod) == {
        "count/pods": 1, "pods": 1, "cpu": 1, "requests.cpu": 1, "memory": 128 * MI, "requests.memory": 128 * MI,
        "limits.cpu": Fraction(1, 2), "limits.ephemeral-storage": GI}
    assert quota.usage("pods", {**pod, "status": {"phase": "Failed"}}) == {"count/pods": 1}


def test_ql11_sidecars_add_to_everything_after_them_and_overhead_counts() -> None:
    sidecar = _c("s", requests={"cpu": "100m"}, restartPolicy="Always")
    pod = _pod(_c("a", requests={"cpu": "200m"}), init=(sidecar, _c("i", requests={"cpu": "250m"})),
               overhead={"cpu": "50m", "memory": "10Mi"})
    # app 200m + sidecar 100m = 300m; while i runs: 250m + 100m = 350m; then + 50m overhead.
    assert quota.pod_resources(pod, "requests", overhead=True) == {"cpu": Fraction(2, 5), "memory": 10 * MI}
    # Overhead is added only to the limits the pod sets.
    assert quota.pod_resources(pod, "limits", overhead=True) == {}


def test_ql12_quota_on_cpu_or_memory_makes_every_container_state_it() -> None:
    pod = _pod(_c("b", requests={"memory": "1Mi"}), _c("a"), init=(_c("i", limits={"cpu": "1"}),))
    assert quota.pod_quota_constraints(["limits.cpu", "requests.memory", "pods"], pod) == (
        "must specify limits.cpu for: a,b; requests.memory for: a,i")
    assert quota.pod_quota_constraints(["pods", "requests.ephemeral-storage"], pod) is None
    assert quota.pod_quota_constraints(["cpu"], _pod(_c("a", requests={"cpu": "1"}))) is None


def test_ql11_quota_used_and_exceeded_message_for_compute() -> None:
    hard = {"requests.cpu": "1", "limits.memory": "1Gi"}
    pods = [_pod(_c("a", requests={"cpu": "500m"}, limits={"memory": "512Mi"})),
            _pod(_c("b", requests={"cpu": "2"}, limits={"memory": "1Gi"}), phase="Succeeded")]
    status = calculate_changes(_quota(hard, None), {"pods": pods})
    assert status is not None and status["used"] == {"requests.cpu": "500m", "limits.memory": "512Mi"}
    new = _pod(_c("c", requests={"cpu": "600m"}, limits={"memory": "256Mi"}))
    _, refusal = quota.charge(_quota(hard, status["used"]), quota.delta("pods", new, None))
    assert refusal == ("exceeded quota: q1, requested: requests.cpu=600m, used: requests.cpu=500m, "
                       "limited: requests.cpu=1")


class _Quotas:
    """The cache a reconciler reads, holding only the namespace's quotas."""

    def __init__(self, quotas: list[dict[str, Any]]) -> None:
        self.quotas = quotas

    def list(self, resource: str, namespace: str | None = None, label_selector: str | None = None) -> list[dict[str, Any]]:
        assert resource == "resourcequotas"
        return [q for q in self.quotas if namespace is None or q["metadata"]["namespace"] == namespace]


def _reconciler(quotas: list[dict[str, Any]]) -> Any:
    from types import SimpleNamespace

    from storage.controllers.resourcequota import ResourceQuotaReconciler

    return ResourceQuotaReconciler(SimpleNamespace(cache=_Quotas(quotas)))  # type: ignore[arg-type]


def test_ql15_usage_is_recomputed_when_it_can_go_down_not_on_creates_or_charges() -> None:
    q = _quota({"requests.storage": "10Gi"}, {"requests.storage": "1Gi"})
    reconciler = _reconciler([q])
    claim = _claim("data", "1Gi")
    assert not reconciler.relevant("persistentvolumeclaims", None, claim), "admission charged the create"
    assert reconciler.relevant("persistentvolumeclaims", claim, None), "a deletion gives quota back"
    labelled = {**claim, "metadata": {**claim["metadata"], "labels": {"a": "b"}}}
    assert not reconciler.relevant("persistentvolumeclaims", claim, labelled), "nothing counted changed"
    running = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [
        {"name": "c", "resources": {"requests": {"cpu": "1"}}}]}, "status": {"phase": "Running"}}
    finished = {**running, "status": {"phase": "Succeeded"}}
    assert reconciler.relevant("pods", running, finished), "a finished pod gives its compute back"
    charged = {**q, "status": {**q["status"], "used": {"requests.storage": "2Gi"}}}
    assert not reconciler.relevant("resourcequotas", q, charged), "a charge is admission's, not a cause to recount"
    raised = {**q, "spec": {"hard": {"requests.storage": "20Gi"}}}
    assert reconciler.relevant("resourcequotas", q, raised)
    assert reconciler.relevant("resourcequotas", None, q)
    assert not _reconciler([]).relevant("persistentvolumeclaims", claim, None), "no quota in the namespace"


def test_ql6_limit_range_resource_and_type_names_are_kubernetes_ones():
    """Kubernetes' validateLimitRangeResourceName and validateLimitRangeTypeName: the API fuzz test stored a
    PersistentVolumeClaim limit on "binaryData", which then refused every claim of the namespace."""
    from storage.api.quota import limit_range_errors

    found = limit_range_errors({"spec": {"limits": [
        {"type": "PersistentVolumeClaim", "max": {"storage": "1Gi", "binaryData": "1e300"}},
        {"type": "Container", "max": {"cpu": "1", "storage": "1Gi", "hugepages-2Mi": "1Gi", "example.com/gpu": "1"}},
        {"type": "Weird", "max": {"requests.storage": "1Gi"}},
        {"type": "Pod", "maxLimitRequestRatio": {"memory": "2"}}]}})
    assert found == [
        ("invalid", "spec.limits[0].max[binaryData]", "binaryData", "must be a standard resource type or fully qualified"),
        ("invalid", "spec.limits[1].max[storage]", "storage", "must be a standard resource for containers"),
        # As Kubernetes 1.37's code has it: hugepages-<size> is a container resource but not a standard one.
        ("invalid", "spec.limits[1].max[hugepages-2Mi]", "hugepages-2Mi",
         "must be a standard resource type or fully qualified"),
        ("invalid", "spec.limits[2].type", "Weird", "must be a standard limit type or fully qualified")]
