"""The snapshot controller's pure decisions (calculate_snapshot_changes, calculate_content_changes) and the
data-source resolution, on their own: examples for each rule and properties over generated states."""
from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from provisioners.base import Provisioner, ProvisionRequest, ProvisionResult, Snapshotter
from storage.controllers.datasource import Refuse, Resolved, Wait, grant_allows, resolve_data_source
from storage.controllers.snapshot import (
    ANN_BEING_DELETED, ANN_DEFAULT_SNAPSHOT_CLASS, FIN_AS_SOURCE, FIN_BOUND, FIN_CONTENT, FIN_PVC, AnnotateContent,
    BindContent, CheckSnapshot, ContentView, CreateContent, CutSnapshot, DeleteBackendSnapshot, DeleteContent,
    EditFinalizers, Emit, SetSnapshotClass, SetSnapshotStatus, SnapshotError, SnapshotView, calculate_content_changes,
    calculate_snapshot_changes, default_snapshot_class, status_from_content,
)

Obj = dict[str, Any]
DRIVER = "stowage.io/hostpath"
DRIVERS = frozenset({DRIVER})


def vs(name: str = "s", *, claim: str | None = "src", content: str | None = None, klass: str | None = None,
       uid: str = "u1", deleting: bool = False, finalizers: list[str] | None = None, status: Obj | None = None) -> Obj:
    source = {"persistentVolumeClaimName": claim} if claim else {"volumeSnapshotContentName": content}
    meta: Obj = {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": "5", "finalizers": finalizers or []}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    spec: Obj = {"source": source}
    if klass:
        spec["volumeSnapshotClassName"] = klass
    return {"metadata": meta, "spec": spec, **({"status": status} if status is not None else {})}


def vsc(name: str = "snapcontent-u1", *, ref_uid: str | None = "u1", policy: str = "Delete", handle: str | None = None,
        volume: str | None = "pv1", status: Obj | None = None, deleting: bool = False,
        annotations: dict[str, str] | None = None, finalizers: list[str] | None = None) -> Obj:
    ref: Obj = {"name": "s", "namespace": "ns"}
    if ref_uid:
        ref["uid"] = ref_uid
    meta: Obj = {"name": name, "annotations": annotations or {}, "finalizers": finalizers or []}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    source = {"snapshotHandle": handle} if handle else {"volumeHandle": volume}
    return {"metadata": meta, "spec": {"volumeSnapshotRef": ref, "deletionPolicy": policy, "driver": DRIVER,
                                       "source": source}, **({"status": status} if status is not None else {})}


def bound_claim(finalizers: list[str] | None = None) -> tuple[Obj, Obj]:
    claim = {"metadata": {"name": "src", "namespace": "ns", "uid": "c1", "finalizers": finalizers or []},
             "spec": {"volumeName": "pv1"}, "status": {"phase": "Bound"}}
    volume = {"metadata": {"name": "pv1"}, "spec": {"claimRef": {"uid": "c1"}, "capacity": {"storage": "1Gi"}}}
    return claim, volume


def vclass(name: str, driver: str = DRIVER, default: bool = False, policy: str = "Delete", params: Obj | None = None) -> Obj:
    ann = {ANN_DEFAULT_SNAPSHOT_CLASS: "true"} if default else {}
    return {"metadata": {"name": name, "annotations": ann}, "driver": driver, "deletionPolicy": policy,
            "parameters": params or {}}


def test_default_class_is_the_one_default_of_the_volumes_driver() -> None:
    """VS22."""
    a, b, other = vclass("a", default=True), vclass("b", default=True), vclass("o", driver="x", default=True)
    assert default_snapshot_class([a, other, vclass("c")], DRIVERS)[0] is a
    assert default_snapshot_class([a, b], DRIVERS) == (None, "2 default snapshot classes were found")
    assert default_snapshot_class([other], DRIVERS) == (None, "cannot find default snapshot class")


def test_dynamic_snapshot_protects_the_claim_then_creates_its_content() -> None:
    """VS21, VS30, VS23: claim finalizer before the content; content refers back by uid; CreatingSnapshot."""
    claim, volume = bound_claim()
    klass = vclass("c", policy="Retain", params={"csi.storage.k8s.io/snapshotter-secret-name": "cred",
                                                 "csi.storage.k8s.io/snapshotter-secret-namespace": "${volumesnapshot.namespace}"})
    snap = vs(klass="c", finalizers=[FIN_AS_SOURCE])
    actions = calculate_snapshot_changes(SnapshotView(snap, None, claim, volume, DRIVERS, (klass,), (snap,)))
    assert actions[0] == EditFinalizers("claim", add=(FIN_PVC,))
    create = next(a for a in actions if isinstance(a, CreateContent))
    assert create.name == "snapcontent-u1"
    spec = create.body["spec"]
    assert spec["volumeSnapshotRef"]["uid"] == "u1" and spec["deletionPolicy"] == "Retain"
    assert spec["source"] == {"volumeHandle": "pv1"} and spec["driver"] == DRIVER
    assert create.body["metadata"]["annotations"] == {
        "snapshot.storage.kubernetes.io/deletion-secret-namespace": "ns",
        "snapshot.storage.kubernetes.io/deletion-secret-name": "cred"}
    assert any(isinstance(a, Emit) and a.reason == "CreatingSnapshot" for a in actions)
    status = next(a for a in actions if isinstance(a, SetSnapshotStatus)).status
    assert status == {"boundVolumeSnapshotContentName": "snapcontent-u1", "readyToUse": False}


def test_dynamic_snapshot_errors_and_default_class() -> None:
    """VS22, VS24: what stops a dynamic snapshot is an error on it; no class: the default is written in."""
    claim, volume = bound_claim()
    snap = vs(finalizers=[FIN_AS_SOURCE])
    assert calculate_snapshot_changes(SnapshotView(snap, None, claim, volume, DRIVERS, (vclass("d", default=True),))) \
        == [SetSnapshotClass("d")]
    unbound = {**claim, "status": {"phase": "Pending"}}
    [err] = calculate_snapshot_changes(SnapshotView(snap, None, unbound, None, DRIVERS))
    assert isinstance(err, SnapshotError) and "not yet bound" in err.message
    [err] = calculate_snapshot_changes(SnapshotView(vs(klass="x", finalizers=[FIN_AS_SOURCE]), None, claim, volume,
                                                    DRIVERS, (vclass("x", driver="other"),)))
    assert isinstance(err, SnapshotError) and '"other"' in err.message


def test_status_follows_the_content_with_events_once() -> None:
    """VS26."""
    snap = vs(status={"boundVolumeSnapshotContentName": "snapcontent-u1", "readyToUse": False})
    content = vsc(status={"snapshotHandle": "h", "creationTime": 1_700_000_000_000_000_000, "restoreSize": 1536 * 2**20,
                          "readyToUse": True})
    status, events = status_from_content(snap, content)
    assert status == {"boundVolumeSnapshotContentName": "snapcontent-u1", "creationTime": "2023-11-14T22:13:20Z",
                      "readyToUse": True, "restoreSize": "1536Mi"}
    assert [e.reason for e in events] == ["SnapshotCreated", "SnapshotReady"]
    assert status_from_content({**snap, "status": status}, content) == (status, [])
    failed = vsc(status={"readyToUse": False, "error": {"time": "t", "message": "boom"}})
    status, events = status_from_content(snap, failed)
    assert status["error"]["message"] == "boom" and [e.reason for e in events] == ["SnapshotCreationFailed"]


def test_deletion_by_policy() -> None:
    """VS31 (Delete: content deleted, bound finalizer kept until it is gone), VS32 (Retain), VS33 (restore pending)."""
    fins = [FIN_AS_SOURCE, FIN_BOUND]
    delete = calculate_snapshot_changes(SnapshotView(vs(deleting=True, finalizers=fins), vsc()))
    assert delete == [AnnotateContent(ANN_BEING_DELETED, "yes"), DeleteContent("snapcontent-u1"),
                      EditFinalizers("snapshot", remove=(FIN_AS_SOURCE,))]
    retain = calculate_snapshot_changes(SnapshotView(vs(deleting=True, finalizers=fins), vsc(policy="Retain")))
    assert retain == [AnnotateContent(ANN_BEING_DELETED, "yes"), EditFinalizers("snapshot", remove=(FIN_AS_SOURCE, FIN_BOUND))]
    waiting = calculate_snapshot_changes(SnapshotView(vs(deleting=True, finalizers=fins), vsc(),
                                                      restoring_claims=("ns/r",)))
    assert [type(a) for a in waiting] == [Emit] and waiting[0].reason == "SnapshotDeletePending"
    gone = calculate_snapshot_changes(SnapshotView(vs(deleting=True, finalizers=fins), None))
    assert gone == [EditFinalizers("snapshot", remove=(FIN_AS_SOURCE, FIN_BOUND))]


def test_pre_provisioned_binding() -> None:
    """VS27, VS28."""
    snap = vs(claim=None, content="c", finalizers=[FIN_AS_SOURCE], klass="k")
    [err] = calculate_snapshot_changes(SnapshotView(snap, None))
    assert isinstance(err, SnapshotError) and err.reason == "SnapshotContentMissing"
    [err] = calculate_snapshot_changes(SnapshotView(snap, vsc("c", ref_uid=None)))
    assert isinstance(err, SnapshotError) and err.reason == "SnapshotContentMismatch"
    [err] = calculate_snapshot_changes(SnapshotView(snap, vsc("c", ref_uid="other", handle="h")))
    assert isinstance(err, SnapshotError) and err.reason == "SnapshotContentMisbound"
    actions = calculate_snapshot_changes(SnapshotView(snap, vsc("c", ref_uid=None, handle="h", policy="Retain")))
    assert actions[0] == BindContent("u1", "k")
    assert next(a for a in actions if isinstance(a, SetSnapshotStatus)).status["boundVolumeSnapshotContentName"] == "c"


def test_content_side() -> None:
    """VS34-VS38: cut, check, delete by policy, and wait while a live snapshot is bound."""
    assert calculate_content_changes(ContentView(vsc())) == [EditFinalizers("content", add=(FIN_CONTENT,)), CutSnapshot()]
    assert calculate_content_changes(ContentView(vsc(ref_uid=None, handle="h"))) == [CheckSnapshot()]
    done = vsc(finalizers=[FIN_CONTENT], status={"readyToUse": True, "snapshotHandle": "h"})
    assert calculate_content_changes(ContentView(done)) == []
    failed = vsc(finalizers=[FIN_CONTENT], status={"readyToUse": False, "error": {"message": "x"}})
    assert calculate_content_changes(ContentView(failed)) == []
    live = vs(finalizers=[FIN_AS_SOURCE, FIN_BOUND])
    deleting = vsc(deleting=True, finalizers=[FIN_CONTENT], status={"snapshotHandle": "h", "readyToUse": True})
    assert calculate_content_changes(ContentView(deleting, live)) == []
    marked = copy.deepcopy(deleting)
    marked["metadata"]["annotations"][ANN_BEING_DELETED] = "yes"
    assert calculate_content_changes(ContentView(marked, live)) == [
        DeleteBackendSnapshot("h"), EditFinalizers("content", remove=(FIN_CONTENT,))]
    marked["spec"]["deletionPolicy"] = "Retain"
    assert calculate_content_changes(ContentView(marked, live)) == [EditFinalizers("content", remove=(FIN_CONTENT,))]
    assert calculate_content_changes(ContentView(deleting, None)) == [
        DeleteBackendSnapshot("h"), EditFinalizers("content", remove=(FIN_CONTENT,))]
    # VS37: a cut that was asked for but never answered is asked again before the content may go.
    unanswered = vsc(deleting=True, finalizers=[FIN_CONTENT],
                     annotations={"snapshot.storage.kubernetes.io/volumesnapshot-being-created": "yes"})
    assert calculate_content_changes(ContentView(unanswered, None)) == [CutSnapshot()]


# ---------------------------------------------------------------- properties

maybe = st.booleans()


@st.composite
def snapshot_states(draw: Any) -> SnapshotView:
    static = draw(maybe)
    fins = draw(st.lists(st.sampled_from([FIN_AS_SOURCE, FIN_BOUND]), unique=True))
    ready = draw(st.sampled_from([None, False, True]))
    status = {"readyToUse": ready, "boundVolumeSnapshotContentName": "snapcontent-u1"} if ready is not None else None
    snap = vs(claim=None if static else "src", content="snapcontent-u1" if static else None, deleting=draw(maybe),
              finalizers=fins, klass=draw(st.sampled_from([None, "c"])), status=status)
    content = None
    if draw(maybe):
        content = vsc(ref_uid=draw(st.sampled_from([None, "u1", "u2"])), policy=draw(st.sampled_from(["Delete", "Retain"])),
                      handle="h" if draw(maybe) else None, deleting=draw(maybe),
                      status={"readyToUse": draw(maybe), "snapshotHandle": "h", "restoreSize": 5, "creationTime": 10**18})
    claim, volume = bound_claim([FIN_PVC] if draw(maybe) else [])
    restoring = ("ns/r",) if draw(maybe) else ()
    return SnapshotView(snap, content, claim, volume, DRIVERS, (vclass("c", default=draw(maybe)),), (snap,), restoring)


@settings(max_examples=400, deadline=None)
@given(snapshot_states())
def test_property_snapshot_side_never_loses_data(view: SnapshotView) -> None:
    """VS31-VS33: a content is deleted only for a snapshot being deleted, bound both ways, with policy Delete,
    and no claim restoring from it; the bound finalizer never goes while such a content remains."""
    actions = calculate_snapshot_changes(view)
    content = view.content
    bound_delete = content is not None and (content["spec"]["volumeSnapshotRef"].get("uid") == "u1"
                                             and content["spec"]["deletionPolicy"] == "Delete")
    for action in actions:
        if isinstance(action, DeleteContent):
            assert view.snapshot["metadata"].get("deletionTimestamp") and bound_delete and not view.restoring_claims
        if isinstance(action, EditFinalizers) and action.target == "snapshot" and FIN_BOUND in action.remove:
            assert not bound_delete
        if isinstance(action, CreateContent):
            assert not view.snapshot["metadata"].get("deletionTimestamp") and view.content is None


@settings(max_examples=300, deadline=None)
@given(snapshot_states())
def test_property_status_write_is_idempotent(view: SnapshotView) -> None:
    """VS26: once the status it asked for is written, the next pass asks for no status change."""
    actions = calculate_snapshot_changes(view)
    status = next((a.status for a in actions if isinstance(a, SetSnapshotStatus)), None)
    if status is None or any(isinstance(a, (CreateContent, BindContent)) for a in actions):
        return
    again = calculate_snapshot_changes(SnapshotView({**view.snapshot, "status": status}, *[
        getattr(view, f) for f in ("content", "claim", "volume", "drivers", "classes", "siblings", "restoring_claims")]))
    assert not any(isinstance(a, SetSnapshotStatus) for a in again)


@settings(max_examples=400, deadline=None)
@given(policy=st.sampled_from(["Delete", "Retain"]), deleting=maybe, marked=maybe, ref_uid=st.sampled_from([None, "u1"]),
       snapshot_uid=st.sampled_from([None, "u1", "u2"]), snapshot_deleting=maybe, handle=maybe, static=maybe)
def test_property_backend_snapshot_deleted_only_when_released(policy: str, deleting: bool, marked: bool,
                                                              ref_uid: str | None, snapshot_uid: str | None,
                                                              snapshot_deleting: bool, handle: bool, static: bool) -> None:
    """VS34/VS35: the backend snapshot goes only for a content being deleted with policy Delete, and never
    while the live snapshot bound to it has not asked for its deletion; cut and delete never together."""
    content = vsc(ref_uid=ref_uid, policy=policy, deleting=deleting, handle="h" if static else None,
                  annotations={ANN_BEING_DELETED: "yes"} if marked else {},
                  status={"snapshotHandle": "h"} if handle else None)
    snapshot = vs(uid=snapshot_uid, deleting=snapshot_deleting) if snapshot_uid else None
    actions = calculate_content_changes(ContentView(content, snapshot))
    if any(isinstance(a, DeleteBackendSnapshot) for a in actions):
        assert deleting and policy == "Delete" and handle
        live_bound = snapshot is not None and ref_uid == snapshot_uid and not snapshot_deleting
        assert marked or not live_bound or not ref_uid
        assert not any(isinstance(a, (CutSnapshot, CheckSnapshot)) for a in actions)
    if any(isinstance(a, EditFinalizers) and FIN_CONTENT in a.remove for a in actions):
        assert deleting


# ---------------------------------------------------------------- data sources

class _Cache:
    def __init__(self, *objs: tuple[str, Obj]) -> None:
        self.objs = list(objs)

    def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        return next((o for r, o in self.objs if r == resource and o["metadata"]["name"] == name
                     and (o["metadata"].get("namespace") or "") == (namespace or "")), None)

    def list(self, resource: str, namespace: str | None = None, label_selector: str | None = None) -> list[Obj]:
        return [o for r, o in self.objs if r == resource and (namespace is None or o["metadata"].get("namespace") == namespace)]


class _Snap(Provisioner, Snapshotter):
    name = DRIVER
    supports_clone = True

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        raise AssertionError("not called")

    def delete(self, pv: Obj) -> None:
        raise AssertionError("not called")

    def create_snapshot(self, req: Any) -> Any:
        raise AssertionError("not called")

    def delete_snapshot(self, handle: str, parameters: dict[str, str]) -> None:
        raise AssertionError("not called")


def _restore_claim(ns: str = "ns", source_ns: str | None = None) -> Obj:
    ref: Obj = {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "s"}
    if source_ns:
        ref["namespace"] = source_ns
    return {"metadata": {"name": "r", "namespace": ns}, "spec": {"dataSourceRef": ref}}


def _ready_snapshot(ns: str = "ns") -> list[tuple[str, Obj]]:
    snap = {"metadata": {"name": "s", "namespace": ns, "uid": "u1"},
            "status": {"readyToUse": True, "boundVolumeSnapshotContentName": "c", "restoreSize": "1Gi"}}
    content = {"metadata": {"name": "c"}, "spec": {"driver": DRIVER, "volumeSnapshotRef": {"name": "s", "namespace": ns, "uid": "u1"},
                                                   "volumeSnapshotClassName": "k"},
               "status": {"snapshotHandle": "/h", "restoreSize": 2**30, "readyToUse": True}}
    return [("volumesnapshots", snap), ("volumesnapshotcontents", content),
            ("volumesnapshotclasses", {"metadata": {"name": "k"}, "parameters": {"p": "v"}})]


def test_restore_resolution_size_and_grants() -> None:
    """DS13-DS16: a ready snapshot resolves to its content's handle and driver; too small or ungranted waits."""
    cache = _Cache(*_ready_snapshot())
    sc = {"provisioner": DRIVER}
    ok = resolve_data_source(_restore_claim(), sc, _Snap(), cache, 2**30)
    assert isinstance(ok, Resolved) and ok.source.snapshot_handle == "/h" and ok.source.driver == DRIVER
    assert ok.source.restore_size == 2**30 and ok.source.snapshot_parameters == {"p": "v"}
    cache.get("volumesnapshotcontents", "", "c")["metadata"]["annotations"] = {
        "snapshot.storage.kubernetes.io/deletion-secret-name": "cred",
        "snapshot.storage.kubernetes.io/deletion-secret-namespace": "ns"}
    with_secret = resolve_data_source(_restore_claim(), sc, _Snap(), cache, 2**30)
    assert isinstance(with_secret, Resolved) and with_secret.source.snapshot_parameters == {
        "p": "v", "csi.storage.k8s.io/snapshotter-secret-name": "cred",
        "csi.storage.k8s.io/snapshotter-secret-namespace": "ns"}
    del cache.get("volumesnapshotcontents", "", "c")["metadata"]["annotations"]
    small = resolve_data_source(_restore_claim(), sc, _Snap(), cache, 2**29)
    assert isinstance(small, Refuse) and "536870912 (512Mi)" in small.message and "1073741824 (1Gi)" in small.message
    cross = resolve_data_source(_restore_claim("other", "ns"), sc, _Snap(), cache, 2**30)
    assert isinstance(cross, Wait) and "isn't allowed" in cross.message
    grant = {"metadata": {"name": "g", "namespace": "ns"},
             "spec": {"from": [{"group": "", "kind": "PersistentVolumeClaim", "namespace": "other"}],
                      "to": [{"group": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "s"}]}}
    cache.objs.append(("referencegrants", grant))
    assert isinstance(resolve_data_source(_restore_claim("other", "ns"), sc, _Snap(), cache, 2**30), Resolved)


def test_grant_matching() -> None:
    """DS14: from group "" kind PersistentVolumeClaim of the claim's namespace; to the kind, any or the named one."""
    def grant(frm: Obj, to: Obj) -> Obj:
        return {"spec": {"from": [frm], "to": [to]}}
    pvc_from = {"group": "", "kind": "PersistentVolumeClaim", "namespace": "a"}
    vs_to = {"group": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot"}
    assert grant_allows([grant(pvc_from, vs_to)], "a", "snapshot.storage.k8s.io", "VolumeSnapshot", "x")
    assert grant_allows([grant(pvc_from, {**vs_to, "name": "x"})], "a", "snapshot.storage.k8s.io", "VolumeSnapshot", "x")
    assert not grant_allows([grant(pvc_from, {**vs_to, "name": "y"})], "a", "snapshot.storage.k8s.io", "VolumeSnapshot", "x")
    assert not grant_allows([grant({**pvc_from, "namespace": "b"}, vs_to)], "a", "snapshot.storage.k8s.io", "VolumeSnapshot", "x")
    assert not grant_allows([grant({**pvc_from, "kind": "Pod"}, vs_to)], "a", "snapshot.storage.k8s.io", "VolumeSnapshot", "x")
    assert not grant_allows([grant(pvc_from, vs_to)], "a", "", "PersistentVolumeClaim", "x")


def test_clone_requirements() -> None:
    """DS17, DS18: the source claim Bound, same provisioner and volumeMode, size at least the source's."""
    source = {"metadata": {"name": "src", "namespace": "ns", "uid": "c1"},
              "spec": {"volumeName": "pv1", "storageClassName": "hp"}, "status": {"phase": "Bound"}}
    pv = {"metadata": {"name": "pv1"}, "spec": {"claimRef": {"uid": "c1"}, "capacity": {"storage": "2Gi"}}}
    sc = {"metadata": {"name": "hp"}, "provisioner": DRIVER}
    cache = _Cache(("persistentvolumeclaims", source), ("persistentvolumes", pv), ("storageclasses", sc))
    clone = {"metadata": {"name": "c", "namespace": "ns"}, "spec": {"dataSource": {"kind": "PersistentVolumeClaim", "name": "src"}}}
    ok = resolve_data_source(clone, sc, _Snap(), cache, 2 * 2**30)
    assert isinstance(ok, Resolved) and ok.source.source_pv is pv
    assert isinstance(resolve_data_source(clone, sc, _Snap(), cache, 2**30), Refuse)
    block = {**clone, "spec": {**clone["spec"], "volumeMode": "Block"}}
    assert "volume mode" in resolve_data_source(block, sc, _Snap(), cache, 2 * 2**30).message  # type: ignore[union-attr]
    other = {"metadata": {"name": "o"}, "provisioner": "ebs.csi.aws.com"}
    assert isinstance(resolve_data_source(clone, other, None, cache, 2 * 2**30), Refuse)
    unknown = {"metadata": {"name": "u", "namespace": "ns"}, "spec": {"dataSourceRef": {"apiGroup": "x.io", "kind": "Foo", "name": "f"}}}
    assert isinstance(resolve_data_source(unknown, sc, _Snap(), cache, 1), Wait)
    assert resolve_data_source({"metadata": {"name": "n", "namespace": "ns"}, "spec": {}}, sc, _Snap(), cache, 1) is None
