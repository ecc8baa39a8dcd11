"""SC1, SC2: what the scheduler writes on a pod it cannot place, through the controller on a real store: the
PodScheduled condition and the FailedScheduling event carry Kubernetes' whole message."""
from __future__ import annotations

from typing import Any

from storage.controllers.events import events_for
from storage.controllers.scheduler import SchedulerReconciler
from support import running_controllers, wait_for

Obj = dict[str, Any]


def _node(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}


def _pod(name: str, claim: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "debian:12"}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}}


def _scheduled_condition(store: Any, name: str) -> Obj | None:
    conditions = (store.get("pods", "default", name).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "PodScheduled" and c.get("status") == "False"), None)


def test_sc1_sc2_a_missing_claim_is_said_once_with_kubernetes_wrapper(store: Any) -> None:
    store.create("nodes", _node("n1"))
    store.create("nodes", _node("n2"))
    with running_controllers(store, [SchedulerReconciler]):
        store.create("pods", _pod("p", "absent"))
        expected = ('0/2 nodes are available: persistentvolumeclaim "absent" not found. '
                    "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.")
        condition = wait_for(lambda: _scheduled_condition(store, "p"), "PodScheduled=False on p", 30)
        assert (condition["reason"], condition["message"]) == ("Unschedulable", expected)
        pod = store.get("pods", "default", "p")
        events = wait_for(lambda: [e for e in events_for(store, pod) if e["reason"] == "FailedScheduling"],
                          "a FailedScheduling event", 30)
        assert [(e["type"], e["message"]) for e in events] == [("Warning", expected)]
