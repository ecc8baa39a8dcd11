"""The protobuf form of the access reviews, the one body kubectl sends only as protobuf.

``kubectl auth can-i`` and ``auth whoami`` post their reviews with
``Content-Type: application/vnd.kubernetes.protobuf`` and fall back to nothing
else, while accepting a JSON answer. Reviews are small and flat, so a reader
of the protobuf wire format for exactly their fields (field numbers from
Kubernetes' ``generated.proto``) is enough; every other kind stays JSON-only.
"""
from __future__ import annotations

from typing import Any, Callable

from storage.errors import BadRequest

MAGIC = b"k8s\x00"
Obj = dict[str, Any]
_Schema = dict[int, tuple[str, Any]]  # field number -> (JSON name, "str" | "strs" | "map" | nested schema)

_RESOURCE_ATTRIBUTES: _Schema = {1: ("namespace", "str"), 2: ("verb", "str"), 3: ("group", "str"),
                                 4: ("version", "str"), 5: ("resource", "str"), 6: ("subresource", "str"),
                                 7: ("name", "str")}
_NON_RESOURCE_ATTRIBUTES: _Schema = {1: ("path", "str"), 2: ("verb", "str")}
_META: _Schema = {1: ("name", "str"), 2: ("generateName", "str"), 3: ("namespace", "str")}
_SAR_SPEC: _Schema = {1: ("resourceAttributes", _RESOURCE_ATTRIBUTES), 2: ("nonResourceAttributes", _NON_RESOURCE_ATTRIBUTES),
                      3: ("user", "str"), 4: ("groups", "strs"), 6: ("uid", "str")}
_SELF_SAR_SPEC: _Schema = {1: ("resourceAttributes", _RESOURCE_ATTRIBUTES),
                           2: ("nonResourceAttributes", _NON_RESOURCE_ATTRIBUTES)}
SCHEMAS: dict[str, _Schema] = {
    "SubjectAccessReview": {1: ("metadata", _META), 2: ("spec", _SAR_SPEC)},
    "LocalSubjectAccessReview": {1: ("metadata", _META), 2: ("spec", _SAR_SPEC)},
    "SelfSubjectAccessReview": {1: ("metadata", _META), 2: ("spec", _SELF_SAR_SPEC)},
    "SelfSubjectRulesReview": {1: ("metadata", _META), 2: ("spec", {1: ("namespace", "str")})},
    "SelfSubjectReview": {1: ("metadata", _META)},
}
_UNKNOWN: _Schema = {1: ("typeMeta", {1: ("apiVersion", "str"), 2: ("kind", "str")}), 2: ("raw", "bytes")}


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= len(data) or shift > 63:
            raise BadRequest("the protobuf body is truncated")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _message(data: bytes, schema: _Schema, depth: int = 0) -> Obj:
    if depth > 8:
        raise BadRequest("the protobuf body is nested too deeply")
    out: Obj = {}
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _varint(data, i)
            continue
        if wire == 1 or wire == 5:
            i += 8 if wire == 1 else 4
            continue
        if wire != 2:
            raise BadRequest(f"the protobuf body has an unsupported wire type {wire}")
        length, i = _varint(data, i)
        chunk = data[i:i + length]
        if len(chunk) != length:
            raise BadRequest("the protobuf body is truncated")
        i += length
        field = schema.get(number)
        if field is None:
            continue
        name, kind = field
        decode: Callable[[bytes], Any]
        if kind == "bytes":
            out[name] = chunk
        elif kind in ("str", "strs"):
            try:
                text = chunk.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"{name}: not UTF-8") from None
            if kind == "strs":
                out.setdefault(name, []).append(text)
            else:
                out[name] = text
        else:
            decode = lambda b, s=kind: _message(b, s, depth + 1)  # noqa: E731
            out[name] = decode(chunk)
    return out


def decode_review(body: bytes, kind: str) -> Obj:
    """A review in JSON wire form from its protobuf envelope; BadRequest when it is not one."""
    if not body.startswith(MAGIC):
        raise BadRequest("the protobuf body lacks the Kubernetes envelope")
    envelope = _message(body[len(MAGIC):], _UNKNOWN)
    type_meta = envelope.get("typeMeta") or {}
    if type_meta.get("kind") not in (None, kind):
        raise BadRequest(f"the body holds a {type_meta.get('kind')}, not a {kind}")
    obj = _message(envelope.get("raw") or b"", SCHEMAS[kind])
    obj["kind"] = kind
    if type_meta.get("apiVersion"):
        obj["apiVersion"] = type_meta["apiVersion"]
    return obj
