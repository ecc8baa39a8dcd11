"""Real-world manifests round-trip: load -> validate -> dump gives the same data,
except canonical quantities (Q2) and legacy apiVersions converted to the served one."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from storage.api.defaults import apply_defaults
from storage.api.models import MODELS, from_dict, to_dict
from storage.api.quantity import canonical
from storage.api.registry import by_kind
from storage.api.validation import validate

MANIFESTS = Path(__file__).parent / "manifests"
DOCS = [
    pytest.param(doc, id=f"{path.stem}:{doc['kind']}:{doc['metadata']['name']}")
    for path in sorted(MANIFESTS.glob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text())
    if doc
]

# What conversion from a legacy version may add: the selector a legacy set implied, and its OnDelete strategy.
LEGACY_ADDITIONS = {("spec", "selector"), ("spec", "updateStrategy")}


def assert_same(original: Any, out: Any, path: tuple[str, ...] = (), legacy: bool = False) -> None:
    if isinstance(original, dict):
        assert isinstance(out, dict), path
        for key, value in original.items():
            if value is None:
                assert key not in out, path + (key,)
                continue
            assert key in out, path + (key,)
            assert_same(value, out[key], path + (key,), legacy)
        extra = set(out) - set(original)
        allowed = {k for k in extra if legacy and path + (k,) in LEGACY_ADDITIONS}
        assert extra == allowed, (path, extra)
    elif isinstance(original, list):
        assert isinstance(out, list) and len(out) == len(original), path
        for i, (a, b) in enumerate(zip(original, out)):
            assert_same(a, b, path + (str(i),), legacy)
    elif original != out:
        # The only value change allowed is a quantity written in its canonical form.
        assert isinstance(out, str) and canonical(original) == out, (path, original, out)
        assert path[-1] in {"storage", "cpu", "memory", "ephemeral-storage", "sizeLimit", "divisor"}, path


@pytest.mark.parametrize("doc", DOCS)
def test_manifest_round_trips_through_validate(doc):
    original = copy.deepcopy(doc)
    out = validate(doc)
    assert doc == original, "validate must not mutate its input"
    info = by_kind(doc["kind"])
    assert out["apiVersion"] == info.api_version
    legacy = doc["apiVersion"] != info.api_version
    expected = {**original, "apiVersion": info.api_version}
    assert_same(expected, out, legacy=legacy)
    assert validate(out) == out, "normalized output is a fixed point"


@pytest.mark.parametrize("doc", DOCS)
def test_manifest_with_defaults_keeps_every_field(doc):
    original = copy.deepcopy(doc)
    out = validate(apply_defaults(copy.deepcopy(doc)))
    # Defaults only add: every field the author wrote is still there with its (canonical) value.
    def contains(a: Any, b: Any, path: tuple = ()) -> None:
        if isinstance(a, dict):
            for k, v in a.items():
                if k == "apiVersion" and not path:
                    continue
                assert k in b, path + (k,)
                contains(v, b[k], path + (k,))
        elif isinstance(a, list):
            assert len(a) == len(b), path
            for x, y in zip(a, b):
                contains(x, y, path)
        elif a != b:
            assert canonical(a) == b, (path, a, b)
    contains(original, out)


@pytest.mark.parametrize("doc", DOCS)
def test_models_round_trip(doc):
    model = from_dict(doc)
    assert isinstance(model, MODELS[doc["kind"]])
    again = to_dict(from_dict(to_dict(model)))
    assert again == to_dict(model)


def test_manifest_details_survive():
    docs = {(d.values[0]["kind"], d.values[0]["metadata"]["name"]): d.values[0] for d in DOCS}
    cassandra = validate(docs[("StatefulSet", "cassandra")])
    container = cassandra["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"]
    assert container["env"][-1] == {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    claim = validate(docs[("PersistentVolumeClaim", "claim1")])
    assert claim["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"] == "fast"
    assert claim["spec"]["resources"]["requests"]["storage"] == "512Mi"
    rc = validate(docs[("ReplicationController", "redis")])
    assert rc["spec"]["template"]["spec"]["volumes"][0] == {"name": "redis-storage", "emptyDir": {}}
    assert rc["spec"]["template"]["spec"]["volumes"][1]["emptyDir"]["sizeLimit"] == "512Mi"
    ds = validate(docs[("DaemonSet", "fluentd-elasticsearch")])
    assert ds["apiVersion"] == "apps/v1"
    assert ds["spec"]["selector"] == {"matchLabels": {"name": "fluentd-elasticsearch"}}
    sink = from_dict(docs[("Pod", "kitchen-sink")])
    assert sink.spec.containers[0].ports[0].host_ip == "127.0.0.1"
    assert sink.spec.security_context.fs_group == 2000
    assert to_dict(sink)["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "250m"


def test_unknown_fields_are_kept():
    doc = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "x", "futureField": {"a": 1}},
           "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/x", "newKnob": True}},
           "someday": [1, 2]}
    out = validate(doc)
    assert out["metadata"]["futureField"] == {"a": 1}
    assert out["spec"]["hostPath"]["newKnob"] is True
    assert out["someday"] == [1, 2]
