"""The PATCH dialects Kubernetes clients send, applied to a plain JSON object."""
from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer
import orjson
import yaml
from pydantic import BaseModel

from storage.api.limits import (
    MAX_REQUEST_BYTES, LimitExceeded, depth_message, encoded_size, json_depth_exceeds,
)
from storage.api.models import MODELS
from storage.api.patchmeta import patch_meta
from storage.api.schema import FieldType, model_fields
from storage.apiserver.yamlbody import decode_yaml_body
from storage.errors import BadRequest, RequestEntityTooLarge, StowageError

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
            # Read as every YAML body is: Kubernetes' implicit types, bounded (aliases can expand a small
            # body into a huge object).
            return decode_yaml_body(body)
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
        return strategic_merge_patch(target, patch, MODELS.get(str(target.get("kind"))))
    raise BadRequest(f"unsupported patch type {content_type!r}; use one of {', '.join(PATCH_TYPES)}")


class JsonPatchNotApplicable(StowageError):
    """An operation of a well-formed JSON patch does not apply to the object: Kubernetes' 422 (reason
    Invalid; it sends a generic message, this one names the operation and its path)."""

    code, reason = 422, "Invalid"


_OPERATIONS = ("add", "remove", "replace", "move", "copy", "test")
# JSON's names for the kinds of value a patch operation can wrongly be, as Go's decoder calls them.
_JSON_KINDS = {str: "string", bool: "bool", int: "number", float: "number", list: "array", type(None): "null"}


def _apply_json_patch(target: dict[str, Any], operations: list[Any]) -> Any:
    """RFC 6902, with Kubernetes' guards against amplification.

    A ``copy`` duplicates a subtree, so a short list of copies can double an
    object again and again: as Kubernetes does, the operations are counted and
    the bytes copied are bounded, before any copy is made.

    A failing operation is described by its kind and paths only: the library's
    own messages show the document (a Secret's data, say).
    """
    if len(operations) > MAX_JSON_PATCH_OPERATIONS:
        raise RequestEntityTooLarge(
            f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {len(operations)}"
        )
    for operation in operations:  # Kubernetes decodes the whole patch before applying any of it: a 400
        if not isinstance(operation, dict):
            kind = _JSON_KINDS.get(type(operation), "value")
            raise BadRequest(f"json: cannot unmarshal {kind} into Go value of type jsonpatch.Operation")
    doc: Any = copy.deepcopy(target)
    copied = 0
    for operation in operations:
        try:
            if operation.get("op") == "copy" and isinstance(operation.get("from"), str):
                copied += encoded_size(jsonpointer.resolve_pointer(doc, operation["from"]))
                if copied > MAX_JSON_PATCH_COPY_BYTES:
                    raise RequestEntityTooLarge(
                        f"json patch: the copy operations copy more than {MAX_JSON_PATCH_COPY_BYTES} bytes (the limit)"
                    )
            doc = jsonpatch.apply_patch(doc, [operation], in_place=True)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, AttributeError,
                KeyError, IndexError, ValueError) as e:  # the last: malformed operations the library does not check
            raise JsonPatchNotApplicable(_json_patch_failure(doc, operation, e)) from None
    return doc


def _resolves(doc: Any, pointer: Any) -> bool:
    if not isinstance(pointer, str):
        return False
    try:
        jsonpointer.resolve_pointer(doc, pointer)
    except (jsonpointer.JsonPointerException, TypeError, KeyError, IndexError, ValueError):
        return False
    return True


def _parent(pointer: str) -> str:
    return pointer.rsplit("/", 1)[0] if "/" in pointer else pointer


def _json_patch_failure(doc: Any, operation: dict[str, Any], error: Exception) -> str:
    """evanphx/json-patch's wording (the library Kubernetes applies JSON patches with) for an operation that
    does not apply: the operation's kind and paths, never a value of the document."""
    op, path = operation.get("op"), operation.get("path")
    if op not in _OPERATIONS:
        return f"Unexpected kind: {op if isinstance(op, str) else 'unknown'}: unknown object type"
    if not isinstance(path, str):
        return f"{op} operation failed to decode path: missing value"
    if op in ("move", "copy"):
        source = operation.get("from")
        if not _resolves(doc, source):
            return f"{op} operation does not apply: doc is missing from path: {source}: missing value"
        if not _resolves(doc, _parent(path)):
            return f"{op} operation does not apply: doc is missing destination path: {path}: missing value"
        return f"error in {op} for path: '{path}': the destination does not accept the value"
    if op == "test":
        if isinstance(error, jsonpatch.JsonPatchTestFailed) and _resolves(doc, path):
            return f"testing value {path} failed: test failed"
        return f"test operation does not apply: is missing path: {path}: missing value"
    if isinstance(error, jsonpatch.InvalidJsonPatch) and "value" in str(error):
        return f"{op} operation for path: '{path}': the operation has no value: missing value"
    if not _resolves(doc, _parent(path)) or not path.startswith("/"):
        quoted = f'"{path}"' if op in ("add", "remove") else path
        return f"{op} operation does not apply: doc is missing path: {quoted}: missing value"
    key = path.rsplit("/", 1)[-1]
    parent_is_list = isinstance(jsonpointer.resolve_pointer(doc, _parent(path)), list)
    if parent_is_list:
        return f"error in {op} for path: '{path}': Unable to access invalid index: {key}: invalid index referenced"
    if op == "replace":
        return f"replace operation does not apply: doc is missing key: {path}: missing value"
    if op == "remove":
        return f"error in remove for path: '{path}': Unable to remove nonexistent key: {key}: missing value"
    return f"error in {op} for path: '{path}': the value cannot be placed there"


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


def strategic_merge_patch(target: Any, patch: Any, model: type[BaseModel] | None = None) -> Any:
    """Kubernetes' strategic merge patch, as kubectl builds it.

    With the target's model, lists merge the way Kubernetes' types declare
    (``storage.api.patchmeta``): by their merge key (``name`` for containers,
    ``containerPort`` for ports, ``mountPath`` for mounts...), primitive
    ``merge`` lists (finalizers) as sets; other lists are replaced. Without a
    model (a map of free-form values), lists of objects that all carry
    ``name`` merge by name. Directives: ``$patch: replace|delete`` on maps and
    list elements, ``$setElementOrder/<list>``, ``$deleteFromPrimitiveList/<list>``
    and ``$retainKeys``.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: _strip_directives(v) for k, v in patch.items() if not k.startswith("$")}
    if directive == "delete":
        return None
    fields = model_fields(model) if model is not None else {}
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        ft = fields[key][1] if key in fields else None
        if value is None:
            out.pop(key, None)
        elif isinstance(value, list):
            meta = patch_meta(model, key) if model is not None and key in fields else None
            out[key] = _merge_list(out.get(key), value, meta, ft, model is not None)
        else:
            sub_model = ft.model if ft is not None and ft.kind == "object" else None
            if ft is not None and ft.kind == "map" and isinstance(value, dict):
                merged = _merge_map(out.get(key), value, ft)
            else:
                merged = strategic_merge_patch(out.get(key), value, sub_model)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/") and isinstance(value, list):
            name = key.split("/", 1)[1]
            if isinstance(out.get(name), list):
                out[name] = [e for e in out[name] if e not in value]
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") and isinstance(value, list):
            name = key.split("/", 1)[1]
            meta = patch_meta(model, name) if model is not None else None
            if isinstance(out.get(name), list):
                out[name] = _ordered(out[name], value, meta[1] if meta else "name")
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _merge_map(current: Any, patch: dict[str, Any], ft: FieldType) -> dict[str, Any] | None:
    """A map field (labels, capacity, ...): keys merge, null deletes; object values merge by their model."""
    if patch.get("$patch") == "replace":
        return {k: _strip_directives(v) for k, v in patch.items() if not k.startswith("$")}
    item_model = ft.item.model if ft.item is not None and ft.item.kind == "object" else None
    out = dict(current) if isinstance(current, dict) else {}
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        if v is None:
            out.pop(k, None)
        elif item_model is not None or (isinstance(v, dict) and ft.item is not None and ft.item.kind in ("any", "map")):
            merged = strategic_merge_patch(out.get(k), v, item_model)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
        else:
            out[k] = _strip_directives(v)
    return out


def _merge_list(current: Any, patch: list[Any], meta: tuple[str, str] | None, ft: FieldType | None,
                typed: bool) -> list[Any]:
    item_model = ft.item.model if ft is not None and ft.item is not None and ft.item.kind == "object" else None
    if any(isinstance(e, dict) and e.get("$patch") == "replace" for e in patch):
        return [e for e in (_strip_directives(v) for v in patch if not (isinstance(v, dict) and "$patch" in v))
                if e is not None]
    if meta is not None and "merge" in meta[0].split(","):
        key = meta[1]
        if key:
            return _merge_keyed(current if isinstance(current, list) else [], patch, key, item_model)
        merged = list(current) if isinstance(current, list) else []  # a set of primitives (finalizers)
        merged += [v for v in patch if v not in merged]
        return merged
    if not typed and _named_list(patch) and _named_list(current):
        return _merge_keyed(current, patch, "name", None)
    return [e for e in (_strip_directives(v) for v in patch) if e is not None]


def _merge_keyed(current: list[Any], patch: list[Any], key: str, item_model: type[BaseModel] | None) -> list[Any]:
    out = [copy.deepcopy(e) for e in current]
    index = {e.get(key): i for i, e in enumerate(out) if isinstance(e, dict)}
    removed: set[Any] = set()
    for element in patch:
        if not isinstance(element, dict):
            out.append(copy.deepcopy(element))
            continue
        k = element.get(key)
        if element.get("$patch") == "delete":
            removed.add(k)
        elif k in index:
            out[index[k]] = strategic_merge_patch(out[index[k]], element, item_model)
        else:
            index[k] = len(out)
            out.append(strategic_merge_patch({}, element, item_model))
    return [e for e in out if not (isinstance(e, dict) and e.get(key) in removed)]


def _ordered(items: list[Any], order: list[Any], key: str) -> list[Any]:
    """``$setElementOrder``: the listed elements in that order, the others after them as they were."""
    def identity(e: Any) -> Any:
        return e.get(key) if isinstance(e, dict) else e

    wanted = [identity(o) for o in order]
    rank = {w: i for i, w in enumerate(wanted)}
    listed = sorted((e for e in items if identity(e) in rank), key=lambda e: rank[identity(e)])
    return listed + [e for e in items if identity(e) not in rank]


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(e, dict) and "name" in e for e in value)


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("$patch") == "delete":
            return None
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [e for e in (_strip_directives(v) for v in value) if e is not None]
    return copy.deepcopy(value)
