"""The PATCH dialects Kubernetes clients send, applied to a plain JSON object."""
from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import orjson
import yaml

from storage.errors import BadRequest

MERGE = "application/merge-patch+json"
JSON = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
PATCH_TYPES = (MERGE, JSON, STRATEGIC, APPLY)


def parse_patch(content_type: str, body: bytes) -> Any:
    try:
        if content_type == APPLY:
            return yaml.safe_load(body.decode("utf-8"))
        return orjson.loads(body)
    except (ValueError, yaml.YAMLError) as e:
        raise BadRequest(f"error decoding patch body: {e}") from None


def apply_patch(content_type: str, target: dict[str, Any], patch: Any) -> dict[str, Any]:
    """A new object; ``target`` is left untouched."""
    if content_type == JSON:
        if not isinstance(patch, list):
            raise BadRequest("json patch: the body must be a JSON array of operations")
        try:
            return jsonpatch.apply_patch(target, patch, in_place=False)
        except jsonpatch.JsonPatchTestFailed:  # its message shows the stored value, maybe a Secret's
            raise BadRequest("json patch: a test operation failed: the value at its path differs") from None
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
            raise BadRequest(f"json patch: {e}") from None
    if not isinstance(patch, dict):
        raise BadRequest(f"{content_type}: the body must be a JSON object")
    if content_type == MERGE:
        return merge_patch(target, patch)
    if content_type in (STRATEGIC, APPLY):
        return strategic_merge_patch(target, patch)
    raise BadRequest(f"unsupported patch type {content_type!r}; use one of {', '.join(PATCH_TYPES)}")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Merge patch, except lists of objects that all carry ``name`` merge by name.

    Enough of Kubernetes' strategic merge for kubectl-style patches: list
    elements with ``$patch: delete`` are removed, a map with ``$patch: replace``
    replaces, and other ``$`` directives (``$setElementOrder/...``,
    ``$retainKeys``) are ignored.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    if directive == "delete":
        return None
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            out.pop(key, None)
        elif isinstance(value, list) and _named_list(value) and _named_list(out.get(key)):
            out[key] = _merge_named(out.get(key) or [], value)
        elif isinstance(value, list):
            out[key] = [e for e in (_strip_directives(v) for v in value) if e is not None]
        else:
            merged = strategic_merge_patch(out.get(key), value)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
    return out


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(e, dict) and "name" in e for e in value)


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("$patch") == "delete":
            return None
        return {k: copy.deepcopy(v) for k, v in value.items() if not k.startswith("$")}
    return copy.deepcopy(value)


def _merge_named(current: list[dict[str, Any]], patch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = [dict(e) for e in current]
    index = {e["name"]: i for i, e in enumerate(out)}
    removed: set[str] = set()
    for element in patch:
        name = element["name"]
        if element.get("$patch") == "delete":
            removed.add(name)
        elif name in index:
            out[index[name]] = strategic_merge_patch(out[index[name]], element)
        else:
            index[name] = len(out)
            out.append(_strip_directives(element))
    return [e for e in out if e.get("name") not in removed]
