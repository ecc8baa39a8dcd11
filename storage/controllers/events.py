"""An ``EventRecorder`` that writes v1 Event objects, as ``kubectl describe`` reads them.

Repeats of the same reason and message on the same object bump ``count`` and
``lastTimestamp`` of one Event instead of writing a new one, like client-go's
event correlator.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Literal

import structlog

from storage.api.registry import by_kind
from storage.api.timestamps import now as _now
from storage.errors import AlreadyExists, Conflict, NotFound, StowageError
from storage.store.base import Store

log = structlog.get_logger(__name__)


def involved_object(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    kind = obj.get("kind") or ""
    api_version = obj.get("apiVersion") or ""
    if not api_version and kind:
        info = by_kind(kind)
        api_version = info.api_version if info else ""
    ref = {
        "kind": kind,
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "apiVersion": api_version,
        "resourceVersion": meta.get("resourceVersion", ""),
    }
    if meta.get("namespace"):
        ref["namespace"] = meta["namespace"]
    return ref


class StoreEventRecorder:
    def __init__(self, store: Store, component: str = "persistentvolume-controller", host: str = "", cache_size: int = 4096) -> None:
        self.store = store
        self.component = component
        self.host = host
        self._lock = threading.Lock()
        # (uid, type, reason, message) -> (namespace, event name)
        self._seen: OrderedDict[tuple[str, str, str, str], tuple[str, str]] = OrderedDict()
        self._cache_size = cache_size

    def record(self, obj: dict[str, Any], type: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        try:
            self._record(obj, type, reason, message)
        except StowageError as exc:  # an event is advisory: never fail the reconcile over it
            log.warning("event_write_failed", reason=reason, error=str(exc))

    def _record(self, obj: dict[str, Any], type: str, reason: str, message: str) -> None:
        ref = involved_object(obj)
        namespace = ref.get("namespace") or "default"
        key = (ref["uid"] or f"{namespace}/{ref['kind']}/{ref['name']}", type, reason, message)
        now = _now()
        with self._lock:
            known = self._seen.get(key)
        if known is not None:
            for _ in range(5):
                try:
                    event = self.store.get("events", known[0], known[1])
                except NotFound:
                    break
                event["count"] = int(event.get("count") or 1) + 1
                event["lastTimestamp"] = now
                event["involvedObject"] = ref
                try:
                    self.store.update("events", event)
                    return
                except Conflict:
                    continue
                except NotFound:
                    break
        name = f"{ref['name']}.{time.time_ns():x}"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": ref,
            "reason": reason,
            "message": message,
            "type": type,
            "source": {"component": self.component, **({"host": self.host} if self.host else {})},
            "reportingComponent": self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.store.create("events", event)
        except AlreadyExists:
            return
        with self._lock:
            self._seen[key] = (namespace, name)
            self._seen.move_to_end(key)
            while len(self._seen) > self._cache_size:
                self._seen.popitem(last=False)


def events_for(store: Store, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Events about ``obj`` (matched by uid), oldest first."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    items, _ = store.list("events", namespace)
    mine = [e for e in items if (e.get("involvedObject") or {}).get("uid") == meta.get("uid")]
    mine.sort(key=lambda e: (e.get("lastTimestamp") or "", e["metadata"]["name"]))
    return mine
