"""What the API models declare, read once: each model's wire fields and their types.

The OpenAPI documents and the unknown-field check (``fieldValidation``) both
read the models through this module, so the two never disagree about what a
field is.
"""
from __future__ import annotations

import functools
import types
import typing
from dataclasses import dataclass
from typing import Any, Union

from pydantic import BaseModel

from storage.api.quantity import Quantity

__all__ = ["FieldType", "field_type", "model_fields"]


@dataclass(frozen=True)
class FieldType:
    """The JSON shape of one field.

    ``kind`` is one of: "string", "integer", "number", "boolean", "object" (a model:
    ``model`` set), "map" (string keys, values ``item``), "array" (of ``item``),
    "quantity", "int-or-string", "any".
    """

    kind: str
    model: type[BaseModel] | None = None
    item: "FieldType | None" = None


_ANY = FieldType("any")
_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _strip_optional(t: Any) -> Any:
    origin = typing.get_origin(t)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if len(args) == 1:
            return args[0]
        return Union[tuple(args)]
    return t


@functools.lru_cache(maxsize=None)
def field_type(annotation: Any) -> FieldType:
    t = _strip_optional(annotation)
    if t is Quantity or t == Quantity:
        return FieldType("quantity")
    origin = typing.get_origin(t)
    if origin in (Union, types.UnionType):
        args = set(typing.get_args(t))
        if args == {int, str}:
            return FieldType("int-or-string")
        return _ANY
    if origin is typing.Annotated:
        return field_type(typing.get_args(t)[0])
    if origin is list:
        (item,) = typing.get_args(t) or (Any,)
        return FieldType("array", item=field_type(item))
    if origin is dict:
        args = typing.get_args(t)
        return FieldType("map", item=field_type(args[1] if len(args) == 2 else Any))
    if t is dict:
        return FieldType("map", item=_ANY)
    if t is list:
        return FieldType("array", item=_ANY)
    if isinstance(t, type) and issubclass(t, BaseModel):
        return FieldType("object", model=t)
    if t in _SCALARS:
        return FieldType(_SCALARS[t])
    return _ANY


@functools.lru_cache(maxsize=None)
def model_fields(model: type[BaseModel]) -> dict[str, tuple[str, FieldType]]:
    """Wire name -> (Python name, type), in declaration order."""
    out: dict[str, tuple[str, FieldType]] = {}
    for name, info in model.model_fields.items():
        out[info.alias or name] = (name, field_type(info.annotation))
    return out
