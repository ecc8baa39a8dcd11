"""The pure disruption rules (E2-E9, E13-E14, E16): budget arithmetic, the disruption controller's
``calculate_changes``, the verify-and-decrement step of an eviction, the cordon taint and PDB validation."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from storage.api import disruption as d
from storage.api.cordon import admits_pod
from storage.api.timestamps import format_time
from storage.api.validation import validate
from storage.controllers.disruption import calculate_changes, controller_scale
from storage.controllers.scheduler import R_UNSCHEDULABLE, Snapshot, place
from storage.errors import Forbidden, Invalid, TooManyRequests

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def pod(name: str, *, ready: bool = True, phase: str = "Running", owner: dict | None = None,
        deleting: bool = False, labels: dict | None = None) -> dict:
    meta: dict = {"name": name, "namespace": "default", "uid": f"uid-{name}", "labels": labels or {"app": "web"}}
    if owner is not None:
        meta["ownerReferences"] = [{**owner, "controller": True}]
    if deleting:
        meta["deletionTimestamp"] = format_time(NOW)
    return {"metadata": meta, "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pdb(spec: dict, status: dict | None = None, generation: int = 1) -> dict:
    return {"metadata": {"name": "web", "namespace": "default", "generation": generation},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, **spec}, "status": status or {}}


STS = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "sts-uid"}


def scale_of(replicas: int):
    return lambda ref: replicas if ref.get("uid") == "sts-uid" else None


def test_E5_integer_min_available_counts_the_selected_pods() -> None:
    pods = [pod("a"), pod("b"), pod("c", ready=False)]
    assert d.expected_and_desired(pdb({"minAvailable": 2}), pods, scale_of(5)) == (3, 2, [])


def test_E5_percentages_scale_the_controllers_replicas_rounding_up() -> None:
    pods = [pod(f"web-{i}", owner=STS) for i in range(3)]
    # 5 replicas wanted (two not created yet): 50% of 5 rounds up to 3.
    assert d.expected_and_desired(pdb({"minAvailable": "50%"}), pods, scale_of(5))[:2] == (5, 3)
    # maxUnavailable 30% of 5 = 1.5 -> 2 may be down: 3 must stay.
    assert d.expected_and_desired(pdb({"maxUnavailable": "30%"}), pods, scale_of(5))[:2] == (5, 3)
    assert d.expected_and_desired(pdb({"maxUnavailable": 9}), pods, scale_of(5))[:2] == (5, 0)


def test_E5_pods_without_controller_are_unmanaged_and_a_missing_controller_fails_safe() -> None:
    loose = pod("loose")
    assert d.expected_and_desired(pdb({"maxUnavailable": 1}), [pod("web-0", owner=STS), loose], scale_of(2)) \
        == (2, 1, ["loose"])
    orphan = pod("web-0", owner={**STS, "uid": "gone"})
    with pytest.raises(d.BudgetError, match='found no controllers for pod "web-0"'):
        d.expected_and_desired(pdb({"maxUnavailable": 1}), [orphan], scale_of(2))
    plan = calculate_changes(pdb({"maxUnavailable": 1}, {"disruptionsAllowed": 1, "observedGeneration": 1}),
                             [orphan], scale_of(2), NOW)
    assert plan.status is not None and plan.status["disruptionsAllowed"] == 0
    cond = plan.status["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"]) == ("DisruptionAllowed", "False", "SyncFailed")
    assert cond["message"] == 'found no controllers for pod "web-0"'
    assert [e[2] for e in plan.events] == ["CalculateExpectedPodCountFailed"]


def test_E5_controller_scale_follows_deployments_through_their_replica_sets() -> None:
    objects = {
        ("replicasets", "default", "web-abc"): {"metadata": {"name": "web-abc", "uid": "rs", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "dep", "controller": True}]},
            "spec": {"replicas": 2}},
        ("deployments", "default", "web"): {"metadata": {"name": "web", "uid": "dep"}, "spec": {"replicas": 7}},
        ("statefulsets", "default", "db"): {"metadata": {"name": "db", "uid": "db"}, "spec": {"replicas": 3}},
    }

    def get(resource: str, namespace: str, name: str) -> dict | None:
        return objects.get((resource, namespace, name))

    rs_ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "rs"}
    assert controller_scale(rs_ref, "default", get) == 7
    assert controller_scale({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "db"},
                            "default", get) == 3
    assert controller_scale({**rs_ref, "uid": "other"}, "default", get) is None  # a new object of the same name
    assert controller_scale({"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "x", "uid": "x"},
                            "default", get) is None


def test_E4_E7_E8_status_counts_ready_pods_not_being_deleted() -> None:
    pods = [pod("a"), pod("b"), pod("c", ready=False), pod("d", deleting=True)]
    plan = calculate_changes(pdb({"minAvailable": 1}), pods, scale_of(0), NOW)
    status = plan.status
    assert status is not None
    assert {k: status[k] for k in ("currentHealthy", "desiredHealthy", "expectedPods", "disruptionsAllowed",
                                   "observedGeneration")} == {
        "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 4, "disruptionsAllowed": 1, "observedGeneration": 1}
    assert status["conditions"] == [{"type": "DisruptionAllowed", "status": "True", "reason": "SufficientPods",
                                     "message": "", "lastTransitionTime": format_time(NOW), "observedGeneration": 1}]
    # Level-triggered: the same inputs later change nothing (the transition time stays).
    again = calculate_changes(pdb({"minAvailable": 1}, status), pods, scale_of(0), NOW + timedelta(minutes=5))
    assert again.status is None


def test_E7_E8_no_pods_allows_nothing_and_says_so() -> None:
    plan = calculate_changes(pdb({"maxUnavailable": 1}), [], scale_of(0), NOW)
    assert plan.status is not None and plan.status["disruptionsAllowed"] == 0
    assert plan.status["conditions"][0]["reason"] == "InsufficientPods"
    assert [(e[1], e[2], e[3]) for e in plan.events] == [("Normal", "NoPods", "No matching pods found")]


def test_E6_disrupted_pods_stay_unhealthy_until_deleted_or_two_minutes_pass() -> None:
    pods = [pod("a"), pod("b"), pod("c")]
    recorded = {"disruptedPods": {"a": format_time(NOW - timedelta(seconds=30)),
                                  "gone": format_time(NOW)}}
    plan = calculate_changes(pdb({"minAvailable": 1}, recorded), pods, scale_of(0), NOW)
    assert plan.status is not None
    assert plan.status["disruptedPods"] == {"a": recorded["disruptedPods"]["a"]}  # "gone" no longer exists
    assert plan.status["currentHealthy"] == 2 and plan.status["disruptionsAllowed"] == 1
    assert plan.recheck_after == pytest.approx(90.5)
    later = calculate_changes(pdb({"minAvailable": 1}, plan.status), pods, scale_of(0), NOW + timedelta(minutes=3))
    assert later.status is not None and "disruptedPods" not in later.status
    assert later.status["currentHealthy"] == 3
    assert [(e[0]["metadata"]["name"], e[2]) for e in later.events] == [("a", "NotDeleted")]


def test_E9_decrement_records_the_pod_and_flips_the_condition_at_zero() -> None:
    budget = pdb({"minAvailable": 2}, {"observedGeneration": 1, "disruptionsAllowed": 1, "currentHealthy": 3,
                                       "desiredHealthy": 2, "conditions": []})
    after = d.decremented(budget, "web-0", NOW, dry_run=False)
    assert after["status"]["disruptionsAllowed"] == 0
    assert after["status"]["disruptedPods"] == {"web-0": format_time(NOW)}
    assert after["status"]["conditions"][0]["reason"] == "InsufficientPods"
    assert budget["status"]["disruptionsAllowed"] == 1  # the input is left alone
    assert "disruptedPods" not in d.decremented(budget, "web-0", NOW, dry_run=True)["status"]

    with pytest.raises(TooManyRequests) as refused:
        d.decremented(after, "web-1", NOW, dry_run=False)
    status = refused.value.to_status()
    assert status["code"] == 429 and status["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert status["details"] == {"causes": [{"reason": "DisruptionBudget",
                                             "message": "The disruption budget web needs 2 healthy pods and has 3 currently"}]}
    assert refused.value.retry_after == 0  # no Retry-After: client-go would retry silently


def test_E9_E7_stale_or_overloaded_budgets_refuse() -> None:
    stale = pdb({"minAvailable": 1}, {"observedGeneration": 1, "disruptionsAllowed": 3}, generation=2)
    with pytest.raises(TooManyRequests) as refused:
        d.decremented(stale, "web-0", NOW, dry_run=False)
    assert refused.value.causes[0]["message"] == "The disruption budget web is still being processed by the server."
    negative = pdb({"minAvailable": 1}, {"observedGeneration": 1, "disruptionsAllowed": -1})
    with pytest.raises(Forbidden, match="pdb disruptions allowed is negative"):
        d.decremented(negative, "web-0", NOW, dry_run=False)
    crowded = pdb({"minAvailable": 1}, {"observedGeneration": 1, "disruptionsAllowed": 1,
                                        "disruptedPods": {f"p{i}": format_time(NOW) for i in range(2001)}})
    with pytest.raises(Forbidden, match="DisruptedPods map too big"):
        d.decremented(crowded, "web-0", NOW, dry_run=False)


def test_E2_E3_which_budgets_guard_and_which_pods_skip_them() -> None:
    target = pod("web-0")
    assert d.guards_for_eviction(pdb({}), target)
    everything = {**pdb({}), "spec": {"selector": {}}}
    assert d.selects_for_status(everything, target) and not d.guards_for_eviction(everything, target)
    nothing = {**pdb({}), "spec": {}}
    assert not d.selects_for_status(nothing, target) and not d.guards_for_eviction(nothing, target)
    other_ns = pdb({})
    other_ns["metadata"]["namespace"] = "other"
    assert not d.guards_for_eviction(other_ns, target)
    assert d.can_ignore_budget(pod("p", phase="Pending")) and d.can_ignore_budget(pod("f", phase="Failed"))
    assert d.can_ignore_budget(pod("t", deleting=True)) and not d.can_ignore_budget(target)
    assert d.enforces_resource_version(pod("p", phase="Pending"))
    assert not d.enforces_resource_version(pod("s", phase="Succeeded"))


def test_E14_scheduler_skips_cordoned_nodes_unless_the_pod_tolerates_it() -> None:
    def node(name: str, cordoned: bool = False) -> dict:
        return {"metadata": {"name": name}, "spec": {"unschedulable": cordoned},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}}

    plain = pod("p", phase="Pending")
    plain["spec"].pop("nodeName", None)
    snapshot = Snapshot(nodes=[node("n1", True)], pods=[], claims={}, volumes={}, classes={})
    result = place(plain, snapshot)
    assert result.node is None and result.message == f"0/1 nodes are available: 1 {R_UNSCHEDULABLE}."
    assert place(plain, Snapshot(nodes=[node("n1", True), node("n2")], pods=[], claims={}, volumes={},
                                 classes={})).node == "n2"
    tolerant = {**plain, "spec": {**plain["spec"], "tolerations": [
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}
    assert admits_pod(node("n1", True), tolerant) and place(tolerant, snapshot).node == "n1"


@pytest.mark.parametrize(("spec", "message"), [
    ({"minAvailable": 1, "maxUnavailable": 1}, "spec: Invalid value: minAvailable and maxUnavailable cannot be both set"),
    ({"minAvailable": -1}, "spec.minAvailable: Invalid value: -1: must be greater than or equal to 0"),
    ({"maxUnavailable": "101%"}, 'spec.maxUnavailable: Invalid value: "101%": must not be greater than 100%'),
    ({"maxUnavailable": "half"}, 'spec.maxUnavailable: Invalid value: "half": a valid percent string must be'),
    ({"unhealthyPodEvictionPolicy": "Never"}, 'spec.unhealthyPodEvictionPolicy: Unsupported value: "Never": '
                                              'supported values: "AlwaysAllow", "IfHealthyBudget"'),
])
def test_E16_budget_validation(spec: dict, message: str) -> None:
    with pytest.raises(Invalid) as invalid:
        validate({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                  "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    assert message in invalid.value.message


def test_E16_either_bound_alone_is_valid() -> None:
    for spec in ({"minAvailable": "100%"}, {"maxUnavailable": 0}, {}):
        validate({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                  "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
