"""The PATCH dialects Kubernetes clients send, applied to a plain JSON object."""
from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer
import orjson
import yaml

from storage.api.limits import (
    MAX_REQUEST_BYTES, LimitExceeded, depth_message, encoded_size, json_depth_exceeds, load_yaml,
)
from storage.errors import BadRequest, RequestEntityTooLarge

MERGE = "application/merge-patch+json"
JSON = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
PATCH_TYPES = (MERGE, JSON, STRATEGIC, APPLY)
# Kubernetes' bounds on one JSON patch (CVE-2019-11253 hardening).
MAX_JSON_PATCH_OPERATIONS = 10000
MAX_JSON_PATCH_COPY_BYTES = 3 * MAX_REQUEST_BYTES


def parse_patch(content_type: str, body: bytes) -> Any:
    try:
        if content_type == APPLY:
            # Bounded: an apply body is YAML, and YAML aliases can expand a small body into a huge object.
            return load_yaml(body.decode("utf-8"))
        if json_depth_exceeds(body):
            raise LimitExceeded(depth_message())
        return orjson.loads(body)
    except LimitExceeded as e:
        raise BadRequest(f"error decoding patch body: {e}") from None
    except (ValueError, yaml.YAMLError) as e:
        raise BadRequest(f"error decoding patch body: {e}") from None


def apply_patch(content_type: str, target: dict[str, Any], patch: Any) -> dict[str, Any]:
    """A new object; ``target`` is left untouched."""
    if content_type == JSON:
        if not isinstance(patch, list):
            raise BadRequest("json patch: the body must be a JSON array of operations")
        return _apply_json_patch(target, patch)
    if not isinstance(patch, dict):
        raise BadRequest(f"{content_type}: the body must be a JSON object")
    if content_type == MERGE:
        return merge_patch(target, patch)
    if content_type in (STRATEGIC, APPLY):
        return strategic_merge_patch(target, patch)
    raise BadRequest(f"unsupported patch type {content_type!r}; use one of {', '.join(PATCH_TYPES)}")


def _apply_json_patch(target: dict[str, Any], operations: list[Any]) -> Any:
    """RFC 6902, with Kubernetes' guards against amplification.

    A ``copy`` duplicates a subtree, so a short list of copies can double an
    object again and again: as Kubernetes does, the operations are counted and
    the bytes copied are bounded, before any copy is made.
    """
    if len(operations) > MAX_JSON_PATCH_OPERATIONS:
        raise RequestEntityTooLarge(
            f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {len(operations)}"
        )
    doc: Any = copy.deepcopy(target)
    copied = 0
    try:
        for operation in operations:
            if isinstance(operation, dict) and operation.get("op") == "copy" and isinstance(operation.get("from"), str):
                copied += encoded_size(jsonpointer.resolve_pointer(doc, operation["from"]))
                if copied > MAX_JSON_PATCH_COPY_BYTES:
                    raise RequestEntityTooLarge(
                        f"json patch: the copy operations copy more than {MAX_JSON_PATCH_COPY_BYTES} bytes (the limit)"
                    )
            doc = jsonpatch.apply_patch(doc, [operation], in_place=True)
    except jsonpatch.JsonPatchTestFailed:  # its message shows the stored value, maybe a Secret's
        raise BadRequest("json patch: a test operation failed: the value at its path differs") from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
        raise BadRequest(f"json patch: {e}") from None
    except (TypeError, AttributeError, KeyError) as e:  # malformed operations the library does not check
        raise BadRequest(f"json patch: invalid operation: {e!r}") from None
    return doc


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
