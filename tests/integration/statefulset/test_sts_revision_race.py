"""The StatefulSet reconciler driven one pass at a time on a real store (SQLite and PostgreSQL), with an
informer cache the test fills itself, so a cache that lags the store is set up exactly, not raced for."""
from __future__ import annotations

import copy
from typing import Any

from statefulset import revision as rv
from statefulset.controller import StatefulSetReconciler
from statefulset.identity import REVISION_LABEL
from storage.controllers.base import ControllerContext
from storage.controllers.events import StoreEventRecorder
from storage.controllers.manager import InformerCache
from storage.errors import Conflict
from sts_harness import Kubelet, pod_names
from test_sts_controller import sts_manifest as with_claims

Obj = dict[str, Any]
RESOURCES = ("statefulsets", "pods", "persistentvolumeclaims", "controllerrevisions")


def sts_manifest(replicas: int, **spec: Any) -> Obj:
    """The other StatefulSet tests' set, without claims."""
    return with_claims(replicas, volumeClaimTemplates=[], **spec)


class Passes:
    """The StatefulSetReconciler on ``store``, one pass at a time. Each pass gets a cache holding the
    store's listing taken now, except for the resources ``stale`` gives: those show what it says."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.events = StoreEventRecorder(store)

    def run(self, stale: dict[str, list[Obj]] | None = None) -> bool:
        """One pass; False when it ended in Conflict (the manager would requeue the set)."""
        cache = InformerCache()
        for resource in RESOURCES:
            items = (stale or {}).get(resource)
            cache.replace(resource, copy.deepcopy(items) if items is not None
                          else self.store.list(resource, "default")[0])
        reconciler = StatefulSetReconciler(ControllerContext(store=self.store, cache=cache, events=self.events))
        try:
            reconciler.reconcile("default/web")
        except Conflict:
            return False
        return True


def status(store: Any) -> Obj:
    return store.get("statefulsets", "default", "web").get("status") or {}


def test_s9b_an_orphaned_revision_of_equal_data_the_cache_still_shows_owned_is_used_not_counted_a_collision(store):
    """S9b: a set deleted with orphan propagation and made again with the same template. The pass runs
    while its cache still shows the old set as the revision's controller (the revision's watch event
    that released it has not arrived; the pods' have), so the controller does not adopt it and creates
    the revision; the create fails AlreadyExists on a revision of equal data with no controller. That is
    the same revision, as Kubernetes' history.CreateControllerRevision returns it: collisionCount stays
    0, the set's current and update revisions are the existing one's name, and no member is replaced."""
    passes = Passes(store)
    kubelet = Kubelet(store)
    store.create("statefulsets", sts_manifest(2, podManagementPolicy="Parallel"))
    assert passes.run()
    assert pod_names(store) == ["web-0", "web-1"]
    kubelet.run_all_ready(["web-0", "web-1"])
    assert passes.run()
    old_uid = store.get("statefulsets", "default", "web")["metadata"]["uid"]
    revision = status(store)["updateRevision"]
    assert status(store)["currentRevision"] == revision and status(store).get("readyReplicas") == 2
    members = {n: store.get("pods", "default", n)["metadata"]["uid"] for n in ("web-0", "web-1")}
    owned_revisions = store.list("controllerrevisions", "default")[0]
    assert [r["metadata"]["name"] for r in owned_revisions] == [revision]

    # ``--cascade=orphan``: the garbage collector's writes, then the set goes.
    for resource, name in [("controllerrevisions", revision), ("pods", "web-0"), ("pods", "web-1")]:
        released = store.get(resource, "default", name)
        released["metadata"]["ownerReferences"] = []
        store.update(resource, released)
    store.delete("statefulsets", "default", "web")
    store.create("statefulsets", sts_manifest(2, podManagementPolicy="Parallel"))
    new_uid = store.get("statefulsets", "default", "web")["metadata"]["uid"]
    assert new_uid != old_uid

    # The cache has not yet seen the revision released: it shows the old set as its controller.
    ended = passes.run(stale={"controllerrevisions": owned_revisions})
    assert not status(store).get("collisionCount")
    assert ended
    assert status(store)["updateRevision"] == revision and status(store)["currentRevision"] == revision
    assert [r["metadata"]["name"] for r in store.list("controllerrevisions", "default")[0]] == [revision]

    # Once the cache shows the orphan, the new set adopts it and stays on it.
    assert passes.run()
    assert passes.run()
    owners = store.get("controllerrevisions", "default", revision)["metadata"]["ownerReferences"]
    assert [o["uid"] for o in owners if o.get("controller")] == [new_uid]
    assert not status(store).get("collisionCount")
    assert status(store)["updateRevision"] == revision and status(store)["currentRevision"] == revision
    assert {n: store.get("pods", "default", n)["metadata"]["uid"] for n in ("web-0", "web-1")} == members
    assert {store.get("pods", "default", n)["metadata"]["labels"][REVISION_LABEL]
            for n in ("web-0", "web-1")} == {revision}


def test_s9b_a_revision_of_the_same_name_with_other_data_is_a_collision(store):
    """S9b's contrast: the name the set's template hashes to is held by a revision with other data (and
    no controller) that the cache has not seen. The create fails AlreadyExists; that is a hash collision,
    so collisionCount is bumped and the set's revision is made under the next hash."""
    passes = Passes(store)
    sts = store.create("statefulsets", sts_manifest(1))
    squatter = rv.new_revision(sts, 1)
    name = squatter["metadata"]["name"]
    squatter["metadata"]["ownerReferences"] = []
    squatter["data"]["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    store.create("controllerrevisions", squatter)

    assert not passes.run(stale={"controllerrevisions": []})  # Conflict: the manager would requeue
    assert status(store).get("collisionCount") == 1
    assert passes.run()
    assert status(store).get("collisionCount") == 1
    expected = f"web-{rv.revision_hash(rv.template_patch(sts), 1)}"
    assert expected != name
    assert status(store)["updateRevision"] == expected
    assert store.get("controllerrevisions", "default", name)["data"] == squatter["data"]
