"""The Swagger 2.0 document in protobuf, as kubectl before 1.27 needs it for validation and ``explain``.

client-go fetches ``/openapi/v2`` only as
``application/com.github.proto-openapi.spec.v2@v1.0+protobuf``: the message
``openapi.v2.Document`` of gnostic's ``OpenAPIv2.proto``. This writes the
protobuf wire format of the parts Stowage's document uses, field numbers as
that file declares them. Vendor extensions and enum values travel as
``Any{yaml}``; JSON is YAML, so they are JSON text.
"""
from __future__ import annotations

import struct
from typing import Any

import orjson

__all__ = ["encode_document", "encode_varint"]


def encode_varint(n: int) -> bytes:
    """Protobuf base-128 varint of ``n`` (negative numbers as their 64-bit two's complement)."""
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Message:
    """Fields appended in order; proto3 defaults (empty, false, zero) are left out."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def string(self, field: int, value: str | None) -> "_Message":
        if value:
            data = value.encode()
            self.buf += encode_varint(field << 3 | 2) + encode_varint(len(data)) + data
        return self

    def strings(self, field: int, values: list[str] | None) -> "_Message":
        for v in values or []:
            data = v.encode()
            self.buf += encode_varint(field << 3 | 2) + encode_varint(len(data)) + data
        return self

    def boolean(self, field: int, value: bool | None) -> "_Message":
        if value:
            self.buf += encode_varint(field << 3) + b"\x01"
        return self

    def integer(self, field: int, value: int | None) -> "_Message":
        if value:
            self.buf += encode_varint(field << 3) + encode_varint(value)
        return self

    def double(self, field: int, value: float | None) -> "_Message":
        if value:
            self.buf += encode_varint(field << 3 | 1) + struct.pack("<d", value)
        return self

    def message(self, field: int, value: "_Message | None", *, always: bool = False) -> "_Message":
        if value is not None and (value.buf or always):
            self.buf += encode_varint(field << 3 | 2) + encode_varint(len(value.buf)) + value.buf
        return self

    def messages(self, field: int, values: list["_Message"]) -> "_Message":
        for v in values:
            self.message(field, v, always=True)
        return self


def _any(value: Any) -> _Message:
    return _Message().string(2, orjson.dumps(value).decode())  # Any.yaml


def _named(name: str, value: _Message) -> _Message:
    return _Message().string(1, name).message(2, value, always=True)


def _extensions(node: dict[str, Any]) -> list[_Message]:
    return [_named(k, _any(v)) for k, v in node.items() if k.startswith("x-")]


def _schema(s: dict[str, Any]) -> _Message:
    m = _Message()
    m.string(1, s.get("$ref")).string(2, s.get("format")).string(3, s.get("title")).string(4, s.get("description"))
    if "default" in s:
        m.message(5, _any(s["default"]), always=True)
    m.double(7, s.get("maximum")).double(9, s.get("minimum"))
    m.string(13, s.get("pattern")).boolean(16, s.get("uniqueItems"))
    m.strings(19, s.get("required"))
    m.messages(20, [_any(v) for v in s.get("enum") or []])
    extra = s.get("additionalProperties")
    if isinstance(extra, dict):
        m.message(21, _Message().message(1, _schema(extra), always=True), always=True)
    elif isinstance(extra, bool):
        m.message(21, _Message().boolean(2, extra), always=True)
    if s.get("type"):
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        m.message(22, _Message().strings(1, types))
    if "items" in s:
        items = s["items"] if isinstance(s["items"], list) else [s["items"]]
        m.message(23, _Message().messages(1, [_schema(i) for i in items]), always=True)
    m.messages(24, [_schema(a) for a in s.get("allOf") or []])
    if "properties" in s:
        props = _Message().messages(1, [_named(k, _schema(v)) for k, v in s["properties"].items()])
        m.message(25, props, always=True)
    m.boolean(27, s.get("readOnly"))
    m.messages(31, _extensions(s))
    return m


def _parameter(p: dict[str, Any]) -> _Message:
    if p["in"] == "body":
        body = (_Message().string(1, p.get("description")).string(2, p["name"]).string(3, "body")
                .boolean(4, p.get("required")).message(5, _schema(p["schema"]), always=True))
        parameter = _Message().message(1, body, always=True)
    else:
        sub = _Message().boolean(1, p.get("required")).string(2, p["in"]).string(3, p.get("description"))
        sub.string(4, p["name"])
        if p["in"] == "query":  # QueryParameterSubSchema: type 6, format 7, uniqueItems 20
            sub.string(6, p.get("type")).string(7, p.get("format")).boolean(20, p.get("uniqueItems"))
            non_body = _Message().message(3, sub, always=True)
        else:  # PathParameterSubSchema: type 5, format 6, uniqueItems 19
            sub.string(5, p.get("type")).string(6, p.get("format")).boolean(19, p.get("uniqueItems"))
            non_body = _Message().message(4, sub, always=True)
        parameter = _Message().message(2, non_body, always=True)
    return _Message().message(1, parameter, always=True)  # ParametersItem.parameter


def _operation(op: dict[str, Any]) -> _Message:
    m = _Message().strings(1, op.get("tags")).string(2, op.get("summary")).string(3, op.get("description"))
    m.string(5, op.get("operationId")).strings(6, op.get("produces")).strings(7, op.get("consumes"))
    m.messages(8, [_parameter(p) for p in op.get("parameters") or []])
    codes = []
    for code, resp in (op.get("responses") or {}).items():
        response = _Message().string(1, resp.get("description"))
        if "schema" in resp:
            response.message(2, _Message().message(1, _schema(resp["schema"]), always=True), always=True)
        codes.append(_named(code, _Message().message(1, response, always=True)))
    m.message(9, _Message().messages(1, codes), always=True)
    m.strings(10, op.get("schemes")).boolean(11, op.get("deprecated"))
    m.messages(13, _extensions(op))
    return m


_VERBS: dict[str, int] = {"get": 2, "put": 3, "post": 4, "delete": 5, "options": 6, "head": 7, "patch": 8}


def _path_item(item: dict[str, Any]) -> _Message:
    m = _Message().string(1, item.get("$ref"))
    for verb, field in _VERBS.items():
        if verb in item:
            m.message(field, _operation(item[verb]), always=True)
    m.messages(9, [_parameter(p) for p in item.get("parameters") or []])
    m.messages(10, _extensions(item))
    return m


def encode_document(doc: dict[str, Any]) -> bytes:
    """``openapi.v2.Document`` for a Swagger 2.0 document as ``storage.api.openapi.v2_document`` builds it."""
    info = doc.get("info") or {}
    m = _Message().string(1, doc.get("swagger"))
    m.message(2, _Message().string(1, info.get("title")).string(2, info.get("version")).string(3, info.get("description")))
    m.string(3, doc.get("host")).string(4, doc.get("basePath")).strings(5, doc.get("schemes"))
    m.strings(6, doc.get("consumes")).strings(7, doc.get("produces"))
    paths = _Message().messages(2, [_named(p, _path_item(i)) for p, i in doc.get("paths", {}).items()])
    m.message(8, paths, always=True)
    definitions = [_named(name, _schema(s)) for name, s in doc.get("definitions", {}).items()]
    m.message(9, _Message().messages(1, definitions), always=True)
    security: list[_Message] = []
    for requirement in doc.get("security") or []:
        entries = [_named(k, _Message().strings(1, v)) for k, v in requirement.items()]
        security.append(_Message().messages(1, entries))
    m.messages(12, security)
    schemes = []
    for name, s in (doc.get("securityDefinitions") or {}).items():
        if s.get("type") == "apiKey":  # SecurityDefinitionsItem.api_key_security
            key = (_Message().string(1, "apiKey").string(2, s.get("name")).string(3, s.get("in"))
                   .string(4, s.get("description")))
            schemes.append(_named(name, _Message().message(2, key, always=True)))
    m.message(13, _Message().messages(1, schemes))
    m.messages(16, _extensions(doc))
    return bytes(m.buf)
