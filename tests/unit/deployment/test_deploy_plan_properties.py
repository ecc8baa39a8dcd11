"""Deployment rollouts as a pure plan, checked against a simulated ReplicaSet controller (SEMANTICS D1-D4).

The simulation is adversarial about timing: the ReplicaSet controller and the
status it writes may lag any number of Deployment passes, pods turn ready in
any order, and the template may change again mid-rollout. At every step the
sum of the sets' ``spec.replicas`` stays within
``replicas + maxSurge`` and the available pods stay at least
``replicas - maxUnavailable``; once pods may all turn ready, the rollout ends
with only the newest template running.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from storage.api.timestamps import format_time
from storage.controllers.deployment_plan import (
    HASH_LABEL, REVISION, CreateReplicaSet, DeleteReplicaSet, SetDeploymentAnnotations, SetDeploymentStatus,
    UpdateReplicaSet, calculate_changes, fenceposts, scaled_value,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def deployment(replicas: int, surge: Any, unavailable: Any, image: str = "v1", strategy: str = "RollingUpdate",
               paused: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}},
        "strategy": {"type": strategy},
        "revisionHistoryLimit": 2,
        "progressDeadlineSeconds": 600,
        "paused": paused,
    }
    if strategy == "RollingUpdate":
        spec["strategy"]["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "generation": 1}, "spec": spec}


@dataclass
class World:
    """Deployment, its sets (spec as written, status as last reported) and pods (ready or not) per set."""

    deploy: dict[str, Any]
    sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: dict[str, list[bool]] = field(default_factory=dict)
    clock: itertools.count = field(default_factory=itertools.count)

    def controller_pass(self) -> bool:
        plan = calculate_changes(self.deploy, list(self.sets.values()),
                                 {n: len(p) for n, p in self.pods.items()}, T0 + timedelta(seconds=next(self.clock)))
        changed = False
        for action in plan.actions:
            if isinstance(action, CreateReplicaSet):
                rs = copy.deepcopy(action.replica_set)
                rs["metadata"]["creationTimestamp"] = format_time(T0 + timedelta(seconds=next(self.clock)))
                rs["metadata"]["generation"] = 1
                rs["status"] = {"replicas": 0, "availableReplicas": 0, "readyReplicas": 0, "observedGeneration": 1}
                self.sets[rs["metadata"]["name"]] = rs
                self.pods.setdefault(rs["metadata"]["name"], [])
                changed = True
            elif isinstance(action, UpdateReplicaSet):
                name = action.replica_set["metadata"]["name"]
                rs = copy.deepcopy(action.replica_set)
                rs["status"] = self.sets[name].get("status", {})
                if rs["spec"] != self.sets[name]["spec"]:
                    rs["metadata"]["generation"] = int(rs["metadata"].get("generation", 1)) + 1
                changed = changed or rs != self.sets[name]
                self.sets[name] = rs
            elif isinstance(action, DeleteReplicaSet):
                assert self.sets[action.name]["spec"]["replicas"] == 0 and not self.pods[action.name]
                del self.sets[action.name]
                del self.pods[action.name]
                changed = True
            elif isinstance(action, SetDeploymentAnnotations):
                self.deploy["metadata"]["annotations"] = action.annotations
            elif isinstance(action, SetDeploymentStatus):
                self.deploy["status"] = action.status
        return changed

    def replicaset_pass(self, name: str) -> None:
        """The ReplicaSet controller: add unready pods or remove the least useful (not ready first), then report."""
        rs = self.sets[name]
        pods = self.pods[name]
        want = rs["spec"]["replicas"]
        while len(pods) < want:
            pods.append(False)
        pods.sort()  # False (not ready) first: those go first
        del pods[: max(0, len(pods) - want)]
        rs["status"] = {"replicas": len(pods), "readyReplicas": sum(pods), "availableReplicas": sum(pods),
                        "observedGeneration": rs["metadata"].get("generation", 1)}

    def ready_one(self, index: int) -> None:
        unready = [(n, i) for n, pods in self.pods.items() for i, ready in enumerate(pods) if not ready]
        if unready:
            n, i = unready[index % len(unready)]
            self.pods[n][i] = True

    def available(self) -> int:
        return sum(sum(p) for p in self.pods.values())

    def live(self) -> int:
        return sum(len(p) for p in self.pods.values())


def settle(world: World) -> None:
    for _ in range(500):
        changed = world.controller_pass()
        for name in list(world.sets):
            world.replicaset_pass(name)
        for pods in world.pods.values():
            pods[:] = [True] * len(pods)
        for name in list(world.sets):
            world.replicaset_pass(name)
        if not changed and not world.controller_pass():
            return
    raise AssertionError("the rollout never settled")


percent_or_int = st.one_of(st.integers(0, 5), st.integers(0, 100).map(lambda p: f"{p}%"))
steps = st.lists(st.tuples(st.sampled_from(["deploy", "rs", "ready", "template"]), st.integers(0, 50)),
                 min_size=1, max_size=120)


@settings(max_examples=300, deadline=None)
@given(replicas=st.integers(1, 8), surge=percent_or_int, unavailable=percent_or_int, script=steps)
def test_rolling_update_respects_surge_and_unavailability(replicas: int, surge: Any, unavailable: Any,
                                                          script: list[tuple[str, int]]) -> None:
    if scaled_value(surge, replicas, True) == 0 and scaled_value(unavailable, replicas, False) == 0 \
            and surge in (0, "0%") and unavailable in (0, "0%"):
        unavailable = 1  # validation rejects both zero
    world = World(deployment(replicas, surge, unavailable))
    settle(world)  # a finished first rollout: everything available
    max_surge, max_unavailable = fenceposts(world.deploy)
    assert world.available() == replicas
    version = 1
    for op, n in script:
        if op == "deploy":
            world.controller_pass()
        elif op == "rs" and world.sets:
            world.replicaset_pass(sorted(world.sets)[n % len(world.sets)])
        elif op == "ready":
            world.ready_one(n)
        elif op == "template":
            version += 1
            world.deploy["spec"]["template"]["spec"]["containers"][0]["image"] = f"v{version}"
            world.deploy["metadata"]["generation"] += 1
        total_spec = sum(rs["spec"]["replicas"] for rs in world.sets.values())
        assert total_spec <= replicas + max_surge, (total_spec, world.sets)
        # Pods of a set scaled down live on until the ReplicaSet controller removes them (Kubernetes
        # counts terminating pods the same way): the surge bound is on the sets' spec, as upstream.
        assert world.available() >= replicas - max_unavailable, (world.available(), world.pods)
    settle(world)
    image = f"v{version}"
    running = [rs for rs in world.sets.values() if rs["spec"]["replicas"] > 0]
    assert len(running) == 1
    assert running[0]["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert running[0]["spec"]["replicas"] == replicas
    assert world.available() == replicas
    status = world.deploy["status"]
    assert status["updatedReplicas"] == status["availableReplicas"] == replicas
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "NewReplicaSetAvailable"
    # revisionHistoryLimit 2: at most two idle old sets are kept, and revisions only grow.
    assert len(world.sets) <= 3
    revisions = sorted(int(rs["metadata"]["annotations"][REVISION]) for rs in world.sets.values())
    assert int(running[0]["metadata"]["annotations"][REVISION]) == revisions[-1]
    assert world.deploy["metadata"]["annotations"][REVISION] == str(revisions[-1])


@settings(max_examples=100, deadline=None)
@given(replicas=st.integers(1, 6), script=steps)
def test_recreate_never_runs_two_templates_at_once(replicas: int, script: list[tuple[str, int]]) -> None:
    world = World(deployment(replicas, None, None, strategy="Recreate"))
    settle(world)
    version = 1
    for op, n in script:
        if op == "deploy":
            world.controller_pass()
        elif op == "rs" and world.sets:
            world.replicaset_pass(sorted(world.sets)[n % len(world.sets)])
        elif op == "ready":
            world.ready_one(n)
        elif op == "template":
            version += 1
            world.deploy["spec"]["template"]["spec"]["containers"][0]["image"] = f"v{version}"
        images = {world.sets[name]["spec"]["template"]["spec"]["containers"][0]["image"]
                  for name, pods in world.pods.items() if pods}
        assert len(images) <= 1, images
    settle(world)
    running = [rs for rs in world.sets.values() if rs["spec"]["replicas"] > 0]
    assert [rs["spec"]["template"]["spec"]["containers"][0]["image"] for rs in running] == [f"v{version}"]


def test_percentages_round_as_kubernetes() -> None:
    assert fenceposts(deployment(10, "25%", "25%")) == (3, 2)
    assert fenceposts(deployment(1, "25%", "25%")) == (1, 0)
    assert fenceposts(deployment(3, 0, "0%")) == (0, 1)  # both zero would never progress
    assert fenceposts(deployment(4, "50%", 1)) == (2, 1)


def test_rollback_takes_the_old_set_and_the_next_revision() -> None:
    world = World(deployment(2, 1, 0))
    settle(world)
    first = next(iter(world.sets))
    world.deploy["spec"]["template"]["spec"]["containers"][0]["image"] = "v2"
    settle(world)
    assert world.deploy["metadata"]["annotations"][REVISION] == "2"
    world.deploy["spec"]["template"]["spec"]["containers"][0]["image"] = "v1"  # what `rollout undo` writes
    settle(world)
    assert len(world.sets) == 2
    assert world.sets[first]["spec"]["replicas"] == 2
    assert world.sets[first]["metadata"]["annotations"][REVISION] == "3"
    assert world.sets[first]["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
    assert world.deploy["metadata"]["annotations"][REVISION] == "3"
    assert world.sets[first]["spec"]["selector"]["matchLabels"][HASH_LABEL] == first.rsplit("-", 1)[1]


def test_paused_deployment_starts_no_rollout_but_follows_replicas() -> None:
    world = World(deployment(2, 1, 0))
    settle(world)
    world.deploy["spec"]["paused"] = True
    world.deploy["spec"]["template"]["spec"]["containers"][0]["image"] = "v2"
    world.deploy["spec"]["replicas"] = 3
    settle(world)
    assert len(world.sets) == 1
    (rs,) = world.sets.values()
    assert rs["spec"]["replicas"] == 3 and rs["spec"]["template"]["spec"]["containers"][0]["image"] == "v1"
    progressing = next(c for c in world.deploy["status"]["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("Unknown", "DeploymentPaused")
    world.deploy["spec"]["paused"] = False
    settle(world)
    running = [r for r in world.sets.values() if r["spec"]["replicas"] > 0]
    assert [r["spec"]["template"]["spec"]["containers"][0]["image"] for r in running] == ["v2"]


def test_progress_deadline_exceeded_when_pods_never_become_ready() -> None:
    deploy = deployment(2, 1, 0)
    deploy["spec"]["progressDeadlineSeconds"] = 10
    world = World(deploy)
    world.controller_pass()
    world.replicaset_pass(next(iter(world.sets)))
    status = calculate_changes(world.deploy, list(world.sets.values()), {}, T0 + timedelta(seconds=5))
    for action in status.actions:
        if isinstance(action, SetDeploymentStatus):
            world.deploy["status"] = action.status
    assert status.requeue_after is not None
    late = calculate_changes(world.deploy, list(world.sets.values()), {}, T0 + timedelta(seconds=60))
    final = [a.status for a in late.actions if isinstance(a, SetDeploymentStatus)][-1]
    progressing = next(c for c in final["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
