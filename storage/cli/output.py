"""Printing objects: tables, YAML, JSON and ``kind/name``."""
from __future__ import annotations

import json
from typing import Any

import yaml

from storage.api.registry import ResourceInfo, by_kind

OUTPUT_FORMATS = ("wide", "yaml", "json", "name")


def type_name(info: ResourceInfo) -> str:
    """kubectl's resource name in messages: ``persistentvolumeclaim``, ``storageclass.storage.k8s.io``."""
    return f"{info.kind.lower()}.{info.group}" if info.group else info.kind.lower()


def object_ref(obj: dict[str, Any], info: ResourceInfo | None = None) -> str:
    info = info or by_kind(str(obj.get("kind", "")))
    name = (obj.get("metadata") or {}).get("name", "")
    return f"{type_name(info)}/{name}" if info else f"{str(obj.get('kind', '')).lower()}/{name}"


def as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=True)


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=4, ensure_ascii=False) + "\n"
