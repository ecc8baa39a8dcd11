"""The snapshot kinds' and ReferenceGrant's API surface without a server: their CRDs' schema and CEL rules,
a claim's dataSource/dataSourceRef rules and mirroring, printing, OpenAPI and the default roles (VS, DS)."""
from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from storage.api import openapi, printing
from storage.api.defaults import apply_defaults
from storage.api.validation import validate, validate_status
from storage.apiserver.bootstrap import aggregated_rules, cluster_roles
from storage.apiserver.rbac import Attributes, rule_allows, rules_from
from storage.apiserver.auth import User
from storage.errors import Invalid

SNAP = "snapshot.storage.k8s.io/v1"


def messages(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(Invalid) as exc:
        validate(apply_defaults(copy.deepcopy(obj)), old)
    return [e.message() for e in exc.value.errors]


def vs(spec: Any = None, **meta: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": SNAP, "kind": "VolumeSnapshot",
                           "metadata": {"name": "s1", "namespace": "default", **meta}}
    if spec is not None:
        obj["spec"] = spec
    return obj


def content(spec: Any = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": SNAP, "kind": "VolumeSnapshotContent", "metadata": {"name": "c1"}}
    if spec is not None:
        obj["spec"] = spec
    return obj


def content_spec(**over: Any) -> dict[str, Any]:
    spec = {"deletionPolicy": "Delete", "driver": "hostpath.csi.k8s.io", "source": {"volumeHandle": "v-1"},
            "volumeSnapshotRef": {"name": "s1", "namespace": "default"}}
    spec.update(over)
    return spec


def pvc(**spec: Any) -> dict[str, Any]:
    base = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    base.update(spec)
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c1", "namespace": "default"},
            "spec": base}


ONE_SOURCE = ('spec.source: Invalid value: "object": exactly one of volumeSnapshotContentName and '
              'persistentVolumeClaimName must be set')


def test_volume_snapshot_spec_and_source_are_required() -> None:
    """VS1: spec is required, and so is spec.source."""
    assert messages(vs()) == ["spec: Required value"]
    assert messages(vs({})) == ["spec.source: Required value"]
    assert messages(vs({"volumeSnapshotClassName": "x"})) == ["spec.source: Required value"]


@pytest.mark.parametrize("source", [{}, {"persistentVolumeClaimName": "p", "volumeSnapshotContentName": "c"}])
def test_volume_snapshot_needs_exactly_one_source(source: dict[str, str]) -> None:
    """VS2: the CRD's CEL rule, with its message, on spec.source."""
    assert messages(vs({"source": source})) == [ONE_SOURCE]


def test_volume_snapshot_class_name_not_empty() -> None:
    """VS3: volumeSnapshotClassName may be left out, never empty."""
    assert messages(vs({"source": {"persistentVolumeClaimName": "p"}, "volumeSnapshotClassName": ""})) == [
        'spec.volumeSnapshotClassName: Invalid value: "string": volumeSnapshotClassName must not be the empty '
        'string when set']
    assert validate(vs({"source": {"persistentVolumeClaimName": "p"}}))["spec"]["source"] == {
        "persistentVolumeClaimName": "p"}


def test_volume_snapshot_source_is_immutable() -> None:
    """VS4: the source's names cannot change, nor be removed once set; other fields may change."""
    old = validate(vs({"source": {"persistentVolumeClaimName": "p"}, "volumeSnapshotClassName": "a"}))
    changed = vs({"source": {"persistentVolumeClaimName": "q"}, "volumeSnapshotClassName": "a"})
    assert messages(changed, old) == [
        'spec.source.persistentVolumeClaimName: Invalid value: "string": persistentVolumeClaimName is immutable']
    swapped = vs({"source": {"volumeSnapshotContentName": "c"}})
    assert 'spec.source: Invalid value: "object": persistentVolumeClaimName is required once set' in messages(
        swapped, old)
    relabelled = vs({"source": {"persistentVolumeClaimName": "p"}, "volumeSnapshotClassName": "a"}, labels={"x": "y"})
    assert validate(relabelled, old)["metadata"]["labels"] == {"x": "y"}


def test_content_required_fields_and_deletion_policy() -> None:
    """VS5: spec, and in it deletionPolicy (Delete|Retain), driver, source and volumeSnapshotRef are required."""
    assert messages(content()) == ["spec: Required value"]
    assert messages(content({})) == ["spec.deletionPolicy: Required value", "spec.driver: Required value",
                                     "spec.source: Required value", "spec.volumeSnapshotRef: Required value"]
    assert messages(content(content_spec(deletionPolicy="Keep"))) == [
        'spec.deletionPolicy: Unsupported value: "Keep": supported values: "Delete", "Retain"']
    assert validate(content(content_spec(deletionPolicy="Retain")))["spec"]["deletionPolicy"] == "Retain"


@pytest.mark.parametrize("source", [{}, {"volumeHandle": "v", "snapshotHandle": "h"}])
def test_content_needs_exactly_one_handle(source: dict[str, str]) -> None:
    """VS6."""
    assert messages(content(content_spec(source=source))) == [
        'spec.source: Invalid value: "object": exactly one of volumeHandle and snapshotHandle must be set']


@pytest.mark.parametrize("ref", [{"name": "s1"}, {"namespace": "default"}, {}])
def test_content_ref_needs_name_and_namespace(ref: dict[str, str]) -> None:
    """VS7: a pre-provisioned content names its VolumeSnapshot by name and namespace."""
    assert messages(content(content_spec(volumeSnapshotRef=ref))) == [
        'spec.volumeSnapshotRef: Invalid value: "object": both spec.volumeSnapshotRef.name and '
        'spec.volumeSnapshotRef.namespace must be set']


def test_content_source_and_mode_are_immutable() -> None:
    """VS8: the handles and sourceVolumeMode never change and cannot be removed; the ref's uid may be filled in."""
    old = validate(content(content_spec(sourceVolumeMode="Filesystem")))
    assert messages(content(content_spec(source={"volumeHandle": "v-2"}, sourceVolumeMode="Filesystem")), old) == [
        'spec.source.volumeHandle: Invalid value: "string": Spec.Source.VolumeHandle is immutable']
    assert messages(content(content_spec(sourceVolumeMode="Block")), old) == [
        'spec.sourceVolumeMode: Invalid value: "string": Spec.sourceVolumeMode is immutable']
    assert messages(content(content_spec()), old) == [
        'spec: Invalid value: "object": sourceVolumeMode is required once set']
    bound = content_spec(sourceVolumeMode="Filesystem",
                         volumeSnapshotRef={"name": "s1", "namespace": "default", "uid": "u-1"})
    assert validate(content(bound), old)["spec"]["volumeSnapshotRef"]["uid"] == "u-1"
    pre = validate(content(content_spec(source={"snapshotHandle": "h"})))
    assert messages(content(content_spec(source={"snapshotHandle": "h2"})), pre) == [
        'spec.source.snapshotHandle: Invalid value: "string": Spec.Source.SnapshotHandle is immutable']


def test_class_driver_and_deletion_policy_required() -> None:
    """VS9."""
    cls = {"apiVersion": SNAP, "kind": "VolumeSnapshotClass", "metadata": {"name": "k"}}
    assert messages(cls) == ["deletionPolicy: Required value", "driver: Required value"]
    assert messages({**cls, "driver": "d", "deletionPolicy": "Never"}) == [
        'deletionPolicy: Unsupported value: "Never": supported values: "Delete", "Retain"']
    ok = validate({**cls, "driver": "d", "deletionPolicy": "Delete", "parameters": {"store": "s3://b/p"}})
    assert ok["parameters"] == {"store": "s3://b/p"}


def test_status_schemas() -> None:
    """VS10: a VolumeSnapshot's restoreSize is a quantity (or an integer), a content's a byte count >= 0."""
    snap = validate(vs({"source": {"persistentVolumeClaimName": "p"}}))
    assert validate_status({**snap, "status": {"restoreSize": "1Gi", "readyToUse": True}})["status"]["restoreSize"] == "1Gi"
    assert validate_status({**snap, "status": {"restoreSize": 1024}})["status"]["restoreSize"] == 1024
    with pytest.raises(Invalid) as exc:
        validate_status({**snap, "status": {"restoreSize": "lots"}})
    assert exc.value.errors[0].field == "status.restoreSize"
    snap_content = validate(content(content_spec()))
    with pytest.raises(Invalid) as exc:
        validate_status({**snap_content, "status": {"restoreSize": -1}})
    assert [e.message() for e in exc.value.errors] == [
        "status.restoreSize: Invalid value: -1: status.restoreSize in body should be greater than or equal to 0"]
    with pytest.raises(Invalid) as exc:
        validate_status({**snap_content, "status": {"creationTime": "yesterday"}})
    assert exc.value.errors[0].field == "status.creationTime"


def test_pvc_data_source_rules() -> None:
    """DS1-DS3: Kubernetes' ValidatePersistentVolumeClaimSpec for dataSource and dataSourceRef."""
    assert messages(pvc(dataSource={"kind": "Pod", "name": "x"})) == [
        'spec.dataSource: Unsupported value: "Pod": supported values: "PersistentVolumeClaim"',
        'spec.dataSourceRef: Unsupported value: "Pod": supported values: "PersistentVolumeClaim"']
    assert messages(pvc(dataSource={"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot"})) == [
        "spec.dataSource.name: Required value", "spec.dataSourceRef.name: Required value"]
    bad_group = messages(pvc(dataSourceRef={"apiGroup": "Bad_Group", "kind": "K", "name": "n"}))
    assert [m.split(": ")[0] for m in bad_group] == ["spec.dataSource.apiGroup", "spec.dataSourceRef.apiGroup"]
    assert messages(pvc(dataSource={"kind": "PersistentVolumeClaim", "name": "a"},
                        dataSourceRef={"kind": "PersistentVolumeClaim", "name": "b"})) == [
        'spec: Invalid value: "spec.dataSource": must match dataSourceRef']
    assert messages(pvc(dataSource={"kind": "PersistentVolumeClaim", "name": "a"},
                        dataSourceRef={"kind": "PersistentVolumeClaim", "name": "a", "namespace": "other"})) == [
        'spec: Invalid value: "spec.dataSource": may not be specified when dataSourceRef.namespace is specified']
    assert messages(pvc(dataSourceRef={"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "s",
                                       "namespace": "Not_A_Namespace"}))[0].startswith(
        'spec.dataSourceRef.namespace: Invalid value: "Not_A_Namespace"')


def test_pvc_data_sources_mirror() -> None:
    """DS4: one given, the other is filled in the same; a dataSourceRef into another namespace has no twin."""
    snap = {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "s"}
    out = validate(apply_defaults(pvc(dataSource=dict(snap))))["spec"]
    assert out["dataSource"] == snap and out["dataSourceRef"] == snap
    out = validate(apply_defaults(pvc(dataSourceRef=dict(snap))))["spec"]
    assert out["dataSource"] == snap and out["dataSourceRef"] == snap
    clone = {"kind": "PersistentVolumeClaim", "name": "src"}
    out = validate(apply_defaults(pvc(dataSource=dict(clone))))["spec"]
    assert out["dataSourceRef"] == clone
    cross = {**snap, "namespace": "other"}
    out = validate(apply_defaults(pvc(dataSourceRef=dict(cross))))["spec"]
    assert out["dataSourceRef"] == cross and "dataSource" not in out


def test_claim_stored_before_mirroring_still_updates() -> None:
    """DS4: a claim stored with only dataSource (before the mirroring) takes the binder's volumeName update,
    though the update now carries the mirrored dataSourceRef; changing the source is still refused."""
    snap = {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "s"}
    old = pvc(dataSource=dict(snap), volumeMode="Filesystem")
    bound = apply_defaults(pvc(dataSource=dict(snap), volumeName="pv-1"))
    assert validate(bound, old)["spec"]["dataSourceRef"] == snap
    other = apply_defaults(pvc(dataSource={**snap, "name": "t"}, volumeName="pv-1"))
    assert any(m.startswith("spec: Forbidden") for m in messages(other, old))


def test_reference_grant_schema() -> None:
    """DS5: gateway-api's ReferenceGrant: from (group, kind, namespace) and to (group, kind), 1-16 entries."""
    grant = {"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
             "metadata": {"name": "g", "namespace": "default"}}
    good = {"from": [{"group": "", "kind": "PersistentVolumeClaim", "namespace": "other"}],
            "to": [{"group": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "s"}]}
    assert validate({**grant, "spec": good})["spec"] == good
    assert validate({**grant, "apiVersion": "gateway.networking.k8s.io/v1alpha2", "spec": good})["apiVersion"] == (
        "gateway.networking.k8s.io/v1beta1")
    assert messages({**grant, "spec": {}}) == ["spec.from: Required value", "spec.to: Required value"]
    assert messages({**grant, "spec": {"from": [{}], "to": []}}) == [
        "spec.to: Invalid value: 0: spec.to in body should have at least 1 items",
        "spec.from[0].group: Required value", "spec.from[0].kind: Required value",
        "spec.from[0].namespace: Required value"]
    bad = {"from": [{"group": "Bad", "kind": "9x", "namespace": "Other"}] * 17,
           "to": [{"group": "", "kind": "Secret", "name": ""}]}
    got = messages({**grant, "spec": bad})
    assert got[0] == "spec.from: Too many: 17: must have at most 16 items"
    assert any(m.startswith('spec.from[0].group: Invalid value: "Bad": spec.from[0].group in body should match')
               for m in got)
    assert any(m.startswith('spec.from[0].kind: Invalid value: "9x"') for m in got)
    assert any(m.startswith('spec.from[0].namespace: Invalid value: "Other"') for m in got)
    assert 'spec.to[0].name: Invalid value: "": spec.to[0].name in body should be at least 1 chars long' in got


def test_printing_cells() -> None:
    """VS11: the CRDs' columns and the cells kubectl shows (dates as ages, booleans lower case, blanks)."""
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    created = (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    taken = (now - timedelta(seconds=40)).strftime("%Y-%m-%dT%H:%M:%SZ")
    snap = vs({"source": {"persistentVolumeClaimName": "pvc-a"}, "volumeSnapshotClassName": "k"},
              creationTimestamp=created)
    snap["status"] = {"readyToUse": True, "restoreSize": "1Gi", "boundVolumeSnapshotContentName": "snapcontent-1",
                      "creationTime": taken}
    cols = printing.columns_for("VolumeSnapshot")
    assert cols.row(snap, now) == ["s1", "true", "pvc-a", "", "1Gi", "k", "snapcontent-1", "40s", "5m"]
    assert printing.table_cells("VolumeSnapshot", snap, now)[1] is True
    defs = printing.column_definitions("VolumeSnapshot")
    assert [(d["name"], d["type"]) for d in defs] == [
        ("Name", "string"), ("ReadyToUse", "boolean"), ("SourcePVC", "string"), ("SourceSnapshotContent", "string"),
        ("RestoreSize", "string"), ("SnapshotClass", "string"), ("SnapshotContent", "string"),
        ("CreationTime", "date"), ("Age", "date")]
    fresh = vs({"source": {"volumeSnapshotContentName": "pre"}}, creationTimestamp=created)
    assert cols.row(fresh, now) == ["s1", "", "", "pre", "", "", "", "", "5m"]
    vsc = content(content_spec(volumeSnapshotClassName="k"))
    vsc["metadata"]["creationTimestamp"] = created
    vsc["status"] = {"restoreSize": 1073741824, "readyToUse": False}
    assert printing.table_cells("VolumeSnapshotContent", vsc, now) == [
        "c1", False, 1073741824, "Delete", "hostpath.csi.k8s.io", "k", "s1", "default", "5m"]
    klass = {"kind": "VolumeSnapshotClass", "metadata": {"name": "k", "creationTimestamp": created},
             "driver": "d", "deletionPolicy": "Retain"}
    assert printing.columns_for("VolumeSnapshotClass").row(klass, now) == ["k", "d", "Retain", "5m"]


def test_openapi_definitions_as_crds() -> None:
    """VS13: CRD-style definition names (the group reversed), GVKs, required fields and enums."""
    defs = openapi.definitions()
    snap = defs["io.k8s.storage.snapshot.v1.VolumeSnapshot"]
    assert snap["x-kubernetes-group-version-kind"] == [
        {"group": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "version": "v1"}]
    assert snap["required"] == ["spec"]
    assert defs["io.k8s.storage.snapshot.v1.VolumeSnapshotSpec"]["required"] == ["source"]
    assert defs["io.k8s.storage.snapshot.v1.VolumeSnapshotContentSpec"]["properties"]["deletionPolicy"]["enum"] == [
        "Delete", "Retain"]
    assert defs["io.k8s.storage.snapshot.v1.VolumeSnapshotClass"]["required"] == ["deletionPolicy", "driver"]
    assert "io.k8s.networking.gateway.v1beta1.ReferenceGrantSpec" in defs
    source = defs["io.k8s.storage.snapshot.v1.VolumeSnapshotSource"]
    assert source["description"] and set(source["properties"]) == {"persistentVolumeClaimName",
                                                                    "volumeSnapshotContentName"}
    claim = defs["io.k8s.api.core.v1.PersistentVolumeClaimSpec"]["properties"]
    assert claim["dataSourceRef"]["$ref"].endswith("TypedObjectReference")
    assert "namespace" not in defs["io.k8s.api.core.v1.TypedLocalObjectReference"]["properties"]
    patch = openapi.v2_document()["paths"]["/apis/snapshot.storage.k8s.io/v1/namespaces/{namespace}/volumesnapshots/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" not in patch["consumes"]  # VS12: a custom resource
    assert openapi.v3_document("snapshot.storage.k8s.io/v1") is not None
    assert openapi.v3_document("gateway.networking.k8s.io/v1beta1") is not None


def _allows(rules: list[dict[str, Any]], verb: str, resource: str, namespaced: bool = True) -> bool:
    attrs = Attributes(User("u"), verb, True, "ns1" if namespaced else "", "snapshot.storage.k8s.io", "v1", resource,
                       "", "")
    return any(rule_allows(attrs, r) for r in rules_from(rules))


def test_default_roles_cover_volume_snapshots_only() -> None:
    """VS14: view reads and edit writes VolumeSnapshots; contents and classes stay with cluster administrators."""
    roles = {r["metadata"]["name"]: r for r in cluster_roles()}
    view = aggregated_rules(roles["view"], list(roles.values())) or []
    edit = aggregated_rules(roles["edit"], [*roles.values(), {**roles["view"], "rules": view}]) or []
    assert _allows(view, "list", "volumesnapshots") and not _allows(view, "create", "volumesnapshots")
    assert _allows(edit, "create", "volumesnapshots") and _allows(edit, "delete", "volumesnapshots")
    for rules in (view, edit):
        assert not _allows(rules, "get", "volumesnapshotcontents", namespaced=False)
        assert not _allows(rules, "get", "volumesnapshotclasses", namespaced=False)
