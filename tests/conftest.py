"""Session-wide fixtures: a private PostgreSQL server and a ``store`` on each backend.

Any test that takes ``store`` runs once on SQLite and once on PostgreSQL; any test that takes
``kubectl_version`` runs once with each kubectl release the README promises (``kubectl_binary(version)``).
"""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so tests and benchmarks share pgserver.py

from pgserver import PostgresServer, PostgresUnavailable  # noqa: E402
from support import KUBECTL_VERSIONS  # noqa: E402
from azurite_service import Azurite, azurite  # noqa: E402,F401  (fixture, shared by every suite)
from objectstore_servers import (  # noqa: E402
    ObjectStoreTarget, drop_target, make_azure_target, make_gcs_target, make_s3_target, running_gcs_emulator,
    running_moto)

from storage.store.sql import SqlStore  # noqa: E402


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            # CI installs PostgreSQL, so a missing server there is a broken setup, not a reason to skip.
            pytest.fail(f"PostgreSQL is not installed, and CI must run the PostgreSQL tests: {exc}")
        pytest.skip(f"PostgreSQL is not installed: {exc}")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """A SQLAlchemy URL of a fresh database on the session's private server."""
    return postgres_server.create_database("stowage_test")


def _fresh_schema(postgres_url: str) -> tuple[str, str]:
    """A new empty schema (much faster than a new database) and a URL whose search_path is it."""
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema, f"{postgres_url}?options=-csearch_path%3D{schema}"


def _drop_schema(postgres_url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty store: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'stowage.db'}"
        return
    base = request.getfixturevalue("postgres_url")
    schema, url = _fresh_schema(base)
    try:
        yield url
    finally:
        _drop_schema(base, schema)


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    s = SqlStore(store_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(params=KUBECTL_VERSIONS, ids=[f"kubectl{v}" for v in KUBECTL_VERSIONS])
def kubectl_version(request: pytest.FixtureRequest) -> str:
    """A kubectl release the tests drive: the current one from PyPI, Debian 12's 1.20."""
    return str(request.param)


# --- object stores (the backup engine's tests): each server starts the first time a test needs it ---------


@pytest.fixture(scope="session")
def moto_s3_endpoint() -> Iterator[str]:
    """moto's S3 server (a thread of this process) on a free 127.0.0.1 port."""
    with running_moto() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def gcs_emulator_endpoint() -> Iterator[str]:
    """The gcp-storage-emulator (PyPI) as a subprocess on a free 127.0.0.1 port, data in a temp dir."""
    with running_gcs_emulator() as endpoint:
        yield endpoint


@pytest.fixture(params=["s3", "gcs", "azure"])
def object_store_target(request: pytest.FixtureRequest) -> Iterator[ObjectStoreTarget]:
    """A fresh bucket (S3, GCS) or container (Azure) on that store's emulator; unpacks as
    ``(store_url, credentials)`` for ``storage.system.backupstore.open_store``."""
    azurite_service: Azurite | None = None
    if request.param == "s3":
        target = make_s3_target(request.getfixturevalue("moto_s3_endpoint"))
    elif request.param == "gcs":
        target = make_gcs_target(request.getfixturevalue("gcs_emulator_endpoint"))
    else:
        azurite_service = request.getfixturevalue("azurite")
        target = make_azure_target(azurite_service)
    try:
        yield target
    finally:
        drop_target(target, azurite_service)


# --- pytest-xdist: which tests must share a worker ------------------------------------------------------
# CI runs `-n N --dist loadgroup`: tests with the same xdist_group mark run in one worker, the rest are
# spread test by test. Session fixtures start lazily in every worker that needs them, so a test that needs
# a heavy or host-exclusive service is grouped by that service (it then starts once, in one worker: Ceph
# and glusterd are too big to run twice on 2 cores, and glusterd's port and ganesha's /run are fixed), and a
# test whose module has a module-scoped fixture (a whole `stowage up`, an API server) is grouped by its
# module, so that fixture is not set up again in every worker the module's tests land on.
# The first service in this list that a test's fixture closure reaches names its group.
_SERVICE_GROUPS: tuple[tuple[str, frozenset[str]], ...] = (
    ("ceph", frozenset({"ceph_cluster"})),
    ("gluster", frozenset({"glusterd"})),
    ("nfs", frozenset({"ganesha"})),
    ("iscsi", frozenset({"tgt"})),
)


def _xdist_group(item: pytest.Item) -> str | None:
    names = set(getattr(item, "fixturenames", ()))
    for group, fixtures in _SERVICE_GROUPS:
        if names & fixtures:
            return group
    info = getattr(item, "_fixtureinfo", None)
    if info is not None:
        for defs in info.name2fixturedefs.values():
            if any(d.scope in ("module", "package", "class") for d in defs):
                return "module-" + item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1]  # basenames are unique
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns the marks into the scheduler's groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            group = _xdist_group(item)
            if group is not None:
                item.add_marker(pytest.mark.xdist_group(group))


class _GroupSuffix:
    """xdist's loadgroup scheduler reads a test's group from an ``@group`` suffix of its node id, which
    xdist 3.8 writes to ``item._nodeid``; pytest 9.2 keeps node ids in ``item._id`` (a structured NodeId)
    and ignores ``_nodeid``, so every group would silently be dropped. This adds the suffix where it is
    missing, after xdist's own hook (a no-op where xdist's suffix took)."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        if not getattr(config.option, "loadgroup", False):  # set in xdist workers under --dist loadgroup
            return
        for item in items:
            names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                            for m in item.iter_markers("xdist_group")})
            if names and "@" not in item.nodeid:
                from _pytest.nodeid import NodeId  # pytest >= 9.2 only: older pytest never gets here

                item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")  # type: ignore[attr-defined]


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_GroupSuffix(), "stowage-xdist-group-suffix")


def _controller(config: pytest.Config) -> bool:
    """The process that runs the whole session: the xdist controller, or the only process without xdist."""
    return not hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    if _controller(session.config):
        import machine_paths

        session.config.stash[_MACHINE_PATHS] = machine_paths.snapshot()


def pytest_sessionfinish(session: pytest.Session) -> None:
    # In the controller only, after every worker has ended: a worker's own end would pull run dirs out from
    # under the tests the other workers still run.
    before = session.config.stash.get(_MACHINE_PATHS, None)
    if _controller(session.config) and before is not None:
        import machine_paths

        machine_paths.restore(before)


_MACHINE_PATHS = pytest.StashKey[dict[str, bool]]()
