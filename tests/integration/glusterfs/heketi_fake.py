"""A small Heketi REST server for the provisioner's Heketi mode (the real heketi is not available from the
Go module proxy here). It follows Heketi's documented API shapes and rejects what Heketi rejects: a
missing or bad JWT (HS256, iss, iat/exp, qsh), malformed volume requests, unknown clusters."""
from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt

NAME = re.compile(r"^[a-zA-Z0-9_-]+$")


class HeketiFake:
    def __init__(self, user: str = "admin", key: str = "") -> None:
        self.user, self.key = user, key
        self.cluster = uuid.uuid4().hex
        self.node = uuid.uuid4().hex
        self.volumes: dict[str, dict[str, Any]] = {}
        self.queue: dict[str, dict[str, Any]] = {}  # id -> {"polls": n, "done": (status, location)}
        self.requests: list[tuple[str, str, Any]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any = None, location: str = "") -> None:
                data = b"" if body is None else (json.dumps(body) if not isinstance(body, str) else body).encode()
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                if body is not None:
                    self.send_header("Content-Type", "application/json" if not isinstance(body, str) else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = None
                if raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        return self._send(400, "request body is not JSON\n")
                if fake.key:
                    problem = fake.check_token(self.headers.get("Authorization", ""), method, self.path)
                    if problem:
                        return self._send(401, problem + "\n")
                with fake.lock:
                    fake.requests.append((method, self.path, body))
                    status, answer, location = fake.route(method, self.path, body)
                self._send(status, answer, location)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def check_token(self, header: str, method: str, path: str) -> str:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "Unauthorized: no bearer token"
        try:
            claims = jwt.decode(token, self.key, algorithms=["HS256"], options={"require": ["iss", "iat", "exp", "qsh"]})
        except jwt.PyJWTError as exc:
            return f"Unauthorized: {exc}"
        if claims["iss"] != self.user:
            return "Unauthorized: unknown user"
        if claims["qsh"] != hashlib.sha256(f"{method}&{path.split('?')[0]}".encode()).hexdigest():
            return "Unauthorized: invalid qsh"
        return ""

    def _enqueue(self, done: tuple[int, str]) -> str:
        qid = uuid.uuid4().hex
        self.queue[qid] = {"polls": 0, "done": done}
        return f"/queue/{qid}"

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any, str]:
        parts = [p for p in path.split("?")[0].split("/") if p]
        if method == "GET" and parts[:1] == ["queue"] and len(parts) == 2:
            item = self.queue.get(parts[1])
            if item is None:
                return 404, "Id not found\n", ""
            item["polls"] += 1
            if item["polls"] < 2:  # pending once: the client must poll
                return 200, None, ""
            status, location = item["done"]
            return status, None, location
        if parts == ["volumes"] and method == "GET":
            return 200, {"volumes": sorted(self.volumes)}, ""
        if parts == ["volumes"] and method == "POST":
            return self._create(body)
        if parts[:1] == ["volumes"] and len(parts) == 2:
            volume = self.volumes.get(parts[1])
            if volume is None:
                return 404, "Id not found\n", ""
            if method == "GET":
                return 200, volume, ""
            if method == "DELETE":
                del self.volumes[parts[1]]
                return 202, None, self._enqueue((204, ""))
        if parts[:1] == ["clusters"] and len(parts) == 2 and method == "GET":
            if parts[1] != self.cluster:
                return 404, "Id not found\n", ""
            return 200, {"id": self.cluster, "nodes": [self.node], "volumes": sorted(self.volumes)}, ""
        if parts[:1] == ["nodes"] and len(parts) == 2 and method == "GET":
            if parts[1] != self.node:
                return 404, "Id not found\n", ""
            return 200, {"id": self.node, "cluster": self.cluster, "zone": 1,
                         "hostnames": {"manage": ["gluster-1"], "storage": ["127.0.0.1"]}}, ""
        return 404, "404 page not found\n", ""

    def _create(self, body: Any) -> tuple[int, Any, str]:
        if not isinstance(body, dict) or not isinstance(body.get("size"), int) or body["size"] < 1:
            return 400, "Invalid volume size\n", ""
        durability = body.get("durability") or {"type": "none"}
        kind = durability.get("type")
        if kind not in ("none", "replicate", "disperse"):
            return 400, "Unknown durability type\n", ""
        if kind == "replicate" and not isinstance((durability.get("replicate") or {}).get("replica"), int):
            return 400, "Invalid replica count\n", ""
        if kind == "disperse" and not all(isinstance((durability.get("disperse") or {}).get(k), int)
                                          for k in ("data", "redundancy")):
            return 400, "Invalid disperse data/redundancy\n", ""
        name = body.get("name") or ""
        if name and not NAME.match(name):
            return 400, "Invalid volume name\n", ""
        for cluster in body.get("clusters") or []:
            if cluster != self.cluster:
                return 400, f"Cluster id {cluster} not found\n", ""
        vid = uuid.uuid4().hex
        self.volumes[vid] = {"id": vid, "name": name or f"vol_{vid}", "size": body["size"], "cluster": self.cluster,
                             "durability": durability, "gid": body.get("gid", 0),
                             "snapshot": body.get("snapshot") or {"enable": False},
                             "mount": {"glusterfs": {"hosts": ["127.0.0.1"], "device": f"127.0.0.1:{name or 'vol_' + vid}",
                                                     "options": {"backup-volfile-servers": ""}}}}
        return 202, None, self._enqueue((303, f"/volumes/{vid}"))
