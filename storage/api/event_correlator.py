"""Kubernetes' event correlation (client-go ``tools/record/events_cache.go``), without I/O.

Every program that records v1 Events (controllers, node agents) passes each new
event through one ``EventCorrelator`` before writing it:

* the spam filter: a token bucket per (source, involved object), 25 events at
  once and one more every 5 minutes; events beyond it are dropped;
* the aggregator: once 10 events of the same (source, object, type, reason) with
  different messages arrive within 10 minutes, later ones become one event with
  the message ``(combined from similar events): <latest message>``;
* the logger (de-duplication): an event equal to one already written (same
  source, object, type, reason and message) is written as an update of that one,
  ``count`` + 1 and a new ``lastTimestamp``, never as a new object.

The caller writes what ``correlate`` returns (create, or update of the named
event) and then reports the written object with ``observe`` so the next repeat
finds it.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

Obj = dict[str, Any]

COMBINED_PREFIX = "(combined from similar events): "
MAX_SIMILAR_EVENTS = 10  # client-go defaultAggregateMaxEvents
MAX_INTERVAL_SECONDS = 600  # defaultAggregateIntervalInSeconds
SPAM_BURST = 25  # defaultSpamBurst
SPAM_QPS = 1.0 / 300.0  # defaultSpamQPS
CACHE_SIZE = 4096  # maxLruCacheEntries


def _source_object(event: Obj) -> tuple[str, ...]:
    src = event.get("source") or {}
    ref = event.get("involvedObject") or {}
    return (str(src.get("component", "")), str(src.get("host", "")), str(ref.get("kind", "")),
            str(ref.get("namespace", "")), str(ref.get("name", "")), str(ref.get("uid", "")),
            str(ref.get("apiVersion", "")))


def aggregate_key(event: Obj) -> tuple[str, ...]:
    """What similar events share: everything but the message."""
    return (*_source_object(event), str(event.get("type", "")), str(event.get("reason", "")),
            str(event.get("reportingComponent", "")), str(event.get("reportingInstance", "")))


def event_key(event: Obj) -> tuple[str, ...]:
    """What makes an event a repeat of another: all of it but the times, the container it is about included
    (client-go's getEventKey has the involved object's fieldPath)."""
    return (*aggregate_key(event), str((event.get("involvedObject") or {}).get("fieldPath", "")),
            str(event.get("message", "")))


@dataclass
class Correlation:
    event: Obj  # what to write
    existing: str | None = None  # name of the event to update (count, lastTimestamp, message); None: create
    skip: bool = False  # dropped by the spam filter
    key: tuple[str, ...] = ()


@dataclass
class _Logged:
    name: str
    count: int
    first_timestamp: str


@dataclass
class _Similar:
    messages: set[str] = field(default_factory=set)
    last: float = 0.0


class _TokenBucket:
    def __init__(self, burst: int, qps: float, now: float) -> None:
        self.tokens = float(burst)
        self.burst = burst
        self.qps = qps
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.qps)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class _Lru(OrderedDict):  # type: ignore[type-arg]
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get_fresh(self, key: Any) -> Any:
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class EventCorrelator:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_similar: int = MAX_SIMILAR_EVENTS,
                 max_interval: float = MAX_INTERVAL_SECONDS, spam_burst: int = SPAM_BURST, spam_qps: float = SPAM_QPS,
                 cache_size: int = CACHE_SIZE) -> None:
        self.clock = clock
        self.max_similar = max_similar
        self.max_interval = max_interval
        self.spam_burst = spam_burst
        self.spam_qps = spam_qps
        self._lock = threading.Lock()
        self._similar: _Lru = _Lru(cache_size)
        self._logged: _Lru = _Lru(cache_size)
        self._buckets: _Lru = _Lru(cache_size)

    def correlate(self, event: Obj) -> Correlation:
        """``event`` is a new v1 Event (count 1, first = last timestamp)."""
        now = self.clock()
        with self._lock:
            source_object = _source_object(event)
            bucket = self._buckets.get_fresh(source_object)
            if bucket is None:
                bucket = _TokenBucket(self.spam_burst, self.spam_qps, now)
                self._buckets.put(source_object, bucket)
            if not bucket.take(now):
                return Correlation(event, skip=True)
            event, key = self._aggregate(event, now)
            logged: _Logged | None = self._logged.get_fresh(key)
            if logged is None:
                return Correlation(event, key=key)
            repeated = {**event, "metadata": {**(event.get("metadata") or {}), "name": logged.name}}
            repeated["metadata"].pop("generateName", None)
            repeated["count"] = logged.count + 1
            repeated["firstTimestamp"] = logged.first_timestamp
            return Correlation(repeated, existing=logged.name, key=key)

    def _aggregate(self, event: Obj, now: float) -> tuple[Obj, tuple[str, ...]]:
        akey = aggregate_key(event)
        similar: _Similar | None = self._similar.get_fresh(akey)
        if similar is None or now - similar.last > self.max_interval:
            similar = _Similar()
            self._similar.put(akey, similar)
        similar.last = now
        similar.messages.add(str(event.get("message", "")))
        if len(similar.messages) < self.max_similar:
            return event, event_key(event)
        combined = {**event, "message": COMBINED_PREFIX + str(event.get("message", ""))}
        return combined, akey

    def observe(self, key: tuple[str, ...], written: Obj) -> None:
        """Remember an event as written (created or updated) so a repeat updates it."""
        meta = written.get("metadata") or {}
        with self._lock:
            self._logged.put(key, _Logged(str(meta.get("name", "")), int(written.get("count") or 1),
                                          str(written.get("firstTimestamp") or written.get("lastTimestamp") or "")))

    def forget(self, key: tuple[str, ...]) -> None:
        """The written event is gone (deleted, expired): the next repeat creates a new one."""
        with self._lock:
            self._logged.pop(key, None)


def write_event(correlator: EventCorrelator, event: Obj, *, create: Callable[[Obj], Obj],
                get: Callable[[str, str], Obj], update: Callable[[Obj], Obj]) -> Obj | None:
    """Correlate a new event and write it: an update of the event it repeats (``count`` from
    the stored one, so several writers add up), else a new object. None when dropped or lost
    to conflicts. ``get(namespace, name)``; NotFound and Conflict are storage.errors'."""
    from storage.errors import Conflict, NotFound

    result = correlator.correlate(event)
    if result.skip:
        return None
    namespace = (event.get("metadata") or {}).get("namespace") or "default"
    if result.existing is not None:
        for _attempt in range(5):
            try:
                current = get(namespace, result.existing)
            except NotFound:
                break
            current = {**current, "count": int(current.get("count") or 1) + 1,
                       "lastTimestamp": result.event.get("lastTimestamp"), "message": result.event.get("message"),
                       "involvedObject": result.event.get("involvedObject")}
            try:
                written = update(current)
            except Conflict:
                continue
            except NotFound:
                break
            correlator.observe(result.key, written)
            return written
        else:
            return None
        correlator.forget(result.key)  # gone (deleted or expired): write it anew
    fresh = {**result.event, "count": 1, "firstTimestamp": event.get("firstTimestamp"),
             "metadata": {**(event.get("metadata") or {})}}
    if not fresh["metadata"].get("name"):
        fresh["metadata"].pop("generateName", None)
        ref_name = (event.get("involvedObject") or {}).get("name") or "event"
        fresh["metadata"]["name"] = f"{ref_name}.{time.time_ns():x}"
    written = create(fresh)
    correlator.observe(result.key, written)
    return written
