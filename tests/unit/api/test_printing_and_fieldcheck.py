"""Pure pieces behind server-side printing, OpenAPI and fieldValidation: columns, unknown fields, duplicate keys."""
from __future__ import annotations

from datetime import datetime, timezone

from storage.api import printing
from storage.api.fieldcheck import prune_unknown, unknown_fields
from storage.api.openapi import definition_name, definitions
from storage.api.models import MODELS
from storage.api.registry import by_kind
from storage.apiserver.fieldvalidation import loads_noting_duplicates, yaml_duplicates

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def cells(kind: str, obj: dict) -> dict[str, object]:
    table = printing.table(kind, [obj], now=NOW)
    return dict(zip([c["name"] for c in table["columnDefinitions"]], table["rows"][0]["cells"]))


def test_replica_set_columns_and_selector_text() -> None:
    rs = {"metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:59:00Z"},
          "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"},
                                               "matchExpressions": [{"key": "tier", "operator": "In",
                                                                     "values": ["a", "b"]},
                                                                    {"key": "canary", "operator": "DoesNotExist"}]},
                   "template": {"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y"}]}}},
          "status": {"replicas": 2, "readyReplicas": 1}}
    assert cells("ReplicaSet", rs) == {"Name": "web", "Desired": 3, "Current": 2, "Ready": "1", "Age": "60s",
                                       "Containers": "a,b", "Images": "x:1,y",
                                       "Selector": "app=web,tier in (a,b),!canary"}


def test_endpoints_show_three_addresses_then_a_count() -> None:
    ep = {"metadata": {"name": "svc"},
          "subsets": [{"addresses": [{"ip": f"10.0.0.{i}"} for i in range(5)], "ports": [{"port": 80}]}]}
    assert cells("Endpoints", ep)["Endpoints"] == "10.0.0.0:80,10.0.0.1:80,10.0.0.2:80 + 2 more..."
    assert cells("Endpoints", {"metadata": {"name": "none"}})["Endpoints"] == "<none>"


def test_pod_readiness_gates_and_controller_revision_owner() -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"readinessGates": [{"conditionType": "a"}, {"conditionType": "b"}]},
           "status": {"conditions": [{"type": "a", "status": "True"}]}}
    assert cells("Pod", pod)["Readiness Gates"] == "1/2"
    rev = {"metadata": {"name": "web-1", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": True}]}, "revision": 2}
    assert cells("ControllerRevision", rev)["Controller"] == "statefulset.apps/web"
    assert cells("ControllerRevision", rev)["Revision"] == 2


def test_column_definitions_mark_wide_columns_with_priority_1() -> None:
    defs = printing.column_definitions("PersistentVolumeClaim")
    assert [d["name"] for d in defs if d["priority"] == 1] == ["VolumeMode"]
    assert defs[0] == {"name": "Name", "type": "string", "format": "name", "description": "Name of the "
                       "PersistentVolumeClaim.", "priority": 0}
    assert [d["name"] for d in printing.column_definitions("NoSuchKind")] == ["Name", "Age"]


def test_unknown_fields_by_path_and_pruning() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"any": "key"}, "x": 1},
           "spec": {"containers": [{"name": "a", "image": "b", "colour": "red",
                                    "resources": {"requests": {"cpu": "1"}}}],
                    "volumes": [{"name": "v", "hostPath": {"path": "/x", "bogus": True}}]},
           "status": {"containerStatuses": [{"name": "a", "state": {"anything": {"goes": 1}}}]}}
    assert unknown_fields(pod) == ["metadata.x", "spec.containers[0].colour", "spec.volumes[0].hostPath.bogus"]
    assert prune_unknown(pod) == ["metadata.x", "spec.containers[0].colour", "spec.volumes[0].hostPath.bogus"]
    assert unknown_fields(pod) == []
    assert pod["metadata"]["labels"] == {"any": "key"}  # maps keep every key
    assert unknown_fields({"kind": "NoSuchKind", "x": 1}) == []


def test_duplicate_keys_with_their_paths() -> None:
    value, dups = loads_noting_duplicates(b'{"a": 1, "b": {"c": [1], "c": []}, "a": 3}')
    assert value == {"a": 3, "b": {"c": []}}
    assert sorted(dups) == ["a", "b.c"]
    value, dups = loads_noting_duplicates(b'{"items": [{"x": 1, "x": 2}]}')
    assert dups == ["items[0].x"] and value == {"items": [{"x": 2}]}
    assert loads_noting_duplicates(b'{"a": 1}') == ({"a": 1}, [])


def test_every_model_reached_from_a_kind_has_a_kubernetes_style_definition() -> None:
    defs = definitions()
    for kind, model in MODELS.items():
        name = definition_name(model)
        info = by_kind(kind)
        assert info is not None
        # A kind Kubernetes serves from a CRD is named by its group reversed, as the API server names CRDs (VS13).
        prefixes = ((".".join(reversed(info.group.split("."))) + ".",) if info.crd
                    else ("io.k8s.api.", "io.k8s.apimachinery."))
        assert name.startswith(prefixes), name
        assert defs[name]["x-kubernetes-group-version-kind"][0]["kind"] == kind
    for name, schema in defs.items():
        for prop in schema.get("properties", {}).values():
            ref = prop.get("$ref") or (prop.get("items") or {}).get("$ref")
            if ref:
                assert ref.removeprefix("#/definitions/") in defs, (name, ref)


def test_yaml_duplicate_keys_for_server_side_apply() -> None:
    text = b"metadata:\n  name: a\n  name: b\nspec:\n  ports:\n  - port: 1\n    port: 2\n"
    assert yaml_duplicates(text) == ["metadata.name", "spec.ports[0].port"]
    assert yaml_duplicates(b"a: 1\nb: 2\n") == []


def test_status_causes_round_trip_without_repeating_the_field() -> None:
    from storage.errors import FieldError, Invalid, from_status

    err = Invalid([FieldError("spec.x", "Unsupported value", 'supported values: "a"', "b", True),
                   FieldError("spec.y", "Required value")], kind="PersistentVolume", name="n")
    status = err.to_status()
    assert [c["message"] for c in status["details"]["causes"]] == ['Unsupported value: "b": supported values: "a"',
                                                                  "Required value"]
    again = from_status(status, 422)
    assert [e.message() for e in again.errors] == ['spec.x: Unsupported value: "b": supported values: "a"',
                                                   "spec.y: Required value"]
    # A cause from a server that still repeated the field reads the same.
    old = {"reason": "FieldValueRequired", "field": "spec.y", "message": "spec.y: Required value"}
    assert FieldError.from_cause(old).message() == "spec.y: Required value"


def test_node_status_column_as_kubectl_prints_it() -> None:
    """kubectl's printNode: Ready / NotReady (False or Unknown) / Unknown (no condition), then SchedulingDisabled."""
    def node(ready: str | None, unschedulable: bool = False, labels: dict | None = None) -> dict:
        conditions = [{"type": "Ready", "status": ready}] if ready is not None else []
        return {"metadata": {"name": "n1", "labels": labels or {}}, "spec": {"unschedulable": unschedulable},
                "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, *conditions]}}
    assert cells("Node", node("True"))["Status"] == "Ready"
    assert cells("Node", node("False"))["Status"] == "NotReady"
    assert cells("Node", node("Unknown"))["Status"] == "NotReady"
    assert cells("Node", node(None))["Status"] == "Unknown"
    assert cells("Node", node("True", unschedulable=True))["Status"] == "Ready,SchedulingDisabled"
    assert cells("Node", node("Unknown", unschedulable=True))["Status"] == "NotReady,SchedulingDisabled"
    roles = node("True", labels={"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "storage"})
    assert cells("Node", roles)["Roles"] == "control-plane,storage"
    assert cells("Node", node("True"))["Roles"] == "<none>"
