"""Watch history bounded in bytes, not only in events (issue 8, item 7).

Large objects rewritten over and over used to keep 100,000 events of
history whatever their size; now the history keeps at most a byte budget,
and a watch from before it gets 410 Gone, as from any compacted revision.
"""
from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import create_engine, text

from storage.apiserver.server import start_in_thread
from storage.errors import Gone
from storage.store.sql import SqlStore

BUDGET = 64 * 1024
BODY = "x" * 8192


def _history_bytes(store_url: str) -> int:
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            return sum(len(b.encode()) for (b,) in conn.execute(text("SELECT body FROM stowage_events")))
    finally:
        engine.dispose()


def test_history_stays_within_the_byte_budget_and_older_watches_are_gone(store_url: str) -> None:
    # The event-count limit is far away: only the byte budget can compact here.
    store = SqlStore(store_url, keep_event_bytes=BUDGET, keep_events=100_000)
    try:
        first = store.create("configmaps", {"metadata": {"name": "big", "namespace": "default"}, "data": {"v": BODY}})
        obj = first
        for i in range(40):  # 40 x 8 KiB = 320 KiB of history written
            obj = store.update("configmaps", {**obj, "data": {"v": BODY, "i": str(i)}})
        assert _history_bytes(store_url) <= BUDGET + 2 * len(BODY)
        with pytest.raises(Gone):
            store.watch("configmaps", since=int(first["metadata"]["resourceVersion"]))
        # The newest history is still watchable.
        recent = int(obj["metadata"]["resourceVersion"]) - 2
        with store.watch("configmaps", since=recent) as watcher:
            event = watcher.get(timeout=30)
            assert event is not None and event.revision == recent + 1
    finally:
        store.close()


def test_api_watch_past_the_byte_budget_gets_410(tmp_path: Path) -> None:
    data_dir = tmp_path / "api"
    data_dir.mkdir()
    store = SqlStore(f"sqlite:///{data_dir / 'stowage.db'}", keep_event_bytes=BUDGET)
    server = start_in_thread(store, data_dir=data_dir)
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=60, verify=server.verify()) as http:
            url = "/api/v1/namespaces/default/configmaps"
            created = http.post(url, json={"metadata": {"name": "big"}, "data": {"v": BODY}})
            assert created.status_code == 201, created.text
            obj = created.json()
            old_rv = obj["metadata"]["resourceVersion"]
            for i in range(40):
                obj["data"]["i"] = str(i)
                response = http.put(f"{url}/big", json=obj)
                assert response.status_code == 200, response.text
                obj = response.json()
            watch = http.get(url, params={"watch": "true", "resourceVersion": old_rv, "timeoutSeconds": "5"})
            events = [orjson.loads(line) for line in watch.text.splitlines() if line]
            assert len(events) == 1 and events[0]["type"] == "ERROR"
            assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
    finally:
        server.stop()
        store.close()
