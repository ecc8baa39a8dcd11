"""SG3: the scheduler leaves a gated pod alone, and places it once the last gate is removed."""
from __future__ import annotations

from typing import Any

from support import running_controllers, wait_for

Obj = dict[str, Any]


def _node(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}


def _pod(name: str, **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "debian:12"}], **spec}}


def test_sg3_a_gated_pod_is_placed_only_when_its_gates_are_gone(store: Any) -> None:
    from storage.controllers.scheduler import SchedulerReconciler

    with running_controllers(store, [SchedulerReconciler]) as manager:
        scheduler = next(c.reconciler for c in manager.controllers if c.reconciler.name == "scheduler")
        store.create("nodes", _node("n1"))
        store.create("pods", _pod("gated", schedulingGates=[{"name": "example.com/a"}, {"name": "example.com/b"}]))
        store.create("pods", _pod("free"))
        wait_for(lambda: store.get("pods", "default", "free")["spec"].get("nodeName") == "n1", "free placed", 30)
        # The free pod was placed after the gated one was created and seen: the gated one was passed over,
        # not tried and failed (no Unschedulable condition, no FailedScheduling event), and it is not in
        # the unschedulable queue that node and claim changes send back.
        wait_for(lambda: manager.cache.get("pods", "default", "gated") is not None, "the gated pod cached", 30)
        scheduler.reconcile("default/gated")
        gated = store.get("pods", "default", "gated")
        assert not gated["spec"].get("nodeName")
        assert not (gated.get("status") or {}).get("conditions")
        assert "default/gated" not in scheduler._waiting()

        gated["spec"]["schedulingGates"] = [{"name": "example.com/b"}]
        store.update("pods", gated)
        store.create("nodes", _node("n2"))  # a node change: still nothing for a gated pod
        wait_for(lambda: manager.cache.get("nodes", "", "n2") is not None, "n2 cached", 30)
        scheduler.reconcile("default/gated")
        assert not store.get("pods", "default", "gated")["spec"].get("nodeName")

        last = store.get("pods", "default", "gated")
        del last["spec"]["schedulingGates"]
        store.update("pods", last)
        wait_for(lambda: store.get("pods", "default", "gated")["spec"].get("nodeName") in ("n1", "n2"),
                 "the pod placed once its gates are gone", 30)
        conditions = store.get("pods", "default", "gated")["status"]["conditions"]
        assert [(c["type"], c["status"]) for c in conditions] == [("PodScheduled", "True")]
