"""The database-lock attack and a corrupt database, against a real `stowage serve` on SQLite.

Issue 8: while another process held the SQLite lock every request stalled,
/healthz included (the store ran on the event loop), and on a corrupt
database /readyz said ok and creates returned 201.
"""
from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any


from sec_store_util import Served, serve_env, start_serve, started  # noqa: F401 (started is a fixture)
from support import UpProcess, stowage_executable

from storage.store.sql import SqlStore


def test_database_lock_keeps_health_answering_and_fails_readiness(started: list[UpProcess], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    up = start_serve(started, data_dir, serve_env(tmp_path))
    served = Served(up, up.wait_for("stowage is ready"))
    try:
        assert served.create_configmap("before").status_code == 201

        attacker = sqlite3.connect(data_dir / "stowage.db", isolation_level=None)
        attacker.execute("BEGIN EXCLUSIVE")  # another process holds SQLite's write lock
        try:
            pending: dict[str, Any] = {}
            create = threading.Thread(target=lambda: pending.update(r=served.create_configmap("during")))
            create.start()
            # Liveness and health do not touch the store: answered while the create waits on the lock.
            for path in ("/healthz", "/livez"):
                response = served.http.get(path)
                assert (response.status_code, response.text) == (200, "ok")
            assert create.is_alive(), "the create should still be waiting on the lock"

            ready = served.http.get("/readyz")
            assert ready.status_code == 500
            assert "[-]store-write failed: cannot write the database: the database is locked by another process" in ready.text
            assert "[+]store-read ok" in ready.text  # WAL: reads go on under a writer's lock
            assert ready.text.rstrip().endswith("readyz check failed")
            assert served.configmap_names() == ["before"]

            create.join()
            response = pending["r"]
            assert response.status_code == 503, response.text  # bounded by the busy timeout, not a hang
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["reason"] == "ServiceUnavailable"
            assert "locked by another process" in response.json()["message"]
        finally:
            attacker.execute("ROLLBACK")
            attacker.close()

        verbose = served.http.get("/readyz", params={"verbose": ""})
        assert verbose.status_code == 200
        assert "[+]store-write ok" in verbose.text and verbose.text.rstrip().endswith("readyz check passed")
        assert served.create_configmap("after").status_code == 201
        assert served.configmap_names() == ["after", "before"]
    finally:
        served.close()
    assert up.stop() == 0


def _corrupt_pages(db: Path) -> None:
    """Overwrite a few pages in the middle of the file, as a failing disk or a stray write would."""
    page = 4096
    pages = db.stat().st_size // page
    assert pages > 20, "the database should span many pages"
    with open(db, "r+b") as f:
        for n in range(pages // 3, pages // 3 + 4):
            f.seek(n * page)
            f.write(os.urandom(page))


def test_corrupt_database_refuses_writes_and_restore_recovers(started: list[UpProcess], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    db = data_dir / "stowage.db"
    store = SqlStore(f"sqlite:///{db}")
    for i in range(300):
        store.create("configmaps", {"metadata": {"name": f"cm-{i:03d}", "namespace": "default"}, "data": {"x": "y" * 800}})
    store.close()
    backup = tmp_path / "good.db"
    run = subprocess.run([stowage_executable(), "backup", str(backup), "--data-dir", str(data_dir)],
                         capture_output=True, text=True, env=serve_env(tmp_path), timeout=120)
    assert run.returncode == 0, run.stderr
    _corrupt_pages(db)

    env = serve_env(tmp_path)
    up = start_serve(started, data_dir, env)
    warning = up.wait_for("the database is corrupt: the API serves reads only and refuses every write")
    assert "stowage restore" in warning["recovery"]
    served = Served(up, up.wait_for("stowage is ready"))
    try:
        ready = served.http.get("/readyz")
        assert ready.status_code == 500
        assert "[-]store-integrity failed: the database is corrupt" in ready.text
        assert "stowage restore FILE" in ready.text
        response = served.create_configmap("new")
        assert response.status_code != 201
        assert response.status_code == 503, response.text
        assert "stowage restore" in response.json()["message"]
    finally:
        served.close()
    assert up.stop() == 0

    restore = subprocess.run([stowage_executable(), "restore", str(backup), "--data-dir", str(data_dir)],
                             capture_output=True, text=True, env=env, timeout=120)
    assert restore.returncode == 0, restore.stderr
    assert list(data_dir.glob("stowage.db.before-restore-*")), "the damaged file is kept aside"

    again = start_serve(started, data_dir, env)
    served = Served(again, again.wait_for("stowage is ready"))
    try:
        assert served.http.get("/readyz").text == "ok"
        assert served.create_configmap("new").status_code == 201
        assert len(served.configmap_names()) == 301
    finally:
        served.close()
    assert again.stop() == 0
