"""The local-volume recovery decision, pure (rules LR1-LR6)."""
from __future__ import annotations

import datetime as dt
from typing import Any

from storage.api.taints import OUT_OF_SERVICE
from storage.controllers.local_recovery import ANNOTATION, calculate_changes, node_lost, recovery_setting, volume_node

Obj = dict[str, Any]
NOW = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def _claim(annotation: str | None = None, deleting: bool = False) -> Obj:
    meta: Obj = {"name": "data-db-1", "namespace": "default", "uid": "c1", "resourceVersion": "5"}
    if annotation is not None:
        meta["annotations"] = {ANNOTATION: annotation}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T11:59:00Z"
    return {"metadata": meta, "spec": {"storageClassName": "local", "volumeName": "pv1"}}


def _class(annotation: str | None = None) -> Obj:
    return {"metadata": {"name": "local", **({"annotations": {ANNOTATION: annotation}} if annotation else {})}}


def _volume(node: str = "n2", local: bool = True) -> Obj:
    spec: Obj = {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}
    if local:
        spec["local"] = {"path": "/x"}
    else:
        spec["csi"] = {"driver": "d", "volumeHandle": "h"}
    return {"metadata": {"name": "pv1"}, "spec": spec}


def _node(name: str, ready: str = "True", since: str = "2026-12-01T11:00:00Z", taints: list[Obj] | None = None) -> Obj:
    return {"metadata": {"name": name}, "spec": {"taints": taints or []},
            "status": {"conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": since}]}}


def _pod(node: str | None, name: str = "db-1", deleting: bool = False, phase: str = "Running") -> Obj:
    meta: Obj = {"name": name, "namespace": "default", "uid": f"u-{name}-{node}"}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T11:59:00Z"
    spec: Obj = {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-1"}}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


def test_lr1_the_claims_annotation_wins_over_its_class_and_bad_values_are_named() -> None:
    assert recovery_setting(_claim(), None) == (None, None)
    assert recovery_setting(_claim(), _class("5m")) == (300.0, None)
    assert recovery_setting(_claim("10s"), _class("5m")) == (10.0, None)
    seconds, error = recovery_setting(_claim("soon"), _class("5m"))
    assert seconds is None and error is not None and ANNOTATION in error and "'soon'" in error
    decision = calculate_changes(_claim("soon"), None, _volume(), {"n2": _node("n2", "Unknown")}, [], NOW)
    assert decision.action == "invalid" and not decision.delete_claim


def test_lr2_a_node_is_lost_when_gone_out_of_service_or_not_ready_for_the_duration() -> None:
    assert node_lost("n2", None, 60, NOW)[0] == "node n2 no longer exists"
    assert node_lost("n2", _node("n2"), 0, NOW) == (None, None)
    why, _ = node_lost("n2", _node("n2", "Unknown", "2026-12-01T11:59:50Z",
                                   [{"key": OUT_OF_SERVICE, "effect": "NoExecute"}]), 3600, NOW)
    assert why is not None and OUT_OF_SERVICE in why
    why, due = node_lost("n2", _node("n2", "Unknown", "2026-12-01T11:59:50Z"), 60, NOW)
    assert why is None and due == NOW + dt.timedelta(seconds=50)
    why, due = node_lost("n2", _node("n2", "False", "2026-12-01T11:58:00Z"), 60, NOW)
    assert why is not None and due is None


def test_lr3_only_volumes_bound_to_one_node() -> None:
    assert volume_node(_volume("n2")) == "n2"
    assert volume_node(_volume("n2", local=False)) is None
    decision = calculate_changes(_claim("1s"), None, _volume("n2", local=False), {}, [], NOW)
    assert decision.action == "none"


def test_lr4_lr5_recovery_deletes_the_claim_then_the_pods_on_the_lost_node_or_unscheduled() -> None:
    nodes = {"n1": _node("n1"), "n2": _node("n2", "Unknown", "2026-12-01T11:50:00Z")}
    on_lost, pending, other = _pod("n2"), _pod(None, "db-1"), _pod("n1", "reader", phase="Running")
    decision = calculate_changes(_claim("1m"), None, _volume("n2"), nodes, [on_lost, pending], NOW)
    assert decision.action == "recover" and decision.delete_claim
    assert "node n2 not Ready since 2026-12-01T11:50:00Z" == decision.reason
    assert decision.delete_pods == [("default", "db-1", "u-db-1-n2", True), ("default", "db-1", "u-db-1-None", False)]
    # LR4: a pod using the claim runs on a live node: nothing is lost, nothing is done.
    assert calculate_changes(_claim("1m"), None, _volume("n2"), nodes, [other], NOW).action == "none"
    # Level-triggered: the claim already terminating is not deleted again, but its pods still go.
    again = calculate_changes(_claim("1m", deleting=True), None, _volume("n2"), nodes, [on_lost], NOW)
    assert again.action == "recover" and not again.delete_claim and again.delete_pods
    # Not lost yet: look again when the duration has passed.
    early = calculate_changes(_claim("1h"), None, _volume("n2"), nodes, [on_lost], NOW)
    assert early.action == "none" and early.wake_at == dt.datetime(2026, 12, 1, 12, 50, tzinfo=dt.timezone.utc)
    # Off without the annotation, however long the node has been lost.
    assert calculate_changes(_claim(), _class(), _volume("n2"), {}, [on_lost], NOW).action == "none"



class _CountingCache:
    """The reconciler's read side over plain dicts, counting the listings of pods."""

    def __init__(self, objects: dict[str, list[Obj]]) -> None:
        self.objects = objects
        self.pod_listings = 0

    def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        return next((o for o in self.objects.get(resource, []) if o["metadata"]["name"] == name
                     and o["metadata"].get("namespace", "") == namespace), None)

    def list(self, resource: str, namespace: str | None = None, label_selector: str | None = None) -> list[Obj]:
        if resource == "pods":
            self.pod_listings += 1
        return [o for o in self.objects.get(resource, [])
                if namespace is None or o["metadata"].get("namespace", "") == namespace]


def test_the_reconciler_lists_pods_only_once_a_volume_node_is_lost() -> None:
    """A burst of claims that do not opt in (or whose node is fine) must not list every pod of the
    namespace for each claim: that cost the control plane time quadratic in the burst."""
    from storage.controllers.base import ControllerContext
    from storage.controllers.local_recovery import LocalVolumeRecoveryReconciler

    pods = [_pod("n2", name=f"p{i}") for i in range(3)]
    # The reconciler reads the clock: the node went not Ready a moment ago.
    just_now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for claim, node_ready in ((_claim(), "Unknown"), (_claim("1h"), "Unknown"), (_claim("1m"), "True")):
        cache = _CountingCache({"persistentvolumeclaims": [claim], "persistentvolumes": [_volume("n2")],
                                "nodes": [_node("n2", node_ready, since=just_now)], "pods": pods})
        reconciler = LocalVolumeRecoveryReconciler(ControllerContext(store=None, cache=cache, events=None))  # type: ignore[arg-type]
        reconciler.reconcile("default/data-db-1")
        assert cache.pod_listings == 0, (claim["metadata"].get("annotations"), node_ready)
