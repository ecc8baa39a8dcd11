"""The Deployment controller with the ReplicaSet controller and garbage collector on a real store (SEMANTICS D1-D4).

Pods turn ready only when the test says so (a stand-in kubelet writing status),
so every intermediate state of a rollout is observed and checked.
"""
from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Any, Iterator

import pytest

from storage.api.defaults import apply_defaults
from storage.api.validation import validate
from storage.controllers.deployment import DeploymentReconciler
from storage.controllers.deployment_plan import (
    HASH_LABEL, REVISION, CreateReplicaSet, DeleteReplicaSet, UpdateReplicaSet, calculate_changes,
)
from storage.controllers.gc import GarbageCollector
from storage.controllers.workloads import ReplicaSetReconciler
from storage.errors import Conflict, NotFound
from support import running_controllers, wait_for

Obj = dict[str, Any]


@pytest.fixture
def controllers(store) -> Iterator[Any]:
    with running_controllers(store, [DeploymentReconciler, ReplicaSetReconciler, GarbageCollector], timeout=20) as m:
        yield m


def deployment(name: str, replicas: int, image: str = "busybox:1", **strategy: Any) -> Obj:
    obj = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": image}]}},
            "strategy": strategy or {"type": "RollingUpdate"},
        },
    }
    return validate(apply_defaults(obj))


def set_image(store: Any, name: str, image: str) -> None:
    set_spec(store, name, lambda spec: spec["template"]["spec"]["containers"][0].update(image=image))


def set_spec(store: Any, name: str, change: Any) -> None:
    """Change the spec, retrying when the controller wrote the Deployment (its status) meanwhile."""
    for _ in range(20):
        d = copy.deepcopy(store.get("deployments", "default", name))
        change(d["spec"])
        try:
            store.update("deployments", d)
            return
        except Conflict:
            continue
    raise AssertionError("could not update the deployment")


def pods(store: Any, app: str) -> list[Obj]:
    items, _ = store.list("pods", "default", f"app={app}")
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def image_of(obj: Obj) -> str:
    return obj["spec"]["containers"][0]["image"] if "containers" in obj["spec"] else \
        obj["spec"]["template"]["spec"]["containers"][0]["image"]


def make_ready(store: Any, pod: Obj) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for _ in range(20):
        try:
            fresh = copy.deepcopy(store.get("pods", "default", pod["metadata"]["name"]))
        except NotFound:
            return
        fresh["spec"].setdefault("nodeName", "node-1")
        fresh["status"] = {"phase": "Running", "podIP": "127.1.0.9",
                           "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": stamp}]}
        try:
            store.update("pods", fresh)
            return
        except Conflict:
            continue
        except NotFound:
            return  # scaled away meanwhile
    raise AssertionError("could not mark the pod ready")


def is_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def settled(store: Any, name: str) -> bool:
    """Nothing left to do: every set has its pods and reported them, and the plan has no set changes."""
    d = store.get("deployments", "default", name)
    sets = [rs for rs in store.list("replicasets", "default")[0] if not rs["metadata"].get("deletionTimestamp")]
    counts: dict[str, int] = {}
    for pod in store.list("pods", "default")[0]:
        owner = pod["metadata"]["ownerReferences"][0]["name"]
        counts[owner] = counts.get(owner, 0) + 1
    for rs in sets:
        status = rs.get("status") or {}
        if counts.get(rs["metadata"]["name"], 0) != rs["spec"]["replicas"] or status.get("replicas", 0) != \
                rs["spec"]["replicas"] or status.get("observedGeneration", 0) < rs["metadata"]["generation"]:
            return False
    plan = calculate_changes(d, sets, counts, datetime.now(timezone.utc))
    return not any(isinstance(a, (CreateReplicaSet, UpdateReplicaSet, DeleteReplicaSet)) for a in plan.actions)


def complete(store: Any, name: str) -> Obj | None:
    d = store.get("deployments", "default", name)
    status = d.get("status") or {}
    progressing = next((c for c in status.get("conditions") or [] if c["type"] == "Progressing"), {})
    return d if progressing.get("reason") == "NewReplicaSetAvailable" and status.get("observedGeneration") == \
        d["metadata"]["generation"] else None


def roll_out(store: Any, manager: Any, name: str) -> None:
    wait_for(lambda: len(pods(store, name)) == store.get("deployments", "default", name)["spec"]["replicas"],
             "the first pods")
    for pod in pods(store, name):
        make_ready(store, pod)
    wait_for(lambda: complete(store, name), "the first rollout to complete")


def test_rolling_update_keeps_surge_and_availability_at_every_step(store, controllers) -> None:
    store.create("deployments", deployment("web", 4, type="RollingUpdate",
                                           rollingUpdate={"maxSurge": 1, "maxUnavailable": 1}))
    roll_out(store, controllers, "web")
    first = store.get("deployments", "default", "web")
    assert first["metadata"]["annotations"][REVISION] == "1"
    assert {c["type"]: c["status"] for c in first["status"]["conditions"]} == {"Available": "True", "Progressing": "True"}
    set_image(store, "web", "busybox:2")
    steps = 0
    while True:
        wait_for(lambda: settled(store, "web"), "the controllers to settle")
        sets, _ = store.list("replicasets", "default")
        assert sum(rs["spec"]["replicas"] for rs in sets) <= 4 + 1, "maxSurge exceeded"
        live = pods(store, "web")
        assert sum(1 for p in live if is_ready(p)) >= 4 - 1, "maxUnavailable exceeded"
        if complete(store, "web"):
            break
        waiting = [p for p in live if not is_ready(p)]
        if waiting:
            make_ready(store, waiting[0])
        steps += 1
        assert steps < 50, "the rollout does not progress"
    assert steps >= 3  # it went through intermediate states
    assert {image_of(p) for p in pods(store, "web")} == {"busybox:2"} and len(pods(store, "web")) == 4
    sets, _ = store.list("replicasets", "default")
    by_revision = {rs["metadata"]["annotations"][REVISION]: rs for rs in sets}
    assert sorted(by_revision) == ["1", "2"]
    assert by_revision["1"]["spec"]["replicas"] == 0 and by_revision["2"]["spec"]["replicas"] == 4
    new = by_revision["2"]
    assert new["metadata"]["name"] == f"web-{new['metadata']['labels'][HASH_LABEL]}"
    assert new["spec"]["selector"]["matchLabels"][HASH_LABEL] == new["metadata"]["labels"][HASH_LABEL]
    assert new["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    assert store.get("deployments", "default", "web")["metadata"]["annotations"][REVISION] == "2"


def test_recreate_stops_every_old_pod_before_a_new_one_starts(store, controllers) -> None:
    store.create("deployments", deployment("db", 2, type="Recreate"))
    roll_out(store, controllers, "db")
    live = {p["metadata"]["name"]: image_of(p) for p in store.list("pods", "default")[0]}
    assert list(live.values()) == ["busybox:1", "busybox:1"]
    since = store.current_revision()
    set_image(store, "db", "busybox:2")
    while not complete(store, "db"):
        wait_for(lambda: settled(store, "db"), "the controllers to settle")
        for pod in pods(store, "db"):
            if image_of(pod) == "busybox:2" and not is_ready(pod):
                make_ready(store, pod)
    assert [image_of(p) for p in pods(store, "db")] == ["busybox:2", "busybox:2"]
    # Replay every pod change since the template changed: no new pod appeared while an old one lived.
    creations = 0
    store.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "end-marker", "namespace": "default"},
                          "spec": {"containers": [{"name": "c", "image": "marker"}]}})
    with store.watch("pods", "default", since=since) as watcher:
        while True:
            event = watcher.get(timeout=30)
            assert event is not None, "the replay ended early"
            name = event.object["metadata"]["name"]
            if name == "end-marker":
                break
            if event.type == "DELETED":
                live.pop(name, None)
            elif event.type == "ADDED":
                if image_of(event.object) == "busybox:2":
                    assert "busybox:1" not in live.values(), f"{name} started while old pods lived: {live}"
                    creations += 1
                live[name] = image_of(event.object)
    assert creations == 2


def test_history_limit_and_deletion_cascade(store, controllers) -> None:
    store.create("deployments", deployment("api", 1, type="RollingUpdate",
                                           rollingUpdate={"maxSurge": 1, "maxUnavailable": 0}))
    set_spec(store, "api", lambda spec: spec.update(revisionHistoryLimit=1))
    roll_out(store, controllers, "api")
    for version in (2, 3, 4):
        set_image(store, "api", f"busybox:{version}")
        wait_for(lambda: any(not is_ready(p) for p in pods(store, "api")), "a new pod")
        for pod in pods(store, "api"):
            make_ready(store, pod)
        wait_for(lambda: complete(store, "api"), f"rollout {version}")
    sets = wait_for(lambda: (lambda s: s if len(s) == 2 else None)(store.list("replicasets", "default")[0]),
                    "old sets beyond revisionHistoryLimit to go")
    assert sorted(rs["metadata"]["annotations"][REVISION] for rs in sets) == ["3", "4"]
    store.delete("deployments", "default", "api")
    wait_for(lambda: not store.list("replicasets", "default")[0] and not pods(store, "api"),
             "the sets and pods to be collected with their Deployment")
