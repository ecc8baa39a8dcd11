"""Turning configMap / secret / downwardAPI sources plus resolved data into files.

The caller (the agent) reads ConfigMaps and Secrets through the API and puts
their contents in ``VolumeContext.data`` under ``"configMap:<name>"`` /
``"secret:<name>"`` (None or absent: the object does not exist), and the
resolved downward API values under ``"downwardAPI"`` as ``{path: text}``.
"""
from __future__ import annotations

from typing import Any

from storage.errors import FieldError, Invalid, TemporaryError
from volume_plugins.atomic_writer import FileProjection, validate_path

DEFAULT_MODE = 0o644


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _mode(value: Any, field: str) -> int:
    if value is None:
        return DEFAULT_MODE
    mode = int(value)
    if not 0 <= mode <= 0o777:
        raise Invalid([FieldError(field, "Invalid value", "must be a number between 0 and 0777 (octal), both inclusive", value, True)])
    return mode


def keyed_files(
    kind: str, spec: dict[str, Any], data: dict[str, Any], field: str, default_mode: Any = None
) -> dict[str, FileProjection]:
    """Files for a configMap or secret source (``kind`` = "configMap" | "secret")."""
    name = spec.get("name") if kind == "configMap" else spec.get("secretName", spec.get("name"))
    optional = bool(spec.get("optional", False))
    mode = _mode(spec.get("defaultMode", default_mode), f"{field}.defaultMode")
    contents = data.get(f"{kind}:{name}")
    shown = "configmap" if kind == "configMap" else "secret"
    if contents is None:
        if optional:
            return {}
        raise TemporaryError(f'{shown} "{name}" not found', delay=5.0)
    items = spec.get("items") or []
    files: dict[str, FileProjection] = {}
    if not items:
        for key, value in contents.items():
            files[str(validate_path(key, f"{field}.name"))] = FileProjection(_bytes(value), mode)
        return files
    for i, item in enumerate(items):
        key = item.get("key")
        path = str(validate_path(item.get("path", ""), f"{field}.items[{i}].path"))
        if key not in contents:
            if optional:
                continue
            raise Invalid([FieldError(f"{field}.items[{i}].key", "Invalid value", f"{shown} references non-existent config key", key, True)])
        item_mode = _mode(item["mode"], f"{field}.items[{i}].mode") if item.get("mode") is not None else mode
        files[path] = FileProjection(_bytes(contents[key]), item_mode)
    return files


def downward_files(spec: dict[str, Any], data: dict[str, Any], field: str, default_mode: Any = None) -> dict[str, FileProjection]:
    mode = _mode(spec.get("defaultMode", default_mode), f"{field}.defaultMode")
    values = data.get("downwardAPI") or {}
    files: dict[str, FileProjection] = {}
    for i, item in enumerate(spec.get("items") or []):
        path = str(validate_path(item.get("path", ""), f"{field}.items[{i}].path"))
        if path not in values:
            raise TemporaryError(f"downward API value for {path} not resolved yet", delay=2.0)
        item_mode = _mode(item["mode"], f"{field}.items[{i}].mode") if item.get("mode") is not None else mode
        files[path] = FileProjection(_bytes(values[path]), item_mode)
    return files
