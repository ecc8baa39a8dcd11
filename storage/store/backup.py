"""``stowage backup`` and ``stowage restore`` for both backends.

SQLite: the online backup API (a consistent copy while the server keeps
writing). PostgreSQL: ``pg_dump``/``pg_restore`` of Stowage's three tables in
its schema (custom format). Encrypted Secrets stay encrypted in the backup:
keep the encryption configuration file with it, or they cannot be read.

A restore moves the revision past every revision the database had before
and forgets the watch history, so clients that watched the old database get
410 Gone and relist rather than silently missing what the restore changed.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

from sqlalchemy import make_url, text

from storage.store import store_url as _store_url
from storage.store.sql import SQLITE_BUSY_TIMEOUT_SECONDS, SqlStore, _why

_TABLES = ("stowage_meta", "stowage_objects", "stowage_events")


class BackupError(RuntimeError):
    """A backup or restore could not be done; the message says why and what to do."""


def _sqlite_path(url: str) -> Path:
    return Path(url.split("///", 1)[1].split("?", 1)[0])


def _check_sqlite_file(path: Path) -> None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=SQLITE_BUSY_TIMEOUT_SECONDS)
    except sqlite3.Error as exc:
        raise BackupError(f"{path}: cannot open: {exc}") from None
    try:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
        if rows != ["ok"]:
            raise BackupError(f"{path}: the database is corrupt (PRAGMA quick_check: {'; '.join(map(str, rows[:3]))})")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not set(_TABLES) <= tables:
            raise BackupError(f"{path}: not a Stowage database (no {', '.join(sorted(set(_TABLES) - tables))})")
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path}: not a readable SQLite database: {exc}") from None
    finally:
        conn.close()


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found on PATH: install the PostgreSQL client tools (postgresql-client)")
    return found


def _pg_target(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URI without the password, and the environment that carries the password instead
    (a password on a command line is visible to every user through ps)."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    uri = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return uri, env


def _run(argv: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BackupError(f"{Path(argv[0]).name} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[:2000]}")


def backup(url_or_path: str, dest: str | os.PathLike[str]) -> Path:
    """Write a consistent copy of the store to ``dest`` (0600); the store may be in use meanwhile."""
    url = _store_url(url_or_path)
    target = Path(dest).expanduser().resolve()
    tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        if url.startswith("sqlite"):
            source = _sqlite_path(url)
            if not source.exists():
                raise BackupError(f"{source}: no database here")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            src = sqlite3.connect(source, timeout=SQLITE_BUSY_TIMEOUT_SECONDS)
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)
            except sqlite3.Error as exc:
                raise BackupError(f"{source}: backup failed: {_why(exc)}") from None
            finally:
                dst.close()
                src.close()
            _check_sqlite_file(tmp)  # a damaged source makes a damaged copy: say so now, not at restore
        else:
            store = SqlStore(url)
            try:
                with store._engine.connect() as conn:
                    schema = conn.execute(text("SELECT current_schema()")).scalar_one()
            finally:
                store.close()
            uri, env = _pg_target(url)
            tables = [arg for t in _TABLES for arg in ("--table", f'"{schema}"."{t}"')]
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            _run([_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", *tables,
                  "--file", str(tmp), "--dbname", uri], env)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def restore(url_or_path: str, source: str | os.PathLike[str]) -> int:
    """Replace the store's content with the backup ``source``; return the new revision.

    Nothing may use the store meanwhile (the caller holds the data dir's lock;
    with PostgreSQL, every ``stowage serve`` must be stopped). SQLite keeps the
    replaced file next to it as ``<db>.before-restore-<time>``.
    """
    url = _store_url(url_or_path)
    backup_file = Path(source).expanduser().resolve()
    if not backup_file.is_file():
        raise BackupError(f"{backup_file}: no such backup file")
    previous = 0
    if url.startswith("sqlite"):
        _check_sqlite_file(backup_file)
        db = _sqlite_path(url)
        previous = _sqlite_revision(db)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            part = Path(str(db) + suffix)
            if part.exists():
                os.replace(part, Path(f"{db}.before-restore-{stamp}{suffix}"))
        src = sqlite3.connect(f"file:{backup_file}?mode=ro", uri=True)
        fd = os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        dst = sqlite3.connect(db)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
    else:
        try:
            store = SqlStore(url)
            try:
                previous = store.current_revision()
            finally:
                store.close()
        except Exception:
            previous = 0  # an empty or damaged database: the backup's own revision is the floor
        uri, env = _pg_target(url)
        _run([_pg_tool("pg_restore"), "--clean", "--if-exists", "--single-transaction", "--no-owner",
              "--no-privileges", "--dbname", uri, str(backup_file)], env)
    store = SqlStore(url)
    try:
        if store.corrupt is not None:
            raise BackupError(f"the restored database fails its integrity check: {store.corrupt}")
        return store.restart_history(previous)
    finally:
        store.close()


def _sqlite_revision(db: Path) -> int:
    """The revision of the database being replaced; 0 when it is missing or unreadable."""
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
        try:
            row = conn.execute("SELECT revision FROM stowage_meta WHERE id = 1").fetchone()
        finally:
            conn.close()
        return int(row[0]) if row else 0
    except sqlite3.Error:
        return 0
