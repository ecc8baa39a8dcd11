"""``serve`` as a process's main thread: SIGTERM stops it cleanly, open watches included."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from storage.apiserver.auth import ensure_admin_token
from storage.client import Client
from storage.system.pki import client_context
from support import wait_for

SCRIPT = textwrap.dedent(
    """
    import sys
    from storage.apiserver.server import bind_socket, serve
    from storage.store import open_store

    data_dir = sys.argv[1]
    store = open_store(data_dir + "/stowage.db")
    sock = bind_socket("127.0.0.1", 0)
    print(sock.getsockname()[1], flush=True)
    try:
        serve(store, data_dir=data_dir, sock=sock)
    finally:
        store.close()
    print("stopped", flush=True)
    """
)


def wait_healthy(url: str, proc: subprocess.Popen, verify: Any, attempts: int = 600) -> None:
    for _ in range(attempts):
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=5, verify=verify).status_code == 200:
                return
        except httpx.TransportError:
            pass
        threading.Event().wait(0.05)
    raise AssertionError("server never became healthy")


@pytest.mark.timeout(120)
def test_sigterm_stops_the_server_and_ends_watches(tmp_path: Path) -> None:
    token = ensure_admin_token(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        url = f"https://127.0.0.1:{port}"
        ca = tmp_path / "pki" / "ca.crt"
        wait_for(ca.exists, "the cluster CA", 60)
        wait_healthy(url, proc, client_context(ca.read_bytes()))
        client = Client(url, token, ca=ca)
        client.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}})
        stream = client.watch("configmaps", "default", timeout=3600)
        assert next(stream)["object"]["metadata"]["name"] == "c"
        ended = threading.Event()

        def drain() -> None:
            try:
                for _ in stream:
                    pass
            except httpx.HTTPError:
                pass
            ended.set()

        threading.Thread(target=drain, daemon=True).start()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert "stopped" in proc.stdout.read()
        assert ended.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
