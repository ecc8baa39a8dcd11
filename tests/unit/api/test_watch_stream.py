"""The API server's watch stream on its own: filtering off the event loop, shared encodings, bookmarks, batches.

A scripted ``Watcher`` stands in for the store so each test decides exactly
which changes arrive and when; the store's own watch is covered by the
store contract suite.
"""
from __future__ import annotations

import asyncio
import queue
from typing import Any

import orjson

from storage.api.registry import by_plural
from storage.api.selectors import parse_field_selector
from storage.apiserver.watch import WatchFilter, WatchRegistry, stream_events
from storage.store.base import Watcher, WatchEvent

PODS = by_plural("pods")


class ScriptedWatcher(Watcher):
    def __init__(self) -> None:
        self.events: queue.Queue[WatchEvent | None] = queue.Queue()
        self.closed = False

    def get(self, timeout: float | None = None) -> WatchEvent | None:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.closed = True
        self.events.put(None)


def pod_event(revision: int, name: str, node: str, type_: str = "ADDED") -> WatchEvent:
    obj: dict[str, Any] = {"metadata": {"name": name, "namespace": "default", "resourceVersion": str(revision)},
                           "spec": {"nodeName": node}}
    return WatchEvent(type=type_, resource="pods", object=obj, revision=revision)  # type: ignore[arg-type]


async def read_lines(stream: Any, count: int, timeout: float = 30.0) -> tuple[list[dict[str, Any]], int]:
    """``count`` events from the stream, and in how many chunks (writes) they came."""
    events: list[dict[str, Any]] = []
    chunks = 0
    while len(events) < count:
        chunk = await asyncio.wait_for(stream.__anext__(), timeout)
        chunks += 1
        events.extend(orjson.loads(raw) for raw in chunk.splitlines() if raw.strip())
    return events, chunks


def open_stream(watcher: Watcher, flt: WatchFilter, *, bookmarks: float | None = None) -> Any:
    assert PODS is not None
    return stream_events(PODS, watcher, [], 0, flt, WatchRegistry(), None, bookmarks, knows_all=False)


def test_a_field_selector_sends_only_this_nodes_pods_and_deletes_a_pod_that_moves_away() -> None:
    """PF56: filtered in the pump thread, with the same answers as before (a pod leaving the selector is a DELETED)."""
    async def run() -> None:
        watcher = ScriptedWatcher()
        stream = open_stream(watcher, WatchFilter(field_matches=parse_field_selector("spec.nodeName=a")))
        for event in (pod_event(1, "p1", "b"), pod_event(2, "p2", "a"), pod_event(3, "p3", "b"),
                      pod_event(4, "p2", "c", "MODIFIED"), pod_event(5, "p4", "a")):
            watcher.events.put(event)
        events, _ = await read_lines(stream, 3)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("ADDED", "p2"), ("DELETED", "p2"), ("ADDED", "p4")]
        assert all(e["object"]["kind"] == "Pod" and e["object"]["apiVersion"] == "v1" for e in events)
        await stream.aclose()
        assert watcher.closed

    asyncio.run(run())


def test_streams_sending_an_event_unchanged_share_one_encoding() -> None:
    """PF55."""
    async def run() -> None:
        shared = pod_event(1, "p1", "a")
        first, second = ScriptedWatcher(), ScriptedWatcher()
        streams = [open_stream(w, WatchFilter()) for w in (first, second)]
        for w in (first, second):
            w.events.put(shared)
        chunks = [await asyncio.wait_for(s.__anext__(), 30) for s in streams]
        assert chunks[0] == chunks[1]
        assert list(shared.encoded.values()) == [chunks[0]], "encoded once, kept on the event for every stream"
        for s in streams:
            await s.aclose()

    asyncio.run(run())


def test_a_burst_goes_out_in_fewer_writes_than_events() -> None:
    """PF57."""
    async def run() -> None:
        watcher = ScriptedWatcher()
        for i in range(1, 201):
            watcher.events.put(pod_event(i, f"p{i}", "a"))
        stream = open_stream(watcher, WatchFilter())
        events, chunks = await read_lines(stream, 200)
        assert [e["object"]["metadata"]["name"] for e in events] == [f"p{i}" for i in range(1, 201)]
        assert chunks < 200
        await stream.aclose()

    asyncio.run(run())


def test_a_bookmark_after_skipped_changes_names_their_revision_and_never_runs_ahead() -> None:
    """PF56: a bookmark names a revision the client may resume from without missing an event."""
    async def run() -> None:
        watcher = ScriptedWatcher()
        stream = open_stream(watcher, WatchFilter(field_matches=parse_field_selector("spec.nodeName=a")),
                             bookmarks=0.2)
        watcher.events.put(pod_event(1, "mine", "a"))
        for i in range(2, 12):
            watcher.events.put(pod_event(i, f"other{i}", "b"))
        seen: list[tuple[str, int]] = []
        while not seen or seen[-1] != ("BOOKMARK", 11):
            events, _ = await read_lines(stream, 1)
            seen.extend((e["type"], int(e["object"]["metadata"]["resourceVersion"])) for e in events)
            assert len(seen) < 100, f"no bookmark at revision 11 after the skipped changes: {seen[:10]}"
        assert seen[0] == ("ADDED", 1)
        bookmarks = [rv for kind, rv in seen if kind == "BOOKMARK"]
        assert bookmarks == sorted(bookmarks) and all(rv >= 1 for rv in bookmarks)
        await stream.aclose()

    asyncio.run(run())
