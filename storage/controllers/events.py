"""An ``EventRecorder`` that writes v1 Event objects, as ``kubectl describe`` reads them.

Each event goes through client-go's correlation (``storage.api.event_correlator``):
repeats bump ``count`` and ``lastTimestamp`` of one Event instead of writing a new
one, similar events are combined, and a spam filter bounds the rate per object.
"""
from __future__ import annotations

from typing import Any, Literal

import structlog

from storage.api.event_correlator import EventCorrelator, write_event
from storage.api.registry import by_kind
from storage.api.timestamps import now as _now
from storage.errors import AlreadyExists, StowageError
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
    def __init__(self, store: Store, component: str = "persistentvolume-controller", host: str = "",
                 cache_size: int = 4096, correlator: EventCorrelator | None = None) -> None:
        self.store = store
        self.component = component
        self.host = host
        self.correlator = correlator or EventCorrelator(cache_size=cache_size)

    def record(self, obj: dict[str, Any], type: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        try:
            self._record(obj, type, reason, message)
        except StowageError as exc:  # an event is advisory: never fail the reconcile over it
            log.warning("event_write_failed", reason=reason, error=str(exc))

    def _record(self, obj: dict[str, Any], type: str, reason: str, message: str) -> None:
        ref = involved_object(obj)
        namespace = ref.get("namespace") or "default"
        now = _now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"namespace": namespace},
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
            write_event(self.correlator, event, create=lambda e: self.store.create("events", e),
                        get=lambda ns, name: self.store.get("events", ns, name),
                        update=lambda e: self.store.update("events", e))
        except AlreadyExists:
            return


def events_for(store: Store, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Events about ``obj`` (matched by uid), oldest first."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    items, _ = store.list("events", namespace)
    mine = [e for e in items if (e.get("involvedObject") or {}).get("uid") == meta.get("uid")]
    mine.sort(key=lambda e: (e.get("lastTimestamp") or "", e["metadata"]["name"]))
    return mine
