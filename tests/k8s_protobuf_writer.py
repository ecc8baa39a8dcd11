"""Writes Kubernetes' protobuf form of a JSON object, for tests of the server's reader.

The server only reads protobuf; tests need bodies beyond the ones kubectl
sends (every served kind, every special type, hostile mutations). This
writes them from the same generated schema, leniently: a value of the wrong
type for its field is left out (``strict=False``), so fuzzed manifests
still turn into bodies.
"""
from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from typing import Any

from storage.api.k8s_protobuf import MAGIC, _schema
from storage.api.openapi_proto import encode_varint as varint

_VARINT = {"int32", "int64", "uint32", "uint64", "bool"}


def field(number: int, payload: bytes | int) -> bytes:
    """One field: an int as a varint, bytes as length-delimited."""
    if isinstance(payload, int):
        return varint(number << 3) + varint(payload)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = field(1, api_version.encode()) + field(2, kind.encode())
    return MAGIC + field(1, type_meta) + field(2, raw) + field(3, b"") + field(4, b"")


class Writer:
    def __init__(self, strict: bool = True) -> None:
        self.strict = strict
        _, self.lists, self.messages = _schema()

    def object(self, obj: dict[str, Any]) -> bytes:
        kinds = _schema()[0]
        message = kinds[f"{obj['apiVersion']}/{obj['kind']}"]
        return envelope(obj["apiVersion"], obj["kind"], self.message(message, obj))

    def message(self, name: str, obj: Any) -> bytes:
        if not isinstance(obj, dict):
            raise TypeError(f"{name} needs an object")
        out = bytearray()
        for number, json_name, kind, flags in self.messages[name][1]:
            try:
                if "i" in flags:
                    out += field(number, self.message(kind, obj))
                    continue
                if obj.get(json_name) is None:
                    continue
                value = obj[json_name]
                if isinstance(kind, tuple):
                    for key, item in value.items():
                        out += field(number, field(1, str(key).encode()) + self.value(2, kind[2], item))
                elif "r" in flags:
                    if not isinstance(value, list):
                        raise TypeError(f"{json_name} needs a list")
                    for item in value:
                        out += self.value(number, kind, item)
                else:
                    out += self.value(number, kind, value)
            except (TypeError, ValueError, AttributeError, OverflowError):
                if self.strict:
                    raise
        return bytes(out)

    def value(self, number: int, kind: str, value: Any) -> bytes:
        if kind in _VARINT:
            if not isinstance(value, (int, bool)):
                raise TypeError(f"{kind} needs a number")
            return field(number, int(value))
        if kind == "string":
            if not isinstance(value, str):
                raise TypeError("string needed")
            return field(number, value.encode("utf-8", "surrogatepass"))
        if kind == "bytes":
            return field(number, base64.b64decode(value, validate=True))
        if kind in self.lists:
            return field(number, b"".join(self.value(1, self.lists[kind], v) for v in value))
        if kind.startswith("@"):
            return field(number, self.special(kind, value))
        return field(number, self.message(kind, value))

    def special(self, kind: str, value: Any) -> bytes:
        if kind in ("@time", "@microtime"):
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(timezone.utc)
            seconds = int(moment.timestamp() // 1)
            return field(1, seconds) + field(2, moment.microsecond * 1000)
        if kind == "@quantity":
            return field(1, str(value).encode())
        if kind == "@intorstring":
            if isinstance(value, int) and not isinstance(value, bool):
                return field(1, 0) + field(2, value)
            if isinstance(value, str):
                return field(1, 1) + field(3, value.encode())
            raise TypeError("int or string needed")
        if kind == "@duration":
            raise TypeError("durations are not written")
        return field(1, json.dumps(value).encode())  # @raw, @fieldsv1
