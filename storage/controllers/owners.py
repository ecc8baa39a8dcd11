"""ownerReferences and label selectors as the workload controllers and the garbage collector use them."""
from __future__ import annotations

from typing import Any

from storage.api.selectors import selector_matches as api_selector_matches

Obj = dict[str, Any]


def selector_matches(selector: Obj | None, labels: dict[str, str] | None) -> bool:
    """A workload's LabelSelector against labels. Unlike a claim's, a missing selector selects nothing."""
    if selector is None:
        return False
    return api_selector_matches(selector, labels or {})


def publish(cache: Any, resource: str, obj: Obj) -> Obj:
    """Show what we just wrote to the shared cache at once, so the next pass does not act on stale state."""
    write_through = getattr(cache, "write_through", None)
    if write_through is not None:
        write_through(resource, obj)
    return obj


def labels_of(obj: Obj) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def owner_refs(obj: Obj) -> list[Obj]:
    return list((obj.get("metadata") or {}).get("ownerReferences") or [])


def controller_ref(obj: Obj) -> Obj | None:
    for ref in owner_refs(obj):
        if ref.get("controller"):
            return ref
    return None


def is_controlled_by(obj: Obj, owner: Obj) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == (owner.get("metadata") or {}).get("uid")


def controller_key(obj: Obj, kind: str) -> list[str]:
    """The ``namespace/name`` key of the object's controller when it is of ``kind``."""
    ref = controller_ref(obj)
    if ref is None or ref.get("kind") != kind:
        return []
    namespace = (obj.get("metadata") or {}).get("namespace") or ""
    return [f"{namespace}/{ref['name']}" if namespace else str(ref["name"])]


def make_controller_ref(owner: Obj, api_version: str, kind: str) -> Obj:
    meta = owner.get("metadata") or {}
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": meta["name"],
        "uid": meta.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }
