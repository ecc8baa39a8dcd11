"""``?fieldValidation=Strict|Warn|Ignore``: what happens to unknown and duplicate fields of a request body.

As Kubernetes: Strict rejects the request with 400 naming every such field;
Warn (the default when the parameter is absent) drops them and answers one
``Warning`` header per field; Ignore drops them silently. Unknown fields are
never stored.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from storage.api.fieldcheck import prune_unknown, unknown_fields
from storage.api.limits import compose_yaml
from storage.errors import BadRequest

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_WARNING_CHARS = 4096

MODES = ("Strict", "Warn", "Ignore")


@dataclass
class FieldValidation:
    mode: str = "Warn"
    duplicates: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_query(cls, value: str | None) -> "FieldValidation":
        if not value:
            return cls()
        if value not in MODES:
            raise BadRequest(
                f'fieldValidation: Unsupported value: "{value}": supported values: "Ignore", "Strict", "Warn"'
            )
        return cls(value)

    def decode(self, body: bytes) -> Any:
        """Parse a JSON body, noting duplicate keys unless they are to be ignored."""
        if self.mode == "Ignore":
            return json.loads(body, parse_constant=_no_constant)
        value, dups = loads_noting_duplicates(body)
        self.duplicates.extend(dups)
        return value

    def note_yaml_duplicates(self, body: bytes) -> None:
        """Note duplicate keys of a YAML body (server-side apply); parse errors are left to the parser."""
        if self.mode == "Ignore":
            return
        try:
            self.duplicates.extend(yaml_duplicates(body))
        except (yaml.YAMLError, ValueError):  # LimitExceeded too: the parser answers it with a 400
            pass

    def check(self, obj: dict[str, Any], old: dict[str, Any] | None = None) -> None:
        """Drop ``obj``'s unknown fields (Warn/Ignore) or reject them (Strict).

        ``old`` is the stored object a patch applied to: fields it already had
        (stored before this check existed) are the patch author's no fault.
        """
        present = unknown_fields(obj)
        found = present
        if old is not None and found:
            before = set(unknown_fields({**old, "kind": obj.get("kind")}))
            found = [p for p in found if p not in before]
        problems = [f'unknown field "{p}"' for p in found] + [f'duplicate field "{p}"' for p in self.duplicates]
        if self.mode == "Strict" and problems:
            kind = str(obj.get("kind", ""))
            version = str(obj.get("apiVersion", "")).rsplit("/", 1)[-1]
            raise BadRequest(
                f'{kind} in version "{version}" cannot be handled as a {kind}: strict decoding error: '
                + ", ".join(problems)
            )
        if self.mode == "Warn":
            for p in problems:
                if p not in self.warnings:
                    self.warnings.append(p)
        if present:
            prune_unknown(obj)  # after a patch, also what the stored object carried from before
        self.duplicates.clear()

    def headers(self) -> list[tuple[str, str]]:
        # Through the one sanitiser: an unknown field's name is the client's text, and a header value
        # outside latin-1 (or with a line break) failed the whole response with a 500.
        return [("Warning", warning_header(w)) for w in self.warnings]


def warning_header(text: str) -> str:
    """RFC 7234 warn-code 299 with agent "-", as Kubernetes sends admission warnings."""
    # Header values are latin-1 and single-line; Kubernetes' own warnings are ASCII.
    if len(text) > _MAX_WARNING_CHARS:  # Kubernetes truncates long warnings too
        text = text[:_MAX_WARNING_CHARS] + "..."
    safe = _CONTROL.sub(" ", text.replace("\\", "\\\\").replace('"', '\\"'))
    return '299 - "' + safe.encode("ascii", "replace").decode("ascii") + '"'


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON: refused, as Kubernetes' decoder (and orjson) refuse them."""
    raise ValueError(f"{name} is not a JSON value")


def loads_noting_duplicates(body: bytes | str) -> tuple[Any, list[str]]:
    """JSON -> (value, paths of duplicated keys); the last of duplicated keys wins, as Go's decoder does."""
    seen: list[tuple[dict[str, Any], str]] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        dup: list[str] = []
        for key, value in items:
            if key in out and key not in dup:
                dup.append(key)
            out[key] = value
        for key in dup:
            seen.append((out, key))
        return out

    value = json.loads(body, object_pairs_hook=pairs, parse_constant=_no_constant)
    if not seen:
        return value, []
    paths: dict[int, str] = {}

    def index(node: Any, path: str) -> None:
        if isinstance(node, dict):
            paths[id(node)] = path
            for k, v in node.items():
                index(v, f"{path}.{k}" if path else k)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                index(v, f"{path}[{i}]")

    index(value, "")
    dups = []
    for node, key in seen:
        prefix = paths.get(id(node), "")
        dups.append(f"{prefix}.{key}" if prefix else key)
    return value, dups


def yaml_duplicates(body: bytes | str) -> list[str]:
    """Paths of keys a YAML document repeats (the YAML loader keeps the last one silently)."""
    # The bounded composer: PyYAML's own recursed past Python's stack on a deeply nested body (a 500),
    # took a minute on a few hundred KiB, and would walk an alias bomb.
    root = compose_yaml(body)
    out: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = f"{path}.{key}" if path else key
                if key in seen and child not in out:
                    out.append(child)
                seen.add(key)
                walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{path}[{i}]")

    if root is not None:
        walk(root, "")
    return out
