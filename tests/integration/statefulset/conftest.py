"""Controllers running on a real store through the controller manager, and a stand-in kubelet."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from statefulset.controller import StatefulSetReconciler
from storage.controllers.binder import ClaimProtection
from storage.controllers.endpoints import EndpointsReconciler
from storage.controllers.gc import GarbageCollector
from storage.controllers.workloads import DaemonSetReconciler, ReplicaSetReconciler, ReplicationControllerReconciler
from sts_harness import Kubelet
from support import running_controllers

# ClaimProtection releases the pvc-protection finalizer member claims carry (S10), as it does under
# ``stowage up``; without it a claim deleted by the retention policy (S5) would stay Terminating.
RECONCILERS = [
    StatefulSetReconciler, EndpointsReconciler, DaemonSetReconciler, ReplicaSetReconciler,
    ReplicationControllerReconciler, GarbageCollector, ClaimProtection,
]


@pytest.fixture
def controllers(store) -> Iterator[Any]:
    with running_controllers(store, RECONCILERS, timeout=20) as manager:
        yield manager


@pytest.fixture
def kubelet(store) -> Kubelet:
    return Kubelet(store)


