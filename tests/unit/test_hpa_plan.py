"""The autoscaler's pure evaluation (SEMANTICS HPA3-HPA6): Kubernetes' replica calculator, stabilization,
scaling rules and conditions, through ``storage.controllers.hpa.calculate_changes``."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from storage.api.timestamps import format_time
from storage.controllers.hpa import History, PodSample, calculate_changes

NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=timezone.utc)
STARTED = NOW - timedelta(minutes=10)  # past the CPU initialization period


def pod(name: str, *, cpu: str | None = "100m", memory: str | None = None, phase: str = "Running",
        ready: bool = True, started: datetime = STARTED, deleting: bool = False) -> dict:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    meta: dict = {"name": name, "namespace": "default", "uid": f"uid-{name}", "labels": {"app": "web"}}
    if deleting:
        meta["deletionTimestamp"] = format_time(NOW)
    return {"metadata": meta,
            "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": requests}}]},
            "status": {"phase": phase, "startTime": format_time(started),
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                       "lastTransitionTime": format_time(started + timedelta(seconds=5))}]}}


def sample(cpu_milli: int = 0, memory_bytes: int = 0) -> PodSample:
    return PodSample({"c": {"cpu": cpu_milli, "memory": memory_bytes * 1000}}, NOW, timedelta(seconds=1))


def hpa(*, low: int = 1, high: int = 10, metrics: list | None = None, behavior: dict | None = None,
        status: dict | None = None, target: int = 50) -> dict:
    spec: dict = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                  "minReplicas": low, "maxReplicas": high,
                  "metrics": metrics if metrics is not None else [
                      {"type": "Resource", "resource": {"name": "cpu", "target": {
                          "type": "Utilization", "averageUtilization": target}}}]}
    if behavior is not None:
        spec["behavior"] = behavior
    return {"metadata": {"name": "web", "namespace": "default", "generation": 2, "uid": "hpa-uid"},
            "spec": spec, "status": status or {}}


def deployment(replicas: int) -> dict:
    return {"metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": replicas}}


def cond(status: dict, kind: str) -> tuple[str, str]:
    found = next(c for c in status["conditions"] if c["type"] == kind)
    return found["status"], found["reason"]


def run(h: dict, replicas: int, pods: list[dict], usage: dict[str, PodSample] | None,
        history: History | None = None):
    return calculate_changes(h, deployment(replicas), "", pods, usage, history or History(), NOW)


def test_scale_up_is_limited_to_twice_or_four_more_per_step():
    """HPA4/HPA5: 200% of request against a 50% target proposes 4x; one step goes to max(2x, 4)."""
    pods = [pod("a"), pod("b")]
    plan = run(hpa(), 2, pods, {"uid-a": sample(200), "uid-b": sample(200)})
    assert plan.replicas == 4
    assert plan.recommendation == 8
    assert cond(plan.status, "ScalingLimited") == ("True", "ScaleUpLimit")
    assert cond(plan.status, "ScalingActive") == ("True", "ValidMetricFound")
    assert cond(plan.status, "AbleToScale") == ("True", "SucceededRescale")
    assert plan.status["currentMetrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "current": {"averageUtilization": 200, "averageValue": "200m"}}}]
    assert plan.status["currentReplicas"] == 2 and plan.status["desiredReplicas"] == 4
    assert plan.status["lastScaleTime"] == format_time(NOW)
    assert ("Normal", "SuccessfulRescale",
            "New size: 4; reason: cpu resource utilization (percentage of request) above target") in plan.events


def test_max_replicas_bounds_the_step():
    plan = run(hpa(high=3), 2, [pod("a"), pod("b")], {"uid-a": sample(900), "uid-b": sample(900)})
    assert plan.replicas == 3
    assert cond(plan.status, "ScalingLimited") == ("True", "TooManyReplicas")


def test_within_tolerance_nothing_changes():
    """HPA4: a ratio within 10% of 1 keeps the current count."""
    plan = run(hpa(), 2, [pod("a"), pod("b")], {"uid-a": sample(54), "uid-b": sample(54)})
    assert plan.replicas is None
    assert plan.status["desiredReplicas"] == 2
    assert not [e for e in plan.events if e[1] == "SuccessfulRescale"]
    assert cond(plan.status, "ScalingLimited") == ("False", "DesiredWithinRange")


def test_scale_down_waits_for_the_stabilization_window():
    """HPA5: the highest recommendation of the last 5 minutes wins; once it has aged out, scale down."""
    pods = [pod("a"), pod("b"), pod("c"), pod("d")]
    usage = {f"uid-{n}": sample(5) for n in "abcd"}
    recent = History(recommendations=[(NOW - timedelta(seconds=60), 4)])
    plan = run(hpa(), 4, pods, usage, recent)
    assert plan.replicas is None
    assert cond(plan.status, "AbleToScale") == ("True", "ScaleDownStabilized")
    old = History(recommendations=[(NOW - timedelta(seconds=301), 4)])
    plan = run(hpa(), 4, pods, usage, old)
    assert plan.replicas == 1
    assert ("Normal", "SuccessfulRescale", "New size: 1; reason: All metrics below target") in plan.events
    assert cond(plan.status, "ScalingLimited") == ("False", "DesiredWithinRange")  # 5% of 50%: ceil(0.1 x 4)


def test_missing_pods_count_as_using_their_request_on_a_scale_down():
    """HPA4: a pod without metrics is assumed at 100% of its request when scaling down, which here
    turns the direction around, so nothing changes."""
    plan = run(hpa(), 2, [pod("a"), pod("b")], {"uid-a": sample(10)})
    assert plan.replicas is None and plan.status["desiredReplicas"] == 2


def test_unready_pods_count_as_idle_on_a_scale_up():
    """HPA4: a Pending pod counts as using nothing when scaling up: (200 + 0) / 200 = 100%, twice 50%."""
    plan = run(hpa(high=20), 2, [pod("a"), pod("b", phase="Pending")], {"uid-a": sample(200)})
    assert plan.recommendation == 4
    assert plan.replicas == 4


def test_a_cpu_sample_from_before_readiness_is_not_counted_while_initializing():
    young = NOW - timedelta(seconds=60)
    late = pod("b", started=young)
    late["status"]["conditions"][0]["lastTransitionTime"] = format_time(NOW)  # Ready just now
    plan = run(hpa(high=20), 2, [pod("a"), late], {"uid-a": sample(200), "uid-b": sample(900)})
    assert plan.recommendation == 4  # b counted as 0, not 900m


def test_deleted_and_finished_pods_are_ignored():
    pods = [pod("a"), pod("b", deleting=True), pod("c", phase="Succeeded")]
    plan = run(hpa(high=20), 1, pods, {"uid-a": sample(100), "uid-b": sample(900), "uid-c": sample(900)})
    assert plan.recommendation == 2


def test_a_container_without_a_request_stops_scaling():
    """HPA6: Kubernetes' words, the ScalingActive condition and a Warning; the target is left alone."""
    plan = run(hpa(), 2, [pod("a", cpu=None)], {"uid-a": sample(500)})
    assert plan.replicas is None
    assert cond(plan.status, "ScalingActive") == ("False", "FailedGetResourceMetric")
    assert plan.events == [
        ("Warning", "FailedGetResourceMetric", "failed to get cpu utilization: missing request for cpu in container c "
                                               "of Pod a"),
        ("Warning", "FailedComputeMetricsReplicas", "invalid metrics (1 invalid out of 1), first error is: failed to "
                                                    "get cpu utilization: missing request for cpu in container c of Pod a")]
    assert next(c for c in plan.status["conditions"] if c["type"] == "ScalingActive")["message"] == (
        "the HPA was unable to compute the replica count: failed to get cpu utilization: missing request for cpu "
        "in container c of Pod a")


def test_no_usage_source_is_reported():
    plan = run(hpa(), 2, [pod("a")], None)
    assert plan.replicas is None
    status, reason = cond(plan.status, "ScalingActive")
    assert (status, reason) == ("False", "FailedGetResourceMetric")
    assert plan.events[0] == ("Warning", "FailedGetResourceMetric", "failed to get cpu utilization: unable to get "
                              "metrics for resource cpu: no metrics returned from resource metrics API")


def test_only_unready_pods_give_no_figure():
    plan = run(hpa(), 2, [pod("a", ready=False)], {"uid-a": sample(500)})
    assert plan.replicas is None
    assert plan.events[0][2] == ("failed to get cpu utilization: did not receive metrics for targeted pods "
                                 "(pods might be unready)")


def test_an_invalid_metric_is_reported_even_when_another_scales():
    """HPA7: Kubernetes records a Warning for each invalid metric at every evaluation."""
    memory = {"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization",
                                                                            "averageUtilization": 60}}}
    cpu = hpa()["spec"]["metrics"][0]
    plan = run(hpa(metrics=[cpu, memory]), 2, [pod("a"), pod("b")], {"uid-a": sample(200), "uid-b": sample(200)})
    assert plan.replicas == 4
    assert ("Warning", "FailedGetResourceMetric", "failed to get memory utilization: missing request for memory in "
                                                  "container c of Pod a") in plan.events


def test_an_absent_target_cannot_be_scaled():
    plan = calculate_changes(hpa(), None, 'deployments.apps "web" not found', [], {}, History(), NOW)
    assert plan.replicas is None
    assert cond(plan.status, "AbleToScale") == ("False", "FailedGetScale")
    assert ("Warning", "FailedGetScale", 'deployments.apps "web" not found') in plan.events


def test_a_target_at_zero_replicas_disables_scaling():
    plan = run(hpa(), 0, [], {})
    assert plan.replicas is None
    assert cond(plan.status, "ScalingActive") == ("False", "ScalingDisabled")


def test_a_target_below_min_is_raised_to_min():
    plan = run(hpa(low=3), 1, [pod("a")], {"uid-a": sample(50)})
    assert plan.replicas == 3
    assert ("Normal", "SuccessfulRescale", "New size: 3; reason: Current number of replicas below Spec.MinReplicas") \
        in plan.events


def test_average_value_of_memory():
    """HPA4: an AverageValue target compares the pods' mean usage with the value."""
    metric = {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue",
                                                                            "averageValue": "100Mi"}}}
    pods = [pod("a"), pod("b")]  # no memory request: an average value needs none
    mib = 1024 * 1024
    plan = run(hpa(metrics=[metric]), 2, pods, {"uid-a": sample(0, 300 * mib), "uid-b": sample(0, 300 * mib)})
    assert plan.recommendation == 6
    assert plan.replicas == 4
    assert plan.status["currentMetrics"][0]["resource"]["current"] == {"averageValue": "314572800"}  # DecimalSI


def test_custom_metrics_are_invalid_but_a_valid_scale_up_proceeds():
    """HPA6: no custom metrics API is served; with another metric proposing a scale-up, Kubernetes scales."""
    pods_metric = {"type": "Pods", "pods": {"metric": {"name": "qps"},
                                            "target": {"type": "AverageValue", "averageValue": "10"}}}
    cpu = hpa()["spec"]["metrics"][0]
    plan = run(hpa(metrics=[pods_metric, cpu]), 2, [pod("a"), pod("b")], {"uid-a": sample(100), "uid-b": sample(100)})
    assert plan.replicas == 4
    assert cond(plan.status, "ScalingActive") == ("True", "ValidMetricFound")
    # In the metrics' order, the invalid one empty, as Kubernetes writes it (kubectl pairs them by position).
    assert [m["type"] for m in plan.status["currentMetrics"]] == ["", "Resource"]
    only = run(hpa(metrics=[pods_metric]), 2, [pod("a")], {"uid-a": sample(100)})
    assert only.replicas is None
    assert cond(only.status, "ScalingActive") == ("False", "FailedGetPodsMetric")
    assert "custom.metrics.k8s.io" in only.status["conditions"][-1]["message"] or any(
        "custom.metrics.k8s.io" in c["message"] for c in only.status["conditions"])


def test_an_invalid_metric_blocks_a_scale_down():
    pods_metric = {"type": "Pods", "pods": {"metric": {"name": "qps"},
                                            "target": {"type": "AverageValue", "averageValue": "10"}}}
    cpu = hpa()["spec"]["metrics"][0]
    old = History(recommendations=[(NOW - timedelta(seconds=400), 4)])
    plan = run(hpa(metrics=[pods_metric, cpu]), 4, [pod(n) for n in "abcd"],
               {f"uid-{n}": sample(1) for n in "abcd"}, old)
    assert plan.replicas is None
    assert cond(plan.status, "ScalingActive") == ("False", "FailedGetPodsMetric")


def test_container_resource_metric_reads_one_container():
    metric = {"type": "ContainerResource", "containerResource": {
        "name": "cpu", "container": "c", "target": {"type": "Utilization", "averageUtilization": 50}}}
    plan = run(hpa(metrics=[metric]), 1, [pod("a")], {"uid-a": PodSample(
        {"c": {"cpu": 100, "memory": 0}, "sidecar": {"cpu": 900, "memory": 0}}, NOW)})
    assert plan.recommendation == 2
    assert plan.status["currentMetrics"][0] == {"type": "ContainerResource", "containerResource": {
        "name": "cpu", "container": "c", "current": {"averageUtilization": 100, "averageValue": "100m"}}}


@pytest.mark.parametrize(("policies", "events", "expected", "reason"), [
    # one pod a minute, and one was added 30 s ago: the period started at 2, so 3 is the most
    ([{"type": "Pods", "value": 1, "periodSeconds": 60}], [(30, 1)], None, "ScaleUpLimit"),
    # the same added 90 s ago is outside the period: 3 + 1
    ([{"type": "Pods", "value": 1, "periodSeconds": 60}], [(90, 1)], 4, "ScaleUpLimit"),
    # 50% of 3, rounded up
    ([{"type": "Percent", "value": 50, "periodSeconds": 60}], [], 5, "ScaleUpLimit"),
])
def test_behavior_scale_up_policies(policies, events, expected, reason):
    """HPA5: a behavior's scale-up policies over the recent scale events."""
    behavior = {"scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": policies}}
    history = History(scale_up_events=[(NOW - timedelta(seconds=s), n) for s, n in events])
    pods = [pod(n) for n in "abc"]
    plan = run(hpa(behavior=behavior, high=20), 3, pods, {f"uid-{n}": sample(500) for n in "abc"}, history)
    assert plan.replicas == expected
    assert cond(plan.status, "ScalingLimited") == ("True", reason)


def test_behavior_scale_down_window_and_percent_policy():
    """HPA5: with a zero scale-down window, a 50% policy halves the count per period."""
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                              "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}]}}
    pods = [pod(n) for n in "abcdef"]
    plan = run(hpa(behavior=behavior), 6, pods, {f"uid-{n}": sample(1) for n in "abcdef"},
               History(recommendations=[(NOW - timedelta(seconds=10), 6)]))
    assert plan.replicas == 3
    assert cond(plan.status, "ScalingLimited") == ("True", "ScaleDownLimit")


def test_behavior_disabled_scale_down():
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Disabled", "policies": [
        {"type": "Percent", "value": 100, "periodSeconds": 15}]}}
    plan = run(hpa(behavior=behavior), 3, [pod(n) for n in "abc"], {f"uid-{n}": sample(1) for n in "abc"})
    assert plan.replicas is None


def test_conditions_keep_their_transition_time_while_unchanged():
    first = run(hpa(), 2, [pod("a"), pod("b")], {"uid-a": sample(50), "uid-b": sample(50)})
    stored = hpa(status=first.status)
    later = calculate_changes(stored, deployment(2), "", [pod("a"), pod("b")],
                              {"uid-a": sample(50), "uid-b": sample(50)}, History(), NOW + timedelta(minutes=1))
    assert later.status == first.status


# --- the reconciler: once per period, at once on a spec change, optimistic writes (HPA3) -----------------

class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def world(tmp_path):
    from storage.controllers.base import ControllerContext, ControllerOptions
    from storage.controllers.events import StoreEventRecorder
    from storage.controllers.hpa import HorizontalPodAutoscalerReconciler
    from storage.controllers.manager import InformerCache
    from storage.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'hpa.db'}")
    usage: dict[str, dict] = {}
    calls: list[int] = []

    def pod_usage(pods: list[dict]) -> dict:
        calls.append(len(pods))
        return {p["metadata"]["uid"]: usage[p["metadata"]["name"]] for p in pods if p["metadata"]["name"] in usage}

    cache = InformerCache()
    clock = Clock()
    options = ControllerOptions(hpa_sync_period=15.0, pod_usage=pod_usage)
    reconciler = HorizontalPodAutoscalerReconciler(
        ControllerContext(store=store, cache=cache, events=StoreEventRecorder(store), options=options), clock=clock)

    def refresh() -> None:
        for resource in ("deployments", "pods", "horizontalpodautoscalers"):
            cache.replace(resource, store.list(resource)[0])

    store.create("deployments", {"apiVersion": "apps/v1", "kind": "Deployment",
                                 "metadata": {"name": "web", "namespace": "default"},
                                 "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}}})
    for name in "ab":
        store.create("pods", {"apiVersion": "v1", "kind": "Pod", **{k: v for k, v in pod(name).items()
                                                                    if k != "metadata"},
                              "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}}})
    uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in store.list("pods")[0]}
    for name in "ab":
        usage[name] = {"containers": {"c": {"cpu": 200, "memory": 0}}, "timestamp": format_time(NOW), "window": 1.0}
    store.create("horizontalpodautoscalers", {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                                              **{k: v for k, v in hpa(high=10).items() if k not in ("metadata", "status")},
                                              "metadata": {"name": "web", "namespace": "default"}})
    refresh()
    try:
        yield store, reconciler, clock, refresh, usage, calls, uids
    finally:
        store.close()


def test_reconciler_evaluates_once_per_period_and_at_once_on_a_spec_change(world):
    store, reconciler, clock, refresh, usage, calls, _ = world
    result = reconciler.reconcile("default/web")
    assert result.requeue_after == 15.0
    assert store.get("deployments", "default", "web")["spec"]["replicas"] == 4
    status = store.get("horizontalpodautoscalers", "default", "web")["status"]
    assert status["desiredReplicas"] == 4 and status["currentMetrics"]
    events = [e for e in store.list("events", "default")[0] if e["reason"] == "SuccessfulRescale"]
    assert [e["message"] for e in events] == [
        "New size: 4; reason: cpu resource utilization (percentage of request) above target"]

    # Its own status write and a resync 5 s later do not evaluate again.
    refresh()
    clock.now = NOW + timedelta(seconds=5)
    evaluated = len(calls)
    assert reconciler.reconcile("default/web").requeue_after == pytest.approx(10.0)
    assert len(calls) == evaluated

    # A spec change is evaluated at once: a maxReplicas of 3 brings the 4 replicas down to it.
    h = store.get("horizontalpodautoscalers", "default", "web")
    h["spec"]["maxReplicas"] = 3
    store.update("horizontalpodautoscalers", h)
    refresh()
    reconciler.reconcile("default/web")
    assert len(calls) == evaluated + 1
    assert store.get("deployments", "default", "web")["spec"]["replicas"] == 3

    # After the period, another evaluation.
    refresh()
    clock.now = NOW + timedelta(seconds=21)
    reconciler.reconcile("default/web")
    assert len(calls) == evaluated + 2


def test_reconciler_writes_the_target_with_its_resource_version(world):
    """A write of the Deployment in between makes the scale a Conflict: nothing is half-written, and the
    next pass works from the new object."""
    from storage.errors import Conflict

    store, reconciler, clock, refresh, usage, calls, _ = world
    d = store.get("deployments", "default", "web")
    d["metadata"].setdefault("labels", {})["touched"] = "yes"
    store.update("deployments", d)  # the cache still holds the older version
    with pytest.raises(Conflict):
        reconciler.reconcile("default/web")
    assert store.get("deployments", "default", "web")["spec"]["replicas"] == 2
    refresh()
    reconciler.reconcile("default/web")
    after = store.get("deployments", "default", "web")
    assert after["spec"]["replicas"] == 4 and after["metadata"]["labels"]["touched"] == "yes"


def test_a_missing_pod_counts_at_the_target_when_it_is_above_its_request():
    """HPA4: against a 200% target, a missing pod is taken at 200% on a scale-down: (20 + 200) / 200 = 110%
    of the pods' requests, 0.55 of the target; ceil(0.55 x 2) = 2, so the count stays."""
    plan = run(hpa(target=200), 2, [pod("a"), pod("b")], {"uid-a": sample(20)})
    assert plan.replicas is None and plan.recommendation == 2


def test_the_autoscalers_flags_are_kube_controller_managers():
    """HPA3: --horizontal-pod-autoscaler-sync-period and --horizontal-pod-autoscaler-downscale-stabilization
    take Go durations; a bad one is refused naming the flag."""
    from storage.cli.errors import CommandError
    from storage.cli.up import _controller_options

    base = {"node_monitor_grace_period": "40s", "max_wait_for_unmount": "6m", "node_eviction_rate": 0.1,
            "secondary_node_eviction_rate": 0.01, "unhealthy_zone_threshold": 0.55,
            "large_cluster_size_threshold": 50, "default_not_ready_toleration_seconds": 300,
            "default_unreachable_toleration_seconds": 300}
    options = _controller_options({**base, "hpa_sync_period": "2s", "hpa_downscale_stabilization": "1m30s"})
    assert (options.hpa_sync_period, options.hpa_downscale_stabilization) == (2.0, 90.0)
    defaults = _controller_options(dict(base))
    assert (defaults.hpa_sync_period, defaults.hpa_downscale_stabilization) == (15.0, 300.0)
    with pytest.raises(CommandError, match="--horizontal-pod-autoscaler-sync-period"):
        _controller_options({**base, "hpa_sync_period": "0s"})
    with pytest.raises(CommandError, match="--horizontal-pod-autoscaler-downscale-stabilization"):
        _controller_options({**base, "hpa_downscale_stabilization": "soon"})
