"""The binder, provisioning, reclaim, protection and expansion controllers on a real store (SQLite and PostgreSQL)."""
from __future__ import annotations

import threading
from pathlib import Path

from binder_events import event_reasons, wait_event
from storage.controllers.events import events_for
from provisioners import registry
from storage.errors import Conflict
from provisioners.base import ProvisionRequest, ProvisionResult, Provisioner
from support import get_or_none, running_controllers, wait_for

PV, PVC, SC, POD = "persistentvolumes", "persistentvolumeclaims", "storageclasses", "pods"


def mk_pv(name, size="1Gi", modes=("ReadWriteOnce",), cls="", policy="Retain", source=None, claim_ref=None, annotations=None):
    spec = {"capacity": {"storage": size}, "accessModes": list(modes), "storageClassName": cls,
            "persistentVolumeReclaimPolicy": policy, **(source or {"local": {"path": "/nonexistent"}})}
    if claim_ref:
        spec["claimRef"] = claim_ref
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name, "annotations": annotations or {}},
            "spec": spec, "status": {"phase": "Pending"}}


def mk_pvc(name, size="1Gi", modes=("ReadWriteOnce",), cls: str | None = "", volume_name=None, ns="default", annotations=None):
    spec = {"accessModes": list(modes), "resources": {"requests": {"storage": size}}}
    if cls is not None:
        spec["storageClassName"] = cls
    if volume_name:
        spec["volumeName"] = volume_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
            "spec": spec, "status": {"phase": "Pending"}}


def mk_sc(name, provisioner="stowage.io/hostpath", policy="Delete", params=None, mode="Immediate", expand=False, default=False, mount_options=None):
    sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name, "annotations": {}},
          "provisioner": provisioner, "reclaimPolicy": policy, "volumeBindingMode": mode, "parameters": params or {},
          "allowVolumeExpansion": expand}
    if default:
        sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] = "true"
    if mount_options:
        sc["mountOptions"] = mount_options
    return sc


def phase(store, resource, ns, name):
    obj = get_or_none(store, resource, ns, name)
    return obj and (obj.get("status") or {}).get("phase")


def wait_phase(store, resource, ns, name, want, timeout=30):
    wait_for(lambda: phase(store, resource, ns, name) == want, f"{resource} {name} {want}", timeout)
    return store.get(resource, ns, name)


def test_b6_static_bind_writes_both_sides(store, controllers):
    store.create(PV, mk_pv("big", "5Gi"))
    store.create(PV, mk_pv("small", "2Gi"))
    wait_phase(store, PV, "", "big", "Available")
    wait_phase(store, PV, "", "small", "Available")
    claim = store.create(PVC, mk_pvc("data", "1500Mi"))
    claim = wait_phase(store, PVC, "default", "data", "Bound")
    assert claim["spec"]["volumeName"] == "small"  # B3 smallest fit
    ann = claim["metadata"]["annotations"]
    assert ann["pv.kubernetes.io/bind-completed"] == "yes" and ann["pv.kubernetes.io/bound-by-controller"] == "yes"
    assert claim["status"]["capacity"] == {"storage": "2Gi"} and claim["status"]["accessModes"] == ["ReadWriteOnce"]
    vol = wait_phase(store, PV, "", "small", "Bound")
    assert vol["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
    assert vol["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] == "yes"
    assert "kubernetes.io/pv-protection" in vol["metadata"]["finalizers"]
    assert "kubernetes.io/pvc-protection" in claim["metadata"]["finalizers"]
    wait_phase(store, PV, "", "big", "Available")


def test_b7_no_match_without_class_gives_failed_binding(store, controllers):
    claim = store.create(PVC, mk_pvc("lonely", "1Gi"))
    event = wait_event(store, claim, "FailedBinding")
    assert event["type"] == "Normal"
    assert event["message"] == "no persistent volumes available for this claim and no storage class is set"
    # a volume appearing later binds it without any resync (event-driven)
    store.create(PV, mk_pv("late", "1Gi"))
    assert wait_phase(store, PVC, "default", "lonely", "Bound")["spec"]["volumeName"] == "late"


def test_b5_requested_volume_mismatch_and_bound_elsewhere(store, controllers):
    store.create(PV, mk_pv("tiny", "1Gi"))
    claim = store.create(PVC, mk_pvc("wants-tiny", "2Gi", volume_name="tiny"))
    event = wait_event(store, claim, "VolumeMismatch")
    assert event["type"] == "Warning"
    assert event["message"] == 'Cannot bind to requested volume "tiny": requested PV is too small'
    store.create(PV, mk_pv("gold", "1Gi", cls="gold"))
    c2 = store.create(PVC, mk_pvc("wants-gold", "1Gi", volume_name="gold"))
    assert wait_event(store, c2, "VolumeMismatch")["message"].endswith("storageClassName does not match")
    store.create(PV, mk_pv("taken", "1Gi"))
    store.create(PVC, mk_pvc("first", "1Gi", volume_name="taken"))
    wait_phase(store, PVC, "default", "first", "Bound")
    c3 = store.create(PVC, mk_pvc("second", "1Gi", volume_name="taken"))
    assert wait_event(store, c3, "FailedBinding")["message"] == 'volume "taken" already bound to a different claim.'
    assert phase(store, PVC, "default", "second") == "Pending"


def test_b12_wait_for_first_consumer_claim_naming_a_mismatched_volume_gets_volume_mismatch(store, controllers):
    """B5, B12: a claim whose class waits for the first consumer but names its volume is checked against that
    volume at once, as Kubernetes' PV controller checks any claim with ``spec.volumeName``."""
    store.create(SC, mk_sc("late-b12", provisioner="kubernetes.io/no-provisioner", mode="WaitForFirstConsumer"))
    store.create(PV, mk_pv("pv-small", "1Gi", cls="late-b12"))
    store.create(PV, mk_pv("pv-rwo", "5Gi", cls="late-b12"))
    store.create(PV, mk_pv("pv-other", "5Gi", cls="other-b12"))
    small = store.create(PVC, mk_pvc("too-big", "2Gi", cls="late-b12", volume_name="pv-small"))
    rwx = store.create(PVC, mk_pvc("needs-rwx", "1Gi", modes=("ReadWriteMany",), cls="late-b12", volume_name="pv-rwo"))
    other = store.create(PVC, mk_pvc("wrong-class", "1Gi", cls="late-b12", volume_name="pv-other"))
    for claim, volume, why in ((small, "pv-small", "requested PV is too small"),
                               (rwx, "pv-rwo", "incompatible accessMode"),
                               (other, "pv-other", "storageClassName does not match")):
        event = wait_event(store, claim, "VolumeMismatch")
        assert (event["type"], event["message"]) == ("Warning", f'Cannot bind to requested volume "{volume}": {why}')
    for name in ("too-big", "needs-rwx", "wrong-class"):
        assert phase(store, PVC, "default", name) == "Pending"
    assert "WaitForFirstConsumer" not in [reason for _, reason, _ in event_reasons(store, small)]


def _touch(store, resource, ns, name, label):
    """Change ``name`` in a way that matters to no binding decision, so its controllers sync it again."""
    for _ in range(50):
        obj = store.get(resource, ns, name)
        obj["metadata"].setdefault("labels", {})["touched"] = label
        try:
            return store.update(resource, obj)
        except Conflict:
            continue
    raise AssertionError(f"could not touch {name}")


def _edit_volume_spec(store, name, **changes):
    for _ in range(50):
        volume = store.get(PV, "", name)
        volume["spec"].update(changes)
        try:
            return store.update(PV, volume)
        except Conflict:
            continue
    raise AssertionError(f"could not edit {name}")


def test_b12_volume_mismatch_is_told_once_per_change_not_on_every_sync(store, controllers):
    """B12: syncing the claim again (its own or its volume's unrelated change, a sweep, a resync) adds nothing;
    a different mismatch is told again, and a fixed volume binds."""
    store.create(SC, mk_sc("late-once", provisioner="kubernetes.io/no-provisioner", mode="WaitForFirstConsumer"))
    store.create(PV, mk_pv("pv-once", "1Gi", cls="late-once"))
    claim = store.create(PVC, mk_pvc("once", "2Gi", cls="late-once", volume_name="pv-once"))
    too_small = 'Cannot bind to requested volume "pv-once": requested PV is too small'
    wait_event(store, claim, "VolumeMismatch")

    def mismatches():
        return [(e["message"], e.get("count", 1)) for e in events_for(store, claim) if e["reason"] == "VolumeMismatch"]

    for round_ in range(3):
        _touch(store, PVC, "default", "once", str(round_))
        _touch(store, PV, "", "pv-once", str(round_))
    # Barrier: the controllers have seen the last touches and handled every key they queued.
    wait_for(lambda: ((controllers.cache.get(PVC, "default", "once") or {}).get("metadata", {}).get("labels") or {})
             .get("touched") == "2"
             and ((controllers.cache.get(PV, "", "pv-once") or {}).get("metadata", {}).get("labels") or {})
             .get("touched") == "2" and controllers.idle(), "the touches seen and handled", 30)
    assert mismatches() == [(too_small, 1)]

    _edit_volume_spec(store, "pv-once", capacity={"storage": "5Gi"}, storageClassName="other-once")
    other = 'Cannot bind to requested volume "pv-once": storageClassName does not match'
    wait_for(lambda: sorted(mismatches()) == sorted([(too_small, 1), (other, 1)]), "the new mismatch told", 30)
    _edit_volume_spec(store, "pv-once", storageClassName="late-once")
    assert wait_phase(store, PVC, "default", "once", "Bound")["spec"]["volumeName"] == "pv-once"


def test_b3_prebound_volume_binds_by_name_and_missing_volume_stays_pending(store, controllers):
    store.create(PV, mk_pv("reserved", "9Gi", cls="other", claim_ref={"name": "mine", "namespace": "default"}))
    store.create(PV, mk_pv("cheap", "1Gi"))
    wait_phase(store, PV, "", "reserved", "Available")
    store.create(PVC, mk_pvc("mine", "1Gi"))
    claim = wait_phase(store, PVC, "default", "mine", "Bound")
    assert claim["spec"]["volumeName"] == "reserved"
    vol = store.get(PV, "", "reserved")
    assert "pv.kubernetes.io/bound-by-controller" not in vol["metadata"]["annotations"]  # the user chose
    store.create(PVC, mk_pvc("ghost", "1Gi", volume_name="does-not-exist"))
    wait_for(lambda: controllers.idle(), "controllers idle", 30)
    assert phase(store, PVC, "default", "ghost") == "Pending"


def test_b9_claim_lost_when_volume_vanishes(store, controllers):
    store.create(PV, mk_pv("v", "1Gi"))
    store.create(PVC, mk_pvc("c", "1Gi"))
    wait_phase(store, PVC, "default", "c", "Bound")
    # Force the volume away the way an administrator would: mark it deleted, then
    # drop its finalizers (the protection controller re-adds them to a live volume,
    # so dropping them first would race it).
    store.delete(PV, "", "v")
    for _attempt in range(20):
        vol = get_or_none(store, PV, "", "v")
        if vol is None:
            break
        vol["metadata"]["finalizers"] = []
        try:
            store.update(PV, vol)
        except Conflict:
            continue
    assert get_or_none(store, PV, "", "v") is None
    claim = wait_phase(store, PVC, "default", "c", "Lost")
    # The event is recorded after the status write that makes the claim Lost, so it may come a moment later.
    event = wait_event(store, claim, "ClaimLost")
    assert (event["type"], event["message"]) == ("Warning", "Bound claim has lost its PersistentVolume. Data on the volume is lost!")


def test_b10_retain_keeps_claim_ref_with_uid(store, controllers):
    store.create(PV, mk_pv("keep", policy="Retain"))
    claim = store.create(PVC, mk_pvc("c"))
    wait_phase(store, PVC, "default", "c", "Bound")
    store.delete(PVC, "default", "c")
    vol = wait_phase(store, PV, "", "keep", "Released")
    assert vol["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
    # admin removes the claimRef -> Available again
    vol["spec"].pop("claimRef")
    store.update(PV, vol)
    wait_phase(store, PV, "", "keep", "Available")


def test_b10_recycle_hostpath_scrubs_and_makes_available(store, controllers, hostpath, tmp_path: Path):
    data = tmp_path / "recycled"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "file").write_text("secret")
    (data / "top").write_text("x")
    store.create(PV, mk_pv("rec", policy="Recycle", source={"hostPath": {"path": str(data)}}))
    store.create(PVC, mk_pvc("c"))
    wait_phase(store, PVC, "default", "c", "Bound")
    store.delete(PVC, "default", "c")
    vol = wait_for(lambda: (v := get_or_none(store, PV, "", "rec")) and v["status"].get("phase") == "Available"
                   and "claimRef" not in v["spec"] and v, "recycled", 30)
    assert data.is_dir() and list(data.iterdir()) == []
    # The event follows the status write, as in Kubernetes: wait for it rather than read once.
    event = wait_event(store, vol, "VolumeRecycled")
    assert (event["type"], event["message"]) == ("Normal", "Volume recycled")


def test_b10_recycle_without_recycler_fails(store, controllers):
    store.create(PV, mk_pv("norec", policy="Recycle"))  # a local volume: nobody can recycle it
    store.create(PVC, mk_pvc("c"))
    wait_phase(store, PVC, "default", "c", "Bound")
    store.delete(PVC, "default", "c")
    vol = wait_phase(store, PV, "", "norec", "Failed")
    event = wait_event(store, vol, "VolumeFailedRecycle")
    assert (event["type"], event["message"]) == ("Warning", "No recycler plugin found for the volume!")


def test_b10_a_backend_conflict_on_delete_waits_with_backoff(store, controllers):
    """L10: the backend's 409 (the local pool's "in use" while a pod on the node still has the volume mounted) is
    a failure retried with back-off, not an optimistic-concurrency conflict of the store retried at once:
    the manager re-queued it immediately, and the binder called the node agent in a tight loop."""
    class InUse(FlakyDeleter):
        name = "test.stowage.io/in-use"

        def delete(self, pv) -> None:
            raise Conflict(f"pool volume {pv['metadata']['name']} is in use: /dev/loop9 mounted at /mnt/x")

    in_use = InUse()
    registry.register(in_use)
    try:
        store.create(SC, mk_sc("in-use", provisioner=in_use.name))
        store.create(PVC, mk_pvc("c", cls="in-use"))
        pv_name = wait_phase(store, PVC, "default", "c", "Bound")["spec"]["volumeName"]
        store.delete(PVC, "default", "c")
        vol = wait_phase(store, PV, "", pv_name, "Failed")
        assert wait_event(store, vol, "VolumeFailedDelete")["message"].startswith(f"pool volume {pv_name} is in use")
        queue = next(c.queue for c in controllers.controllers if c.reconciler.name == "persistentvolume-binder-volumes")
        wait_for(lambda: queue.num_requeues(pv_name) >= 3, "the delete retried with back-off", 30)
    finally:
        registry.unregister(in_use.name)


def test_l11_a_volume_its_node_no_longer_uses_is_deleted_without_waiting_for_the_backoff(store):
    """L11: a released local volume whose delete the node refused (in use) is retried when the node's
    ``status.volumesInUse`` drops it, not at the back-off's next step (here made a minute long, and no
    resync to retry it either)."""
    class Pinned(FlakyDeleter):
        name = "test.stowage.io/pinned"

        def __init__(self) -> None:
            super().__init__()
            self.busy = True
            self.calls = 0

        def provision(self, req: ProvisionRequest) -> ProvisionResult:
            return ProvisionResult.finished({"local": {"path": "/x"}}, req.claim["spec"]["resources"]["requests"]["storage"],
                                            node_affinity={"required": {"nodeSelectorTerms": [{"matchExpressions": [
                                                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}})

        def delete(self, pv) -> None:
            self.calls += 1
            if self.busy:
                raise Conflict(f"pool volume {pv['metadata']['name']} is in use")
            self.deleted.append(pv["metadata"]["name"])

    def node_status(node, in_use: list[str]) -> dict:
        node["status"] = {"conditions": [{"type": "Ready", "status": "True"}], "volumesInUse": in_use}
        return store.update("nodes", node)

    pinned = Pinned()
    registry.register(pinned)
    try:
        with running_controllers(store, resync_seconds=0) as controllers:
            _l11_node_news_retry_the_delete(store, controllers, pinned, node_status)
    finally:
        registry.unregister(pinned.name)


def _l11_node_news_retry_the_delete(store, controllers, pinned, node_status) -> None:
    queue = next(c.queue for c in controllers.controllers if c.reconciler.name == "persistentvolume-binder-volumes")
    queue.base_delay = 60.0  # the first back-off step alone is 30-90 s
    node = store.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    store.create(SC, mk_sc("pinned", provisioner=pinned.name))
    store.create(PVC, mk_pvc("c", cls="pinned"))
    pv_name = wait_phase(store, PVC, "default", "c", "Bound")["spec"]["volumeName"]
    node = node_status(node, [f"kubernetes.io~local-volume/{pv_name}"])
    store.delete(PVC, "default", "c")
    wait_phase(store, PV, "", pv_name, "Failed")
    # Two refusals: the first, and the one its own Failed phase brought back at once.
    wait_for(lambda: queue.num_requeues(pv_name) >= 2, "the refused delete waiting with back-off", 30)
    calls = pinned.calls
    # The node still reports the volume in use: its news brings no retry.
    node = node_status(node, [f"kubernetes.io~local-volume/{pv_name}", "kubernetes.io~local-volume/other"])
    pinned.busy = False
    node = node_status(node, [f"kubernetes.io~local-volume/{pv_name}"])
    wait_for(lambda: controllers.cache.get("nodes", "", "n1")["metadata"]["resourceVersion"]
             == node["metadata"]["resourceVersion"], "the node's news in the controllers' cache", 30)
    assert pinned.calls == calls and get_or_none(store, PV, "", pv_name) is not None
    # The volume is no longer in use there: deleted now, long before the back-off's retry.
    node_status(node, [])
    wait_for(lambda: get_or_none(store, PV, "", pv_name) is None, "the volume deleted on the node's news", 15)
    assert pinned.deleted == [pv_name]


def test_p_a_claim_is_provisioned_once_when_its_class_sweep_and_its_own_sync_race(store, controllers):
    """A claim is synced under its own key and by the sweep a new StorageClass starts (another key, so
    another worker): both used to provision it, and the second provisioning's write of the volume raced
    its deletion. One claim lock makes the second wait, then find the claim bound."""
    class Slow(FlakyDeleter):
        name = "test.stowage.io/slow"

        def __init__(self) -> None:
            super().__init__()
            self.calls = 0
            self.inside = threading.Event()
            self.release = threading.Event()

        def provision(self, req: ProvisionRequest) -> ProvisionResult:
            self.calls += 1
            self.inside.set()
            self.release.wait(60)
            return super().provision(req)

    slow = Slow()
    registry.register(slow)
    queue = next(c.queue for c in controllers.controllers if c.reconciler.name == "persistentvolume-binder-claims")
    try:
        store.create(PVC, mk_pvc("c", cls="slow"))  # its class does not exist yet: it waits
        wait_phase(store, PVC, "default", "c", "Pending")
        store.create(SC, mk_sc("slow", provisioner=slow.name))  # the class's sweep provisions it
        assert slow.inside.wait(30), "the sweep did not provision the claim"
        for _attempt in range(10):  # the claim's own key, while the sweep's provisioning is still running
            claim = store.get(PVC, "default", "c")
            claim["metadata"].setdefault("labels", {})["poked"] = "yes"
            try:
                store.update(PVC, claim)
                break
            except Conflict:
                continue
        wait_for(lambda: queue.in_progress("default/c") or slow.calls > 1, "the claim's own sync under way", 30)
        slow.release.set()
        wait_phase(store, PVC, "default", "c", "Bound")
        wait_for(lambda: not queue.in_progress("default/c") and not queue.in_progress("~class:slow"),
                 "both syncs done", 30)
        assert slow.calls == 1
        assert len([v for v in store.list(PV)[0] if v["spec"].get("storageClassName") == "slow"]) == 1
    finally:
        slow.release.set()
        registry.unregister(slow.name)


class FlakyDeleter(Provisioner):
    name = "test.stowage.io/flaky"

    def __init__(self) -> None:
        self.failures_left = 2
        self.deleted: list[str] = []

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        return ProvisionResult.finished({"local": {"path": "/x"}}, req.claim["spec"]["resources"]["requests"]["storage"])

    def delete(self, pv) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise RuntimeError("backend says: disk is busy")
        self.deleted.append(pv["metadata"]["name"])


def test_b10_delete_failure_goes_failed_then_retries_with_backoff(store, controllers):
    flaky = FlakyDeleter()
    registry.register(flaky)
    try:
        store.create(SC, mk_sc("flaky", provisioner=flaky.name))
        claim = store.create(PVC, mk_pvc("c", cls="flaky"))
        claim = wait_phase(store, PVC, "default", "c", "Bound")
        pv_name = claim["spec"]["volumeName"]
        store.delete(PVC, "default", "c")
        wait_for(lambda: get_or_none(store, PV, "", pv_name) is None, "volume deleted after retries", 60)
        assert flaky.deleted == [pv_name]
        assert flaky.failures_left == 0
    finally:
        registry.unregister(flaky.name)


def test_b10_delete_failure_records_failed_phase(store, controllers):
    class AlwaysFails(FlakyDeleter):
        name = "test.stowage.io/always-fails"

        def delete(self, pv) -> None:
            raise RuntimeError("backend says: no")

    bad = AlwaysFails()
    registry.register(bad)
    try:
        store.create(SC, mk_sc("bad", provisioner=bad.name))
        store.create(PVC, mk_pvc("c", cls="bad"))
        claim = wait_phase(store, PVC, "default", "c", "Bound")
        store.delete(PVC, "default", "c")
        vol = wait_phase(store, PV, "", claim["spec"]["volumeName"], "Failed")
        assert vol["status"]["message"] == "backend says: no"
        assert wait_event(store, vol, "VolumeFailedDelete")["message"] == "backend says: no"
    finally:
        registry.unregister(bad.name)


def test_p1_p2_provisioning_with_hostpath_then_delete(store, controllers, hostpath):
    store.create(SC, mk_sc("fast", mount_options=["noatime"]))
    claim = store.create(PVC, mk_pvc("db", "3Gi", cls="fast"))
    claim = wait_phase(store, PVC, "default", "db", "Bound")
    pv_name = f"pvc-{claim['metadata']['uid']}"
    assert claim["spec"]["volumeName"] == pv_name
    ann = claim["metadata"]["annotations"]
    assert ann["volume.kubernetes.io/storage-provisioner"] == "stowage.io/hostpath"
    assert ann["volume.beta.kubernetes.io/storage-provisioner"] == "stowage.io/hostpath"
    vol = store.get(PV, "", pv_name)
    assert vol["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == "stowage.io/hostpath"
    assert vol["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert vol["spec"]["mountOptions"] == ["noatime"]
    assert vol["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
    path = Path(vol["spec"]["hostPath"]["path"])
    assert path.is_dir() and path.parent == hostpath.root
    assert ("Normal", "ProvisioningSucceeded", f"Successfully provisioned volume {pv_name} using stowage.io/hostpath") in event_reasons(store, claim)
    # B11 + B10 Delete: the claim goes, the backend directory and the PV object go
    store.delete(PVC, "default", "db")
    wait_for(lambda: get_or_none(store, PV, "", pv_name) is None, "provisioned volume deleted", 30)
    assert not path.exists()


def test_p2_missing_class_and_unknown_parameter(store, controllers, hostpath):
    claim = store.create(PVC, mk_pvc("c", cls="nope"))
    event = wait_event(store, claim, "ProvisioningFailed")
    assert (event["type"], event["message"]) == ("Warning", 'storageclass.storage.k8s.io "nope" not found')
    store.create(SC, mk_sc("weird", params={"colour": "blue"}))
    c2 = store.create(PVC, mk_pvc("c2", cls="weird"))
    event = wait_event(store, c2, "ProvisioningFailed")
    assert "colour" in event["message"] and event["message"].startswith('failed to provision volume with StorageClass "weird"')
    assert phase(store, PVC, "default", "c2") == "Pending"


def test_p3_default_class_assigned_later(store, controllers, hostpath):
    store.create(PVC, mk_pvc("classless", cls=None))
    store.create(PVC, mk_pvc("opted-out", cls=""))
    wait_event(store, store.get(PVC, "default", "classless"), "FailedBinding")
    store.create(SC, mk_sc("std", default=True))
    claim = wait_phase(store, PVC, "default", "classless", "Bound")
    assert claim["spec"]["storageClassName"] == "std"
    wait_for(lambda: controllers.idle(), "controllers idle", 30)
    opted = store.get(PVC, "default", "opted-out")
    assert opted["spec"]["storageClassName"] == "" and opted["status"]["phase"] == "Pending"


def test_b7_b8_wait_for_first_consumer(store, controllers, hostpath):
    store.create(SC, mk_sc("late", mode="WaitForFirstConsumer"))
    store.create(PV, mk_pv("static-late", cls="late"))  # WFFC ignores free volumes until a node is chosen
    claim = store.create(PVC, mk_pvc("w", cls="late", size="2Gi"))
    event = wait_event(store, claim, "WaitForFirstConsumer")
    assert (event["type"], event["message"]) == ("Normal", "waiting for first consumer to be created before binding")
    assert phase(store, PVC, "default", "w") == "Pending"
    claim = store.get(PVC, "default", "w")
    claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] = "node-1"
    store.update(PVC, claim)
    claim = wait_phase(store, PVC, "default", "w", "Bound")
    assert claim["spec"]["volumeName"].startswith("pvc-")


def test_b11_claim_in_use_stays_until_pod_gone(store, controllers):
    store.create(PV, mk_pv("v"))
    store.create(PVC, mk_pvc("c"))
    wait_phase(store, PVC, "default", "c", "Bound")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
           "spec": {"nodeName": "n1", "containers": [{"name": "x", "image": "x"}],
                    "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "c"}}]},
           "status": {"phase": "Running"}}
    store.create(POD, pod)
    store.delete(PVC, "default", "c")
    wait_for(lambda: controllers.idle(), "controllers idle", 30)
    claim = store.get(PVC, "default", "c")
    assert claim["metadata"].get("deletionTimestamp") and claim["status"]["phase"] == "Bound"
    assert phase(store, PV, "", "v") == "Bound"
    store.delete(POD, "default", "p")
    wait_for(lambda: get_or_none(store, PVC, "default", "c") is None, "claim removed", 30)
    wait_phase(store, PV, "", "v", "Released")
    # pv-protection: a Released volume may go
    store.delete(PV, "", "v")
    wait_for(lambda: get_or_none(store, PV, "", "v") is None, "volume removed", 30)


def test_b11_any_pod_object_naming_the_claim_holds_it_finished_or_unscheduled(store, controllers):
    """B11 in Stowage: the claim stays Terminating while any pod object names it, whatever its phase and
    whether or not it is placed; an ephemeral volume's claim only for the pod that owns it."""
    store.create(PV, mk_pv("v"))
    store.create(PVC, mk_pvc("c"))
    wait_phase(store, PVC, "default", "c", "Bound")

    def mk_pod(name, node, phase_, volumes):
        spec = {"containers": [{"name": "x", "image": "x"}], "volumes": volumes}
        if node:
            spec["nodeName"] = node
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                "spec": spec, "status": {"phase": phase_}}

    uses_c = [{"name": "d", "persistentVolumeClaim": {"claimName": "c"}}]
    store.create(POD, mk_pod("done", "n1", "Succeeded", uses_c))
    store.create(POD, mk_pod("waiting", None, "Pending", uses_c))
    store.delete(PVC, "default", "c")
    wait_for(lambda: controllers.idle(), "controllers idle", 30)
    assert store.get(PVC, "default", "c")["metadata"].get("deletionTimestamp")
    store.delete(POD, "default", "done")
    wait_for(lambda: controllers.idle(), "controllers idle", 30)
    assert get_or_none(store, PVC, "default", "c") is not None, "the unscheduled pod still names it"
    store.delete(POD, "default", "waiting")
    wait_for(lambda: get_or_none(store, PVC, "default", "c") is None, "claim removed once no pod names it", 30)

    # An ephemeral volume's generated claim <pod>-<volume>: held by the pod that owns it, not by a namesake.
    ephemeral = [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}]
    namesake = mk_pvc("eph2-scratch")  # the name eph2 will generate, made before eph2: not eph2's claim (EV2)
    namesake["metadata"]["finalizers"] = ["kubernetes.io/pvc-protection"]  # what admission adds (the store has none)
    store.create(PVC, namesake)
    owner = store.create(POD, mk_pod("eph", "n1", "Failed", ephemeral))
    store.create(POD, mk_pod("eph2", "n1", "Running", ephemeral))
    # eph's claim: made by the ephemeral-volume controller (EV1), controlled by eph, protected.
    owned = wait_for(lambda: get_or_none(store, PVC, "default", "eph-scratch"), "eph's ephemeral claim", 30)
    assert [r["uid"] for r in owned["metadata"]["ownerReferences"] if r.get("controller")] == [owner["metadata"]["uid"]]
    assert "kubernetes.io/pvc-protection" in owned["metadata"]["finalizers"]
    store.delete(PVC, "default", "eph-scratch")
    store.delete(PVC, "default", "eph2-scratch")
    wait_for(lambda: get_or_none(store, PVC, "default", "eph2-scratch") is None, "a claim the pod does not own goes", 30)
    wait_for(lambda: controllers.idle(), "controllers idle", 30)
    assert get_or_none(store, PVC, "default", "eph-scratch") is not None
    store.delete(POD, "default", "eph")
    wait_for(lambda: get_or_none(store, PVC, "default", "eph-scratch") is None, "the pod's ephemeral claim goes", 30)


def test_b11_bound_volume_kept_while_bound(store, controllers):
    store.create(PV, mk_pv("v"))
    store.create(PVC, mk_pvc("c"))
    wait_phase(store, PVC, "default", "c", "Bound")
    store.delete(PV, "", "v")
    wait_for(lambda: controllers.idle(), "controllers idle", 30)
    vol = store.get(PV, "", "v")
    assert vol["metadata"].get("deletionTimestamp") and vol["status"]["phase"] == "Bound"


def test_p4_expansion_marks_filesystem_resize_pending(store, controllers, hostpath):
    store.create(SC, mk_sc("grow", expand=True))
    store.create(PVC, mk_pvc("g", "1Gi", cls="grow"))
    claim = wait_phase(store, PVC, "default", "g", "Bound")
    claim["spec"]["resources"]["requests"]["storage"] = "3Gi"
    store.update(PVC, claim)
    claim = wait_for(lambda: (c := store.get(PVC, "default", "g"))["status"].get("allocatedResources") and c, "expanded", 30)
    assert claim["status"]["allocatedResources"] == {"storage": "3Gi"}
    assert [c["type"] for c in claim["status"]["conditions"]] == ["FileSystemResizePending"]
    assert claim["status"]["capacity"] == {"storage": "1Gi"}  # the node agent finishes the resize
    assert store.get(PV, "", claim["spec"]["volumeName"])["spec"]["capacity"]["storage"] == "3Gi"


def test_p4_no_expansion_without_allow(store, controllers, hostpath):
    store.create(SC, mk_sc("fixed", expand=False))
    store.create(PVC, mk_pvc("f", "1Gi", cls="fixed"))
    claim = wait_phase(store, PVC, "default", "f", "Bound")
    claim["spec"]["resources"]["requests"]["storage"] = "3Gi"
    store.update(PVC, claim)
    wait_for(lambda: controllers.idle(), "controllers idle", 30)
    assert store.get(PV, "", claim["spec"]["volumeName"])["spec"]["capacity"]["storage"] == "1Gi"


class _RecordingProvisioner(Provisioner):
    """Finishes at once, or refuses the first ``failures`` calls; keeps the annotations each call saw."""
    name = "test.stowage.io/recording"

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.seen: list[dict[str, str]] = []

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        self.seen.append(dict(req.claim["metadata"].get("annotations") or {}))
        if self.failures:
            self.failures -= 1
            raise RuntimeError("backend says: try again")
        return ProvisionResult.finished({"local": {"path": "/x"}}, req.claim["spec"]["resources"]["requests"]["storage"])

    def delete(self, pv) -> None:
        return None


def _claim_writes(store, name: str, since: int) -> list[dict]:
    with store.watch(PVC, "default", since=since) as watcher:
        found = []
        while (event := watcher.get(timeout=0.5)) is not None:
            if event.object["metadata"]["name"] == name:
                found.append(event.object)
        return found


def test_p1_pf89_an_in_tree_provisioner_finishing_at_once_names_itself_in_the_binding_write(store, controllers):
    """P1 holds (the bound claim names its provisioner, both annotations); PF89: the claim is written once
    between its creation and Bound, the name in the binding's write, instead of a write of its own first."""
    rec = _RecordingProvisioner()
    registry.register(rec)
    try:
        store.create(SC, mk_sc("rec", provisioner=rec.name))
        since = store.current_revision()
        store.create(PVC, mk_pvc("once", cls="rec"))
        bound = wait_phase(store, PVC, "default", "once", "Bound")
        writes = _claim_writes(store, "once", since)
        assert [w["status"].get("phase") for w in writes] == ["Pending", "Bound"], writes
        ann = bound["metadata"]["annotations"]
        assert ann["volume.kubernetes.io/storage-provisioner"] == rec.name
        assert ann["volume.beta.kubernetes.io/storage-provisioner"] == rec.name
        assert ann["pv.kubernetes.io/bind-completed"] == "yes"
        assert "volume.kubernetes.io/storage-provisioner" not in rec.seen[0]
    finally:
        registry.unregister(rec.name)


def test_p1_pf89_a_failed_provisioning_leaves_the_claim_pending_and_naming_its_provisioner(store, controllers):
    """Any outcome but an immediate success leaves the claim Pending: it names its provisioner at once (P1),
    as the retry's call sees, and the retry binds it."""
    rec = _RecordingProvisioner(failures=1)
    registry.register(rec)
    try:
        store.create(SC, mk_sc("rec", provisioner=rec.name))
        store.create(PVC, mk_pvc("retried", cls="rec"))
        event = wait_event(store, store.get(PVC, "default", "retried"), "ProvisioningFailed")
        assert "backend says: try again" in event["message"]
        bound = wait_phase(store, PVC, "default", "retried", "Bound")
        assert bound["metadata"]["annotations"]["volume.kubernetes.io/storage-provisioner"] == rec.name
        assert len(rec.seen) == 2
        assert "volume.kubernetes.io/storage-provisioner" not in rec.seen[0]
        assert rec.seen[1]["volume.kubernetes.io/storage-provisioner"] == rec.name
    finally:
        registry.unregister(rec.name)
