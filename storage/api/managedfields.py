"""Field ownership for server-side apply: ``metadata.managedFields``, as Kubernetes' structured-merge-diff keeps it.

A *field set* is a set of paths. Each path element is written as ``fieldsV1``
writes it: ``f:name`` (a struct field or a map key), ``k:{"name":"x"}`` (an
element of a list keyed by its merge keys), ``v:"x"`` (an element of a set),
``i:0`` (a list index). The models say what each value is
(``storage.api.patchmeta``): merge-keyed lists are maps by key, merge lists
without a key are sets, every other list is atomic (owned whole), and so are
the structs Kubernetes declares atomic. Map entries and list elements are
members of a set themselves (their existence is owned), struct fields only as
leaves.

The operations, all pure:

- ``apply``: merge an apply configuration into the live object, drop what the
  applier owned before and no longer specifies unless another manager owns it,
  and refuse (``ApplyConflict``) to change a field another manager owns,
  unless forced, which takes the field over. Setting a field to the value it
  has already shares its ownership.
- ``record_update``: a plain write (create, PUT, non-apply PATCH) owns every
  field it changed, taking it from whoever owned it before.

Server-owned metadata (name, uid, resourceVersion, ...) and ``apiVersion``/``kind``
are never owned. The ``scope`` of a request splits objects with a status
subresource: the main resource manages everything but ``status``; ``/status``
manages ``status`` only.
"""
from __future__ import annotations

import copy
import functools
import json
import unicodedata
from dataclasses import dataclass
from typing import Any, Iterable, Literal

import orjson
from pydantic import BaseModel

from storage.api.patchmeta import ATOMIC_STRUCTS, list_map_keys, patch_meta
from storage.api.schema import FieldType, model_fields
from storage.errors import ApplyConflict, FieldError

__all__ = [
    "APPLY", "UPDATE", "FieldSet", "FieldSetError", "Manager", "Managed", "Owned", "Path", "Scope",
    "apply", "compare", "decode_managed", "encode_managed", "field_set", "from_fields_v1",
    "manager_from_user_agent", "manager_problems", "managed_for_write", "path_string", "record_update",
    "to_fields_v1",
]

Path = tuple[str, ...]
FieldSet = frozenset[Path]
# "object": the whole object (kinds without a status subresource); "main": all but status; "status": status only.
Scope = Literal["object", "main", "status"]

APPLY = "Apply"
UPDATE = "Update"
FIELDS_V1 = "FieldsV1"
MAX_MANAGER_LENGTH = 128
# More Update managers than this and the oldest are merged into one bucket per apiVersion (Kubernetes' cap).
MAX_UPDATE_MANAGERS = 10
ANCIENT_CHANGES = "ancient-changes"
# List keys that the schema defaults: an element that leaves one out still has an identity.
_KEY_DEFAULTS = {"protocol": "TCP"}
_TOP_UNOWNED = frozenset({"apiVersion", "kind"})
_META_UNOWNED = frozenset({
    "name", "namespace", "creationTimestamp", "selfLink", "uid", "clusterName", "generation", "managedFields",
    "resourceVersion",
})
_EMPTY: FieldSet = frozenset()


class FieldSetError(ValueError):
    """A value or a ``managedFields`` entry that has no field set (a keyed list element without its key, ...)."""


# ---- types -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Type:
    kind: str  # struct | map | assoc | set | atomic | scalar | any
    model: type[BaseModel] | None = None
    item: FieldType | None = None  # map values and list elements
    keys: tuple[str, ...] = ()


_ANY = _Type("any")
_ATOMIC = _Type("atomic")
_SCALAR = _Type("scalar")


@functools.lru_cache(maxsize=None)
def _struct(model: type[BaseModel]) -> _Type:
    return _ATOMIC if model.__name__ in ATOMIC_STRUCTS else _Type("struct", model)


def _of(ft: FieldType | None) -> _Type:
    """The type of a map value or a list element."""
    if ft is None or ft.kind == "any":
        return _ANY
    if ft.kind == "object" and ft.model is not None:
        return _struct(ft.model)
    if ft.kind == "map":
        return _Type("map", item=ft.item)
    if ft.kind == "array":
        return _ATOMIC
    return _SCALAR


@functools.lru_cache(maxsize=None)
def _field(model: type[BaseModel], name: str) -> _Type | None:
    """A struct field's type; None for a field the model does not declare."""
    declared = model_fields(model).get(name)
    if declared is None:
        return None
    ft = declared[1]
    if ft.kind != "array":
        return _of(ft)
    meta = patch_meta(model, name)
    if meta is None or "merge" not in meta[0].split(","):
        return _ATOMIC  # Kubernetes' default list type
    if meta[1]:
        return _Type("assoc", item=ft.item, keys=list_map_keys(model, name))
    return _Type("set", item=ft.item)


def _child(t: _Type, kind: str, key: str) -> _Type | None:
    if kind == "struct":
        assert t.model is not None
        return _field(t.model, key)
    return _of(t.item) if t.kind == "map" else _ANY


def _root(model: type[BaseModel] | None) -> _Type:
    return _Type("struct", model) if model is not None else _ANY


def _granular(t: _Type, value: Any) -> str:
    """How a value of type ``t`` is owned; free-form values have granular maps and atomic lists."""
    if t.kind == "any":
        return "map" if isinstance(value, dict) else "atomic"
    return t.kind


# ---- paths ------------------------------------------------------------------------------------

def _canonical(value: Any) -> str:
    """Compact JSON with sorted keys, as Kubernetes writes list keys and set values in path elements."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # what orjson refuses (integers past 64 bits): the standard library's identical form
        return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _key_fields(element: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any] | None:
    fields: dict[str, Any] = {}
    for k in keys:
        value = element.get(k)
        if value is None:
            value = _KEY_DEFAULTS.get(k)
        if value is None:
            return None
        fields[k] = value
    return fields


def _key_element(element: Any, keys: tuple[str, ...], path: Path, index: int) -> str:
    fields = _key_fields(element, keys) if isinstance(element, dict) else None
    if fields is None:
        missing = next((k for k in keys if not isinstance(element, dict) or element.get(k) is None), keys[0])
        raise FieldSetError(
            f'{path_string(path)}: element {index}: associative list with keys has an element that omits key field '
            f'"{missing}" (and doesn\'t have default value)'
        )
    return "k:" + _canonical(fields)


def _go_string(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else _canonical(value)


def path_string(path: Path) -> str:
    """A path as Kubernetes prints it in conflicts: ``.spec.containers[name="app"].image``."""
    out: list[str] = []
    for element in path:
        kind, _, rest = element.partition(":")
        if kind == "f":
            out.append("." + rest)
        elif kind == "k":
            fields = json.loads(rest)
            out.append("[" + ",".join(f"{k}={_go_string(v)}" for k, v in sorted(fields.items())) + "]")
        elif kind == "v":
            out.append(f"[={_go_string(json.loads(rest))}]")
        else:
            out.append(f"[{rest}]")
    return "".join(out)


def _prefixes(paths: Iterable[Path]) -> set[Path]:
    """Every proper prefix of every path: the paths that have something under them."""
    return {p[:i] for p in paths for i in range(1, len(p))}


# ---- field sets --------------------------------------------------------------------------------

def _scoped(obj: dict[str, Any], scope: Scope) -> dict[str, Any]:
    """The top-level part of ``obj`` a request in ``scope`` owns, without fields no manager owns."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key in _TOP_UNOWNED or (scope == "main" and key == "status") or (scope == "status" and key != "status"):
            continue
        if key == "metadata" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in _META_UNOWNED}
            if not value:
                continue
        out[key] = value
    return out


def _walk_entry(t: _Type, kind: str, key: str, child: Any, path: Path, out: dict[Path, Any]) -> None:
    """One entry of a struct or map: a map entry is owned itself, a struct field only as a leaf."""
    p = path + ("f:" + key,)
    ct = _child(t, kind, key)
    if ct is None:  # a field the model does not declare: owned whole
        out[p] = child
    elif kind == "map":
        out[p] = child
        if child is not None:
            _walk(child, ct, p, out)
    elif child is None or (isinstance(child, dict) and not child):
        out[p] = child
    else:
        _walk(child, ct, p, out)


def _walk_element(element: Any, t: _Type, p: Path, out: dict[Path, Any]) -> None:
    out[p] = element
    _walk(element, _of(t.item), p, out)


def _walk(value: Any, t: _Type, path: Path, out: dict[Path, Any]) -> None:
    kind = _granular(t, value)
    if kind in ("struct", "map"):
        if not isinstance(value, dict):
            out[path] = value
            return
        for key, child in value.items():
            _walk_entry(t, kind, key, child, path, out)
    elif kind == "assoc":
        if not isinstance(value, list):
            out[path] = value
            return
        for i, element in enumerate(value):
            _walk_element(element, t, path + (_key_element(element, t.keys, path, i),), out)
    elif kind == "set":
        if not isinstance(value, list):
            out[path] = value
            return
        for element in value:
            out[path + ("v:" + _canonical(element),)] = element
    else:
        out[path] = value


def _values(obj: dict[str, Any], model: type[BaseModel] | None, scope: Scope) -> dict[Path, Any]:
    out: dict[Path, Any] = {}
    _walk(_scoped(obj, scope), _root(model), (), out)
    return out


def field_set(obj: dict[str, Any], model: type[BaseModel] | None, scope: Scope = "object") -> FieldSet:
    """The fields ``obj`` sets, as a manager that wrote it whole would own them."""
    return frozenset(_values(obj, model, scope))


@dataclass(frozen=True)
class Comparison:
    added: FieldSet
    modified: FieldSet
    removed: FieldSet

    @property
    def taken(self) -> FieldSet:
        """What the writer of the change now owns."""
        return self.added | self.modified


@dataclass
class _Changes:
    added: set[Path]
    modified: set[Path]
    removed: set[Path]

    def between(self, before: dict[Path, Any], after: dict[Path, Any]) -> None:
        """The changes between the field values of one part of two objects."""
        inner = _prefixes(before) | _prefixes(after)  # values with owned parts are compared part by part
        self.added.update(after.keys() - before.keys())
        self.removed.update(before.keys() - after.keys())
        self.modified.update(p for p in before.keys() & after.keys() if p not in inner and before[p] != after[p])


_MISSING: Any = object()


def _nested(t: _Type | None, a: Any, b: Any) -> str | None:
    """The kind both values share when the difference between them can be looked for inside them."""
    if t is None or not isinstance(a, type(b)) or not isinstance(b, type(a)):
        return None
    kind = _granular(t, a)
    if kind in ("struct", "map") and isinstance(a, dict) and a and b:
        return kind
    if kind == "assoc" and isinstance(a, list):
        return kind
    return None


def _keyed(items: list[Any], t: _Type, path: Path) -> dict[str, Any] | None:
    """A keyed list's elements by key; None when two share a key (the slow path sorts that out)."""
    out: dict[str, Any] = {}
    for i, element in enumerate(items):
        key = _key_element(element, t.keys, path, i)
        if key in out:
            return None
        out[key] = element
    return out


def _diff(a: Any, b: Any, t: _Type, path: Path, changes: _Changes) -> None:
    """The changes between two unequal values at ``path`` whose kind ``_nested`` found; equal parts are skipped,
    which is what makes a small change to a large object cheap."""
    kind = _nested(t, a, b)
    if kind in ("struct", "map"):
        for key in a.keys() | b.keys():
            ca, cb = a.get(key, _MISSING), b.get(key, _MISSING)
            if ca is not _MISSING and cb is not _MISSING and ca == cb:
                continue
            if ca is not _MISSING and cb is not _MISSING and _nested(_child(t, kind, key), ca, cb):
                # Owned in both (a map entry) or not at all (a struct field), with owned parts either way.
                _diff(ca, cb, _child(t, kind, key) or _ANY, path + ("f:" + key,), changes)
                continue
            before: dict[Path, Any] = {}
            after: dict[Path, Any] = {}
            if ca is not _MISSING:
                _walk_entry(t, kind, key, ca, path, before)
            if cb is not _MISSING:
                _walk_entry(t, kind, key, cb, path, after)
            changes.between(before, after)
        return
    if kind == "assoc":
        ka, kb = _keyed(a, t, path), _keyed(b, t, path)
        if ka is not None and kb is not None:
            element_type = _of(t.item)
            for key in ka.keys() | kb.keys():
                ea, eb = ka.get(key, _MISSING), kb.get(key, _MISSING)
                if ea is not _MISSING and eb is not _MISSING:
                    if ea == eb:
                        continue
                    if _nested(element_type, ea, eb):  # the element is owned on both sides: only its parts differ
                        _diff(ea, eb, element_type, path + (key,), changes)
                    else:
                        _between_values(ea, eb, element_type, path + (key,), changes)
                    continue
                before, after = {}, {}
                if ea is not _MISSING:
                    _walk_element(ea, t, path + (key,), before)
                if eb is not _MISSING:
                    _walk_element(eb, t, path + (key,), after)
                changes.between(before, after)
            return
    _between_values(a, b, t, path, changes)


def _between_values(a: Any, b: Any, t: _Type, path: Path, changes: _Changes) -> None:
    before: dict[Path, Any] = {}
    after: dict[Path, Any] = {}
    _walk(a, t, path, before)
    _walk(b, t, path, after)
    changes.between(before, after)


def compare(old: dict[str, Any], new: dict[str, Any], model: type[BaseModel] | None,
            scope: Scope = "object") -> Comparison:
    """What a change from ``old`` to ``new`` added, modified (leaf values) and removed."""
    a, b = _scoped(old, scope), _scoped(new, scope)
    changes = _Changes(set(), set(), set())
    if a != b:
        root = _root(model)
        if _nested(root, a, b):
            _diff(a, b, root, (), changes)
        else:
            _between_values(a, b, root, (), changes)
    return Comparison(frozenset(changes.added), frozenset(changes.modified), frozenset(changes.removed))


def _slow_compare(old: dict[str, Any], new: dict[str, Any], model: type[BaseModel] | None,
                  scope: Scope = "object") -> Comparison:
    """The definition ``compare`` computes faster (kept for the tests that check they agree)."""
    changes = _Changes(set(), set(), set())
    changes.between(_values(old, model, scope), _values(new, model, scope))
    return Comparison(frozenset(changes.added), frozenset(changes.modified), frozenset(changes.removed))


# ---- fieldsV1 ---------------------------------------------------------------------------------

def to_fields_v1(fields: Iterable[Path]) -> dict[str, Any]:
    """A field set as ``fieldsV1``: a tree of path elements, ``"."`` (first) marking a member that has children."""
    members = frozenset(fields)
    return orjson.loads(_encoded(members)) if len(members) <= _CACHED_PATHS else _tree(members)


# Most writes leave most managers' fields as they were: their trees are encoded and decoded once. Only
# ordinary sizes are kept, so that large hostile objects cannot fill the memory through these caches.
_CACHED_PATHS = 512
_CACHED_BYTES = 16 * 1024


@functools.lru_cache(maxsize=256)
def _encoded(members: FieldSet) -> bytes:
    return orjson.dumps(_tree(members))


def _tree(members: FieldSet) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path in sorted(members):  # a member sorts before everything under it
        node = root
        last = len(path) - 1
        for i, element in enumerate(path):
            child = node.get(element)
            if child is None:
                child = node[element] = {}
            if i < last and not child and path[:i + 1] in members:
                child["."] = {}
            node = child
    return root


@functools.lru_cache(maxsize=4096)
def _canonical_element(element: str) -> str:
    kind, sep, rest = element.partition(":")
    try:
        if sep and kind == "f":
            return element
        if sep and kind == "k":
            decoded = json.loads(rest)
            if isinstance(decoded, dict) and decoded:
                return "k:" + _canonical(decoded)
        elif sep and kind == "v":
            return "v:" + _canonical(json.loads(rest))
        elif sep and kind == "i":
            return f"i:{int(rest)}"
    except ValueError:
        pass
    raise FieldSetError(f"unknown path element {element[:64]!r}")


def from_fields_v1(tree: Any) -> FieldSet:
    if not isinstance(tree, dict):
        raise FieldSetError("fieldsV1: every node must be an object")
    try:
        key = orjson.dumps(tree)
    except TypeError:
        raise FieldSetError("fieldsV1: not JSON") from None
    return _decoded(key) if len(key) <= _CACHED_BYTES else _decode_tree(tree)


@functools.lru_cache(maxsize=256)
def _decoded(encoded: bytes) -> FieldSet:
    return _decode_tree(orjson.loads(encoded))


def _decode_tree(tree: dict[str, Any]) -> FieldSet:
    out: set[Path] = set()

    def walk(node: Any, prefix: Path) -> None:
        if not isinstance(node, dict):
            raise FieldSetError("fieldsV1: every node must be an object")
        for key, child in node.items():
            if key == ".":
                if prefix:
                    out.add(prefix)
                continue
            path = prefix + (_canonical_element(key),)
            if child == {}:
                out.add(path)
            else:
                walk(child, path)

    walk(tree, ())
    return frozenset(out)


# ---- managers ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Manager:
    """Who owns fields, identified as Kubernetes does: an applier is one manager whatever version it
    applies; an updater is one per apiVersion (and per subresource)."""

    name: str
    operation: str = UPDATE
    api_version: str = ""
    subresource: str = ""

    @classmethod
    def applier(cls, name: str, subresource: str = "") -> "Manager":
        return cls(name, APPLY, "", subresource)

    @classmethod
    def updater(cls, name: str, api_version: str, subresource: str = "") -> "Manager":
        return cls(name or "unknown", UPDATE, api_version, subresource)

    def describe(self) -> str:
        text = json.dumps(self.name, ensure_ascii=False)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == UPDATE:
            text += f" using {self.api_version}"
        return text


@dataclass(frozen=True)
class Owned:
    fields: FieldSet
    api_version: str
    time: str | None = None


Managed = dict[Manager, Owned]


def _blank(entry: Any) -> bool:
    return isinstance(entry, dict) and not any(entry.values())


def decode_managed(entries: Any) -> Managed:
    """``metadata.managedFields`` as ownership; ``FieldSetError`` when any entry is malformed."""
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise FieldSetError("managedFields must be a list")
    out: Managed = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise FieldSetError("a managedFields entry must be an object")
        operation, fields_type = entry.get("operation"), entry.get("fieldsType")
        name, version = entry.get("manager") or "", entry.get("apiVersion") or ""
        subresource, time = entry.get("subresource") or "", entry.get("time")
        if operation not in (APPLY, UPDATE):
            raise FieldSetError(f"managedFields: operation must be Apply or Update, not {str(operation)[:32]!r}")
        if fields_type not in (FIELDS_V1, None, ""):
            raise FieldSetError(f"managedFields: fieldsType must be FieldsV1, not {str(fields_type)[:32]!r}")
        if not all(isinstance(v, str) for v in (name, version, subresource)) or not isinstance(time, (str, type(None))):
            raise FieldSetError("managedFields: manager, apiVersion, subresource and time are strings")
        fields = from_fields_v1(entry.get("fieldsV1") or {})
        manager = Manager(name, operation, version if operation == UPDATE else "", subresource)
        previous = out.get(manager)
        if previous is not None:
            fields |= previous.fields
        out[manager] = Owned(fields, version, time)
    return out


def encode_managed(managed: Managed) -> list[dict[str, Any]]:
    """Ownership as ``metadata.managedFields`` entries, in Kubernetes' order (appliers first, then by time)."""
    entries: list[dict[str, Any]] = []
    for manager, owned in managed.items():
        entry: dict[str, Any] = {"manager": manager.name, "operation": manager.operation,
                                 "apiVersion": owned.api_version}
        if owned.time:
            entry["time"] = owned.time
        entry["fieldsType"] = FIELDS_V1
        entry["fieldsV1"] = to_fields_v1(owned.fields)
        if manager.subresource:
            entry["subresource"] = manager.subresource
        entries.append(entry)
    entries.sort(key=lambda e: (e["operation"], e.get("time") or "", e["manager"], e["apiVersion"],
                                e.get("subresource", "")))
    return entries


def managed_for_write(live_entries: Any, request_entries: Any, *, trust_request: bool) -> Managed:
    """The ownership a write starts from, as Kubernetes picks it.

    A request may set ``managedFields`` (``[]`` or ``[{}]`` clears them); one
    that leaves them out, or sends entries that do not decode, keeps the live
    object's. Subresource writes always keep the live object's.
    """
    if trust_request and isinstance(request_entries, list):
        if not request_entries or (len(request_entries) == 1 and _blank(request_entries[0])):
            return {}
        try:
            found = decode_managed(request_entries)
        except FieldSetError:
            found = {}
        if found:
            return found
    try:
        return decode_managed(live_entries)
    except FieldSetError:
        return {}


def _cap_updates(managed: Managed) -> Managed:
    """At most ``MAX_UPDATE_MANAGERS`` Update entries: the oldest merge into one bucket per apiVersion."""
    updaters = [m for m in managed if m.operation == UPDATE]
    if len(updaters) <= MAX_UPDATE_MANAGERS:
        return managed
    out = dict(managed)
    count = len(updaters)
    for manager in sorted(updaters, key=lambda m: (managed[m].time or "", m.name)):
        if count <= MAX_UPDATE_MANAGERS:
            break
        if manager.name == ANCIENT_CHANGES:
            continue
        owned = out.pop(manager)
        bucket = Manager.updater(ANCIENT_CHANGES, owned.api_version)
        previous = out.get(bucket)
        fields = owned.fields | (previous.fields if previous else _EMPTY)
        out[bucket] = Owned(fields, owned.api_version, owned.time)
        count -= 1  # as Kubernetes counts: a new bucket may leave one entry over the cap
    return out


def record_update(managed: Managed, old: dict[str, Any], new: dict[str, Any], model: type[BaseModel] | None,
                  manager: Manager, now: str, scope: Scope = "object") -> Managed:
    """Ownership after a plain write by ``manager``: it owns what it changed, taken from anyone who owned it.

    A write that changes nothing changes no entry, not even a time.
    """
    change = compare(old, new, model, scope)
    taken = change.taken
    lost = taken | change.removed
    out: Managed = {}
    for who, owned in managed.items():
        rest = owned.fields - lost
        if rest:
            out[who] = owned if rest == owned.fields else Owned(rest, owned.api_version, owned.time)
    if taken:
        previous = out.get(manager)
        out[manager] = Owned(taken | (previous.fields if previous else _EMPTY), manager.api_version, now)
    return _cap_updates(out)


# ---- apply ------------------------------------------------------------------------------------

def _merge_order(lhs: list[str], rhs: list[str]) -> list[str]:
    """Both lists' order kept where they agree; where they disagree the applied order wins."""
    in_rhs = set(rhs)
    out: list[str] = []
    seen: set[str] = set()
    i = j = 0
    while i < len(lhs) or j < len(rhs):
        if i < len(lhs) and lhs[i] in seen:
            i += 1
            continue
        if j < len(rhs) and rhs[j] in seen:
            j += 1
            continue
        if i < len(lhs) and j < len(rhs):
            # a live element the configuration does not name stays where it is; otherwise the configuration's next
            pick = lhs[i] if lhs[i] == rhs[j] or lhs[i] not in in_rhs else rhs[j]
        else:
            pick = lhs[i] if i < len(lhs) else rhs[j]
        out.append(pick)
        seen.add(pick)
    return out


def _merge_keyed(live: list[Any], config: list[Any], t: _Type, path: Path) -> list[Any]:
    element_type = _of(t.item)
    wanted: dict[str, Any] = {}
    for i, element in enumerate(config):
        key = _key_element(element, t.keys, path, i)
        if key in wanted:
            raise FieldSetError(f"{path_string(path)}: duplicate entries for key {path_string((key,))}")
        wanted[key] = element
    present: dict[str, Any] = {}
    order: list[str] = []
    for i, element in enumerate(live):
        fields = _key_fields(element, t.keys) if isinstance(element, dict) else None
        key = "k:" + _canonical(fields) if fields is not None else f"i:{i}"
        if key not in present:
            present[key] = element
            order.append(key)
    out = []
    for key in _merge_order(order, list(wanted)):
        if key in wanted:
            element = wanted[key]
            out.append(_merge(present[key], element, element_type, path + (key,)) if key in present
                       else copy.deepcopy(element))
        else:
            out.append(present[key])
    return out


def _merge(live: Any, config: Any, t: _Type, path: Path = ()) -> Any:
    """An apply configuration merged into the live value: what the configuration names wins."""
    kind = _granular(t, config)
    if kind in ("struct", "map") and isinstance(config, dict):
        out = dict(live) if isinstance(live, dict) else {}
        for key, value in config.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = _merge(out[key], value, _child(t, kind, key) or _ATOMIC, path + ("f:" + key,))
            else:
                out[key] = copy.deepcopy(value)
        return out
    if kind == "assoc" and isinstance(config, list) and isinstance(live, list):
        return _merge_keyed(live, config, t, path)
    if kind == "set" and isinstance(config, list) and isinstance(live, list):
        known = {_canonical(v) for v in live}
        return [*live, *(copy.deepcopy(v) for v in config if _canonical(v) not in known)]
    return copy.deepcopy(config)


def _locate(node: Any, element: str) -> Any:
    kind, _, rest = element.partition(":")
    if kind == "f":
        return rest if isinstance(node, dict) and rest in node else None
    if not isinstance(node, list):
        return None
    if kind == "i":
        index = int(rest)
        return index if 0 <= index < len(node) else None
    wanted = json.loads(rest)
    for i, item in enumerate(node):
        if kind == "v" and item == wanted:
            return i
        if kind == "k" and isinstance(item, dict) and _key_fields(item, tuple(wanted)) == wanted:
            return i
    return None


def _is_key_field(path: Path) -> bool:
    """A field that is part of its keyed list element's identity (``name`` under ``k:{"name":...}``)."""
    if len(path) < 2 or not path[-2].startswith("k:") or not path[-1].startswith("f:"):
        return False
    return path[-1][2:] in json.loads(path[-2][2:])


def _present(obj: Any, path: Path) -> bool:
    for element in path:
        at = _locate(obj, element)
        if at is None:
            return False
        obj = obj[at]
    return True


def _remove(obj: dict[str, Any], path: Path, config: dict[str, Any]) -> None:
    """Remove the value at ``path``, and the maps and lists that leaves empty (as Go's omitempty would)
    unless the configuration names them itself."""
    trail: list[tuple[Any, Any]] = []
    node: Any = obj
    for element in path:
        at = _locate(node, element)
        if at is None:
            return
        trail.append((node, at))
        node = node[at]
    for depth in range(len(trail) - 1, -1, -1):
        container, at = trail[depth]
        del container[at]
        if container or depth == 0 or _present(config, path[:depth]):
            break


def _conflict_error(conflicts: list[tuple[Manager, Path]]) -> ApplyConflict:
    conflicts = sorted(conflicts, key=lambda c: (c[0].describe(), path_string(c[1])))
    causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {m.describe()}", "field": path_string(p)}
              for m, p in conflicts]
    if len(conflicts) == 1:
        manager, path = conflicts[0]
        return ApplyConflict(f"Apply failed with 1 conflict: conflict with {manager.describe()}: {path_string(path)}",
                             causes)
    lines: list[str] = []
    for manager in sorted({m for m, _ in conflicts}, key=lambda m: m.describe()):
        lines.append(f"conflicts with {manager.describe()}:")
        lines += [f"- {path_string(p)}" for m, p in conflicts if m == manager]
    return ApplyConflict(f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines), causes)


def apply(live: dict[str, Any], config: dict[str, Any], model: type[BaseModel] | None, managed: Managed,
          manager: Manager, api_version: str, *, force: bool, now: str,
          scope: Scope = "object") -> tuple[dict[str, Any], Managed]:
    """Server-side apply of ``config`` by ``manager`` to ``live``: the new object and its new ownership.

    Raises ``ApplyConflict`` (unless ``force``) when it would change a field another manager owns, and
    ``FieldSetError`` for a configuration without a field set (a keyed list element missing its key, ...).
    """
    part = {k: v for k, v in config.items()
            if not ((scope == "main" and k == "status") or (scope == "status" and k != "status"))}
    merged = _merge(live, part, _root(model))
    applied = field_set(config, model, scope)
    others = {m: o for m, o in managed.items() if m != manager}
    owned = applied.union(*(o.fields for o in others.values()))
    previous = managed.get(manager)
    stale = (previous.fields if previous else _EMPTY) - owned
    if stale:
        still_used = _prefixes(owned)
        # Shallowest first: an element that goes takes its fields with it; one that stays keeps its key fields.
        for path in sorted(stale, key=len):
            if path not in still_used and not _is_key_field(path):
                _remove(merged, path, part)
    change = compare(live, merged, model, scope)
    taken = change.taken
    conflicts: list[tuple[Manager, Path]] = []
    out: Managed = {}
    for who, o in others.items():
        lost = o.fields & taken
        conflicts += [(who, p) for p in lost]
        rest = o.fields - lost - change.removed
        if rest:
            out[who] = o if rest == o.fields else Owned(rest, o.api_version, o.time)
    if conflicts and not force:
        raise _conflict_error(conflicts)
    if applied:
        out[manager] = Owned(applied, api_version, now)
    return merged, _cap_updates(out)


# ---- request options ---------------------------------------------------------------------------

def _printable(ch: str) -> bool:
    return ch == " " or unicodedata.category(ch)[0] not in ("C", "Z")


def manager_from_user_agent(user_agent: str) -> str:
    """Kubernetes' default manager name: the User-Agent up to its first "/", printable characters only."""
    out = ""
    for ch in user_agent.split("/", 1)[0]:
        if not _printable(ch):
            continue
        if len((out + ch).encode()) > MAX_MANAGER_LENGTH:
            break
        out += ch
    return out


def manager_problems(name: str) -> list[FieldError]:
    """A ``fieldManager`` query parameter's problems, worded as Kubernetes words them."""
    problems: list[FieldError] = []
    if len(name.encode()) > MAX_MANAGER_LENGTH:
        problems.append(FieldError("fieldManager", "Too long", f"may not be more than {MAX_MANAGER_LENGTH} bytes"))
    for i, ch in enumerate(name):
        if not _printable(ch):
            problems.append(FieldError(f"fieldManager[{i}]", "Invalid value", "invalid character", name, True))
    return problems
