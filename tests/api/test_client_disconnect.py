"""A client that hangs up in the middle of its request body: the server stores nothing and treats it
as the client's doing (no error log, no traceback), as the Kubernetes API server does."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from storage.apiserver.app import create_app
from storage.apiserver.auth import ensure_admin_token, load_token_auth
from storage.apiserver.namespaces import ensure_system_objects
from storage.errors import NotFound
from storage.store import open_store

BODY = b'{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "half"}, "data": {"k": "v"}}'


def test_a_body_cut_short_by_the_client_stores_nothing_and_logs_no_error(tmp_path: Path) -> None:
    token = ensure_admin_token(tmp_path)
    store = open_store(str(tmp_path / "stowage.db"))
    try:
        ensure_system_objects(store, "127.0.0.1", 6443)
        app = create_app(store, load_token_auth(tmp_path))
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/api/v1/namespaces/default/configmaps", "raw_path": b"/api/v1/namespaces/default/configmaps",
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 6443),
            "headers": [(b"host", b"stowage"), (b"authorization", f"Bearer {token}".encode()),
                        (b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
        }
        # Half the body arrives, then the connection closes.
        messages = [{"type": "http.request", "body": BODY[:30], "more_body": True}, {"type": "http.disconnect"}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        with capture_logs() as logs:
            asyncio.run(app(scope, receive, send))
        assert [e for e in logs if e.get("log_level") in ("error", "critical", "warning")] == []
        assert any(e["event"] == "client went away" for e in logs), logs
        starts = [m for m in sent if m["type"] == "http.response.start"]
        assert [m["status"] for m in starts] == [499]
        try:
            store.get("configmaps", "default", "half")
            raise AssertionError("a half-sent ConfigMap was stored")
        except NotFound:
            pass
    finally:
        store.close()
