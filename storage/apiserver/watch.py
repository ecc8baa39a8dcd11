"""Watch streams: newline-delimited JSON events over one long HTTP response.

A pump thread blocks on the store's ``Watcher`` and hands events to the
event loop, so a watch costs one thread that sleeps, not a worker from the
request pool. Closing the stream (client gone, timeout, server stopping)
closes the watcher, which ends the thread.
"""
from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import anyio
import orjson
import structlog
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from storage.api.registry import ResourceInfo
from storage.apiserver.handlers import with_type
from storage.errors import StowageError
from storage.store.base import WatchEvent, Watcher

log = structlog.get_logger(__name__)

# How long a pump waits on the store before looking at its stop flag again.
_PUMP_POLL = 1.0
# Changes a filtered watch may skip before it tells the stream how far it has read (for bookmarks).
_SKIPPED_REPORT = 500
# The queue is empty (not an end of stream, which is None).
_DRAINED: Any = object()


@dataclass
class WatchFilter:
    name: str = ""
    label_matches: Callable[[dict[str, str]], bool] | None = None
    field_matches: Callable[[dict[str, Any]], bool] | None = None
    # What the authorizer lets this watcher see (None: everything it may list).
    visible: Callable[[dict[str, Any]], bool] | None = None

    @property
    def selective(self) -> bool:
        return bool(self.name or self.label_matches or self.field_matches or self.visible)

    def matches(self, obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if self.name and meta.get("name") != self.name:
            return False
        if self.label_matches is not None and not self.label_matches(meta.get("labels") or {}):
            return False
        if self.field_matches is not None and not self.field_matches(obj):
            return False
        if self.visible is not None and not self.visible(obj):
            return False
        return True


def encode_json(value: Any) -> bytes:
    """orjson, or the standard encoder for what orjson refuses.

    orjson stops at 255 levels of nesting; objects stored before the nesting
    limit existed (or lists wrapping near-limit objects) must still be
    served, or one deep object breaks every LIST of its kind.
    """
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def line(event_type: str, obj: dict[str, Any]) -> bytes:
    return encode_json({"type": event_type, "object": obj}) + b"\n"


class WatchRegistry:
    """Every open watch, so a stopping server can end them instead of waiting on them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[Watcher] = set()
        self.stopping = threading.Event()

    def add(self, watcher: Watcher) -> None:
        with self._lock:
            self._open.add(watcher)
        if self.stopping.is_set():
            watcher.close()

    def discard(self, watcher: Watcher) -> None:
        with self._lock:
            self._open.discard(watcher)

    def close_all(self) -> None:
        self.stopping.set()
        with self._lock:
            watchers = list(self._open)
        for w in watchers:
            w.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)


async def stream_events(
    info: ResourceInfo,
    watcher: Watcher,
    initial: list[dict[str, Any]],
    revision: int,
    flt: WatchFilter,
    registry: WatchRegistry,
    timeout: float | None,
    bookmark_interval: float | None,
    *,
    knows_all: bool,
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    initial_events_end: bool = False,
    selected_at_start: set[tuple[str, str]] | None = None,
) -> AsyncIterator[bytes]:
    """``knows_all``: the stream began with the full list, so which objects the client has seen is known.

    ``selected_at_start`` (a selective watch resumed from a resourceVersion): the keys of the objects
    the filter selected at that resourceVersion, read from the store's kept versions. Kubernetes
    decides each event of such a watch by the object's previous state: one that stops matching is
    DELETED, one that starts is ADDED (W1). The store's events carry only the new state; with that
    reading, the stream knows every object's previous state, as it does after an initial list.

    ``transform`` changes how each object is sent (a Table row, metadata only); bookmarks and errors stay.

    The pump thread filters and encodes, so the event loop only sees the
    lines this client gets: with many node agents watching one server, most
    changes concern one agent, and the loop would otherwise wake for each
    change once per agent. Events from a shared watcher are encoded once for
    all the streams that send them unchanged.
    """
    out = transform or (lambda obj: obj)
    loop = asyncio.get_running_loop()
    # (revision, line): a line to send; int: the revision the stream has reached without a line for it.
    queue: asyncio.Queue[tuple[int, bytes] | int | BaseException | None] = asyncio.Queue()
    done = threading.Event()
    # Objects that matched the filter: a change that makes one stop matching is a DELETED to this watcher.
    visible: set[tuple[str, str]] = set(selected_at_start or ())
    # Whether the client's view is known, so a matching change to an object it lacks is its ADDED.
    knows_view = knows_all or selected_at_start is not None

    def deliver(item: tuple[int, bytes] | int | BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is gone: nobody is listening any more
            done.set()

    def selected(event: WatchEvent) -> str | None:
        """The event type this watcher is sent, or None when the change is not for it."""
        if not flt.selective:
            return event.type
        key = watch_key(event.object)
        if event.type != "DELETED" and flt.matches(event.object):
            first_sight = knows_view and key not in visible and event.type == "MODIFIED"
            visible.add(key)
            return "ADDED" if first_sight else event.type
        if key in visible:
            visible.discard(key)
            return "DELETED"
        if event.type == "DELETED" and flt.matches(event.object):
            return "DELETED"
        return None

    def encoded(event_type: str, event: WatchEvent) -> bytes:
        if transform is not None:
            return line(event_type, transform(with_type(info, event.object)))
        key = (event_type, info.api_version, info.kind)
        cached = event.encoded.get(key)
        if cached is None:
            cached = event.encoded[key] = line(event_type, with_type(info, event.object))
        return cached

    def pump() -> None:
        # A bookmark may only name a revision whose lines were all sent; skipped changes are reported
        # through the same ordered queue, when the watcher goes quiet or after many of them.
        skipped_to = 0
        skipped = 0
        try:
            while not done.is_set() and not registry.stopping.is_set():
                event = watcher.get(timeout=_PUMP_POLL)
                if event is None:
                    if skipped:
                        deliver(skipped_to)
                        skipped = 0
                    continue
                event_type = selected(event)
                if event_type is None:
                    skipped_to, skipped = event.revision, skipped + 1
                    if skipped >= _SKIPPED_REPORT:
                        deliver(skipped_to)
                        skipped = 0
                    continue
                skipped = 0
                deliver((event.revision, encoded(event_type, event)))
        except BaseException as e:  # handed to the stream, which reports it as an ERROR event
            deliver(e)
        finally:
            deliver(None)

    registry.add(watcher)
    thread = threading.Thread(target=pump, name=f"watch-{info.plural}", daemon=True)
    try:
        for obj in initial:
            if flt.selective:
                visible.add(watch_key(obj))
            yield line("ADDED", out(with_type(info, obj)))
        if initial_events_end:
            yield line("BOOKMARK", {"kind": info.kind, "apiVersion": info.api_version, "metadata": {
                "resourceVersion": str(revision), "annotations": {"k8s.io/initial-events-end": "true"}}})
        # Started only now: ``visible`` and a Table's first row belong to the initial events.
        thread.start()
        deadline = loop.time() + timeout if timeout else None
        next_bookmark = loop.time() + bookmark_interval if bookmark_interval else None
        while True:
            now = loop.time()
            waits = [t - now for t in (deadline, next_bookmark) if t is not None]
            wait = max(0.0, min(waits)) if waits else None
            try:
                item = await asyncio.wait_for(queue.get(), wait)
            except (asyncio.TimeoutError, TimeoutError):
                if deadline is not None and loop.time() >= deadline:
                    return
                if next_bookmark is not None:
                    next_bookmark = loop.time() + (bookmark_interval or 0)
                    yield line("BOOKMARK", {"kind": info.kind, "apiVersion": info.api_version,
                                            "metadata": {"resourceVersion": str(revision)}})
                continue
            # Whatever else is ready goes out in the same write: one TLS record and one send for a burst.
            batch: list[bytes] = []
            while isinstance(item, (tuple, int)):
                if isinstance(item, tuple):
                    revision, data = item
                    batch.append(data)
                else:
                    revision = max(revision, item)
                item = queue.get_nowait() if not queue.empty() else _DRAINED
            if batch:
                yield b"".join(batch)
            if item is None:
                return
            if isinstance(item, BaseException):
                status = item.to_status() if isinstance(item, StowageError) else StowageError(str(item)).to_status()
                log.warning("watch failed", resource=info.plural, error=str(item))
                yield line("ERROR", status)
                return
    finally:
        done.set()
        registry.discard(watcher)
        watcher.close()


def watch_key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


class WatchResponse(StreamingResponse):
    """A streaming response that notices a client hanging up even while no event is due.

    Starlette's own one only notices on the next write under ASGI 2.4, which
    for a quiet watch may be never; the stream would hold its thread forever.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tg:

            async def run_stream() -> None:
                try:
                    await self.stream_response(send)
                except OSError:
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(run_stream)
            await self.listen_for_disconnect(receive)
            tg.cancel_scope.cancel()
        aclose = getattr(self.body_iterator, "aclose", None)
        if aclose is not None:
            await aclose()
