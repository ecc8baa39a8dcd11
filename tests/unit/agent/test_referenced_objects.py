"""The agent's ConfigMap and Secret cache (storage/agent/object_cache.py): an object is read from the
API once while the node's pods use it, watch events keep it current, and nothing is served that the
node can no longer see changes of."""
from __future__ import annotations

from typing import Any

import pytest

from storage.agent.object_cache import ReferencedObjects
from storage.errors import NotFound

Obj = dict[str, Any]
KEY = ("configmaps", "default", "cfg")


def cm(rv: int, value: str, name: str = "cfg") -> Obj:
    return {"metadata": {"name": name, "namespace": "default", "resourceVersion": str(rv)}, "data": {"k": value}}


class Api:
    """Answers reads with ``current`` and counts them."""

    def __init__(self, current: Obj | None) -> None:
        self.current = current
        self.reads = 0

    def read(self) -> Obj:
        self.reads += 1
        if self.current is None:
            raise NotFound('configmaps "cfg" not found')
        return self.current


def test_read_once_while_pods_use_it_then_changes_come_from_the_watch() -> None:
    cache, api = ReferencedObjects(), Api(cm(5, "one"))
    cache.pod_seen("a", [KEY])
    cache.pod_seen("b", [KEY])
    assert cache.get(*KEY, api.read)["data"]["k"] == "one"
    assert cache.get(*KEY, api.read)["data"]["k"] == "one"
    assert api.reads == 1
    cache.observed("configmaps", "MODIFIED", cm(7, "two"))
    assert cache.get(*KEY, api.read)["data"]["k"] == "two"
    # A late event older than what is kept changes nothing.
    cache.observed("configmaps", "MODIFIED", cm(6, "stale"))
    assert cache.get(*KEY, api.read)["data"]["k"] == "two"
    assert api.reads == 1


def test_an_object_no_pod_uses_is_never_kept() -> None:
    cache, api = ReferencedObjects(), Api(cm(5, "one"))
    assert cache.get(*KEY, api.read)["data"]["k"] == "one"
    cache.observed("configmaps", "ADDED", cm(5, "one"))
    assert cache.cached(*KEY) is None
    cache.get(*KEY, api.read)
    assert api.reads == 2


def test_dropped_when_the_last_pod_using_it_goes() -> None:
    # Once no pod of the node references it, the node is not shown its changes any more.
    cache, api = ReferencedObjects(), Api(cm(5, "one"))
    cache.pod_seen("a", [KEY])
    cache.pod_seen("b", [KEY, ("secrets", "default", "s")])
    cache.get(*KEY, api.read)
    cache.pod_gone("a")
    assert cache.cached(*KEY) is not None
    cache.pod_gone("b")
    assert cache.cached(*KEY) is None
    api.current = cm(9, "changed unseen")
    cache.pod_seen("c", [KEY])
    assert cache.get(*KEY, api.read)["data"]["k"] == "changed unseen"
    assert api.reads == 2


def test_a_deletion_is_not_undone_by_a_read_that_began_before_it() -> None:
    cache, api = ReferencedObjects(), Api(cm(5, "one"))
    cache.pod_seen("a", [KEY])
    cache.get(*KEY, api.read)
    cache.observed("configmaps", "DELETED", cm(8, "one"))
    assert cache.cached(*KEY) is None

    # A read sent before the deletion answers after it: its copy is handed back but not kept.
    def slow_read() -> Obj:
        return cm(5, "one")
    assert cache.get(*KEY, slow_read)["metadata"]["resourceVersion"] == "5"
    assert cache.cached(*KEY) is None
    api.current = None
    with pytest.raises(NotFound):
        cache.get(*KEY, api.read)
    # Created again: newer than the deletion, so kept.
    cache.observed("configmaps", "ADDED", cm(12, "again"))
    assert cache.get(*KEY, api.read)["data"]["k"] == "again"


def test_a_relist_replaces_what_is_kept() -> None:
    other = ("configmaps", "default", "other")
    cache = ReferencedObjects()
    cache.pods_listed({"a": [KEY, other]})
    cache.get(*KEY, Api(cm(5, "one")).read)
    cache.get(*other, Api(cm(6, "x", name="other")).read)
    # The watch was down; "other" was deleted meanwhile, and "cfg" changed.
    cache.listed("configmaps", [cm(20, "relisted")])
    assert (cache.cached(*KEY) or {}).get("data") == {"k": "relisted"}
    assert cache.cached(*other) is None
    # A relist of the pods that drops a pod drops what only it used.
    cache.pods_listed({})
    assert cache.cached(*KEY) is None
