"""Pure pieces of the command line: ages, tables, manifests, edits, describe."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from storage.api.storage_class import ANN_STORAGE_CLASS
from storage.cli import describe, tables
from storage.cli.age import age, human_duration
from storage.cli.edits import EditError, applied, edit_map, parse_key_values, same_object
from storage.cli.manifests import ManifestError, expand_paths, parse_documents, resource_for

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "seconds, text",
    [(-5, "<invalid>"), (-1, "0s"), (0, "0s"), (5, "5s"), (119, "119s"), (120, "2m"), (192, "3m12s"),
     (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"), (3 * 3600 + 60, "3h1m"), (8 * 3600, "8h"),
     (47 * 3600, "47h"), (51 * 3600, "2d3h"), (48 * 3600, "2d"), (10 * 86400, "10d"),
     (800 * 86400, "2y70d"), (9 * 365 * 86400, "9y")],
)
def test_age_like_kubectl(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_age_of_timestamp_and_missing() -> None:
    assert age("2024-05-01T11:56:48Z", NOW) == "3m12s"
    assert age(None, NOW) == "<unknown>"


def test_access_modes_fixed_order_and_dedup() -> None:
    assert tables.access_modes(["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce"]) == "RWO,RWX"
    assert tables.access_modes(["ReadWriteOncePod", "ReadOnlyMany"]) == "ROX,RWOP"
    assert tables.access_modes(None) == ""


def test_render_pads_like_tabwriter() -> None:
    out = tables.render(["NAME", "AGE"], [["a", "5s"], ["longer-name", "3m"]])
    assert out == "NAME          AGE\na             5s\nlonger-name   3m\n"
    assert tables.render(["NAME", "AGE"], [["a", "5s"]], no_headers=True) == "a     5s\n"


def _created(seconds_ago: int) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_pv_row_uses_beta_class_annotation_rule_b1() -> None:
    pv = {
        "kind": "PersistentVolume",
        "metadata": {"name": "pv1", "creationTimestamp": _created(5),
                     "annotations": {ANN_STORAGE_CLASS: "slow"}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "fast",
                 "claimRef": {"namespace": "default", "name": "c1"}},
        "status": {"phase": "Bound"},
    }
    headers, rows = tables.table_rows("PersistentVolume", [pv], wide=True, now=NOW)
    assert headers[-1] == "VOLUMEMODE"
    assert rows == [["pv1", "1Gi", "RWO,RWX", "Retain", "Bound", "default/c1", "slow", "<unset>", "", "5s", "Filesystem"]]


def test_sc_default_marker_requires_exact_true_rule_p3() -> None:
    sc = {"metadata": {"name": "a", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
          "provisioner": "p"}
    not_default = {"metadata": {"name": "b", "annotations": {"storageclass.kubernetes.io/is-default-class": "True"}},
                   "provisioner": "p"}
    _, rows = tables.table_rows("StorageClass", [sc, not_default], now=NOW)
    assert rows[0][:5] == ["a (default)", "p", "Delete", "Immediate", "false"]
    assert rows[1][0] == "b"


def test_namespace_column_first() -> None:
    pvc = {"metadata": {"name": "c", "namespace": "ns1"}, "spec": {}, "status": {"phase": "Pending"}}
    headers, rows = tables.table_rows("PersistentVolumeClaim", [pvc], with_namespace=True, now=NOW)
    assert headers[:3] == ["NAMESPACE", "NAME", "STATUS"]
    assert rows[0][:3] == ["ns1", "c", "Pending"]


def test_multi_document_yaml_and_list_kind() -> None:
    text = """
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: PersistentVolume, metadata: {name: a}}
- {apiVersion: v1, kind: PersistentVolume, metadata: {name: b}}
---
---
apiVersion: storage.k8s.io/v1beta1
kind: StorageClass
metadata: {name: legacy}
"""
    docs = parse_documents(text, "f.yaml")
    assert [d.obj["metadata"]["name"] for d in docs] == ["a", "b", "legacy"]
    assert docs[2].index == 3
    assert resource_for(docs[2]).plural == "storageclasses"  # legacy version passes through


def test_bad_yaml_names_file_and_document() -> None:
    with pytest.raises(ManifestError, match=r"f\.yaml \(document 2\)"):
        parse_documents("kind: A\napiVersion: v1\nmetadata: {name: x}\n---\nkey: [unclosed\n", "f.yaml")


def test_unknown_kind_is_named() -> None:
    doc = parse_documents('{"apiVersion": "v1", "kind": "Gizmo", "metadata": {"name": "g"}}', "g.json")[0]
    with pytest.raises(ManifestError, match='no matches for kind "Gizmo" in version "v1"'):
        resource_for(doc)


def test_missing_name_and_kind_are_reported() -> None:
    with pytest.raises(ManifestError, match="metadata.name: Required value"):
        parse_documents("apiVersion: v1\nkind: Pod\nmetadata: {}\n", "p.yaml")
    with pytest.raises(ManifestError, match="'Kind' is missing"):
        parse_documents("apiVersion: v1\nmetadata: {name: a}\n", "p.yaml")


def test_directory_in_name_order(tmp_path) -> None:
    for name in ("b.yaml", "a.json", "c.yml", "notes.txt"):
        (tmp_path / name).write_text("")
    assert [p.rsplit("/", 1)[1] for p in expand_paths([str(tmp_path)])] == ["a.json", "b.yaml", "c.yml"]
    with pytest.raises(ManifestError, match="does not exist"):
        expand_paths([str(tmp_path / "missing")])


def test_apply_merge_keeps_status_and_server_metadata() -> None:
    existing = {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "a", "uid": "u1", "resourceVersion": "7", "labels": {"x": "1"}},
        "spec": {"capacity": {"storage": "1Gi"}, "volumeMode": "Filesystem"},
        "status": {"phase": "Bound"},
    }
    manifest = {"apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": "a", "resourceVersion": "1", "labels": {"y": "2"}},
                "spec": {"capacity": {"storage": "2Gi"}}, "status": {"phase": "Available"}}
    out = applied(existing, manifest)
    assert out["metadata"]["resourceVersion"] == "7" and out["metadata"]["uid"] == "u1"
    assert out["metadata"]["labels"] == {"x": "1", "y": "2"}
    assert out["spec"] == {"capacity": {"storage": "2Gi"}, "volumeMode": "Filesystem"}
    assert out["status"] == {"phase": "Bound"}
    assert not same_object(out, existing)
    assert same_object(applied(existing, {"apiVersion": "v1", "kind": "PersistentVolume",
                                          "metadata": {"name": "a"}, "spec": {"volumeMode": "Filesystem"}}), existing)


def test_label_specs_and_overwrite() -> None:
    sets, removes = parse_key_values(["a=1", "example.com/b=2", "c-"], "label")
    assert sets == {"a": "1", "example.com/b": "2"} and removes == ["c"]
    with pytest.raises(EditError, match="invalid label spec"):
        parse_key_values(["justaword"], "label")
    with pytest.raises(EditError, match="invalid label value"):
        parse_key_values(["a=has space"], "label")
    parse_key_values(["a=has space"], "annotation")
    with pytest.raises(EditError, match=r"'a' already has a value \(1\), and --overwrite is false"):
        edit_map({"a": "1"}, {"a": "2"}, [], False, "label")
    assert edit_map({"a": "1"}, {"a": "2"}, [], True, "label") == ({"a": "2"}, True)
    assert edit_map({"a": "1"}, {"a": "1"}, ["zz"], False, "label") == ({"a": "1"}, False)


class _Objects:
    def __init__(self, **by_plural: list[dict]) -> None:
        self.by_plural = by_plural

    def list_objects(self, plural: str, namespace: str | None) -> list[dict]:
        items = self.by_plural.get(plural, [])
        return [i for i in items if namespace is None or i["metadata"].get("namespace") == namespace]


def test_describe_pvc_with_used_by_and_sorted_events() -> None:
    pvc = {"kind": "PersistentVolumeClaim",
           "metadata": {"name": "data", "namespace": "default", "uid": "u-1",
                        "finalizers": ["kubernetes.io/pvc-protection"]},
           "spec": {"volumeName": "pv1", "storageClassName": "fast"},
           "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}}
    pod = {"metadata": {"name": "web-0", "namespace": "default"},
           "spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}}
    newer = {"metadata": {"name": "e2", "namespace": "default"}, "type": "Normal", "reason": "Second",
             "message": "two", "involvedObject": {"kind": "PersistentVolumeClaim", "name": "data", "namespace": "default"},
             "lastTimestamp": "2024-05-01T11:59:00Z"}
    older = {"metadata": {"name": "e1", "namespace": "default"}, "type": "Warning", "reason": "First",
             "message": "one", "involvedObject": {"uid": "u-1", "kind": "PersistentVolumeClaim", "name": "data"},
             "lastTimestamp": "2024-05-01T11:58:00Z"}
    other = {"metadata": {"name": "e3", "namespace": "default"}, "type": "Normal", "reason": "Other",
             "message": "x", "involvedObject": {"uid": "u-2", "kind": "PersistentVolumeClaim", "name": "data"},
             "lastTimestamp": "2024-05-01T11:58:00Z"}
    text = describe.describe(pvc, _Objects(pods=[pod], events=[newer, older, other]))
    assert "Name:          data\n" in text
    assert "StorageClass:  fast\n" in text
    assert "Access Modes:  RWO\n" in text
    assert "Used By:       web-0\n" in text
    assert "Finalizers:    [kubernetes.io/pvc-protection]\n" in text
    assert text.index("First") < text.index("Second")
    assert "Other" not in text


def test_describe_generic_fallback_prints_yaml_and_no_events() -> None:
    cm = {"kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": {"k": "v"}}
    text = describe.describe(cm, _Objects())
    assert "data:\n  k: v\n" in text and text.endswith("Events:  <none>\n")
