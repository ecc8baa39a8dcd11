"""Kubernetes' wording for a body its decoder refuses (K1): a field of the wrong JSON type, a malformed quantity.

Kubernetes decodes a request body into Go structs before any validation runs, so a type mismatch is a
400 BadRequest naming the Go struct field (``json: cannot unmarshal string into Go struct field
StatefulSetSpec.spec.replicas of type int32``), not a 422 field error. The struct and Go type names
come from the protobuf schema of the built-in kinds; custom resources are validated against their
schema instead, and keep 422.
"""
from __future__ import annotations

import json
from typing import Any

from storage.api.k8s_protobuf import message_fields, root_message
from storage.errors import BadRequest

__all__ = ["UndecodableObject", "decode_error"]

_SCALARS = {"int32": "int32", "int64": "int64", "string": "string", "bool": "bool", "double": "float64",
            "bytes": "[]uint8"}
_INTEGERS = ("int32", "int64")
# The pydantic error types with no Go struct behind them (a field Kubernetes does not declare).
_FALLBACK_TYPES = {"int": "int64", "string": "string", "bool": "bool", "float": "float64", "list": "[]interface {}",
                   "dict": "map[string]interface {}", "model": "struct"}


class UndecodableObject(BadRequest):
    """The body cannot be decoded into the kind's Go types; ``detail`` is the decoder's own message."""

    def __init__(self, kind: str, api_version: str, detail: str) -> None:
        version = api_version.rsplit("/", 1)[-1]
        super().__init__(f'{kind} in version "{version}" cannot be handled as a {kind}: {detail}')
        self.detail = detail


def _go_type(proto_type: Any, flags: str = "") -> str:
    if "r" in flags:
        return "[]" + _go_type(proto_type)
    if isinstance(proto_type, (list, tuple)):  # ("map", key type, value type)
        return f"map[{_go_type(proto_type[1])}]{_go_type(proto_type[2])}"
    if proto_type in _SCALARS:
        return _SCALARS[proto_type]
    special = {"@time": "v1.Time", "@microtime": "v1.MicroTime", "@quantity": "resource.Quantity",
               "@intorstring": "intstr.IntOrString", "@raw": "runtime.RawExtension", "@fieldsv1": "v1.FieldsV1"}
    if proto_type in special:
        return special[proto_type]
    return "v1." + str(proto_type).rsplit(".", 1)[-1]  # every built-in kind's Go package is named v1


def _json_kind(value: Any, go_type: str) -> str:
    """What Go's decoder calls the JSON value it met (``UnmarshalTypeError.Value``)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        # A number that does not fit an integer field is named with its text.
        return f"number {json.dumps(value)}" if go_type in _INTEGERS and isinstance(value, float) else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _fallback_type(error_type: str) -> str:
    return next((go for prefix, go in _FALLBACK_TYPES.items() if error_type.startswith(prefix)), "interface {}")


def _field(message: str, name: str) -> tuple[Any, str] | None:
    """A field of ``message`` by JSON name, looking into embedded structs (whose fields Go promotes)."""
    fields = message_fields(message)
    if name in fields:
        return fields[name]
    inline = fields.get("")
    return _field(inline[0], name) if inline is not None and "i" in inline[1] else None


def decode_error(api_version: str, kind: str, loc: list[str | int], error_type: str, value: Any) -> str:
    """The decoder's message for a value of the wrong type at ``loc`` (``error_type``: pydantic's)."""
    message = root_message(api_version, kind)
    struct, names = kind, list[str]()
    current: Any = message  # a message name, a scalar type, ("list", element), ("map", value) or None: unknown
    for part in loc:
        if isinstance(current, tuple) and current[0] in ("list", "map"):
            current = current[1]  # an index or a map key: Go names the field, not the element
            continue
        found = _field(current, part) if isinstance(current, str) and isinstance(part, str) else None
        if found is None:
            current = None  # a field Kubernetes does not declare: its type is the model's
            if isinstance(part, str):
                names.append(part)
            continue
        struct, (proto_type, flags) = current.rsplit(".", 1)[-1], found
        names.append(part)
        if "r" in flags:
            current = ("list", proto_type)
        elif isinstance(proto_type, list):
            current = ("map", proto_type[2])
        else:
            current = proto_type
    if current is None:
        go_type = _fallback_type(error_type)
    elif isinstance(current, tuple):
        go_type = _go_type(current[1], "r") if current[0] == "list" else f"map[string]{_go_type(current[1])}"
    else:
        go_type = _go_type(current)
    if current == "@intorstring":
        # IntOrString decodes a non-string itself, as an int32, and its error names no struct field.
        return f"json: cannot unmarshal {_json_kind(value, 'int32')} into Go value of type int32"
    if current in ("@time", "@microtime"):
        return f"json: cannot unmarshal {_json_kind(value, 'string')} into Go value of type string"
    return f"json: cannot unmarshal {_json_kind(value, go_type)} into Go struct field {struct}.{'.'.join(names)} of type {go_type}"
