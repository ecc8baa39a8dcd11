"""A Secret's value never reaches the database file, the server's logs (at DEBUG) or an error Status.

Against a real `stowage serve` (SQLite, the default encryption config made
in the data dir), with requests that used to echo values back: invalid
base64, wrongly typed values, a failing JSON-patch test operation.
"""
from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path


from sec_store_util import Served, serve_env, start_serve, started  # noqa: F401 (started is a fixture)
from support import UpProcess, stowage_executable

MARKER = "Zq7-topsecret-do-not-log-42"
ENCODED = base64.b64encode(MARKER.encode()).decode()


def _leaks(text: str) -> list[str]:
    return [v for v in (MARKER, ENCODED, ENCODED.rstrip("=")) if v in text]


def test_secret_values_stay_out_of_the_db_file_logs_and_errors(started: list[UpProcess], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = serve_env(tmp_path, STOWAGE_LOG_LEVEL="DEBUG")
    up = start_serve(started, data_dir, env)
    served = Served(up, up.wait_for("stowage is ready"))
    url = "/api/v1/namespaces/default/secrets"
    try:
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                  "data": {"password": ENCODED}, "stringData": {"token": MARKER}}
        created = served.http.post(url, json=secret)
        assert created.status_code == 201, created.text
        assert created.json()["data"]["password"] == ENCODED  # an authorized reader gets the value

        errors = []
        for bad in ({"data": {"password": MARKER + "!!"}},              # not base64
                    {"data": {"password": {"nested": MARKER}}},          # not a string
                    {"stringData": {"token": [MARKER]}},
                    {"data": MARKER}):
            response = served.http.post(url, json={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad"}, **bad})
            assert response.status_code in (400, 422), response.text
            errors.append(response.text)
        patch = served.http.patch(f"{url}/db", content=json.dumps([{"op": "test", "path": "/data/password", "value": "x"}]),
                                  headers={"Content-Type": "application/json-patch+json"})
        assert patch.status_code in (400, 409, 422), patch.text
        errors.append(patch.text)
        for text in errors:
            assert _leaks(text) == [], text

        watch = served.http.get(url, params={"watch": "true", "timeoutSeconds": "1"})
        assert ENCODED in watch.text  # the watch carries the decrypted object to an authorized client

        describe = subprocess.run([stowage_executable(), "describe", "secret", "db", "--kubeconfig", served.kubeconfig],
                                  capture_output=True, text=True, env=env, timeout=60)
        assert describe.returncode == 0, describe.stderr
        assert "password" in describe.stdout and _leaks(describe.stdout) == []
    finally:
        served.close()
    assert up.stop() == 0
    logs = up.output()
    assert '"event": "request failed"' in logs and '"level": "debug"' in logs  # DEBUG, the failures included
    assert _leaks(logs) == []
    for f in data_dir.glob("stowage.db*"):
        raw = f.read_bytes()
        assert MARKER.encode() not in raw and ENCODED.encode() not in raw, f.name
