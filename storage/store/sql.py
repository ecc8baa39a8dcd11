"""``SqlStore``: the Store on SQLite or PostgreSQL through SQLAlchemy Core.

Every write takes the next value of one global revision counter inside its
own transaction, and holds the counter's lock until commit, so commits happen
in revision order even with several processes writing. A reader that has seen
revision R has therefore seen every revision below R: that is what lets a
watch resume from any revision without missing or repeating an event.

Bodies are stored without ``metadata.resourceVersion``; the revision column
is the truth and is put back into the object on read. This lets PostgreSQL do
a whole write (counter, object row, event row, notification) in one
statement.

Watch wake-ups: a write in this process pokes the shared poller at once. On
PostgreSQL, writes from other processes arrive by LISTEN/NOTIFY (sent inside
the write transaction, so delivered on commit). On SQLite, which has no
notification channel between processes, the poller also looks at the events
table every ``poll_interval`` seconds (0.05 by default) while anyone watches.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import sqlite3
import threading
import time
import uuid
from datetime import datetime, timezone
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import orjson
import psycopg
import structlog
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from storage.api import registry
from storage.api.batch import generate_selector
from storage.api.deletion import plan_deletion
from storage.api.names import fill_generated_name, generate_name
from storage.api.timestamps import now as _now
from storage.errors import AlreadyExists, BadRequest, Conflict, FieldError, Gone, Invalid, NotFound, StowageError, TemporaryError
from storage.store.base import EventType, ListPage, Store, Watcher, WatchEvent
from storage.store.encryption import Encryption

log = structlog.get_logger(__name__)

DEFAULT_KEEP_EVENTS = 100_000
# Watch history is also bounded in bytes: 100,000 events of 1.5 MiB objects would be 150 GB.
DEFAULT_KEEP_EVENT_BYTES = 256 * 1024 * 1024
# How long a SQLite write waits for another process's lock before the request fails with a 503:
# long enough for any normal writer (a write is milliseconds), short enough that a client is answered.
SQLITE_BUSY_TIMEOUT_SECONDS = 10.0
RESTORE_HINT = "stop stowage and restore a backup with `stowage restore FILE`"
# Compaction runs when a write lands on a multiple of this revision: exactly one writer does it.
COMPACT_EVERY = 1_000
GENERATE_NAME_ATTEMPTS = 8
_STORE_OWNED = ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")

_md = MetaData()
meta_table = Table(
    "stowage_meta",
    _md,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("revision", BigInteger, nullable=False),
    Column("compacted", BigInteger, nullable=False),
)
objects_table = Table(
    "stowage_objects",
    _md,
    Column("resource", String(128), primary_key=True),
    Column("namespace", String(253), primary_key=True),
    Column("name", String(253), primary_key=True),
    Column("uid", String(36), nullable=False),
    Column("resource_version", BigInteger, nullable=False),
    Column("body", Text, nullable=False),
)
events_table = Table(
    "stowage_events",
    _md,
    Column("revision", BigInteger, primary_key=True, autoincrement=False),
    Column("resource", String(128), nullable=False),
    Column("namespace", String(253), nullable=False),
    Column("name", String(253), nullable=False),
    Column("type", String(8), nullable=False),
    Column("body", Text, nullable=False),
)


def _dumps(obj: dict[str, Any]) -> str:
    # orjson writes the same compact UTF-8 form, several times faster than json.
    try:
        return orjson.dumps(obj).decode()
    except (TypeError, orjson.JSONEncodeError):  # nested past orjson's limit, or an integer past 64 bits
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _loads(body: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:  # a body json wrote that orjson does not read back (deep nesting)
        return json.loads(body)


def _with_version(body: str, revision: int) -> dict[str, Any]:
    obj = _loads(body)
    obj.setdefault("metadata", {})["resourceVersion"] = str(revision)
    return obj


def _qualified(resource: str) -> str:
    """``storageclasses.storage.k8s.io`` as Kubernetes names a resource in messages."""
    info = registry.by_plural(resource)
    return f"{resource}.{info.group}" if info is not None and info.group else resource


def _not_found(resource: str, name: str) -> NotFound:
    return NotFound(f'{_qualified(resource)} "{name}" not found', kind=resource, name=name)


def _conflict(resource: str, name: str, why: str = "the object has been modified; please apply your changes to the latest version and try again") -> Conflict:
    return Conflict(f'Operation cannot be fulfilled on {_qualified(resource)} "{name}": {why}', kind=resource, name=name)


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class _Change:
    """One row change and its event, written under one revision."""

    __slots__ = ("op", "resource", "namespace", "name", "uid", "body", "type")

    def __init__(self, op: str, resource: str, namespace: str, name: str, uid: str, body: str, type: EventType) -> None:
        self.op, self.resource, self.namespace, self.name = op, resource, namespace, name
        self.uid, self.body, self.type = uid, body, type

    def params(self) -> dict[str, Any]:
        return {"resource": self.resource, "namespace": self.namespace, "name": self.name, "uid": self.uid, "body": self.body, "type": self.type}


# --- SQL, shared by both dialects -------------------------------------------------
_NEXT_REVISION = text("UPDATE stowage_meta SET revision = revision + 1 WHERE id = 1 RETURNING revision")
_GET = text("SELECT resource_version, body FROM stowage_objects WHERE resource = :resource AND namespace = :namespace AND name = :name")
_INSERT_OBJECT = text(
    "INSERT INTO stowage_objects (resource, namespace, name, uid, resource_version, body) "
    "VALUES (:resource, :namespace, :name, :uid, :revision, :body)"
)
_UPDATE_OBJECT = text(
    "UPDATE stowage_objects SET resource_version = :revision, body = :body "
    "WHERE resource = :resource AND namespace = :namespace AND name = :name"
)
_DELETE_OBJECT = text("DELETE FROM stowage_objects WHERE resource = :resource AND namespace = :namespace AND name = :name")
_INSERT_EVENT = text(
    "INSERT INTO stowage_events (revision, resource, namespace, name, type, body) "
    "VALUES (:revision, :resource, :namespace, :name, :type, :body)"
)
# One statement reads the objects and the revision, so both come from the same snapshot.
_LIST = "SELECT revision, NULL, NULL, NULL FROM stowage_meta WHERE id = 1 UNION ALL SELECT resource_version, body, namespace, name FROM stowage_objects WHERE resource = :resource"
_LIST_ALL = text(_LIST)
_LIST_NS = text(_LIST + " AND namespace = :namespace")

# --- list pages ---------------------------------------------------------------------
# One statement per batch, so the revision, the objects and the history it reads come from one
# snapshot. Rows: (0, revision, compacted) first, then (1, count) rows when counting, then the
# page's objects (2, resource_version, namespace, name, body) in key order. Key order is the
# database's own (its collation on PostgreSQL): the range condition and ORDER BY use the same one.
_PAGE_LIMIT_ALL = 2**62
# A filtered page reads further in batches that double up to this many objects.
_PAGE_BATCH_MAX = 10_000


@functools.lru_cache(maxsize=None)
def _page_statement(sqlite: bool, namespaced: bool, after: bool, as_of: bool, count: bool) -> Any:
    where = "resource = :resource"
    if namespaced:
        where += " AND namespace = :namespace"
    if after:
        # A row value: both databases seek the key index to it (the same test spelt with OR scans from the start).
        where += " AND (namespace, name) > (:after_namespace, :after_name)"
    parts = ["SELECT 0 AS k, revision AS num, compacted AS num2, NULL AS namespace, NULL AS name, NULL AS body "
             "FROM stowage_meta WHERE id = 1"]
    unchanged, cte = where, ""
    if count:
        # Counted on the key index alone (no row reads): now, then corrected below for keys written since.
        parts.append(f"SELECT 1, COUNT(*), NULL, NULL, NULL, NULL FROM stowage_objects WHERE {where}")
    if as_of:
        # As of revision :rev: objects not written since, plus the version at :rev of every key written
        # since (its newest event at or before :rev, which compaction keeps) unless that was a deletion.
        unchanged += " AND resource_version <= :rev"
        # SQLite (no statistics) would rather walk every event of the resource by key than the few
        # after :rev by revision: the unary + keeps it off the key index for that condition.
        recent = where.replace("resource =", "+resource =") if sqlite else where
        cte = ("WITH touched AS (SELECT DISTINCT namespace, name FROM stowage_events "
               f"WHERE revision > :rev AND {recent}), "
               "prior AS (SELECT e.revision, e.namespace, e.name, e.body FROM touched t JOIN stowage_events e "
               "ON e.revision = (SELECT MAX(x.revision) FROM stowage_events x WHERE x.resource = :resource "
               "AND x.namespace = t.namespace AND x.name = t.name AND x.revision <= :rev) "
               "WHERE e.type <> 'DELETED') ")
        if count:
            parts.append("SELECT 1, -COUNT(*), NULL, NULL, NULL, NULL FROM touched t WHERE EXISTS (SELECT 1 FROM "
                         "stowage_objects o WHERE o.resource = :resource AND o.namespace = t.namespace AND o.name = t.name)")
            parts.append("SELECT 1, COUNT(*), NULL, NULL, NULL, NULL FROM prior")
    # Typed NULLs: PostgreSQL resolves an untyped NULL in a subquery to text, which no UNION with bigint takes.
    parts.append("SELECT * FROM (SELECT 2, resource_version, CAST(NULL AS BIGINT), namespace, name, body "
                 f"FROM stowage_objects WHERE {unchanged} ORDER BY namespace, name LIMIT :batch) AS a")
    if as_of:
        parts.append("SELECT 2, revision, CAST(NULL AS BIGINT), namespace, name, body FROM prior")
    return text(cte + "SELECT * FROM (" + " UNION ALL ".join(parts) + ") AS u ORDER BY k, namespace, name LIMIT :rows")


# Events at or below the compacted revision are only the versions kept for consistent list pages
# (see compact): never sent to a watcher, and their absence is how a watcher behind compaction notices.
_EVENTS_AFTER = text(
    "SELECT revision, resource, namespace, name, type, body FROM stowage_events "
    "WHERE revision > :after AND revision <= :upto "
    "AND revision > (SELECT compacted FROM stowage_meta WHERE id = 1) ORDER BY revision LIMIT :limit"
)
# The same for one resource: the backlog of a watch resumed from far back, read for its resource only.
_RESOURCE_EVENTS_AFTER = text(
    "SELECT revision, resource, namespace, name, type, body FROM stowage_events "
    "WHERE revision > :after AND revision <= :upto AND resource = :resource "
    "AND revision > (SELECT compacted FROM stowage_meta WHERE id = 1) ORDER BY revision LIMIT :limit"
)
_REVISIONS = text("SELECT revision, compacted FROM stowage_meta WHERE id = 1")
# The newest event at which the bodies from the newest event back exceed the byte budget:
# compacting up to it leaves at most ``budget`` bytes of history.
_BYTES_BEYOND = (
    "SELECT revision FROM (SELECT revision, SUM({size}) OVER (ORDER BY revision DESC) AS tail "
    "FROM stowage_events WHERE revision > (SELECT compacted FROM stowage_meta WHERE id = 1)) AS t "
    "WHERE tail > :budget ORDER BY revision DESC LIMIT 1"
)
# Compaction keeps, for every key written at or before the target, its newest version there unless
# that is a deletion (etcd keeps the same): a list page at any revision not older than the compacted
# one can then be rebuilt (see list_page). Only keys written since the last compaction can change.
_COMPACT = text(
    "WITH k AS (SELECT DISTINCT resource, namespace, name FROM stowage_events "
    "WHERE revision > :previous AND revision <= :target) "
    "DELETE FROM stowage_events WHERE revision IN (SELECT e.revision FROM stowage_events e JOIN k "
    "ON e.resource = k.resource AND e.namespace = k.namespace AND e.name = k.name "
    "WHERE e.revision <= :target AND (e.type = 'DELETED' OR EXISTS (SELECT 1 FROM stowage_events n "
    "WHERE n.resource = e.resource AND n.namespace = e.namespace AND n.name = e.name "
    "AND n.revision > e.revision AND n.revision <= :target)))"
)
_EVENTS_BY_KEY = text(
    "CREATE INDEX IF NOT EXISTS stowage_events_key ON stowage_events (resource, namespace, name, revision)")
# A database compacted before versions were kept (or restored, which forgets all history) gets each
# live object's version back as the event that wrote it; a no-op once done.
_KEEP_LIVE_VERSIONS = text(
    "INSERT INTO stowage_events (revision, resource, namespace, name, type, body) "
    "SELECT o.resource_version, o.resource, o.namespace, o.name, 'MODIFIED', o.body FROM stowage_objects o "
    "WHERE o.resource_version <= (SELECT compacted FROM stowage_meta WHERE id = 1) "
    "AND NOT EXISTS (SELECT 1 FROM stowage_events e WHERE e.revision = o.resource_version)"
)
_SQLITE_BYTES_BEYOND = text(_BYTES_BEYOND.format(size="length(CAST(body AS BLOB))"))
_PG_BYTES_BEYOND = text(_BYTES_BEYOND.format(size="octet_length(body)"))

# PostgreSQL: counter, row, event and notification in one round trip.
_PG_CTE = (
    "WITH r AS (UPDATE stowage_meta SET revision = revision + 1 WHERE id = 1 RETURNING revision), "
    "o AS ({object_sql}), "
    "e AS (INSERT INTO stowage_events (revision, resource, namespace, name, type, body) "
    "SELECT r.revision, :resource, :namespace, :name, :type, :body FROM r) "
    "SELECT revision, pg_notify(:channel, '') FROM r"
)
_PG_WRITE = {
    "insert": text(_PG_CTE.format(object_sql=(
        "INSERT INTO stowage_objects (resource, namespace, name, uid, resource_version, body) "
        "SELECT :resource, :namespace, :name, :uid, r.revision, :body FROM r"))),
    "update": text(_PG_CTE.format(object_sql=(
        "UPDATE stowage_objects SET resource_version = r.revision, body = :body FROM r "
        "WHERE resource = :resource AND namespace = :namespace AND name = :name"))),
    "delete": text(_PG_CTE.format(object_sql=(
        "DELETE FROM stowage_objects USING r WHERE resource = :resource AND namespace = :namespace AND name = :name"))),
}
_PG_LOCK_COUNTER = text("SELECT 1 FROM stowage_meta WHERE id = 1 FOR UPDATE")
# An update whose base version this process already knows: one statement, guarded by the
# version in the row itself; when the guard fails (matched = 0) the caller rolls back.
_PG_GUARDED = (
    "WITH r AS (UPDATE stowage_meta SET revision = revision + 1 WHERE id = 1 RETURNING revision), "
    "o AS ({object_sql} AND resource_version = :expected RETURNING 1), "
    "e AS (INSERT INTO stowage_events (revision, resource, namespace, name, type, body) "
    "SELECT r.revision, :resource, :namespace, :name, :type, :body FROM r WHERE EXISTS (SELECT 1 FROM o)) "
    # 1/0 when the guard failed aborts the whole statement, so the counter does not move either:
    # the statement runs in autocommit, one round trip with no BEGIN or COMMIT.
    "SELECT revision, 1 / (SELECT count(*) FROM o), pg_notify(:channel, '') FROM r"
)
_PG_GUARDED_WRITE = {
    "update": text(_PG_GUARDED.format(object_sql=(
        "UPDATE stowage_objects SET resource_version = r.revision, body = :body FROM r "
        "WHERE resource = :resource AND namespace = :namespace AND name = :name"))),
    # USING r: the row is deleted only after the counter is locked (the lock order every write keeps).
    "delete": text(_PG_GUARDED.format(object_sql=(
        "DELETE FROM stowage_objects USING r WHERE resource = :resource AND namespace = :namespace AND name = :name"))),
}
# About 1 KiB each: bounds the memory of the PostgreSQL fast path to tens of MiB.
KNOWN_BODIES = 50_000
_TRANSIENT = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
_TRANSIENT_ATTEMPTS = 5
_T = TypeVar("_T")


class _GuardFailed(Exception):
    """The row moved past the version this process knew: take the locked path."""


class StoreUnavailable(TemporaryError):
    """The database cannot take this request now (locked by another process, unreachable): retry later."""


class StoreCorrupt(StowageError):
    """The database failed its integrity check: writes are refused until it is restored."""

    code, reason = 503, "ServiceUnavailable"


@contextlib.contextmanager
def _busy_as_unavailable() -> Iterator[None]:
    """A lock held past the busy timeout by another process becomes a 503 with Retry-After, not a 500."""
    try:
        yield
    except (DBAPIError, sqlite3.DatabaseError) as exc:
        if _is_busy(exc):
            raise StoreUnavailable("the database is locked by another process; retry later", delay=1.0) from None
        orig = getattr(exc, "orig", exc)
        if isinstance(orig, sqlite3.DatabaseError) and "malformed" in str(orig):
            raise StoreCorrupt(f"the database is corrupt ({orig}): {RESTORE_HINT}") from None
        raise


def _why(exc: BaseException | None) -> str:
    """A database error's first line, short: never a statement or its parameters."""
    if exc is None:
        return "unknown error"
    if _is_busy(exc):
        return "the database is locked by another process"
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _is_busy(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", exc)
    return isinstance(orig, sqlite3.OperationalError) and "locked" in str(orig) or isinstance(orig, psycopg.errors.LockNotAvailable)


class SqlStore(Store):
    def __init__(
        self,
        url: str,
        *,
        keep_events: int = DEFAULT_KEEP_EVENTS,
        compact_every: int = COMPACT_EVERY,
        poll_interval: float | None = None,
        encryption: Encryption | None = None,
        keep_event_bytes: int = DEFAULT_KEEP_EVENT_BYTES,
        busy_timeout: float = SQLITE_BUSY_TIMEOUT_SECONDS,
    ) -> None:
        self.url = url
        self.keep_events = keep_events
        self.keep_event_bytes = keep_event_bytes
        self.encryption = encryption
        self.busy_timeout = busy_timeout
        # Set when the integrity check at open failed: reads are tried, writes refused (see check_writable).
        self.corrupt: str | None = None
        self._bytes_since_compact = 0
        self.compact_every = compact_every
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self._engine = create_engine(
                url,
                isolation_level="AUTOCOMMIT",  # transactions are begun by hand: BEGIN IMMEDIATE for writes
                connect_args={"check_same_thread": False, "timeout": busy_timeout},
                pool_size=8,
                max_overflow=32,
            )
            event.listen(self._engine, "connect", lambda conn, record: _sqlite_pragmas(conn, record, busy_timeout))
        else:
            self._engine = create_engine(url, pool_size=8, max_overflow=32, pool_pre_ping=False)
            event.listen(self._engine, "connect", lambda conn, record: _pg_session(conn, busy_timeout))
        # SQLite serializes writers with a file lock whose busy handler sleeps; a
        # process-local lock queues this process's writers without that latency.
        self._write_lock = threading.Lock() if self.is_sqlite else None
        self._group = _GroupCommit(self)
        self._poll_interval = poll_interval if poll_interval is not None else (0.05 if self.is_sqlite else 1.0)
        self._channel = "stowage_events"
        self._hub: _Hub | None = None
        self._hub_lock = threading.Lock()
        self._writer: Any = None
        self._poller: Any = None  # SQLite: the hub's own read connection (_sqlite_poll)
        self._poll_lock = threading.Lock()
        # PostgreSQL only: bodies this process wrote, by key, with their version (see _update_known).
        self._known: dict[tuple[str, str, str], tuple[int, str]] = {}
        # PostgreSQL reads are single statements: autocommit spares the BEGIN and ROLLBACK round trips.
        self._reader = self._engine if self.is_sqlite else self._engine.execution_options(isolation_level="AUTOCOMMIT")
        self._closed = False
        if self.is_sqlite:
            self.corrupt = self._integrity_problem()
        if self.corrupt is not None:
            log.error("store.corrupt", problem=self.corrupt, writes="refused", recovery=RESTORE_HINT)
            return
        with _busy_as_unavailable():
            self._init_schema()

    # --- schema ---------------------------------------------------------------
    def _integrity_problem(self) -> str | None:
        """SQLite's quick_check at open: a reason when the file is damaged, else None."""
        try:
            with self._engine.connect() as conn:
                rows = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA quick_check").all()]
        except DBAPIError as exc:
            if _is_busy(exc):
                return None  # locked by another process is not damage; the readiness check reports it
            return f"the database cannot be read: {exc.orig}"
        if rows == ["ok"]:
            return None
        return "PRAGMA quick_check found: " + "; ".join(rows[:3])

    def check_writable(self) -> None:
        if self.corrupt is not None:
            raise StoreCorrupt(f"the database is corrupt ({self.corrupt}); writes are stopped: {RESTORE_HINT}")

    def _init_schema(self) -> None:
        if self.is_sqlite:
            with self._engine.connect() as conn:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                _md.create_all(conn)
                conn.execute(text("INSERT OR IGNORE INTO stowage_meta (id, revision, compacted) VALUES (1, 0, 0)"))
                conn.execute(_EVENTS_BY_KEY)
                conn.execute(_KEEP_LIVE_VERSIONS)
                conn.exec_driver_sql("COMMIT")
            return
        with self._engine.begin() as conn:
            # Two processes opening a fresh database at once would race on CREATE TABLE.
            conn.execute(text("SELECT pg_advisory_xact_lock(7226410931)"))
            _md.create_all(conn)
            conn.execute(text("INSERT INTO stowage_meta (id, revision, compacted) VALUES (1, 0, 0) ON CONFLICT (id) DO NOTHING"))
            # CREATE INDEX share-locks the events table even when the index exists, and a running
            # writer holds that table while it waits for the revision counter: another process opening
            # the store must not take both, so the index is made only when the catalog lacks it.
            if conn.execute(text("SELECT to_regclass('stowage_events_key')")).scalar_one() is None:
                conn.execute(_EVENTS_BY_KEY)
            conn.execute(_PG_LOCK_COUNTER)  # no write or compaction may run while live versions are put back
            conn.execute(_KEEP_LIVE_VERSIONS)
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
        # NOTIFY channels are per database: stores in other schemas of it must not wake each other.
        self._channel = "stowage_" + hashlib.sha1(str(schema).encode()).hexdigest()[:16]

    # --- encryption at rest -------------------------------------------------------
    def _seal(self, resource: str, namespace: str, name: str, body: str) -> str:
        enc = self.encryption
        return body if enc is None else enc.seal(resource, namespace, name, body)

    def _open(self, resource: str, namespace: str, name: str, stored: str) -> str:
        enc = self.encryption
        if enc is None:
            if stored.startswith("k8s:enc:"):
                from storage.store.encryption import DecryptionError

                raise DecryptionError(f'{resource} "{name}": stored encrypted, and no encryption configuration '
                                      "was given to read it", kind=resource, name=name)
            return stored
        return enc.open(resource, namespace, name, stored)

    # --- transactions ---------------------------------------------------------
    def _write_tx(self) -> Any:
        self.check_writable()
        return _SqliteWriteTx(self) if self.is_sqlite else self._engine.begin()

    def _transact(self, work: Callable[[Any], _T]) -> _T:
        """Run ``work(conn)`` in a write transaction and return its result once that is committed.

        SQLite: through the group commit (see ``_GroupCommit``), so concurrent writers of this process
        share one transaction, each in its own savepoint. PostgreSQL: a transaction of its own.
        """
        self.check_writable()
        if self.is_sqlite:
            return self._group.run(work)
        with self._engine.begin() as conn:
            return work(conn)

    def _sqlite_writer(self) -> Any:
        """The one connection this process writes SQLite through (writes are serialized anyway).

        Statements go to the driver directly: the pool checkout and statement
        compilation would otherwise cost more than the write itself.
        """
        if self._writer is None:
            self._writer = self._own_sqlite_connection()
        return self._writer

    def _own_sqlite_connection(self) -> Any:
        """A driver connection taken out of the pool for good (with the pool's pragmas, the busy timeout
        among them), in autocommit mode: the store owns it and closes it in close()."""
        raw = self._engine.raw_connection()
        driver = raw.driver_connection
        raw.detach()
        driver.isolation_level = None
        return driver

    def _sqlite_poll(self, params: dict[str, Any]) -> list[Any]:
        """The hub's read of new events, on a driver connection of its own (PF73): it runs after every
        commit this process makes, and the pool checkout, execution context and result metadata of a
        SQLAlchemy execute cost more than the query (16% of the API server's Python CPU in a create
        burst). Autocommit: each read sees every commit before it, as a pooled connection's does."""
        with self._poll_lock:
            if self._closed:
                raise StoreUnavailable("the store is closed")
            if self._poller is None:
                self._poller = self._own_sqlite_connection()
            return self._poller.execute(_EVENTS_AFTER.text, params).fetchall()

    def _commit(self, conn: Connection, change: _Change) -> int:
        """Write one change and its event under the next revision; return that revision."""
        params = change.params()
        params["body"] = self._seal(change.resource, change.namespace, change.name, change.body)
        self._bytes_since_compact += len(params["body"])
        if not self.is_sqlite:
            params["channel"] = self._channel
            return int(conn.execute(_PG_WRITE[change.op], params).scalar_one())
        revision = int(conn.execute(_NEXT_REVISION).scalar_one())
        params["revision"] = revision
        if change.op == "insert":
            conn.execute(_INSERT_OBJECT, params)
        elif change.op == "update":
            conn.execute(_UPDATE_OBJECT, params)
        else:
            conn.execute(_DELETE_OBJECT, params)
        conn.execute(_INSERT_EVENT, params)
        return revision

    def _after_commit(self, revisions: Sequence[int]) -> None:
        hub = self._hub
        if hub is not None:
            hub.poke()
        due = self.keep_events > 0 and any(r % self.compact_every == 0 for r in revisions)
        # Large bodies reach the byte budget long before the event count: check it by bytes written too.
        if self.keep_event_bytes > 0 and self._bytes_since_compact > self.keep_event_bytes // 8:
            due = True
        if due:
            self._bytes_since_compact = 0
            try:
                self.compact(self.keep_events)
            except Exception:  # compaction is housekeeping: a failure must not fail the write
                log.warning("store.compact_failed", exc_info=True)

    def _read_locked(self, conn: Connection, resource: str, namespace: str, name: str) -> tuple[Any, str] | None:
        """The current row, read under the write lock.

        PostgreSQL: every write transaction locks the counter row before any
        object row (the write statements update the counter first), so this
        does too. Locking the object row first (FOR UPDATE) and the counter
        second made a deadlock with any writer already holding the counter and
        waiting for that object. Holding the counter also keeps every other
        writer out, so the plain read that follows is current and stays so.
        """
        if not self.is_sqlite:
            conn.execute(_PG_LOCK_COUNTER)
        row = conn.execute(_GET, {"resource": resource, "namespace": namespace, "name": name}).first()
        return None if row is None else (row[0], self._open(resource, namespace, name, row[1]))

    # --- reads ----------------------------------------------------------------
    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        with _busy_as_unavailable(), self._reader.connect() as conn:
            row = conn.execute(_GET, {"resource": resource, "namespace": namespace or "", "name": name}).first()
        if row is None:
            raise _not_found(resource, name)
        return _with_version(self._open(resource, namespace or "", name, row[1]), row[0])

    def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        matchers = _matchers(label_selector, field_selector)
        params: dict[str, Any] = {"resource": resource}
        stmt = _LIST_ALL
        if namespace is not None:
            stmt, params["namespace"] = _LIST_NS, namespace
        with _busy_as_unavailable(), self._reader.connect() as conn:
            rows = conn.execute(stmt, params).all()
        revision = 0
        found: list[tuple[str, str, int, str]] = []
        for rv, body, ns, name in rows:
            if body is None:
                revision = int(rv)
            else:
                found.append((ns, name, rv, self._open(resource, ns, name, body)))
        found.sort(key=lambda r: (r[0], r[1]))
        items = []
        for _, _, rv, body in found:
            obj = _with_version(body, rv)
            if all(match(obj) for match in matchers):
                items.append(obj)
        return items, revision

    def list_page(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        *,
        limit: int | None,
        after: tuple[str, str] | None = None,
        revision: int | None = None,
        accept: Callable[[dict[str, Any]], bool] | None = None,
    ) -> ListPage:
        matchers = _matchers(label_selector, field_selector)
        if accept is not None:
            matchers.append(accept)
        counting = limit is not None and not matchers
        wanted = _PAGE_LIMIT_ALL if limit is None else max(int(limit), 1)
        batch = wanted
        items: list[dict[str, Any]] = []
        cursor = after
        while True:
            rows, revision, total = self._page_rows(resource, namespace, cursor, batch, revision, counting)
            more = len(rows) > batch
            rows = rows[:batch]
            for i, (rv, ns, name, body) in enumerate(rows):
                cursor = (ns, name)
                obj = _with_version(self._open(resource, ns, name, body), rv)
                if all(match(obj) for match in matchers):
                    items.append(obj)
                    if len(items) == wanted:
                        more = more or i < len(rows) - 1
                        break
            if len(items) >= wanted or not more:
                break
            # Most objects did not match: read further at the same revision, in growing batches as etcd3's lister.
            batch = min(batch * 2, max(wanted, _PAGE_BATCH_MAX))
        if not more:
            return ListPage(items, revision, None, None)
        remaining = total - len(items) if counting and total is not None else None
        return ListPage(items, revision, cursor, remaining)

    def _page_rows(self, resource: str, namespace: str | None, after: tuple[str, str] | None, batch: int,
                   revision: int | None, count: bool) -> tuple[list[tuple[int, str, str, str]], int, int | None]:
        """Up to ``batch + 1`` objects after ``after`` in key order, as of ``revision`` (None: now);
        the revision read at, and with ``count`` how many objects follow ``after`` then."""
        stmt = _page_statement(self.is_sqlite, namespace is not None, after is not None, revision is not None, count)
        params: dict[str, Any] = {"resource": resource, "batch": batch + 1,
                                  "rows": batch + 1 + 1 + (0 if not count else 3 if revision is not None else 1)}
        if namespace is not None:
            params["namespace"] = namespace
        if after is not None:
            params["after_namespace"], params["after_name"] = after
        if revision is not None:
            params["rev"] = revision
        with _busy_as_unavailable(), self._reader.connect() as conn:
            result = conn.execute(stmt, params).all()
        newest, compacted = int(result[0][1]), int(result[0][2])
        if revision is not None:
            if revision < compacted:
                raise Gone(f"too old resource version: {revision} ({compacted})")
            if revision > newest:
                raise BadRequest(f"resource version {revision} is newer than the newest revision {newest}")
        total = None
        rows: list[tuple[int, str, str, str]] = []
        for kind, number, _, ns, name, body in result[1:]:
            if kind == 1:
                total = int(number) + (total or 0)
            else:
                rows.append((int(number), ns, name, body))
        return rows, newest if revision is None else revision, total

    def current_revision(self) -> int:
        return self._revisions()[0]

    def _revisions(self) -> tuple[int, int]:
        with self._reader.connect() as conn:
            revision, compacted = conn.execute(_REVISIONS).one()
        return int(revision), int(compacted)

    def _events(self, after: int, upto: int | None, limit: int = 1000, resource: str | None = None,
                *, poller: bool = False) -> list[Row[Any]]:
        """``poller``: the hub's thread asking (SQLite: through a connection of its own, see _sqlite_poll)."""
        params: dict[str, Any] = {"after": after, "upto": upto if upto is not None else 2**62, "limit": limit}
        if poller and self.is_sqlite and resource is None:
            raw = self._sqlite_poll(params)
        else:
            with self._reader.connect() as conn:
                if resource is None:
                    raw = conn.execute(_EVENTS_AFTER, params).all()
                else:
                    raw = conn.execute(_RESOURCE_EVENTS_AFTER, {**params, "resource": resource}).all()
        # Decrypted once here, for every watcher; the database keeps only the sealed form.
        rows = [(r[0], r[1], r[2], r[3], r[4], self._open(r[1], r[2], r[3], r[5])) for r in raw]
        for revision, resource, namespace, name, type_, body in rows:
            self._remember(resource, namespace, name, None if type_ == "DELETED" else int(revision), body, at=int(revision))
        return rows  # type: ignore[return-value]

    # --- writes ---------------------------------------------------------------
    def _retrying(self, write: Callable[[], _T]) -> _T:
        """Run ``write`` again when PostgreSQL aborted it as a deadlock victim or a serialization failure.

        Every write takes the counter lock first, so deadlocks should not occur;
        this keeps a caller from ever seeing one should a lock-order slip return.
        Nothing was written by the aborted attempt, so running it again is safe.
        """
        for attempt in range(_TRANSIENT_ATTEMPTS):
            try:
                with _busy_as_unavailable():
                    return write()
            except DBAPIError as e:
                if self.is_sqlite or not isinstance(e.orig, _TRANSIENT) or attempt == _TRANSIENT_ATTEMPTS - 1:
                    raise
                log.warning("store.write_retried", reason=type(e.orig).__name__, attempt=attempt + 1)
                time.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    def create(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self.create_many(resource, [obj])[0]

    def create_many(self, resource: str, objs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Create several objects in one transaction (each still gets its own revision and event).

        All or nothing: one taken name fails the whole batch with AlreadyExists.
        """
        batch = list(objs)
        return self._retrying(lambda: self._create_many_once(resource, batch))

    def _create_many_once(self, resource: str, objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.check_writable()
        prepared = [self._prepare_create(obj) for obj in objs]
        for attempt in range(GENERATE_NAME_ATTEMPTS):
            try:
                revisions: list[int] = []
                bodies: list[str] = []

                def insert(conn: Any) -> None:
                    revisions.clear()
                    bodies.clear()
                    for namespace, name, uid, stored in prepared:
                        body = _dumps(stored)
                        bodies.append(body)
                        revisions.append(self._commit(conn, _Change("insert", resource, namespace, name, uid, body, "ADDED")))

                if not self.is_sqlite and len(prepared) == 1:
                    # One object on PostgreSQL is one statement: autocommit makes it one round trip.
                    with self._reader.connect() as conn:
                        insert(conn)
                else:
                    self._transact(insert)
                break
            except (IntegrityError, sqlite3.IntegrityError):
                taken = self._first_taken(resource, prepared)
                generated = [i for i, p in enumerate(prepared) if (p[0], p[1]) == taken and p[3]["metadata"].get("generateName")]
                if taken is None or not generated or attempt == GENERATE_NAME_ATTEMPTS - 1:
                    name = taken[1] if taken is not None else prepared[0][1]
                    raise AlreadyExists(f'{_qualified(resource)} "{name}" already exists', kind=resource, name=name) from None
                for i in generated:  # a generated name collided: draw another suffix, as Kubernetes does
                    ns, _, uid, stored = prepared[i]
                    stored["metadata"]["name"] = generate_name(stored["metadata"]["generateName"])
                    prepared[i] = (ns, stored["metadata"]["name"], uid, stored)
        for (namespace, name, _, _), body, revision in zip(prepared, bodies, revisions):
            self._remember(resource, namespace, name, revision, body)
        self._after_commit(revisions)
        return [_with_version(body, revision) for body, revision in zip(bodies, revisions)]

    def _first_taken(self, resource: str, prepared: list[tuple[str, str, str, dict[str, Any]]]) -> tuple[str, str] | None:
        seen: set[tuple[str, str]] = set()
        for namespace, name, _, _ in prepared:
            if (namespace, name) in seen:
                return namespace, name
            seen.add((namespace, name))
            try:
                self.get(resource, namespace, name)
                return namespace, name
            except NotFound:
                continue
        return None

    def _prepare_create(self, obj: dict[str, Any]) -> tuple[str, str, str, dict[str, Any]]:
        stored = dict(obj)
        meta = dict(obj.get("metadata") or {})
        for owned in _STORE_OWNED:
            meta.pop(owned, None)
        fill_generated_name(meta)
        if not meta.get("name"):
            raise Invalid([FieldError("metadata.name", "Required value", "name or generateName is required")])
        meta["namespace"] = meta.get("namespace") or ""
        if not meta["namespace"]:
            del meta["namespace"]
        uid = str(uuid.uuid4())
        meta["uid"] = uid
        meta["creationTimestamp"] = _now()
        if stored.get("kind") not in registry.KINDS_WITHOUT_GENERATION:
            meta["generation"] = 1
        stored["metadata"] = meta
        if stored.get("kind") == "Job" and stored.get("apiVersion") in ("batch/v1", None):
            # J2: the selector names the uid, which only exists from here on.
            stored["spec"] = copy.deepcopy(stored.get("spec") or {})
            generate_selector(stored)
        namespace, name = _key(stored)
        return namespace, name, uid, stored

    def _remember(self, resource: str, namespace: str, name: str, revision: int | None, body: str,
                  *, at: int | None = None) -> None:
        """Note the body an object had at ``revision`` (None: it is gone as of revision ``at``).

        A body at a revision never changes, so one seen in a watch event is as
        good as one this process wrote (a controller's writes mostly follow
        events it was sent); an older sighting never replaces a newer one.
        """
        if self.is_sqlite:
            return  # a locked read on SQLite is a local call: nothing to save
        known = self._known
        key = (resource, namespace, name)
        seen = known.get(key)
        since = revision if revision is not None else at
        if seen is not None and since is not None and seen[0] > since:
            return
        known.pop(key, None)
        if revision is not None:
            if len(known) >= KNOWN_BODIES:
                known.pop(next(iter(known)), None)
            known[key] = (revision, body)

    def _update_known(self, resource: str, obj: dict[str, Any], namespace: str, name: str, wanted: str) -> dict[str, Any] | None:
        """PostgreSQL fast path: the caller's base version is one this process wrote, so its body
        is known and the write needs no locked read first. None: take the locked path."""
        known = self._known.get((resource, namespace, name))
        if known is None or str(known[0]) != wanted:
            return None
        current = _loads(known[1])
        stored, body = _merge_update(current, obj)
        if stored == current:
            return None
        meta = stored["metadata"]
        removed = bool(meta.get("deletionTimestamp")) and not meta.get("finalizers")
        self.check_writable()
        params = {"resource": resource, "namespace": namespace, "name": name,
                  "body": self._seal(resource, namespace, name, body),
                  "type": "DELETED" if removed else "MODIFIED", "expected": known[0], "channel": self._channel}
        self._bytes_since_compact += len(params["body"])
        try:
            with self._reader.connect() as conn:
                revision, _, _ = conn.execute(_PG_GUARDED_WRITE["delete" if removed else "update"], params).one()
        except DataError as e:
            if isinstance(e.orig, psycopg.errors.DivisionByZero):
                return None
            raise
        self._remember(resource, namespace, name, None if removed else int(revision), body)
        self._after_commit([int(revision)])
        meta["resourceVersion"] = str(revision)
        return stored

    def update(self, resource: str, obj: dict[str, Any], *, check_version: bool = True) -> dict[str, Any]:
        return self._retrying(lambda: self._update_once(resource, obj, check_version))

    def _update_once(self, resource: str, obj: dict[str, Any], check_version: bool) -> dict[str, Any]:
        namespace, name = _key(obj)
        wanted_version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if check_version and wanted_version and not self.is_sqlite:
            fast = self._update_known(resource, obj, namespace, name, wanted_version)
            if fast is not None:
                return fast
        def write(conn: Any) -> tuple[dict[str, Any], str, bool, int | None]:
            row = self._read_locked(conn, resource, namespace, name)
            if row is None:
                raise _not_found(resource, name)
            current_version, current_body = int(row[0]), row[1]
            if check_version and wanted_version and wanted_version != str(current_version):
                raise _conflict(resource, name)
            current = _loads(current_body)
            stored, body = _merge_update(current, obj)
            if stored == current:  # Kubernetes skips no-op writes: no new revision, no event
                current["metadata"]["resourceVersion"] = str(current_version)
                return current, "", False, None
            meta = stored["metadata"]
            removed = bool(meta.get("deletionTimestamp")) and not meta.get("finalizers")
            change = _Change("delete" if removed else "update", resource, namespace, name, meta["uid"], body, "DELETED" if removed else "MODIFIED")
            return stored, body, removed, self._commit(conn, change)

        stored, body, removed, written = self._transact(write)
        if written is None:
            return stored
        revision = written
        meta = stored["metadata"]
        self._remember(resource, namespace, name, None if removed else revision, body)
        self._after_commit([revision])
        meta["resourceVersion"] = str(revision)
        return stored

    def delete(self, resource: str, namespace: str, name: str, *, resource_version: str | None = None,
               grace_seconds: int | None = None) -> dict[str, Any]:
        return self._retrying(lambda: self._delete_once(resource, namespace or "", name, resource_version, grace_seconds))

    def _delete_once(self, resource: str, namespace: str, name: str, resource_version: str | None,
                     grace_seconds: int | None) -> dict[str, Any]:
        def write(conn: Any) -> tuple[dict[str, Any], _Change | None, int]:
            row = self._read_locked(conn, resource, namespace, name)
            if row is None:
                raise _not_found(resource, name)
            current_version = int(row[0])
            if resource_version and str(resource_version) != str(current_version):
                raise _conflict(
                    resource,
                    name,
                    f"the ResourceVersion in the precondition ({resource_version}) does not match the "
                    f"ResourceVersion in record ({current_version}). The object might have been modified",
                )
            current = _loads(row[1])
            plan = plan_deletion(resource, current, grace_seconds, datetime.now(timezone.utc))
            meta = current["metadata"]
            if plan.action == "keep":  # already marked and nothing to shorten: nothing changes
                meta["resourceVersion"] = str(current_version)
                return current, None, current_version
            body = _dumps(current)
            if plan.action == "mark":
                change = _Change("update", resource, namespace, name, meta.get("uid", ""), body, "MODIFIED")
            else:
                change = _Change("delete", resource, namespace, name, meta.get("uid", ""), body, "DELETED")
            return current, change, self._commit(conn, change)

        current, written, revision = self._transact(write)
        if written is None:
            return current
        change, meta = written, current["metadata"]
        self._remember(resource, namespace, name, revision if change.op == "update" else None, change.body)
        self._after_commit([revision])
        meta["resourceVersion"] = str(revision)
        return current

    def compact(self, keep: int, keep_bytes: int | None = None) -> int:
        """Forget events older than the newest ``keep``, and those beyond the newest ``keep_bytes``
        of event bodies (default: the store's byte budget; 0 or less: no byte budget).

        Returns the compacted revision: ``watch(since=it)`` still works, anything older is Gone.
        The newest version at or before it of every object not deleted by then stays (as etcd keeps
        it), never sent to a watcher: ``list_page`` at any revision from the compacted one on needs it.
        """
        budget = self.keep_event_bytes if keep_bytes is None else keep_bytes
        with self._write_tx() as conn:
            lock = "" if self.is_sqlite else " FOR UPDATE"
            revision, compacted = conn.execute(text(_REVISIONS.text + lock)).one()
            target = max(int(revision) - max(keep, 0), 0)
            if budget > 0:
                over = conn.execute(_SQLITE_BYTES_BEYOND if self.is_sqlite else _PG_BYTES_BEYOND, {"budget": budget}).first()
                if over is not None:
                    target = max(target, int(over[0]))
            if target <= int(compacted):
                return int(compacted)
            conn.execute(_COMPACT, {"previous": int(compacted), "target": target})
            conn.execute(text("UPDATE stowage_meta SET compacted = :target WHERE id = 1"), {"target": target})
        log.info("store.compacted", compacted=target, revision=int(revision))
        return target

    # --- maintenance ----------------------------------------------------------
    @property
    def sqlite_path(self) -> str | None:
        if not self.is_sqlite:
            return None
        path = self.url.split("///", 1)[1] if "///" in self.url else ""
        return path.split("?", 1)[0] or None

    def health(self, timeout: float = 2.0) -> list[tuple[str, str | None]]:
        """Readiness checks: (name, None when passing or a short reason safe to show anyone).

        Each probe uses its own connection with a short lock timeout, so a
        locked database is reported within ``timeout`` instead of waiting the
        busy timeout out.
        """
        corrupt = self.corrupt is not None
        checks: list[tuple[str, str | None]] = [
            ("store-integrity", f"the database is corrupt: {RESTORE_HINT}" if corrupt else None)]
        if self.is_sqlite:
            path = self.sqlite_path or ":memory:"
            try:
                conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                return checks + [("store-read", f"cannot open the database: {exc}"), ("store-write", "not checked")]
            try:
                try:
                    conn.execute("SELECT revision FROM stowage_meta WHERE id = 1").fetchone()
                    checks.append(("store-read", None))
                except sqlite3.Error as exc:
                    checks.append(("store-read", f"cannot read the database: {_why(exc)}"))
                if corrupt:
                    checks.append(("store-write", "writes are stopped until the database is restored"))
                    return checks
                try:
                    # Takes and at once gives back the write lock: proves a write could start now.
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute("ROLLBACK")
                    checks.append(("store-write", None))
                except sqlite3.Error as exc:
                    checks.append(("store-write", f"cannot write the database: {_why(exc)}"))
            finally:
                conn.close()
            return checks
        try:
            with self._engine.connect() as conn:
                conn.execute(text(f"SET LOCAL lock_timeout = '{int(timeout * 1000)}ms'"))
                conn.execute(text(f"SET LOCAL statement_timeout = '{int(timeout * 2000)}ms'"))  # lock_timeout first
                conn.execute(_REVISIONS).one()
                checks.append(("store-read", None))
                try:
                    conn.execute(_PG_LOCK_COUNTER).one()
                    checks.append(("store-write", None))
                except DBAPIError as exc:
                    checks.append(("store-write", f"cannot write the database: {_why(exc.orig)}"))
                conn.rollback()
        except DBAPIError as exc:
            checks.append(("store-read", f"cannot read the database: {_why(exc.orig)}"))
            checks.append(("store-write", "not checked"))
        return checks

    def rewrite_encrypted(self) -> int:
        """Rewrite every stored object and event of the encrypted resources that is not in the form the
        first provider writes (older key, or plaintext from before encryption). Returns the objects
        rewritten. Revisions do not change: the objects' content is the same."""
        enc = self.encryption
        if enc is None:
            return 0
        rewritten = 0
        for resource in sorted(enc.resources):
            with self._retrying_tx() as conn:
                rows = conn.execute(text("SELECT namespace, name, body FROM stowage_objects WHERE resource = :r"),
                                    {"r": resource}).all()
                for namespace, name, body in rows:
                    if enc.is_current(resource, body):
                        continue
                    sealed = enc.seal(resource, namespace, name, enc.open(resource, namespace, name, body))
                    conn.execute(text("UPDATE stowage_objects SET body = :b WHERE resource = :r AND namespace = :ns AND name = :n"),
                                 {"b": sealed, "r": resource, "ns": namespace, "n": name})
                    rewritten += 1
                events = conn.execute(text("SELECT revision, namespace, name, body FROM stowage_events WHERE resource = :r"),
                                      {"r": resource}).all()
                for revision, namespace, name, body in events:
                    if not enc.is_current(resource, body):
                        sealed = enc.seal(resource, namespace, name, enc.open(resource, namespace, name, body))
                        conn.execute(text("UPDATE stowage_events SET body = :b WHERE revision = :rev"), {"b": sealed, "rev": revision})
        self._known.clear()
        log.info("store.rewrote_encrypted", objects=rewritten)
        return rewritten

    @contextlib.contextmanager
    def _retrying_tx(self) -> Iterator[Any]:
        with _busy_as_unavailable(), self._write_tx() as conn:
            if not self.is_sqlite:
                conn.execute(_PG_LOCK_COUNTER)
            yield conn

    def restart_history(self, at_least: int = 0) -> int:
        """After a restore: move the revision past ``at_least`` and everything before it, and forget
        the watch history, so every client's watch gets 410 Gone and relists instead of silently
        missing what the restore changed. Returns the new revision."""
        with self._retrying_tx() as conn:
            revision = int(conn.execute(_REVISIONS).one()[0])
            new = max(revision, at_least) + 1
            conn.execute(text("DELETE FROM stowage_events"))
            conn.execute(text("UPDATE stowage_meta SET revision = :r, compacted = :r WHERE id = 1"), {"r": new})
            conn.execute(_KEEP_LIVE_VERSIONS)
        self._known.clear()
        return new

    # --- watch ----------------------------------------------------------------
    def watch(self, resource: str | None, namespace: str | None = None, since: int = 0, *,
              shared: bool = False) -> Watcher:
        with self._hub_lock:
            if self._closed:
                raise RuntimeError("store is closed")
            if self._hub is None:
                self._hub = _Hub(self)
            hub = self._hub
        watcher = _SqlWatcher(hub, resource, namespace, int(since), shared=shared)
        hub.register(watcher)
        return watcher

    def close(self) -> None:
        with self._hub_lock:
            self._closed = True
            hub, self._hub = self._hub, None
        if hub is not None:
            hub.close()
        if self._writer is not None:
            with self._write_lock:  # type: ignore[union-attr]
                self._writer.close()
                self._writer = None
        with self._poll_lock:
            if self._poller is not None:
                self._poller.close()
                self._poller = None
        self._engine.dispose()


def _merge_update(current: dict[str, Any], incoming: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The object to store: the client's body with the store-owned metadata kept from ``current``."""
    stored = dict(incoming)
    meta = dict(incoming.get("metadata") or {})
    old_meta = current.get("metadata") or {}
    for owned in _STORE_OWNED:
        meta.pop(owned, None)
        if owned in old_meta and owned != "resourceVersion":
            meta[owned] = old_meta[owned]
    if _spec_part(stored) != _spec_part(current) and stored.get("kind") not in registry.KINDS_WITHOUT_GENERATION:
        meta["generation"] = int(old_meta.get("generation") or 0) + 1
    meta["name"] = old_meta.get("name", meta.get("name"))
    if old_meta.get("namespace"):
        meta["namespace"] = old_meta["namespace"]
    else:
        meta.pop("namespace", None)
    if not meta.get("finalizers"):
        meta.pop("finalizers", None)  # [] and missing are the same; keep the stored form canonical
    stored["metadata"] = meta
    # Round-trip so equality with ``current`` (parsed JSON) is exact and no caller dict is shared.
    body = _dumps(stored)
    return _loads(body), body


def _matchers(label_selector: str | None, field_selector: str | None) -> list[Callable[[dict[str, Any]], bool]]:
    matchers: list[Callable[[dict[str, Any]], bool]] = []
    if label_selector:
        from storage.api.selectors import parse_label_selector

        selector = parse_label_selector(label_selector)
        matchers.append(lambda obj: bool(selector.matches((obj.get("metadata") or {}).get("labels") or {})))
    if field_selector:
        from storage.api.selectors import parse_field_selector

        matchers.append(parse_field_selector(field_selector))
    return matchers


def _sqlite_pragmas(dbapi_conn: Any, _record: Any, busy_timeout: float = SQLITE_BUSY_TIMEOUT_SECONDS) -> None:
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError:
            pass  # a damaged or locked file: the integrity check at open says which, and refuses writes
        cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes of the process
    finally:
        cursor.close()


def _pg_session(dbapi_conn: Any, busy_timeout: float) -> None:
    """A write waiting on a lock another session holds gives up (503) instead of hanging forever."""
    autocommit = dbapi_conn.autocommit
    dbapi_conn.autocommit = True
    try:
        dbapi_conn.execute(f"SET lock_timeout = '{int(busy_timeout * 1000)}ms'")
    finally:
        dbapi_conn.autocommit = autocommit


class _DriverResult:
    """The few ``Result`` methods the write path uses, over a DB-API cursor."""

    __slots__ = ("cursor",)

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

    def first(self) -> tuple[Any, ...] | None:
        return self.cursor.fetchone()  # type: ignore[no-any-return]

    def one(self) -> tuple[Any, ...]:
        row = self.cursor.fetchone()
        if row is None:
            raise RuntimeError("expected one row")
        return row  # type: ignore[no-any-return]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def all(self) -> list[tuple[Any, ...]]:
        return self.cursor.fetchall()  # type: ignore[no-any-return]


class _SqliteWriteConn:
    """A ``Connection`` look-alike for SQLite writes: ``text()`` SQL with ``:name`` binds runs as is."""

    def __init__(self, driver: Any) -> None:
        self.cursor = driver.cursor()

    @classmethod
    def over(cls, cursor: Any) -> "_SqliteWriteConn":
        conn = cls.__new__(cls)
        conn.cursor = cursor
        return conn

    def execute(self, stmt: Any, params: dict[str, Any] | None = None) -> _DriverResult:
        self.cursor.execute(stmt.text, params or {})
        return _DriverResult(self.cursor)


class _SqliteWriteTx:
    """BEGIN IMMEDIATE takes SQLite's write lock up front, so the revision read inside is final."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def __enter__(self) -> Any:
        lock = self.store._write_lock
        assert lock is not None
        lock.acquire()
        try:
            self.driver = self.store._sqlite_writer()
            self.conn = _SqliteWriteConn(self.driver)
            self.conn.cursor.execute("BEGIN IMMEDIATE")
        except BaseException:
            lock.release()
            raise
        return self.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            if exc_type is None:
                try:
                    self.conn.cursor.execute("COMMIT")
                except BaseException:
                    self.conn.cursor.execute("ROLLBACK")
                    raise
            else:
                self.conn.cursor.execute("ROLLBACK")
        finally:
            self.conn.cursor.close()
            self.store._write_lock.release()  # type: ignore[union-attr]


# The most writes one group commit takes: bounds how long the write lock is held at a time.
GROUP_COMMIT_MAX = 256


class _Pending:
    """One writer's work waiting for a group commit, and then its outcome."""

    __slots__ = ("work", "done", "lead", "result", "error")

    def __init__(self, work: Callable[[Any], Any]) -> None:
        self.work = work
        self.done = False
        self.lead = False
        self.result: Any = None
        self.error: BaseException | None = None


class _GroupCommit:
    """SQLite group commit: the writers of this process that arrive while a transaction is being
    written share the next one (PF50).

    Each writer queues its work; one of them (the leader) takes the write lock, runs every queued
    work in one ``BEGIN IMMEDIATE`` transaction, each in a savepoint of its own, and commits once.
    Only then is any of them answered, so no write is acknowledged before the commit that holds it
    returned: the durability of an acknowledged write is exactly a single write's (PF51). A work
    that fails (a taken name, a stale resourceVersion, any error) is rolled back to its savepoint
    and fails alone; the others commit (PF52). A commit that fails fails every work of the batch,
    none of which was acknowledged. Leadership then passes to the oldest writer still queued, so
    no writer serves others' batches after its own is done.

    Batches form by themselves: while one commit is being written (SQLite drops the GIL in it),
    the request threads queue the next writes. A lone writer commits at once, without waiting.
    """

    def __init__(self, store: "SqlStore") -> None:
        self.store = store
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Pending] = deque()
        self._leading = False
        self.batches = 0  # how many transactions, for the tests and the benchmarks
        self.writes = 0

    def run(self, work: Callable[[Any], _T]) -> _T:
        mine = _Pending(work)
        with self._cond:
            self._queue.append(mine)
            if self._leading:
                while not mine.done and not mine.lead:
                    self._cond.wait()
            else:
                mine.lead = self._leading = True
        if not mine.done:
            self._lead()
        if mine.error is not None:
            raise mine.error
        return mine.result  # type: ignore[no-any-return]

    def _lead(self) -> None:
        """Commit one batch (it holds this writer's work), then hand leadership on."""
        batch: list[_Pending] = []
        lock = self.store._write_lock
        assert lock is not None
        try:
            with lock:
                # Taken once the lock is held: whoever queued while it was waited for joins this batch.
                with self._cond:
                    while self._queue and len(batch) < GROUP_COMMIT_MAX:
                        batch.append(self._queue.popleft())
                self._commit(batch)
        finally:
            with self._cond:
                for pending in batch:
                    pending.done = True
                if self._queue:
                    self._queue[0].lead = True  # the oldest waiter writes the next batch
                else:
                    self._leading = False
                self._cond.notify_all()

    def _commit(self, batch: list[_Pending]) -> None:
        """One transaction for ``batch``, each work in a savepoint; called with the write lock held."""
        cursor = None
        try:
            cursor = self.store._sqlite_writer().cursor()
            conn = _SqliteWriteConn.over(cursor)
            cursor.execute("BEGIN IMMEDIATE")
            if len(batch) == 1:  # a lone write needs no savepoint: its failure rolls the transaction back
                only = batch[0]
                try:
                    only.result = only.work(conn)
                except BaseException as exc:
                    only.error = exc
                    cursor.execute("ROLLBACK")
                    return
                cursor.execute("COMMIT")
                self.batches += 1
                self.writes += 1
                return
            for pending in batch:
                cursor.execute("SAVEPOINT stowage_write")
                try:
                    pending.result = pending.work(conn)
                except BaseException as exc:  # this write alone fails: undo it, keep the others
                    pending.error = exc
                    cursor.execute("ROLLBACK TO stowage_write")
                cursor.execute("RELEASE stowage_write")
            cursor.execute("COMMIT")
        except BaseException as exc:
            # Not committed: no write of the batch happened, and none is acknowledged.
            if cursor is not None:
                try:
                    cursor.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # no transaction was open (BEGIN failed), or SQLite already rolled it back
            for pending in batch:
                pending.result, pending.error = None, exc
            return
        finally:
            if cursor is not None:
                cursor.close()
        self.batches += 1
        self.writes += len(batch)


class _Hub:
    """One poller per store: reads new events once and fans them out to every watcher."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._by_resource: dict[str | None, set[_SqlWatcher]] = {}
        self._count = 0
        self._position = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="stowage-store-watch", daemon=True)
        self._listener: threading.Thread | None = None
        self._thread.start()
        if not store.is_sqlite:
            self._listener = threading.Thread(target=self._listen, name="stowage-store-listen", daemon=True)
            self._listener.start()

    def poke(self) -> None:
        self._wake.set()

    def register(self, watcher: "_SqlWatcher") -> None:
        since = watcher.last
        with self._lock:
            if self._count == 0:
                # Nobody watched, so the poller did not follow: start from the newest revision.
                self._position = self.store.current_revision()
            target = self._position
        # The history up to ``target`` is read without the lock: a watch resumed from far back (an agent
        # reconnecting to a busy server) must not hold up the poller, and with it every other watch.
        backlog = self._backlog(since, target, watcher.resource)
        with self._lock:
            # Only what the poller delivered meanwhile remains (the position only moves forward).
            backlog.extend(self._backlog(max(since, target), self._position, watcher.resource))
            # Read after the events: a compaction that removed any of them is visible here.
            _, compacted = self.store._revisions()
            if since < compacted:
                raise Gone(f"too old resource version: {since} ({compacted})")
            watcher.feed(backlog)
            self._by_resource.setdefault(watcher.resource, set()).add(watcher)
            self._count += 1
        self._wake.set()

    def _backlog(self, after: int, upto: int, resource: str | None) -> list[Row[Any]]:
        rows: list[Row[Any]] = []
        while after < upto:
            page = self.store._events(after, upto, limit=5000, resource=resource)
            if not page:
                break
            rows.extend(page)
            after = int(page[-1][0])
        return rows

    def unregister(self, watcher: "_SqlWatcher") -> None:
        with self._lock:
            group = self._by_resource.get(watcher.resource)
            if group is not None and watcher in group:
                group.discard(watcher)
                self._count -= 1

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        with self._lock:
            watchers = [w for group in self._by_resource.values() for w in group]
        for watcher in watchers:
            watcher.close()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.store._poll_interval)
            self._wake.clear()
            if self._closed:
                return
            try:
                self._poll()
            except Exception:
                if self._closed:
                    return
                log.warning("store.watch_poll_failed", exc_info=True)
                time.sleep(self.store._poll_interval)

    def _poll(self) -> None:
        while True:
            with self._lock:
                if self._count == 0:
                    return
                start = self._position
            rows = self.store._events(start, None, limit=1000, poller=True)
            if not rows:
                return
            if int(rows[0][0]) != start + 1:
                _, compacted = self.store._revisions()
                if compacted > start:  # the poller fell behind compaction: its watchers lost events
                    self._expire(start, compacted)
            with self._lock:
                for row in rows:
                    revision = int(row[0])
                    if revision <= self._position:
                        continue
                    change = _Fanned(row)
                    for key in (row[1], None):
                        for watcher in self._by_resource.get(key, ()):
                            watcher.offer(change)
                    self._position = revision
            if len(rows) < 1000:
                return

    def _expire(self, start: int, compacted: int) -> None:
        with self._lock:
            watchers = [w for group in self._by_resource.values() for w in group]
        for watcher in watchers:
            watcher.fail(Gone(f"too old resource version: {start} ({compacted})"))

    def _listen(self) -> None:
        """PostgreSQL: turn NOTIFY from any process's commit into a poke."""
        raw = None
        while not self._closed:
            try:
                if raw is None:
                    pooled = self.store._engine.raw_connection()
                    raw = driver = pooled.driver_connection
                    pooled.detach()  # a private connection, never returned to the pool
                    driver.autocommit = True
                    driver.execute(f'LISTEN "{self.store._channel}"')
                    self._wake.set()  # something may have committed before LISTEN took effect
                for _ in driver.notifies(timeout=0.25, stop_after=1):
                    self._wake.set()
            except Exception:
                if self._closed:
                    break
                log.warning("store.listen_failed", exc_info=True)
                if raw is not None:
                    try:
                        raw.close()
                    except Exception:
                        pass
                raw = None
                time.sleep(0.5)
        if raw is not None:
            try:
                raw.close()
            except Exception:
                pass


class _Fanned:
    """One event row as the hub hands it to every watcher: decoded at most once for all shared ones."""

    __slots__ = ("row", "_event")

    def __init__(self, row: Row[Any]) -> None:
        self.row = row
        self._event: WatchEvent | None = None

    def decode(self) -> WatchEvent:
        revision, resource, _, _, type_, body = self.row
        return WatchEvent(type=type_, resource=resource, object=_with_version(body, int(revision)), revision=int(revision))

    def shared(self) -> WatchEvent:
        # Two watchers racing here may each decode; both results are equal and read-only, so no lock.
        if self._event is None:
            self._event = self.decode()
        return self._event


class _SqlWatcher(Watcher):
    def __init__(self, hub: _Hub, resource: str | None, namespace: str | None, since: int, *, shared: bool = False) -> None:
        self.hub = hub
        self.resource = resource
        self.namespace = namespace
        self.shared = shared
        self.last = since
        self._cond = threading.Condition()
        self._queue: deque[_Fanned] = deque()
        self._closed = False
        self._error: Exception | None = None

    def _wanted(self, row: Row[Any]) -> bool:
        return (self.resource is None or row[1] == self.resource) and (self.namespace is None or row[2] == self.namespace)

    def feed(self, rows: Sequence[Row[Any]]) -> None:
        with self._cond:
            for row in rows:
                self._offer_locked(_Fanned(row))
            self._cond.notify_all()

    def offer(self, change: _Fanned) -> None:
        with self._cond:
            if self._offer_locked(change):
                self._cond.notify_all()

    def _offer_locked(self, change: _Fanned) -> bool:
        revision = int(change.row[0])
        if revision <= self.last or not self._wanted(change.row):
            return False
        self.last = revision
        self._queue.append(change)
        return True

    def fail(self, error: Exception) -> None:
        with self._cond:
            self._error = error
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> WatchEvent | None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._queue or self._closed or self._error, timeout):
                return None
            if self._closed:
                return None
            if not self._queue and self._error is not None:
                raise self._error
            change = self._queue.popleft()
        return change.shared() if self.shared else change.decode()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.hub.unregister(self)
