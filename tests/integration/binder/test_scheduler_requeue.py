"""PF66: which pods the scheduler looks at again when a node, claim, volume or class changes: only those
still waiting for a node (Kubernetes' unschedulable queue), found without walking every pod in the cache."""
from __future__ import annotations

import threading
from typing import Any

import pytest

from support import running_controllers, wait_for

Obj = dict[str, Any]


def _node(name: str, labels: dict[str, str] | None = None) -> Obj:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}


def _pod(name: str, **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "debian:12"}], **spec}}


def _claim(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}}}


def _node_name(store: Any, pod: str) -> str | None:
    return (store.get("pods", "default", pod).get("spec") or {}).get("nodeName")


def test_pf66_only_pods_waiting_for_a_node_are_looked_at_again(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from storage.controllers.scheduler import SchedulerReconciler

    with running_controllers(store, [SchedulerReconciler]) as manager:
        scheduler = next(c.reconciler for c in manager.controllers if c.reconciler.name == "scheduler")
        handlers = scheduler.watches()
        mine = threading.current_thread()
        listings: list[str] = []
        real_list = manager.cache.list

        def counting_list(resource: str, namespace: str | None = None, label_selector: str | None = None) -> Any:
            if threading.current_thread() is mine:  # the handlers called below, not the manager's threads
                listings.append(resource)
            return real_list(resource, namespace, label_selector)
        monkeypatch.setattr(manager.cache, "list", counting_list)

        store.create("nodes", _node("n1"))
        for i in range(3):
            store.create("pods", _pod(f"placed-{i}", volumes=[{"name": "v", "emptyDir": {}}]))
        store.create("pods", _pod("foreign", schedulerName="someone-else"))
        store.create("pods", _pod("waiting", nodeSelector={"disk": "ssd"}))
        for i in range(3):
            wait_for(lambda i=i: _node_name(store, f"placed-{i}") == "n1", f"placed-{i} on n1", 30)
        wait_for(lambda: any(c.get("reason") == "Unschedulable" for c in
                             (store.get("pods", "default", "waiting").get("status") or {}).get("conditions") or []),
                 "the waiting pod to be marked Unschedulable", 30)
        # A placed pod's write is seen in the store before its reconcile has finished and left the set.
        wait_for(lambda: not any(k.startswith("default/placed-") for k in handlers["nodes"]({})),
                 "the placements to finish", 30)

        # A change of a claim, volume, node or class sends back the waiting pod only: not the placed ones,
        # not the one another scheduler owns, and without listing the pods to find it.
        claim = store.create("persistentvolumeclaims", _claim("c0"))
        for resource, obj in (("persistentvolumeclaims", claim), ("persistentvolumes", {"metadata": {"name": "v"}}),
                              ("nodes", _node("n1")), ("storageclasses", {"metadata": {"name": "sc"}})):
            assert list(handlers[resource](obj)) == ["default/waiting"], resource
        # A placed pod with volumes that goes away may free an attach slot (AD3): the same pods go back.
        gone = store.get("pods", "default", "placed-0")
        store.delete("pods", "default", "placed-0", grace_seconds=0)
        wait_for(lambda: manager.cache.get("pods", "default", "placed-0") is None, "the deletion in the cache", 30)
        assert list(handlers["pods"](gone)) == ["default/waiting"]
        assert "pods" not in listings

        # A node it fits on appears: the pod is placed there (its requeue works) and waits no more.
        store.create("nodes", _node("n2", {"disk": "ssd"}))
        wait_for(lambda: _node_name(store, "waiting") == "n2", "the waiting pod placed on the new node", 30)
        wait_for(lambda: not list(handlers["persistentvolumeclaims"](claim)), "the placed pod to leave the waiting set", 30)


def test_pc5_pods_of_a_higher_priority_are_placed_first(store: Any) -> None:
    """Kubernetes' scheduling queue takes the highest ``spec.priority`` first: pods waiting together are
    placed in priority order, whatever order they came in."""
    from storage.controllers.scheduler import SchedulerReconciler

    store.create("nodes", _node("n1"))
    names = [f"a-low-{i}" for i in range(6)] + [f"b-high-{i}" for i in range(6)]
    for name in names:  # the low ones first, and first by name: a FIFO queue would place them first
        store.create("pods", _pod(name, priority=1000 if "high" in name else 0))
    with running_controllers(store, [SchedulerReconciler]):
        for name in names:
            wait_for(lambda name=name: _node_name(store, name) == "n1", f"{name} on n1", 30)
    # The binding is each pod's last write here (no agent runs): its revision orders the placements.
    order = sorted(names, key=lambda n: int(store.get("pods", "default", n)["metadata"]["resourceVersion"]))
    # Two workers: the last high pod may be placed beside the first low one, never after a second.
    assert all("high" in n for n in order[:5]), order
