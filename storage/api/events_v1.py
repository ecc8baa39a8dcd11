"""``events.k8s.io/v1`` Events to and from the stored ``v1`` form (SEMANTICS EVT1).

Kubernetes keeps one kind of Event and serves it in two groups; the newer one renames what the core form
calls by its first names (``involvedObject`` is ``regarding``, ``message`` is ``note``) and marks the
fields of the old event recorder as deprecated. Both directions are a renaming: nothing is lost.
"""
from __future__ import annotations

from typing import Any

__all__ = ["V1", "from_core", "to_core"]

V1 = "events.k8s.io/v1"

Obj = dict[str, Any]

# (events.k8s.io/v1 name, v1 name) of the fields the two forms name differently.
_RENAMED = (
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
)
_TO_CORE = dict(_RENAMED)

# The order Go writes events.k8s.io/v1's fields in, and the ones it writes even when empty: a struct that
# is not a pointer ({}) and a zero time (null).
_V1_ORDER = ("apiVersion", "kind", "metadata", "eventTime", "series", "reportingController", "reportingInstance",
             "action", "reason", "regarding", "related", "note", "type", "deprecatedSource",
             "deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount")
_ALWAYS: dict[str, Any] = {"eventTime": None, "regarding": {}, "deprecatedSource": {},
                           "deprecatedFirstTimestamp": None, "deprecatedLastTimestamp": None}


def to_core(obj: Obj) -> Obj:
    """An events.k8s.io/v1 Event in the stored v1 form. Never mutates ``obj``. Nulls, and the empty forms
    ``from_core`` writes for Go's zero values, are dropped: Go reads them as the zero value, and a patch of a
    read copy must not seem to set ``source`` to {}."""
    out: Obj = {}
    for key, value in obj.items():
        if value is None or (key in _ALWAYS and value == {}):
            continue
        out[_TO_CORE.get(key, key)] = value
    out["apiVersion"] = "v1"
    return out


def from_core(obj: Obj) -> Obj:
    """A stored v1 Event as events.k8s.io/v1 shows it. Never mutates ``obj``."""
    renamed: Obj = dict(_ALWAYS)
    from_v1 = {core: new for new, core in _RENAMED}
    for key, value in obj.items():
        renamed[from_v1.get(key, key)] = value
    renamed["apiVersion"] = V1
    ordered = {key: renamed.pop(key) for key in _V1_ORDER if key in renamed}
    ordered.update(renamed)  # whatever else the stored object carries, after Go's fields
    return ordered
