"""Fields an object carries that its kind does not declare (``fieldValidation``).

Kubernetes decodes a request into typed structs, so a field the schema does
not know is either rejected (Strict) or dropped (Warn, Ignore); it is never
stored. This module finds such fields by walking the object against the
pydantic models, and removes them.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from storage.api.models import model_at
from storage.api.schema import FieldType, model_fields

__all__ = ["prune_unknown", "unknown_fields"]


def unknown_fields(obj: dict[str, Any]) -> list[str]:
    """Paths (``spec.containers[0].foo``) of every undeclared field of ``obj``, by its ``kind`` (and its
    ``apiVersion``, for a kind also served at an older version)."""
    model = _model(obj)
    if model is None:
        return []
    out: list[str] = []
    _walk_model(obj, model, "", out, prune=False)
    return out


def prune_unknown(obj: dict[str, Any]) -> list[str]:
    """Remove every undeclared field from ``obj`` in place; returns their paths."""
    model = _model(obj)
    if model is None:
        return []
    out: list[str] = []
    _walk_model(obj, model, "", out, prune=True)
    return out


def _model(obj: dict[str, Any]) -> type[BaseModel] | None:
    return model_at(str(obj.get("apiVersion")), str(obj.get("kind")))


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _walk_model(value: Any, model: type[BaseModel], path: str, out: list[str], prune: bool) -> None:
    if not isinstance(value, dict):
        return  # a shape error: validation reports it
    fields = model_fields(model)
    for key in list(value):
        declared = fields.get(key)
        if declared is None:
            out.append(_join(path, key))
            if prune:
                del value[key]
            continue
        _walk(value[key], declared[1], _join(path, key), out, prune)


def _walk(value: Any, ft: FieldType, path: str, out: list[str], prune: bool) -> None:
    if ft.kind == "object" and ft.model is not None:
        _walk_model(value, ft.model, path, out, prune)
    elif ft.kind == "array" and ft.item is not None and isinstance(value, list):
        if ft.item.kind in ("object", "array", "map"):
            for i, element in enumerate(value):
                _walk(element, ft.item, f"{path}[{i}]", out, prune)
    elif ft.kind == "map" and ft.item is not None and isinstance(value, dict):
        if ft.item.kind in ("object", "array", "map"):
            for key, element in value.items():
                _walk(element, ft.item, f"{path}[{key}]", out, prune)
