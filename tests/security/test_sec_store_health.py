"""Readiness checks of the store on both backends, and a write under a foreign lock that ends (503)
instead of hanging (issue 8, item 7)."""
from __future__ import annotations

import sqlite3
from typing import Any, Iterator

import pytest
from sqlalchemy import create_engine, text

from storage.store.sql import SqlStore, StoreUnavailable


@pytest.fixture
def quick_store(store_url: str) -> Iterator[SqlStore]:
    # A short busy timeout keeps the test short; the behaviour is the same at the default.
    store = SqlStore(store_url, busy_timeout=1.0)
    try:
        yield store
    finally:
        store.close()


class _ForeignWriteLock:
    """Another session holding the store's write lock: SQLite's file lock or PostgreSQL's counter row."""

    def __init__(self, store_url: str) -> None:
        self.store_url = store_url
        self.conn: Any = None
        self.engine: Any = None

    def __enter__(self) -> "_ForeignWriteLock":
        if self.store_url.startswith("sqlite"):
            self.conn = sqlite3.connect(self.store_url.split("///", 1)[1], isolation_level=None)
            self.conn.execute("BEGIN EXCLUSIVE")
        else:
            self.engine = create_engine(self.store_url)
            self.conn = self.engine.connect()
            self.conn.execute(text("SELECT 1 FROM stowage_meta WHERE id = 1 FOR UPDATE"))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.engine is None:
            self.conn.execute("ROLLBACK")
            self.conn.close()
        else:
            self.conn.rollback()
            self.conn.close()
            self.engine.dispose()


def test_health_reports_a_foreign_write_lock_and_writes_end_with_503(store_url: str, quick_store: SqlStore) -> None:
    assert quick_store.health() == [("store-integrity", None), ("store-read", None), ("store-write", None)]
    quick_store.create("configmaps", {"metadata": {"name": "a", "namespace": "default"}})
    with _ForeignWriteLock(store_url):
        checks = dict(quick_store.health(timeout=0.5))
        assert checks["store-read"] is None
        assert checks["store-write"] == "cannot write the database: the database is locked by another process"
        with pytest.raises(StoreUnavailable) as err:
            quick_store.create("configmaps", {"metadata": {"name": "b", "namespace": "default"}})
        assert err.value.code == 503 and err.value.delay >= 1
        assert quick_store.get("configmaps", "default", "a")["metadata"]["name"] == "a"  # reads go on
    assert dict(quick_store.health())["store-write"] is None
    quick_store.create("configmaps", {"metadata": {"name": "b", "namespace": "default"}})
