"""`stowage backup` while serving and `stowage restore` after, on SQLite and PostgreSQL.

After a restore the revision has moved past every revision the old
database reached, so a client watching from before gets 410 Gone and
relists instead of silently missing what the restore changed.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator

import orjson
import pytest

from sec_store_util import Served, drop_pg_schema, fresh_pg_schema, serve_env, start_serve, started  # noqa: F401 (started is a fixture)
from support import UpProcess, stowage_executable


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_args(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    if request.param == "sqlite":
        yield []
        return
    base = request.getfixturevalue("postgres_url")
    schema, url = fresh_pg_schema(base)
    try:
        yield ["--store", url]
    finally:
        drop_pg_schema(base, schema)


def _stowage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([stowage_executable(), *args], capture_output=True, text=True, env=env, timeout=300)


def test_backup_while_serving_then_restore(started: list[UpProcess], tmp_path: Path, store_args: list[str]) -> None:
    data_dir = tmp_path / "data"
    env = serve_env(tmp_path)
    backup = tmp_path / "backup.dump"
    common = ["--data-dir", str(data_dir), *store_args]

    up = start_serve(started, data_dir, env, *store_args)
    served = Served(up, up.wait_for("stowage is ready"))
    try:
        assert served.create_configmap("kept", v="1").status_code == 201
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "value"}}
        assert served.http.post("/api/v1/namespaces/default/secrets", json=secret).status_code == 201

        made = _stowage(env, "backup", str(backup), *common)
        assert made.returncode == 0, made.stderr
        assert (backup.stat().st_mode & 0o077) == 0  # it holds the (encrypted) Secrets

        refused = _stowage(env, "restore", str(backup), *common)  # never under a running server
        assert refused.returncode == 1
        assert f"in use by stowage serve (pid {up.proc.pid})" in refused.stderr

        assert served.create_configmap("later").status_code == 201
        assert served.http.delete("/api/v1/namespaces/default/configmaps/kept").status_code == 200
        listed = served.http.get("/api/v1/namespaces/default/configmaps")
        before_restore = int(listed.json()["metadata"]["resourceVersion"])
    finally:
        served.close()
    assert up.stop() == 0

    restored = _stowage(env, "restore", str(backup), *common)
    assert restored.returncode == 0, restored.stderr

    again = start_serve(started, data_dir, env, *store_args)
    served = Served(again, again.wait_for("stowage is ready"))
    try:
        listed = served.http.get("/api/v1/namespaces/default/configmaps")
        # Besides the root CA every namespace holds (kube-root-ca.crt).
        assert sorted(o["metadata"]["name"] for o in listed.json()["items"]
                      if o["metadata"]["name"] != "kube-root-ca.crt") == ["kept"]
        assert int(listed.json()["metadata"]["resourceVersion"]) > before_restore
        secret_back = served.http.get("/api/v1/namespaces/default/secrets/s")
        assert secret_back.status_code == 200 and secret_back.json()["data"] == {"k": "dmFsdWU="}
        watch = served.http.get("/api/v1/namespaces/default/configmaps",
                                params={"watch": "true", "resourceVersion": str(before_restore), "timeoutSeconds": "5"})
        events = [orjson.loads(line) for line in watch.text.splitlines() if line]
        assert events and events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410
        assert served.create_configmap("new").status_code == 201
    finally:
        served.close()
    assert again.stop() == 0


def test_restore_refuses_a_file_that_is_not_a_stowage_backup(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    result = _stowage(serve_env(tmp_path), "restore", str(junk), "--data-dir", str(data_dir))
    assert result.returncode == 1
    assert "junk.db" in result.stderr and "not" in result.stderr
    assert not (data_dir / "stowage.db").exists()  # nothing was replaced
