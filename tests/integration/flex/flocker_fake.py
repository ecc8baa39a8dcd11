"""A recording fake of Flocker's control-service REST API (v1), strict where the real one is: unknown
dataset ids are 404 "Dataset not found.", bodies that are not JSON objects or lack required fields are
400, and a moved dataset's state follows its configuration only after a few state reads (convergence)."""
from __future__ import annotations

import json
import threading
import uuid as uuidlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

THIS_HOST = "127.0.0.1"


class FlockerFake:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.nodes = {THIS_HOST: str(uuidlib.uuid4()), "10.9.9.9": str(uuidlib.uuid4())}
        self.config: dict[str, dict[str, Any]] = {}
        self.state: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, int] = {}  # dataset -> state reads until it converges
        self.requests: list[tuple[str, str, Any]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                with fake.lock:
                    fake.requests.append(("GET", self.path, None))
                    self._reply(*fake.get(self.path))

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                    if not isinstance(body, dict):
                        raise ValueError
                except ValueError:
                    self._reply(400, {"description": "The request body was not a JSON object."})
                    return
                with fake.lock:
                    fake.requests.append(("POST", self.path, body))
                    self._reply(*fake.post(self.path, body))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FlockerFake":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_dataset(self, primary_host: str, name: str | None = None) -> str:
        dataset_id = str(uuidlib.uuid4())
        primary = self.nodes[primary_host]
        self.config[dataset_id] = {"dataset_id": dataset_id, "primary": primary, "maximum_size": 2**30,
                                   "metadata": {"name": name} if name else {}, "deleted": False}
        self.state[dataset_id] = {"dataset_id": dataset_id, "primary": primary, "path": self._path(dataset_id)}
        return dataset_id

    def _path(self, dataset_id: str) -> str:
        path = self.base / "flocker" / dataset_id
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def get(self, path: str) -> tuple[int, Any]:
        if path == "/v1/state/nodes":
            return 200, [{"host": h, "uuid": u} for h, u in self.nodes.items()]
        if path == "/v1/configuration/datasets":
            return 200, list(self.config.values())
        if path == "/v1/state/datasets":
            for dataset_id in list(self.pending):
                self.pending[dataset_id] -= 1
                if self.pending[dataset_id] <= 0:
                    del self.pending[dataset_id]
                    self.state[dataset_id] = {"dataset_id": dataset_id, "primary": self.config[dataset_id]["primary"],
                                              "path": self._path(dataset_id)}
            return 200, list(self.state.values())
        return 404, {"description": "Not found."}

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if path == "/v1/configuration/datasets":
            if body.get("primary") not in self.nodes.values():
                return 400, {"description": "The provided JSON doesn't match the required schema: primary"}
            dataset_id = str(body.get("dataset_id") or uuidlib.uuid4())
            self.config[dataset_id] = {"dataset_id": dataset_id, "primary": body["primary"],
                                       "maximum_size": body.get("maximum_size"),
                                       "metadata": body.get("metadata") or {}, "deleted": False}
            self.pending[dataset_id] = 2
            return 201, self.config[dataset_id]
        prefix = "/v1/configuration/datasets/"
        if path.startswith(prefix):
            dataset_id = path[len(prefix):]
            if dataset_id not in self.config:
                return 404, {"description": "Dataset not found."}
            if body.get("primary") not in self.nodes.values():
                return 400, {"description": "The provided JSON doesn't match the required schema: primary"}
            self.config[dataset_id]["primary"] = body["primary"]
            self.pending[dataset_id] = 2
            return 200, self.config[dataset_id]
        return 404, {"description": "Not found."}
