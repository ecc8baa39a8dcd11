"""``events.k8s.io/v1``'s Event: the form the events.k8s.io path shows (SEMANTICS EVT1).

The OpenAPI documents and the unknown-field check read this model; objects are stored, defaulted and
validated as ``v1`` Events (``storage.api.models.core``) and converted to and from this form by
``storage.api.events_v1``.
"""
from __future__ import annotations

from storage.api.modelbase import WireModel
from storage.api.models.core import EventSource
from storage.api.models.meta import ObjectReference, Resource


class EventSeries(WireModel):
    count: int | None = None
    last_observed_time: str | None = None


class Event(Resource):
    event_time: str | None = None
    series: EventSeries | None = None
    reporting_controller: str | None = None
    reporting_instance: str | None = None
    action: str | None = None
    reason: str | None = None
    regarding: ObjectReference | None = None
    related: ObjectReference | None = None
    note: str | None = None
    type: str | None = None
    deprecated_source: EventSource | None = None
    deprecated_first_timestamp: str | None = None
    deprecated_last_timestamp: str | None = None
    deprecated_count: int | None = None


__all__ = ["Event", "EventSeries"]
