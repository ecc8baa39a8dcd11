"""Controllers running on a real store through the controller manager, and a stand-in kubelet."""
from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest

from statefulset.controller import StatefulSetReconciler
from storage.controllers.endpoints import EndpointsReconciler
from storage.controllers.gc import GarbageCollector
from storage.controllers.manager import run_controllers
from storage.controllers.workloads import DaemonSetReconciler, ReplicaSetReconciler, ReplicationControllerReconciler
from sts_harness import Kubelet

RECONCILERS = [
    StatefulSetReconciler, EndpointsReconciler, DaemonSetReconciler, ReplicaSetReconciler,
    ReplicationControllerReconciler, GarbageCollector,
]


@pytest.fixture
def controllers(store) -> Iterator[Any]:
    stop = threading.Event()
    ready = threading.Event()
    out: list[Any] = []
    thread = threading.Thread(
        target=run_controllers, args=(store, stop),
        kwargs={"reconcilers": RECONCILERS, "ready": ready, "manager_out": out}, daemon=True,
    )
    thread.start()
    try:
        assert ready.wait(20), "controller manager did not sync"
        yield out[0]
    finally:
        stop.set()
        thread.join(timeout=20)


@pytest.fixture
def kubelet(store) -> Kubelet:
    return Kubelet(store)


