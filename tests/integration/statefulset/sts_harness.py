"""Helpers for the workload integration tests: a stand-in kubelet (polling is in support.py).

The kubelet here only writes pod status through the store (scheduled,
Running, Ready, Failed), so readiness gating is driven deterministically.
"""
from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Any, Callable

from storage.errors import Conflict

Obj = dict[str, Any]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kubelet:
    """Writes pod status as a node agent would, retrying on Conflict with the controllers."""

    def __init__(self, store: Any, namespace: str = "default") -> None:
        self.store = store
        self.namespace = namespace
        self._ips = iter(range(2, 250))

    def _mutate(self, name: str, change: Callable[[Obj], None]) -> Obj:
        for _ in range(50):
            pod = copy.deepcopy(self.store.get("pods", self.namespace, name))
            change(pod)
            try:
                return self.store.update("pods", pod)
            except Conflict:
                continue
        raise AssertionError(f"could not update pod {name}")

    def set_state(self, name: str, phase: str, ready: bool, node: str = "node-1", message: str = "") -> Obj:
        def change(pod: Obj) -> None:
            pod["spec"].setdefault("nodeName", node)
            status = pod.setdefault("status", {})
            status["phase"] = phase
            if "podIP" not in status:
                status["podIP"] = f"127.1.0.{next(self._ips)}"
            cond = {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": _now()}
            if message:
                cond["message"] = message
            status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != "Ready"] + [cond]

        return self._mutate(name, change)

    def ready(self, name: str, node: str = "node-1") -> Obj:
        return self.set_state(name, "Running", True, node)

    def unready(self, name: str, message: str = "readiness probe failing") -> Obj:
        return self.set_state(name, "Running", False, message=message)

    def fail(self, name: str) -> Obj:
        return self.set_state(name, "Failed", False)

    def run_all_ready(self, names: list[str]) -> None:
        for name in names:
            self.ready(name)


def pod_names(store: Any, namespace: str = "default", prefix: str = "") -> list[str]:
    items, _ = store.list("pods", namespace)
    return sorted(p["metadata"]["name"] for p in items if p["metadata"]["name"].startswith(prefix))
