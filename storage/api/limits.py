"""Bounds on what a client may send: body size, stored size, nesting depth, YAML alias expansion.

Kubernetes' API server refuses request bodies over 3 MiB and etcd refuses
writes over 1.5 MiB; Stowage keeps both figures. The depth limit has no
Kubernetes equivalent this low (its JSON decoder stops at 10,000), but no
object of any served kind comes near 100 levels, and a low bound keeps every
recursive step after the door (pydantic, the patch code, JSON encoders with
their own recursion caps) far from its limit. The YAML loader bounds alias
expansion the way go-yaml does for kubectl: a small document may not grow
into a huge one.

Shared by the API server (request bodies, apply patches) and the command
line (manifests), so both refuse the same input with the same words.
"""
from __future__ import annotations

import itertools
import copy
import json

import orjson
import re
from typing import Any, Iterator

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.resolver import Resolver
from yaml.nodes import Node, ScalarNode

MAX_REQUEST_BYTES = 3 * 1024 * 1024
MAX_OBJECT_BYTES = 1536 * 1024
MAX_DEPTH = 100
# A YAML document may expand to at most this many bytes (roughly: scalars' lengths plus a little per node).
MAX_YAML_EXPANDED_BYTES = MAX_REQUEST_BYTES

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class LimitExceeded(ValueError):
    """Input over one of the limits; the message names the limit."""


def request_too_large_message(limit: int = MAX_REQUEST_BYTES) -> str:
    # Kubernetes' wording for a body over its limit.
    return f"Request entity too large: limit is {limit}"


def object_too_large_message(size: int, limit: int = MAX_OBJECT_BYTES) -> str:
    return (
        f"Request entity too large: the object is {size} bytes encoded; "
        f"stored objects are limited to {limit} bytes (1.5 MiB, as etcd's request limit)"
    )


def depth_message(limit: int = MAX_DEPTH) -> str:
    return f"the object is nested more than {limit} levels deep (the nesting limit is {limit})"


def json_depth_exceeds(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON text nests objects/arrays deeper than ``limit``, found without parsing it.

    Checked before any decoder runs: some decoders recurse per level and
    crash the process (not just the request) on a few hundred thousand
    levels, which fit easily in a body under the size limit.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # cannot nest deeper than the number of openers: the common case costs two scans
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit


def depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether a decoded value nests dicts/lists deeper than ``limit`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, dict):
            children: Any = current.values()
        elif isinstance(current, list):
            children = current
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def json_copy(value: Any) -> Any:
    """A private deep copy of a decoded JSON value: through orjson, several times faster than
    ``copy.deepcopy`` on request bodies, which are JSON by construction."""
    try:
        return orjson.loads(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError):  # not plain JSON types, too deep, or a huge integer
        return copy.deepcopy(value)


def encoded_size(obj: Any) -> int:
    """The size of an object as the store writes it (compact JSON, UTF-8)."""
    try:
        return len(orjson.dumps(obj))  # the same compact UTF-8 form, several times faster
    except (TypeError, orjson.JSONEncodeError):  # deeper than orjson nests, or an integer beyond 64 bits
        return len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


class _Bounded:
    """PyYAML's composer with the nesting depth and each document's alias expansion bounded.

    A YAML alias shares the anchored node, so a "billion laughs" document is
    small in memory until something walks it (JSON encoding, validation);
    this composer counts each document as if every alias were expanded and
    stops once that exceeds the budget. An alias inside its own anchor
    (a recursive structure) is refused too: no JSON object can hold it.
    """

    _max_depth = MAX_DEPTH
    _max_expanded = MAX_YAML_EXPANDED_BYTES

    def _reset_bounds(self) -> None:
        self._depth = 0
        self._expanded = 0
        self._sizes: dict[int, int] = {}

    def compose_document(self) -> Node | None:
        self._reset_bounds()
        return super().compose_document()  # type: ignore[misc, no-any-return]

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > self._max_depth:
                raise LimitExceeded(f"yaml: {depth_message(self._max_depth)}")
            if self.check_event(AliasEvent):  # type: ignore[attr-defined]
                node = super().compose_node(parent, index)  # type: ignore[misc]
                size = self._sizes.get(id(node))
                if size is None:
                    raise LimitExceeded("yaml: an alias refers to its own anchor (a recursive structure)")
                self._expanded += size
            else:
                before = self._expanded
                node = super().compose_node(parent, index)  # type: ignore[misc]
                own = len(node.value) + 2 if isinstance(node, ScalarNode) else 2
                self._expanded += own
                self._sizes[id(node)] = self._expanded - before
            if self._expanded > self._max_expanded:
                raise LimitExceeded(
                    "yaml: document contains excessive aliasing: it would expand beyond "
                    f"{self._max_expanded} bytes (the request body limit)"
                )
            return node  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


class BoundedSafeLoader(_Bounded, yaml.SafeLoader):
    """The pure-Python safe loader, bounded."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._reset_bounds()


if yaml.__with_libyaml__:
    from yaml.cyaml import CParser

    class BoundedCSafeLoader(_Bounded, Composer, CParser, SafeConstructor, Resolver):  # type: ignore[misc]
        """libyaml's parser (scanning in C: a multi-MiB body parses in milliseconds, not seconds) under the
        bounded Python composer; the C loader's own composer cannot be bounded."""

        def __init__(self, stream: Any) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self._reset_bounds()

    _LOADER: type = BoundedCSafeLoader
else:  # pragma: no cover - libyaml is part of the usual PyYAML wheels
    _LOADER = BoundedSafeLoader


def yaml_problem(exc: yaml.YAMLError) -> tuple[int | None, str]:
    """(1-based line, what is wrong) of a YAML parse error, for a message of the caller's own form."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return (mark.line + 1 if mark is not None else None), problem


def load_yaml_all(text: str | bytes) -> Iterator[Any]:
    """Every document of a YAML stream, safely and within the limits (raises LimitExceeded)."""
    loader = _LOADER(text)
    try:
        while loader.check_data():
            yield loader.get_data()
    finally:
        loader.dispose()


def compose_yaml(text: str | bytes) -> Node | None:
    """The node tree of a single-document YAML stream, within the same limits as ``load_yaml``."""
    loader = _LOADER(text)
    try:
        return loader.get_single_node()  # type: ignore[no-any-return]
    finally:
        loader.dispose()


def load_yaml(text: str | bytes) -> Any:
    """The single document of a YAML stream (None when empty), safely and within the limits."""
    loader = _LOADER(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
