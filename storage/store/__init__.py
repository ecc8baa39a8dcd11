"""Persistent object storage: ``open_store`` picks the backend from a URL or a path."""
from __future__ import annotations

from pathlib import Path

from storage.store.base import Store, Watcher, WatchEvent

DEFAULT_DB_FILE = "stowage.db"

__all__ = ["Store", "Watcher", "WatchEvent", "open_store", "store_url"]


def store_url(url_or_path: str) -> str:
    """The SQLAlchemy URL for ``url_or_path``.

    ``postgresql://`` and ``postgresql+psycopg://`` select PostgreSQL (psycopg 3);
    ``sqlite:///file`` or a plain path select SQLite. A path naming an existing
    directory means the default database file inside that data directory.
    """
    if url_or_path.startswith(("postgresql+psycopg://", "sqlite://")):
        return url_or_path
    if url_or_path.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url_or_path.split("://", 1)[1]
    if "://" in url_or_path:
        scheme = url_or_path.split("://", 1)[0]
        raise ValueError(f"store: unsupported URL scheme {scheme!r}: use a file path, sqlite:///PATH or postgresql+psycopg://...")
    path = Path(url_or_path).expanduser()
    if path.is_dir():
        path = path / DEFAULT_DB_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


def open_store(url_or_path: str, **options: object) -> Store:
    from storage.store.sql import SqlStore

    return SqlStore(store_url(url_or_path), **options)  # type: ignore[arg-type]
