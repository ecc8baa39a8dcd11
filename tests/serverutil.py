"""A real API server for tests: SQLite store in a temp dir, uvicorn on 127.0.0.1 port 0.

    with running_server(tmp_path) as srv:
        client = srv.client()          # storage.client.Client with the admin token
        srv.kubeconfig                 # a kubeconfig file for kubectl / the kubernetes client
        srv.store                      # the same store, for assertions behind the API's back
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from storage.apiserver.admission import Admission
from storage.apiserver.server import RunningServer, start_in_thread
from storage.store import open_store


@contextlib.contextmanager
def running_server(tmp_path: Path, *, admission: Admission | None = None,
                   host: str = "127.0.0.1", bookmark_interval: float | None = 30.0,
                   cpu: int | None = None) -> Iterator[RunningServer]:
    data_dir = Path(tmp_path) / "apiserver"
    data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(str(data_dir / "stowage.db"))
    try:
        server = start_in_thread(
            store, host=host, port=0, data_dir=data_dir, admission=admission,
            kubeconfig=data_dir / "kubeconfig", bookmark_interval=bookmark_interval, cpu=cpu,
        )
        try:
            yield server
        finally:
            server.stop()
    finally:
        store.close()
