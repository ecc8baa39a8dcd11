"""Kubernetes' protobuf request bodies read into the JSON the same client would have sent.

The fixtures are real kubectl 1.37.1 request bodies (captured with ``-v=9``)
beside kubectl's own ``--dry-run=client -o json`` of the same command; the
review and TokenRequest answers, which have no dry run, are written out by
Go's JSON rules. ``tests/api/test_api_kubectl_protobuf.py`` captures the
same live against a server. The rest builds bodies with the test writer.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from k8s_protobuf_writer import Writer, envelope, field, varint
from storage.api import registry
from storage.api.k8s_protobuf import MAGIC, MAX_DECODED_BYTES, decode_message, decode_object, known, raw_fields
from storage.errors import BadRequest, RequestEntityTooLarge, UnsupportedMediaType

FIXTURES = json.loads((Path(__file__).parent / "data" / "kubectl_protobuf_bodies.json").read_text())


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f["command"].split(" --")[0] for f in FIXTURES])
def test_kubectl_bodies_decode_to_kubectl_json(fixture: dict[str, Any]) -> None:
    assert decode_object(bytes.fromhex(fixture["body"])) == fixture["json"]


def test_every_served_kind_has_a_message() -> None:
    """Every built-in kind has its message; a kind Kubernetes serves from a CRD (VolumeSnapshot, ReferenceGrant,
    ...) has none, as there, and a protobuf body for it is refused with 415, never guessed at (VS12)."""
    built_in = [r for r in registry.RESOURCES if r.reads_protobuf]
    crds = [r for r in registry.RESOURCES if not r.reads_protobuf]  # and CustomResourceDefinition (json_only)
    assert built_in and crds
    assert all(known(r.api_version, r.kind) for r in built_in)
    assert all(known(gv, r.kind) for r in built_in for gv in r.also_served)  # HPA8: autoscaling/v1 too
    assert not any(known(r.api_version, r.kind) for r in crds)
    for info in crds:
        with pytest.raises(UnsupportedMediaType):
            decode_object(envelope(info.api_version, info.kind, field(1, field(1, b"x"))))
    assert known("authentication.k8s.io/v1", "TokenRequest") and known("autoscaling/v1", "Scale")
    assert not known("apps/v1beta1", "Deployment") and known("autoscaling/v1", "HorizontalPodAutoscaler")
    assert known("batch/v1", "Job")


def _pod(spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **meta}, "spec": spec}


def test_go_json_rules_pointers_omitempty_inline_and_renames() -> None:
    """A pointer present with zero is kept (replicas: 0); a plain zero with omitempty is dropped; a struct is
    always written; a nil slice without omitempty is null; embedded structs inline; a JSON name that
    differs from the protobuf one (BoundObjectReference uID -> uid) is the JSON one."""
    meta = field(1, b"d") + field(3, b"") + field(7, 0)  # name, namespace "", generation 0: both omitempty
    spec = field(1, 0)  # replicas (*int32) = 0
    body = envelope("apps/v1", "Deployment", field(1, meta) + field(2, spec))
    out = decode_object(body)
    assert out["metadata"] == {"name": "d"}
    assert out["spec"]["replicas"] == 0
    assert out["spec"]["template"] == {"metadata": {}, "spec": {"containers": None}}  # containers: no omitempty
    assert out["spec"]["strategy"] == {} and out["status"] == {}
    role = decode_object(envelope("rbac.authorization.k8s.io/v1", "Role", field(1, field(1, b"r"))))
    assert role == {"kind": "Role", "apiVersion": "rbac.authorization.k8s.io/v1", "metadata": {"name": "r"},
                    "rules": None}
    volume = field(1, b"v") + field(2, field(1, field(1, b"/srv")))  # Volume{name, VolumeSource{hostPath}}
    pod = decode_message("core.v1.PodSpec", field(1, volume))
    assert pod["volumes"] == [{"name": "v", "hostPath": {"path": "/srv"}}]
    ref = decode_message("authentication.v1.BoundObjectReference", field(1, b"Pod") + field(4, b"u-1"))
    assert ref == {"kind": "Pod", "uid": "u-1"}


def test_special_types() -> None:
    """Time to RFC 3339 (seconds; the zero time is left out), MicroTime to microseconds, IntOrString by its
    type, Quantity as text, RawExtension and FieldsV1 as their JSON, bytes as base64, ExtraValue lists."""
    t = field(1, 1_700_000_000) + field(2, 123_456_789)
    meta = decode_message("meta.v1.ObjectMeta", field(8, t) + field(9, t))
    assert meta == {"creationTimestamp": "2023-11-14T22:13:20Z", "deletionTimestamp": "2023-11-14T22:13:20Z"}
    assert decode_message("meta.v1.ObjectMeta", field(8, b"")) == {}
    event = decode_message("core.v1.Event", field(10, t))
    assert event["eventTime"] == "2023-11-14T22:13:20.123456Z" and event["firstTimestamp"] is None
    port = decode_message("core.v1.ServicePort", field(3, 80) + field(4, field(1, 1) + field(3, b"http")))
    assert port == {"port": 80, "targetPort": "http"}
    port = decode_message("core.v1.ServicePort", field(3, 80) + field(4, field(1, 0) + field(2, 8080)))
    assert port == {"port": 80, "targetPort": 8080}
    assert decode_message("core.v1.ServicePort", field(3, 80)) == {"port": 80, "targetPort": 0}
    claim = decode_message("core.v1.VolumeResourceRequirements",
                           field(2, field(1, b"storage") + field(2, field(1, b"1Gi"))))
    assert claim == {"requests": {"storage": "1Gi"}}
    revision = decode_message("apps.v1.ControllerRevision", field(2, field(1, b'{"a":[1]}')) + field(3, 2))
    assert revision == {"metadata": {}, "data": {"a": [1]}, "revision": 2}
    managed = decode_message("meta.v1.ManagedFieldsEntry", field(7, field(1, b'{"f:data":{}}')))
    assert managed["fieldsV1"] == {"f:data": {}}
    secret = decode_message("core.v1.Secret", field(2, field(1, b"k") + field(2, b"\x00\xff")))
    assert secret == {"metadata": {}, "data": {"k": "AP8="}}
    sar = decode_message("authorization.v1.SubjectAccessReviewSpec",
                         field(5, field(1, b"scopes") + field(2, field(1, b"a") + field(1, b"b"))))
    assert sar == {"extra": {"scopes": ["a", "b"]}}


def test_negative_and_packed_and_merged_fields() -> None:
    """Negative int32s travel as ten-byte varints; repeated scalars come packed or not; a message sent in two
    parts merges; a field this release does not know is skipped; the last scalar wins."""
    context = decode_message("core.v1.PodSecurityContext",
                             field(1, b"") + field(4, 1) + field(4, varint(2) + varint((1 << 64) - 5)) + field(5, 0))
    assert context == {"seLinuxOptions": {}, "supplementalGroups": [1, 2, -5], "fsGroup": 0}
    assert decode_message("core.v1.ServicePort", field(3, (1 << 64) - 1)) == {"port": -1, "targetPort": 0}
    meta = field(1, field(1, b"a")) + field(1, field(3, b"ns")) + field(99, b"future") + field(7, 1) + field(7, 2)
    assert decode_message("core.v1.ConfigMap", meta)["metadata"] == {"name": "a", "namespace": "ns"}
    gen = decode_message("meta.v1.ObjectMeta", field(7, 1) + field(7, 2))
    assert gen == {"generation": 2}


@pytest.mark.parametrize("body, problem", [
    (b"", "empty"),
    (b'{"kind":"ConfigMap"}', "prefix"),
    (MAGIC, "empty after its prefix"),
    (MAGIC + b"\x12\x7f", "claims 127 bytes"),
    (MAGIC + b"\x12", "truncated"),
    (MAGIC + b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "overflows 64 bits"),
    (MAGIC + b"\x13", "wire type 3"),
    (MAGIC + b"\x00", "field number 0"),
    (envelope("v1", "ConfigMap", field(1, field(1, 5))), "metadata.name: wire type varint"),
    (envelope("v1", "ConfigMap", field(1, field(1, b"\xff"))), "metadata.name: a string that is not valid UTF-8"),
    (envelope("v1", "Service", field(2, field(1, field(4, field(1, 7))))), "IntOrString type 7"),
    (envelope("apps/v1", "ControllerRevision", field(2, field(1, b"{nope"))), "data: the embedded object is not JSON"),
    (envelope("apps/v1", "ControllerRevision", field(2, field(1, b"[" * 200 + b"]" * 200))), "nested more than"),
    (envelope("v1", "Pod", field(2, field(14, field(4, varint(1) + b"\x80")))),
     "spec.securityContext.supplementalGroups: unexpected end of data inside a varint"),
    (envelope("", "", b""), "Kind' is missing"),
])
def test_malformed_bodies_are_400_naming_the_problem(body: bytes, problem: str) -> None:
    with pytest.raises(BadRequest) as err:
        decode_object(body)
    assert problem in err.value.message


def test_unknown_kind_is_415_and_defaults_come_from_the_endpoint() -> None:
    with pytest.raises(UnsupportedMediaType):
        decode_object(envelope("batch/v1beta1", "CronJob", b""))
    with pytest.raises(UnsupportedMediaType):
        decode_object(envelope("apps/v1beta1", "Deployment", b""))
    # An envelope without typeMeta holds what the endpoint serves, as Kubernetes assumes.
    bare = MAGIC + field(2, field(1, field(1, b"c")))
    assert decode_object(bare, "v1", "ConfigMap") == {"kind": "ConfigMap", "apiVersion": "v1",
                                                      "metadata": {"name": "c"}}


def test_decoding_is_bounded() -> None:
    """A body of empty messages is small on the wire but expands (zero-filled structs): refused with 413
    before it outgrows the request body limit; a huge claimed length is a 400, not an allocation."""
    containers = field(2, b"") * (MAX_DECODED_BYTES // 20)  # PodSpec.containers, each empty
    with pytest.raises(RequestEntityTooLarge):
        decode_object(envelope("v1", "Pod", field(2, containers)))
    with pytest.raises(BadRequest, match="claims"):
        decode_object(envelope("v1", "ConfigMap", b"\x0a" + varint(1 << 62)))


def test_writer_round_trip_of_every_served_kind() -> None:
    """Whatever the writer encodes, the decoder reads back with the same values (plus Go's zero-filled
    fields); decoding what it wrote a second time changes nothing."""
    writer = Writer()
    for info in registry.RESOURCES:
        if not info.reads_protobuf:
            continue  # JSON only (see test_every_served_kind_has_a_message)
        obj = {"apiVersion": info.api_version, "kind": info.kind, "metadata": {"name": "x", "labels": {"a": "b"}}}
        first = decode_object(writer.object(obj))
        assert first["metadata"] == {"name": "x", "labels": {"a": "b"}}
        assert decode_object(writer.object(first)) == first


def test_raw_fields_reads_what_the_openapi_writer_writes() -> None:
    from storage.api.openapi_proto import encode_document

    doc = raw_fields(encode_document({"swagger": "2.0", "info": {"title": "t", "version": "v"}, "paths": {}}))
    assert doc[1] == [b"2.0"] and raw_fields(doc[2][0]) == {1: [b"t"], 2: [b"v"]}
