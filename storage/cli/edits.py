"""Pure object edits behind apply, label and annotate."""
from __future__ import annotations

import copy
import re
from typing import Any

# Fields the server owns: a manifest never overrides them on apply.
SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp", "managedFields", "selfLink")

_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


class EditError(ValueError):
    pass


def merge(base: Any, overlay: Any) -> Any:
    """``overlay`` merged into ``base``: maps recursively, anything else (lists included) replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        out = dict(base)
        for key, value in overlay.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(overlay)


def applied(existing: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """The object ``apply`` writes: what the manifest sets merged over what exists.

    Status and server-set metadata stay as stored, and the stored
    resourceVersion is kept so the update fails with Conflict if someone
    wrote in between.
    """
    wanted = {k: v for k, v in manifest.items() if k != "status"}
    meta = {k: v for k, v in (wanted.get("metadata") or {}).items() if k not in SERVER_METADATA}
    wanted["metadata"] = meta
    out = merge(existing, wanted)
    # The stored apiVersion is the served form of the same kind; keep it so a legacy manifest compares equal.
    if "apiVersion" in existing:
        out["apiVersion"] = existing["apiVersion"]
    return out


def same_object(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return _comparable(a) == _comparable(b)


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "status")}
    return out


def parse_key_values(args: list[str], what: str) -> tuple[dict[str, str], list[str]]:
    """``k=v`` to set and ``k-`` to remove, as ``kubectl label`` takes them."""
    sets: dict[str, str] = {}
    removes: list[str] = []
    for arg in args:
        if "=" in arg:
            key, _, value = arg.partition("=")
            _check_key(key, what)
            if what == "label" and value and not re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", value):
                raise EditError(f'invalid label value: "{arg}": a valid label must be an empty string or consist of alphanumeric characters, \'-\', \'_\' or \'.\', and must start and end with an alphanumeric character')
            if key in sets:
                raise EditError(f"{key} is specified twice")
            sets[key] = value
        elif arg.endswith("-"):
            key = arg[:-1]
            _check_key(key, what)
            removes.append(key)
        else:
            raise EditError(f'invalid {what} spec: "{arg}": expected KEY=VALUE or KEY-')
    for key in removes:
        if key in sets:
            raise EditError(f"can not both modify and remove the {what} {key} in the same command")
    return sets, removes


def _check_key(key: str, what: str) -> None:
    name = key.rpartition("/")[2]
    if not key or not _KEY.match(key) or len(name) > 63:
        raise EditError(f'invalid {what} key: "{key}": must be an optional DNS prefix and "/", then a name of at most 63 alphanumeric characters, \'-\', \'_\' or \'.\'')


def edit_map(
    current: dict[str, str] | None, sets: dict[str, str], removes: list[str], overwrite: bool, what: str
) -> tuple[dict[str, str], bool]:
    """The new map and whether it changed; refuses to change an existing value without ``overwrite``."""
    out = dict(current or {})
    for key, value in sets.items():
        if key in out and out[key] != value and not overwrite:
            raise EditError(f"'{key}' already has a value ({out[key]}), and --overwrite is false")
        out[key] = value
    for key in removes:
        out.pop(key, None)
    return out, out != (current or {})
