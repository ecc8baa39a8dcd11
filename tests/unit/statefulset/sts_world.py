"""A small in-memory world that applies StatefulSet actions, so the pure decision can be stepped.

It plays the store (uids, resourceVersions, deletion) and, through
``run``/``ready``/``fail``, the kubelet. It is the harness for the pure
``calculate_changes``; the real store is exercised by the integration tests.
"""
from __future__ import annotations

import copy
import itertools
from datetime import datetime, timedelta, timezone
from typing import Any

from statefulset import update as u

Obj = dict[str, Any]
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def make_set(
    name: str = "web",
    replicas: int = 3,
    *,
    policy: str = "OrderedReady",
    strategy: Obj | None = None,
    image: str = "nginx:1",
    templates: tuple[str, ...] = ("www",),
    retention: Obj | None = None,
    start: int | None = None,
    min_ready: int = 0,
    history: int | None = None,
) -> Obj:
    sts: Obj = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "generation": 1,
                     "resourceVersion": "1"},
        "spec": {
            "replicas": replicas,
            "serviceName": "nginx",
            "podManagementPolicy": policy,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}],
                         "volumes": [{"name": "scratch", "emptyDir": {}}]},
            },
            "volumeClaimTemplates": [
                {"metadata": {"name": t}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                   "resources": {"requests": {"storage": "1Gi"}}}}
                for t in templates
            ],
        },
    }
    if strategy is not None:
        sts["spec"]["updateStrategy"] = strategy
    if retention is not None:
        sts["spec"]["persistentVolumeClaimRetentionPolicy"] = retention
    if start is not None:
        sts["spec"]["ordinals"] = {"start": start}
    if min_ready:
        sts["spec"]["minReadySeconds"] = min_ready
    if history is not None:
        sts["spec"]["revisionHistoryLimit"] = history
    return sts


class World:
    def __init__(self, sts: Obj) -> None:
        self.sts = copy.deepcopy(sts)
        self.pods: dict[str, Obj] = {}
        self.claims: dict[str, Obj] = {}
        self.revisions: dict[str, Obj] = {}
        self.now = T0
        self.log: list[u.Action] = []
        self._ids = itertools.count(1)

    def _stamp(self, obj: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        n = next(self._ids)
        obj["metadata"].setdefault("uid", f"uid-{n}")
        obj["metadata"]["resourceVersion"] = str(n)
        obj["metadata"].setdefault("creationTimestamp", self.now.strftime("%Y-%m-%dT%H:%M:%SZ"))
        return obj

    def changes(self) -> list[u.Action]:
        return u.calculate_changes(self.sts, list(self.pods.values()), list(self.claims.values()),
                                   list(self.revisions.values()), self.now)

    def step(self) -> list[u.Action]:
        actions = self.changes()
        self.apply(actions)
        return actions

    def apply(self, actions: list[u.Action]) -> None:
        for a in actions:
            self.log.append(a)
            if isinstance(a, (u.CreateRevision, u.RenumberRevision)):
                self.revisions[a.revision["metadata"]["name"]] = self._stamp(a.revision)
            elif isinstance(a, u.DeleteRevision):
                self.revisions.pop(a.name)
            elif isinstance(a, u.CreateClaim):
                if a.claim["metadata"]["name"] not in self.claims:
                    self.claims[a.claim["metadata"]["name"]] = self._stamp(a.claim)
            elif isinstance(a, u.UpdateClaim):
                self.claims[a.claim["metadata"]["name"]] = self._stamp(a.claim)
            elif isinstance(a, u.DeleteClaim):
                self.claims.pop(a.name)
            elif isinstance(a, u.CreatePod):
                name = a.pod["metadata"]["name"]
                assert name not in self.pods, f"second pod for {name}"
                self.pods[name] = self._stamp(a.pod)
            elif isinstance(a, u.UpdatePod):
                self.pods[a.pod["metadata"]["name"]] = self._stamp(a.pod)
            elif isinstance(a, u.DeletePod):
                self.pods.pop(a.name)
            elif isinstance(a, u.UpdateStatus):
                self.sts["status"] = copy.deepcopy(a.status)

    # --- the kubelet's part ---
    def set_phase(self, name: str, phase: str, ready: bool) -> None:
        pod = self.pods[name]
        pod["spec"]["nodeName"] = "node-1"
        pod["status"] = {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                            "lastTransitionTime": self.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            **({} if ready else {"message": "readiness probe failing"})}],
        }

    def ready(self, name: str) -> None:
        self.set_phase(name, "Running", True)

    def unready(self, name: str) -> None:
        self.set_phase(name, "Running", False)

    def fail(self, name: str) -> None:
        self.set_phase(name, "Failed", False)

    def ready_all(self) -> None:
        for name in list(self.pods):
            self.ready(name)

    def converge(self, limit: int = 50) -> None:
        """Step, making every pod Ready after each step, until nothing but status remains to do."""
        for _ in range(limit):
            actions = [a for a in self.step() if not isinstance(a, (u.UpdateStatus, u.RequeueAfter))]
            self.ready_all()
            if not actions:
                return
        raise AssertionError("did not converge")

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def set_spec(self, **changes: Any) -> None:
        self.sts["spec"].update(changes)
        self.sts["metadata"]["generation"] += 1

    def set_image(self, image: str) -> None:
        self.sts["spec"]["template"]["spec"]["containers"][0]["image"] = image
        self.sts["metadata"]["generation"] += 1


def kinds(actions: list[u.Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def created_pods(actions: list[u.Action]) -> list[str]:
    return [a.pod["metadata"]["name"] for a in actions if isinstance(a, u.CreatePod)]


def deleted_pods(actions: list[u.Action]) -> list[str]:
    return [a.name for a in actions if isinstance(a, u.DeletePod)]
