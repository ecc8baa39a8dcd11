"""The StatefulSet controller on a real store (SQLite and PostgreSQL) through the controller manager."""
from __future__ import annotations

import copy
from typing import Any

import pytest

from statefulset import revision as rv
from statefulset.cli_support import undo_patch_for
from statefulset.controller import describe_blocker
from storage.controllers.events import events_for
from storage.errors import Conflict
from sts_harness import pod_names
from support import get_or_none, wait_for

Obj = dict[str, Any]


def sts_manifest(replicas: int = 3, **spec: Any) -> Obj:
    body: Obj = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "serviceName": "nginx",
            "selector": {"matchLabels": {"app": "nginx"}},
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1"}]},
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "www"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            }],
        },
    }
    body["spec"].update(spec)
    return body


def edit(store: Any, mutate) -> Obj:
    for _ in range(50):
        sts = copy.deepcopy(store.get("statefulsets", "default", "web"))
        mutate(sts)
        try:
            return store.update("statefulsets", sts)
        except Conflict:
            continue
    raise AssertionError("could not edit the set")


def image(store: Any, name: str) -> str | None:
    """The member's image, or None while it is absent (it may be between deletion and recreation)."""
    pod = get_or_none(store, "pods", "default", name)
    return None if pod is None else pod["spec"]["containers"][0]["image"]


def bring_up(store, kubelet, names: list[str]) -> None:
    for name in names:
        wait_for(lambda: get_or_none(store, "pods", "default", name), what=f"pod {name}")
        kubelet.ready(name)


def status(store) -> Obj:
    return store.get("statefulsets", "default", "web").get("status") or {}


def test_s1_s2_scale_up_is_ordered_and_gated_on_readiness(store, controllers, kubelet):
    store.create("statefulsets", sts_manifest(3))
    wait_for(lambda: pod_names(store) == ["web-0"], what="web-0 alone")
    claim = store.get("persistentvolumeclaims", "default", "www-web-0")
    assert claim["metadata"]["labels"] == {"app": "nginx"}
    pod = store.get("pods", "default", "web-0")
    assert pod["spec"]["hostname"] == "web-0" and pod["spec"]["subdomain"] == "nginx"
    claims, token = pod["spec"]["volumes"]
    assert claims == {"name": "www", "persistentVolumeClaim": {"claimName": "www-web-0"}}
    assert token["name"].startswith("kube-api-access-")  # PS2: as any pod, the service account's token
    kubelet.unready("web-0")
    # web-1 must not appear while web-0 is not Ready: the blocker is recorded instead (S7).
    wait_for(lambda: "web-0" in (describe_blocker(store.get("statefulsets", "default", "web"),
                                                  store.list("pods", "default")[0]) or ""), what="blocker")
    expected = "Waiting for pod web-0 to be Running and Ready: readiness probe failing"
    wait_for(lambda: [c["message"] for c in status(store).get("conditions") or []
                      if c["type"] == "OrderedReadyBlocked"] == [expected], what="blocked condition")
    assert pod_names(store) == ["web-0"]
    kubelet.ready("web-0")
    wait_for(lambda: pod_names(store) == ["web-0", "web-1"], what="web-1")
    kubelet.ready("web-1")
    wait_for(lambda: pod_names(store) == ["web-0", "web-1", "web-2"], what="web-2")
    kubelet.ready("web-2")
    wait_for(lambda: status(store).get("readyReplicas") == 3, what="3 ready")
    st = status(store)
    assert st["replicas"] == 3 and st["currentRevision"] == st["updateRevision"]
    assert "conditions" not in st
    messages = [e["message"] for e in events_for(store, store.get("statefulsets", "default", "web"))]
    assert "create Pod web-0 in StatefulSet web successful" in messages
    assert "create Claim www-web-0 Pod web-0 in StatefulSet web success" in messages


def test_s2_scale_down_is_ordered_and_retains_claims(store, controllers, kubelet):
    store.create("statefulsets", sts_manifest(3))
    bring_up(store, kubelet, ["web-0", "web-1", "web-2"])
    wait_for(lambda: status(store).get("readyReplicas") == 3, what="3 ready")
    # Hold web-2 with a finalizer so we can see web-1 is not touched before web-2 is fully gone.
    pod = store.get("pods", "default", "web-2")
    pod["metadata"]["finalizers"] = ["test/hold"]
    store.update("pods", pod)
    edit(store, lambda s: s["spec"].update(replicas=1))
    wait_for(lambda: (get_or_none(store, "pods", "default", "web-2") or {}).get("metadata", {}).get("deletionTimestamp"),
             what="web-2 terminating")
    assert get_or_none(store, "pods", "default", "web-1")["metadata"].get("deletionTimestamp") is None
    held = store.get("pods", "default", "web-2")
    held["metadata"]["finalizers"] = []
    store.update("pods", held)
    wait_for(lambda: pod_names(store) == ["web-0"], what="scale down to 1")
    claims = sorted(c["metadata"]["name"] for c in store.list("persistentvolumeclaims", "default")[0])
    assert claims == ["www-web-0", "www-web-1", "www-web-2"]  # S5 default Retain


def test_s2_failed_member_recreated_with_same_name_and_claim(store, controllers, kubelet):
    store.create("statefulsets", sts_manifest(2))
    bring_up(store, kubelet, ["web-0", "web-1"])
    old_uid = store.get("pods", "default", "web-1")["metadata"]["uid"]
    claim_uid = store.get("persistentvolumeclaims", "default", "www-web-1")["metadata"]["uid"]
    kubelet.fail("web-1")
    new = wait_for(lambda: (p := get_or_none(store, "pods", "default", "web-1")) and p["metadata"]["uid"] != old_uid and p,
                   what="web-1 recreated")
    assert new["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "www-web-1"
    assert store.get("persistentvolumeclaims", "default", "www-web-1")["metadata"]["uid"] == claim_uid
    reasons = [e["reason"] for e in events_for(store, store.get("statefulsets", "default", "web"))]
    assert "RecreatingFailedPod" in reasons


def test_s4_rolling_update_highest_first_with_partition(store, controllers, kubelet):
    store.create("statefulsets", sts_manifest(3, updateStrategy={"type": "RollingUpdate",
                                                                  "rollingUpdate": {"partition": 1}}))
    bring_up(store, kubelet, ["web-0", "web-1", "web-2"])
    wait_for(lambda: status(store).get("readyReplicas") == 3, what="3 ready")
    old_uids = {n: store.get("pods", "default", n)["metadata"]["uid"] for n in ("web-0", "web-1", "web-2")}
    edit(store, lambda s: s["spec"]["template"]["spec"]["containers"][0].update(image="nginx:2"))
    wait_for(lambda: (p := get_or_none(store, "pods", "default", "web-2")) and image(store, "web-2") == "nginx:2",
             what="web-2 updated")
    # web-1 waits until web-2 is healthy again.
    assert store.get("pods", "default", "web-1")["metadata"]["uid"] == old_uids["web-1"]
    kubelet.ready("web-2")
    wait_for(lambda: get_or_none(store, "pods", "default", "web-1") and image(store, "web-1") == "nginx:2",
             what="web-1 updated")
    kubelet.ready("web-1")
    wait_for(lambda: status(store).get("updatedReplicas") == 2 and status(store).get("readyReplicas") == 3,
             what="partitioned rollout")
    assert image(store, "web-0") == "nginx:1"
    assert store.get("pods", "default", "web-0")["metadata"]["uid"] == old_uids["web-0"]
    st = status(store)
    assert st["currentRevision"] != st["updateRevision"]


def test_s4_on_delete(store, controllers, kubelet):
    store.create("statefulsets", sts_manifest(2, updateStrategy={"type": "OnDelete"}))
    bring_up(store, kubelet, ["web-0", "web-1"])
    wait_for(lambda: status(store).get("readyReplicas") == 2, what="2 ready")
    edit(store, lambda s: s["spec"]["template"]["spec"]["containers"][0].update(image="nginx:2"))
    wait_for(lambda: status(store).get("updateRevision") != status(store).get("currentRevision"), what="new revision")
    assert image(store, "web-0") == image(store, "web-1") == "nginx:1"
    store.delete("pods", "default", "web-0")
    wait_for(lambda: get_or_none(store, "pods", "default", "web-0") and image(store, "web-0") == "nginx:2",
             what="web-0 at new revision")
    assert image(store, "web-1") == "nginx:1"


def test_s5_when_scaled_delete_removes_claims(store, controllers, kubelet):
    store.create("statefulsets", sts_manifest(
        2, persistentVolumeClaimRetentionPolicy={"whenScaled": "Delete", "whenDeleted": "Retain"}))
    bring_up(store, kubelet, ["web-0", "web-1"])
    wait_for(lambda: status(store).get("readyReplicas") == 2, what="2 ready")
    edit(store, lambda s: s["spec"].update(replicas=1))
    wait_for(lambda: get_or_none(store, "persistentvolumeclaims", "default", "www-web-1") is None,
             what="claim of web-1 deleted")
    assert get_or_none(store, "persistentvolumeclaims", "default", "www-web-0") is not None


def test_s5_when_deleted_delete_removes_claims_with_the_set(store, controllers, kubelet):
    store.create("statefulsets", sts_manifest(
        1, persistentVolumeClaimRetentionPolicy={"whenScaled": "Retain", "whenDeleted": "Delete"}))
    bring_up(store, kubelet, ["web-0"])
    store.delete("statefulsets", "default", "web")
    wait_for(lambda: pod_names(store) == [], what="pods collected")
    wait_for(lambda: get_or_none(store, "persistentvolumeclaims", "default", "www-web-0") is None,
             what="claim collected")


def test_s5_retain_keeps_claims_when_set_is_deleted(store, controllers, kubelet):
    store.create("statefulsets", sts_manifest(1))
    bring_up(store, kubelet, ["web-0"])
    store.delete("statefulsets", "default", "web")
    wait_for(lambda: pod_names(store) == [], what="pods collected")
    assert get_or_none(store, "persistentvolumeclaims", "default", "www-web-0") is not None


def test_s10_b11_unbound_member_claim_deleted_while_its_pod_exists_stays_until_the_pod_is_gone(
        store, controllers, kubelet):
    """S10, B11: the member's claim (unbound: no binder runs here, as under WaitForFirstConsumer before
    scheduling) carries pvc-protection from creation, so deleting it while web-0 exists leaves it
    Terminating; it goes once the pod object is gone, and the set then makes claim and pod again."""
    store.create("statefulsets", sts_manifest(1))
    bring_up(store, kubelet, ["web-0"])
    claim = wait_for(lambda: get_or_none(store, "persistentvolumeclaims", "default", "www-web-0"), what="claim")
    assert claim["metadata"].get("finalizers") == ["kubernetes.io/pvc-protection"]
    assert (claim.get("status") or {}).get("phase") != "Bound"
    store.delete("persistentvolumeclaims", "default", "www-web-0")
    # Barrier: the controllers have seen the deletion and handled every key it queued.
    wait_for(lambda: ((controllers.cache.get("persistentvolumeclaims", "default", "www-web-0") or {})
                      .get("metadata", {}).get("deletionTimestamp")) and controllers.idle(),
             what="the deletion seen and handled")
    claim = store.get("persistentvolumeclaims", "default", "www-web-0")
    assert claim["metadata"].get("deletionTimestamp")
    assert claim["metadata"].get("finalizers") == ["kubernetes.io/pvc-protection"]
    old_uid = claim["metadata"]["uid"]
    store.delete("pods", "default", "web-0")
    wait_for(lambda: (get_or_none(store, "persistentvolumeclaims", "default", "www-web-0") or {})
             .get("metadata", {}).get("uid") not in (None, old_uid), what="the claim released and made again")
    wait_for(lambda: get_or_none(store, "pods", "default", "web-0"), what="web-0 made again")
    assert not store.get("persistentvolumeclaims", "default", "www-web-0")["metadata"].get("deletionTimestamp")


def test_s4_revision_history_and_undo(store, controllers, kubelet):
    store.create("statefulsets", sts_manifest(1, revisionHistoryLimit=2))
    bring_up(store, kubelet, ["web-0"])
    for tag in ("2", "3", "4"):
        edit(store, lambda s: s["spec"]["template"]["spec"]["containers"][0].update(image=f"nginx:{tag}"))
        wait_for(lambda: get_or_none(store, "pods", "default", "web-0") and image(store, "web-0") == f"nginx:{tag}",
                 what=f"web-0 at nginx:{tag}")
        kubelet.ready("web-0")
        wait_for(lambda: status(store).get("currentRevision") == status(store).get("updateRevision")
                 and status(store).get("readyReplicas") == 1, what="rollout complete")

    def revisions() -> list[Obj]:
        return rv.sort_revisions(store.list("controllerrevisions", "default")[0])

    wait_for(lambda: len(revisions()) == 3, what="history trimmed to limit + current")
    assert [r["revision"] for r in revisions()] == [2, 3, 4]
    sts = store.get("statefulsets", "default", "web")
    patch = undo_patch_for(sts, revisions(), to_revision=2)
    edit(store, lambda s: s["spec"].update(template=rv.template_of({"data": patch})))
    wait_for(lambda: get_or_none(store, "pods", "default", "web-0") and image(store, "web-0") == "nginx:2",
             what="rolled back")
    wait_for(lambda: max(r["revision"] for r in revisions()) == 5, what="renumbered revision")
    newest = revisions()[-1]
    assert rv.template_of(newest)["spec"]["containers"][0]["image"] == "nginx:2"


def test_s3_parallel_creates_all_without_waiting(store, controllers, kubelet):
    store.create("statefulsets", sts_manifest(3, podManagementPolicy="Parallel"))
    wait_for(lambda: pod_names(store) == ["web-0", "web-1", "web-2"], what="all three at once")
    edit(store, lambda s: s["spec"].update(replicas=0))
    wait_for(lambda: pod_names(store) == [], what="all gone at once")


def test_s8_parallel_rollout_heals_when_a_template_that_never_became_ready_is_reverted(store, controllers, kubelet):
    """S8: no pod is deleted by hand; the unready member of the bad revision is replaced after the revert."""
    store.create("statefulsets", sts_manifest(3, podManagementPolicy="Parallel"))
    bring_up(store, kubelet, ["web-0", "web-1", "web-2"])
    wait_for(lambda: status(store).get("readyReplicas") == 3, what="3 ready")
    edit(store, lambda s: s["spec"]["template"]["spec"]["containers"][0].update(image="broken:1"))
    wait_for(lambda: image(store, "web-2") == "broken:1", what="web-2 on the bad template")
    kubelet.unready("web-2", "back-off restarting failed container")
    edit(store, lambda s: s["spec"]["template"]["spec"]["containers"][0].update(image="nginx:1"))
    wait_for(lambda: image(store, "web-2") == "nginx:1", what="web-2 replaced after the revert")
    kubelet.ready("web-2")
    wait_for(lambda: status(store).get("readyReplicas") == 3
             and status(store).get("currentRevision") == status(store).get("updateRevision"), what="healed")
    assert [image(store, n) for n in ("web-0", "web-1", "web-2")] == ["nginx:1"] * 3


@pytest.mark.parametrize("start", [3])
def test_s1_start_ordinal(store, controllers, kubelet, start):
    store.create("statefulsets", sts_manifest(2, ordinals={"start": start}))
    bring_up(store, kubelet, ["web-3", "web-4"])
    wait_for(lambda: pod_names(store) == ["web-3", "web-4"], what="web-3, web-4")


def test_s9_a_set_deleted_with_orphan_and_made_again_adopts_its_revision_and_keeps_its_pods(store, controllers, kubelet):
    """``kubectl delete sts web --cascade=orphan`` then the same manifest again (how a set's
    volumeClaimTemplates are changed): the new set adopts the orphaned ControllerRevision and pods,
    its hash stays, no collision is counted and no member is replaced."""
    store.create("statefulsets", sts_manifest(2))
    bring_up(store, kubelet, ["web-0", "web-1"])
    wait_for(lambda: status(store).get("readyReplicas") == 2, what="two ready members")
    before = {n: store.get("pods", "default", n)["metadata"]["uid"] for n in ("web-0", "web-1")}
    old_revision = status(store)["currentRevision"]
    old = store.get("statefulsets", "default", "web")
    old["metadata"].setdefault("finalizers", []).append("orphan")
    store.update("statefulsets", old)
    store.delete("statefulsets", "default", "web")
    wait_for(lambda: get_or_none(store, "statefulsets", "default", "web") is None, what="the set gone, orphaning")
    wait_for(lambda: not store.get("controllerrevisions", "default", old_revision)["metadata"].get("ownerReferences"),
             what="the revision orphaned")
    store.create("statefulsets", sts_manifest(2))
    new_uid = store.get("statefulsets", "default", "web")["metadata"]["uid"]
    wait_for(lambda: status(store).get("currentRevision") == old_revision and status(store).get("readyReplicas") == 2,
             what="the new set on the old revision")
    owners = store.get("controllerrevisions", "default", old_revision)["metadata"]["ownerReferences"]
    assert [o["uid"] for o in owners if o.get("controller")] == [new_uid]
    assert not status(store).get("collisionCount")
    assert {n: store.get("pods", "default", n)["metadata"]["uid"] for n in ("web-0", "web-1")} == before
