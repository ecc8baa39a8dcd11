"""Fixtures of the HA tests: `stowage serve` replicas on a fresh PostgreSQL schema (SEMANTICS HA)."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ha_support import ReplicaSet, drop_pg_schema, fresh_pg_schema, serve_env


@pytest.fixture
def replica_set(postgres_url: str, tmp_path: Path) -> Iterator[ReplicaSet]:
    schema, url = fresh_pg_schema(postgres_url)
    (tmp_path / "hostpath").mkdir()
    cluster = ReplicaSet(tmp_path, url, serve_env(tmp_path / "home", STOWAGE_HOSTPATH_ROOT=str(tmp_path / "hostpath")))
    try:
        yield cluster
    finally:
        cluster.stop_all()
        drop_pg_schema(postgres_url, schema)
