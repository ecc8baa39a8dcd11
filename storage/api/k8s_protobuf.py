"""Kubernetes' protobuf request bodies (``application/vnd.kubernetes.protobuf``), read into their JSON form.

kubectl's typed commands (``create configmap``, ``create deployment``,
``create token``, ``auth can-i`` ...) send protobuf only and never fall back
to JSON. A body is the magic ``k8s\\0`` and a ``runtime.Unknown`` envelope
(typeMeta{apiVersion, kind}, raw, contentEncoding, contentType) whose ``raw``
is the object's message. The field layout comes from Kubernetes' own
``generated.proto`` and Go struct tags, through
``scripts/gen_k8s_proto_schema.py`` into ``k8s_proto_schema.json``.

The result is the dict Go's ``encoding/json`` would write for the decoded Go
object, which is what the same client sends when it speaks JSON: a field Go
always writes is there even when zero (``"port": 0``, ``"resources": {}``),
an ``omitempty`` field only when set, a pointer whenever present on the wire
(``"replicas": 0``), ``null`` for a nil slice without ``omitempty``; times
as RFC 3339 text, quantities as text, IntOrString as a number or text,
bytes in base64, RawExtension and FieldsV1 as the JSON they carry. The API
server then treats it exactly as a JSON body.

Malformed input raises ``BadRequest`` naming the field and the problem; a
kind with no known message raises ``UnsupportedMediaType``. Decoding is
bounded: lengths are checked against the body, and the JSON it expands to
may not outgrow the request body limit (a protobuf body is denser than
JSON, and zero-valued fields cost nothing on the wire).
"""
from __future__ import annotations

import base64
import functools
import json
import struct
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any, Iterator

import orjson

from storage.api.durations import go_duration
from storage.api.limits import MAX_DEPTH, MAX_REQUEST_BYTES, depth_message, json_depth_exceeds
from storage.errors import BadRequest, RequestEntityTooLarge, UnsupportedMediaType

__all__ = ["MAGIC", "MEDIA_TYPE", "Envelope", "decode_message", "decode_object", "known", "message_fields", "raw_fields",
           "read_envelope", "root_message"]

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
# The most JSON (roughly, in bytes) one body may decode to: a stored object is limited to half of it anyway.
MAX_DECODED_BYTES = MAX_REQUEST_BYTES

Obj = dict[str, Any]
_Field = tuple[int, str, Any, str]  # number, JSON name, type, flags (see the generator)
# How the decoder collects a field: into a map, a list that may come packed, a list, a message whose parts
# merge, or a scalar whose last value wins.
_MAP, _PACKABLE, _LIST, _MERGED, _LAST = range(5)
_Spec = tuple[str, Any, str, int, int]  # JSON name, type, flags, expected wire type, how it is collected

_VARINT_TYPES = frozenset({"int32", "int64", "uint32", "uint64", "sint32", "sint64", "bool"})
_FIXED64_TYPES = frozenset({"fixed64", "sfixed64", "double"})
_FIXED32_TYPES = frozenset({"fixed32", "sfixed32", "float"})
_NUMERIC = _VARINT_TYPES | _FIXED64_TYPES | _FIXED32_TYPES
_TEXT = frozenset({"string", "bytes"})
_WIRE_NAMES = {0: "varint", 1: "64-bit", 2: "length-delimited", 5: "32-bit"}
_ZERO_SCALARS: dict[str, Any] = {"string": "", "bool": False, "bytes": None, "double": 0.0, "float": 0.0}
# Go's zero values of the special types, as their MarshalJSON writes them.
_ZERO_SPECIALS: dict[str, Any] = {"@time": None, "@microtime": None, "@duration": "0s", "@quantity": "0",
                                  "@intorstring": 0, "@raw": None, "@fieldsv1": None}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_GO_ZERO_TIME = -62135596800  # time.Time{}.Unix(): Go's zero time, which JSON writes as null


@functools.cache
def _schema() -> tuple[dict[str, str], dict[str, str], dict[str, tuple[dict[int, _Spec], tuple[_Field, ...]]]]:
    text = resources.files("storage.api").joinpath("k8s_proto_schema.json").read_text()
    doc = json.loads(text)
    messages: dict[str, tuple[dict[int, _Spec], tuple[_Field, ...]]] = {}
    for name, rows in doc["messages"].items():
        fields = tuple((n, j, t if isinstance(t, str) else tuple(t), f) for n, j, t, f in rows)
        specs: dict[int, _Spec] = {}
        for number, json_name, kind, flags in fields:
            if isinstance(kind, tuple):
                how, wire = _MAP, 2
            else:
                wire = _expected_wire(kind)
                if "r" in flags:
                    how = _PACKABLE if wire != 2 else _LIST
                else:
                    how = _MERGED if kind in doc["messages"] else _LAST
            specs[number] = (json_name, kind, flags, wire, how)
        messages[name] = (specs, fields)
    return doc["kinds"], doc["lists"], messages


def known(api_version: str, kind: str) -> bool:
    """Whether this server reads ``kind`` of ``api_version`` in protobuf."""
    return f"{api_version}/{kind}" in _schema()[0]


def root_message(api_version: str, kind: str) -> str | None:
    """The message ``kind`` of ``api_version`` is (``apps.v1.StatefulSet``); None for kinds Kubernetes does
    not build in (custom resources)."""
    return _schema()[0].get(f"{api_version}/{kind}")


def message_fields(message: str) -> dict[str, tuple[Any, str]]:
    """A message's fields by JSON name: (type, flags); empty for an unknown message."""
    found = _schema()[2].get(message)
    return {} if found is None else {j: (t, f) for _, j, t, f in found[1]}


# ---- the wire format ------------------------------------------------------------------------------

def _problem(path: str, what: str) -> BadRequest:
    where = f"{path}: " if path else ""
    return BadRequest(f"the protobuf body is not valid: {where}{what}")


def _varint(data: memoryview, i: int, path: str) -> tuple[int, int]:
    value = shift = 0
    end = len(data)
    while True:
        if i >= end:
            raise _problem(path, "unexpected end of data inside a varint (truncated body)")
        byte = data[i]
        i += 1
        if shift == 63 and byte > 1:
            raise _problem(path, "varint overflows 64 bits")
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _fields(data: memoryview, path: str) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value): an int for varints and fixed values, a memoryview for the rest."""
    i, end = 0, len(data)
    while i < end:
        key = data[i]
        if key < 0x80:  # one-byte keys and lengths are the common case: no call for them
            i += 1
        else:
            key, i = _varint(data, i, path)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _problem(path, "field number 0 is not allowed")
        if wire == 0:
            value, i = _varint(data, i, path)
        elif wire == 2:
            if i < end and data[i] < 0x80:
                length = data[i]
                i += 1
            else:
                length, i = _varint(data, i, path)
            if length > end - i:
                raise _problem(path, f"field {number} claims {length} bytes but only {end - i} remain (truncated body)")
            value, i = data[i:i + length], i + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if size > end - i:
                raise _problem(path, f"field {number} is truncated")
            value, i = int.from_bytes(data[i:i + size], "little"), i + size
        else:
            raise _problem(path, f"field {number} has wire type {wire}, which Kubernetes never writes")
        yield number, wire, value


def raw_fields(data: bytes) -> dict[int, list[Any]]:
    """A message's fields without a schema, as {number: [values]}: ints for varint and fixed values, bytes
    for length-delimited ones (nested messages stay bytes). For reading protobuf this server writes."""
    out: dict[int, list[Any]] = {}
    for number, _, value in _fields(memoryview(data), ""):
        out.setdefault(number, []).append(bytes(value) if isinstance(value, memoryview) else value)
    return out


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _scalar(kind: str, value: int, path: str) -> Any:
    if kind == "int64":
        return _signed(value, 64)
    if kind == "int32":
        return _signed(value, 32)  # Go keeps the low 32 bits (negative int32s travel as 10-byte varints)
    if kind == "bool":
        return value != 0
    if kind == "uint32" or kind == "fixed32":
        return value & 0xFFFFFFFF
    if kind in ("sint32", "sint64"):
        return (value >> 1) ^ -(value & 1)
    if kind == "sfixed64":
        return _signed(value, 64)
    if kind == "sfixed32":
        return _signed(value, 32)
    if kind == "double":
        return _finite(struct.unpack("<d", value.to_bytes(8, "little"))[0], path)
    if kind == "float":
        return _finite(struct.unpack("<f", value.to_bytes(4, "little"))[0], path)
    return value  # uint64, fixed64


def _finite(number: float, path: str) -> float:
    if number != number or number in (float("inf"), float("-inf")):
        raise _problem(path, "not a finite number (JSON cannot hold it)")
    return number


def _expected_wire(kind: str) -> int:
    if kind in _VARINT_TYPES:
        return 0
    if kind in _FIXED64_TYPES:
        return 1
    if kind in _FIXED32_TYPES:
        return 5
    return 2


def _text(chunk: memoryview, path: str) -> str:
    try:
        return str(chunk, "utf-8")
    except UnicodeDecodeError:
        raise _problem(path, "a string that is not valid UTF-8") from None


# ---- messages into JSON ---------------------------------------------------------------------------

class _Decoder:
    def __init__(self) -> None:
        _, self.lists, self.messages = _schema()
        self.budget = MAX_DECODED_BYTES

    def spend(self, cost: int) -> None:
        self.budget -= cost
        if self.budget < 0:
            raise RequestEntityTooLarge(
                f"Request entity too large: the protobuf body decodes to more than {MAX_DECODED_BYTES} bytes of JSON")

    def message(self, name: str, data: memoryview, path: str, depth: int) -> Obj:
        if depth > MAX_DEPTH:
            raise _problem(path, depth_message())
        self.spend(3)  # "{}," even when every field is left out: no body of empty messages decodes for free
        by_number = self.messages[name][0]
        single: dict[int, Any] = {}
        many: dict[int, Any] = {}  # repeated fields decoded as they come (the budget bounds them), maps too
        for number, wire, value in _fields(data, path):
            spec = by_number.get(number)
            if spec is None:
                continue  # a field this release does not know: Go's decoder skips it too
            json_name, kind, flags, expected, how = spec
            if wire != expected:
                if how == _PACKABLE and wire == 2:
                    items = many.setdefault(number, [])
                    for v in self.packed(kind, value, _join(path, json_name)):
                        self.spend(8)
                        items.append(_scalar(kind, v, path))
                    continue
                raise _problem(_join(path, json_name),
                               f"wire type {_WIRE_NAMES.get(wire, wire)}, expected {_WIRE_NAMES[expected]}")
            if how == _LAST:
                single[number] = value  # the last one wins (scalars, and the special types' own Unmarshal)
            elif how == _MERGED:
                single.setdefault(number, []).append(value)  # a message sent in parts merges: the parts join
            elif how == _MAP:
                self.map_entry(kind, value, many.setdefault(number, {}), _join(path, json_name), depth)
            elif kind == "string":  # lists of names (finalizers, verbs, ...): the hot case, inlined
                self.spend(len(value) + 3)
                try:
                    many.setdefault(number, []).append(str(value, "utf-8"))
                except UnicodeDecodeError:
                    raise _problem(_join(path, json_name), "a string that is not valid UTF-8") from None
            else:
                items = many.setdefault(number, [])
                where = f"{_join(path, json_name)}[{len(items)}]" if how == _LIST and kind not in _TEXT else \
                    _join(path, json_name)
                items.append(self.value(kind, value, where, depth))
        out: Obj = {}
        for number, json_name, kind, flags, absent in _plan(name):
            if many.get(number):
                self.spend(len(json_name) + 4)
                out[json_name] = many[number]
                continue
            if number not in single:
                if absent is None:
                    continue
                value, cost = absent
                self.spend(cost)
                if isinstance(value, bytes):
                    value = orjson.loads(value)  # a zero struct: a fresh copy each time
                if "i" in flags:
                    out.update(value)
                else:
                    out[json_name] = value
                continue
            raw = single[number]
            if isinstance(raw, list):
                raw = raw[0] if len(raw) == 1 else memoryview(b"".join(bytes(p) for p in raw))
            value = self.value(kind, raw, _join(path, json_name), depth)
            if "p" not in flags and _omitted(kind, flags, value, self.lists):
                continue
            if "i" in flags:
                out.update(value)  # an embedded struct: encoding/json promotes its fields
                continue
            self.spend(len(json_name) + 4)
            out[json_name] = value
        return out

    def zero(self, kind: str) -> Any:
        """The JSON of a Go zero value: what an absent field of a struct (never nil) writes."""
        if kind in self.messages:
            return self.zero_message(kind)
        return _zero_scalar(kind, self.lists)

    def zero_message(self, kind: str) -> Obj:
        encoded, cost = _zero_message(kind)
        self.spend(cost)
        return orjson.loads(encoded)  # type: ignore[no-any-return]

    def packed(self, kind: str, chunk: memoryview, path: str) -> list[int]:
        out: list[int] = []
        if kind in _VARINT_TYPES:
            i = 0
            while i < len(chunk):
                value, i = _varint(chunk, i, path)
                out.append(value)
        else:
            size = 8 if kind in _FIXED64_TYPES else 4
            if len(chunk) % size:
                raise _problem(path, f"a packed list of {size}-byte values has {len(chunk)} bytes")
            out = [int.from_bytes(chunk[i:i + size], "little") for i in range(0, len(chunk), size)]
        return out

    def value(self, kind: str, raw: Any, path: str, depth: int) -> Any:
        if isinstance(raw, int):
            self.spend(8)
            return _scalar(kind, raw, path)
        if kind == "string":
            self.spend(len(raw) + 3)
            return _text(raw, path)
        if kind == "bytes":
            self.spend(len(raw) * 4 // 3 + 4)
            return base64.b64encode(raw).decode("ascii")
        if kind.startswith("@"):
            return self.special(kind, raw, path)
        if not raw and kind in self.messages:
            return self.zero_message(kind)  # kubectl sends every empty struct ("resources": {}) so
        if kind in self.lists:
            element = self.lists[kind]
            items = [self.value(element, v, f"{path}[{i}]", depth)
                     for i, v in enumerate(self.list_items(element, raw, path))]
            return items or None
        return self.message(kind, raw, path, depth + 1)

    def list_items(self, element: str, data: memoryview, path: str) -> list[Any]:
        items: list[Any] = []
        for number, wire, value in _fields(data, path):
            if number != 1:
                continue
            if wire != _expected_wire(element):
                raise _problem(path, f"wire type {_WIRE_NAMES.get(wire, wire)} in a list of {element}")
            items.append(value)
        return items

    def map_entry(self, kind: tuple[str, str, str], entry: memoryview, out: Obj, path: str, depth: int) -> None:
        _, key_kind, value_kind = kind
        key: Any = _ZERO_SCALARS.get(key_kind, 0)
        value: Any = None
        for number, wire, item in _fields(entry, path):
            if number == 1:
                if wire != _expected_wire(key_kind):
                    raise _problem(path, f"a map key with wire type {_WIRE_NAMES.get(wire, wire)}")
                key = _text(item, path) if key_kind == "string" else _scalar(key_kind, item, path)
            elif number == 2:
                if wire != _expected_wire(value_kind):
                    raise _problem(path, f"a map value with wire type {_WIRE_NAMES.get(wire, wire)}")
                value = item
        key = str(key)
        here = f"{path}[{key}]"
        self.spend(len(key) + 4)
        if value is None:
            # A missing value is the zero value; a bytes value is then empty, not nil.
            out[key] = "" if value_kind == "bytes" else self.zero(value_kind)
        else:
            out[key] = self.value(value_kind, value, here, depth)

    def special(self, kind: str, data: memoryview, path: str) -> Any:
        parts: dict[int, Any] = {}
        for number, wire, value in _fields(data, path):
            parts[number] = value
        if kind in ("@time", "@microtime"):
            if not data:
                return None  # Go writes a zero time as an empty message
            seconds = _signed(_int(parts.get(1, 0), path), 64)
            nanos = _signed(_int(parts.get(2, 0), path), 32) if kind == "@microtime" else 0
            return _timestamp(seconds, nanos, kind == "@microtime", path)
        if kind == "@duration":
            return go_duration(_signed(_int(parts.get(1, 0), path), 64))
        if kind == "@quantity":
            text = parts.get(1)
            # Go parses the text (and writes it back canonical): the JSON path's validation judges it instead.
            return _text(text, path) if isinstance(text, memoryview) else "0"
        if kind == "@intorstring":
            which = _signed(_int(parts.get(1, 0), path), 64)
            if which == 0:
                return _signed(_int(parts.get(2, 0), path), 32)
            if which == 1:
                text = parts.get(3)
                return _text(text, path) if isinstance(text, memoryview) else ""
            raise _problem(path, f"IntOrString type {which} is neither 0 (int) nor 1 (string)")
        # @raw, @fieldsv1: JSON carried as bytes.
        raw = parts.get(1)
        if raw is None or (kind == "@fieldsv1" and not raw):
            return None
        if not isinstance(raw, memoryview):
            raise _problem(path, "raw bytes expected")
        return _embedded_json(bytes(raw), path)


def _int(value: Any, path: str) -> int:
    if not isinstance(value, int):
        raise _problem(path, "a number was expected")
    return value


def _zero_scalar(kind: str, lists: dict[str, str]) -> Any:
    if kind in _ZERO_SPECIALS:
        return _ZERO_SPECIALS[kind]
    if kind in _ZERO_SCALARS:
        return _ZERO_SCALARS[kind]
    if kind in lists:
        return None
    return 0


def _omitted(kind: str, flags: str, value: Any, lists: dict[str, str]) -> bool:
    """encoding/json's omitempty (empty scalars and slices; structs never) and omitzero (the zero value)."""
    if "o" in flags and (kind in _ZERO_SCALARS or kind in _NUMERIC or kind in lists):
        return value is None or (not isinstance(value, (list, dict)) and value in ("", 0))
    if "z" in flags:
        if kind in _schema()[2]:
            return bool(orjson.dumps(value) == _zero_message(kind)[0])
        return bool(value == _zero_scalar(kind, lists))
    return False


@functools.cache
def _zero_message(kind: str) -> tuple[bytes, int]:
    """A message's zero value as JSON, and what it costs in the decoding budget (computed once)."""
    decoder = _Decoder()
    value = decoder.message(kind, memoryview(b""), "", 0)
    return orjson.dumps(value), MAX_DECODED_BYTES - decoder.budget


_Absent = tuple[Any, int] | None


@functools.cache
def _plan(name: str) -> tuple[tuple[int, str, Any, str, _Absent], ...]:
    """A message's fields, each with what it writes when absent: None (nothing), or (value, cost), a
    struct's value as JSON text. Most fields of most messages are absent: this keeps them cheap."""
    _, lists, messages = _schema()
    out = []
    for number, json_name, kind, flags in messages[name][1]:
        absent: _Absent
        if "r" in flags or isinstance(kind, tuple) or "p" in flags:
            absent = None if "o" in flags else (None, len(json_name) + 7)  # nil slice, map, pointer: null
        elif kind in messages:
            encoded, cost = _zero_message(kind)
            absent = None if "z" in flags else (encoded, cost + len(json_name) + 4)  # structs: never omitempty
        else:
            value = _zero_scalar(kind, lists)
            absent = None if _omitted(kind, flags, value, lists) else (value, len(json_name) + 4)
        out.append((number, json_name, kind, flags, absent))
    return tuple(out)


def _join(path: str, name: str) -> str:
    if not name:
        return path
    return f"{path}.{name}" if path else name


def _timestamp(seconds: int, nanos: int, micro: bool, path: str) -> str | None:
    if micro:
        nanos = int(nanos / 1000) * 1000  # Go truncates toward zero to microseconds
    total = seconds * 1_000_000_000 + nanos
    if total == _GO_ZERO_TIME * 1_000_000_000:
        return None
    try:
        moment = _EPOCH + timedelta(microseconds=total // 1000)
    except OverflowError:
        raise _problem(path, f"timestamp {seconds} is out of range") from None
    if micro:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _embedded_json(raw: bytes, path: str) -> Any:
    if json_depth_exceeds(raw):
        raise _problem(path, depth_message())
    try:
        return orjson.loads(raw)
    except ValueError:
        raise _problem(path, "the embedded object is not JSON") from None


# ---- the envelope -----------------------------------------------------------------------------------

class Envelope:
    """``runtime.Unknown``: the object's type and its encoded message."""

    def __init__(self, api_version: str, kind: str, raw: bytes, content_encoding: str, content_type: str) -> None:
        self.api_version, self.kind, self.raw = api_version, kind, raw
        self.content_encoding, self.content_type = content_encoding, content_type


def read_envelope(body: bytes) -> Envelope:
    if not body:
        raise BadRequest("the protobuf body is empty")
    if not body.startswith(MAGIC):
        raise BadRequest(f"the protobuf body does not start with Kubernetes' prefix {list(MAGIC)}")
    if len(body) == len(MAGIC):
        raise BadRequest("the protobuf body is empty after its prefix")
    found: dict[int, Any] = {}
    type_meta: dict[int, Any] = {}
    for number, wire, value in _fields(memoryview(body)[len(MAGIC):], "envelope"):
        if number in (1, 2, 3, 4):
            if wire != 2:
                raise _problem("envelope", f"field {number} has wire type {_WIRE_NAMES.get(wire, wire)}")
            if number == 1:
                for n, w, v in _fields(value, "envelope.typeMeta"):
                    if n in (1, 2):
                        if w != 2:
                            raise _problem("envelope.typeMeta", f"field {n} is not a string")
                        type_meta[n] = _text(v, "envelope.typeMeta")
            else:
                found[number] = value
    text = {n: _text(found[n], "envelope") for n in (3, 4) if n in found}
    return Envelope(type_meta.get(1, ""), type_meta.get(2, ""), bytes(found.get(2, b"")),
                    text.get(3, ""), text.get(4, ""))


def decode_message(name: str, data: bytes, path: str = "") -> Obj:
    """One message of the schema (``"core.v1.ConfigMap"``) as JSON, without the envelope."""
    return _Decoder().message(name, memoryview(data), path, 0)


def decode_object(body: bytes, api_version: str = "", kind: str = "") -> Obj:
    """The object in a protobuf body, as the dict its JSON form is.

    ``api_version`` and ``kind`` fill in what the envelope leaves out, as
    Kubernetes fills them from the endpoint.
    """
    envelope = read_envelope(body)
    if envelope.content_encoding:
        raise UnsupportedMediaType(f"the protobuf body's content encoding {envelope.content_encoding!r} is not "
                                   "supported")
    api_version = envelope.api_version or api_version
    kind = envelope.kind or kind
    if not kind:
        raise BadRequest("Object 'Kind' is missing in the protobuf body")
    if not api_version:
        raise BadRequest("Object 'apiVersion' is missing in the protobuf body")
    kinds = _schema()[0]
    message = kinds.get(f"{api_version}/{kind}")
    if message is None:
        raise UnsupportedMediaType(
            f"the body of the request was in an unknown format - {kind} of {api_version} is read only as JSON; "
            "accepted media types include: application/json, application/yaml")
    obj: Obj = {"kind": kind, "apiVersion": api_version}
    obj.update(_Decoder().message(message, memoryview(envelope.raw), "", 0))
    return obj
