"""Client-side failover across API server replicas (SEMANTICS HA8).

A kubeconfig may name every replica (``stowage.io/servers``, see
``storage.client.kubeconfig``). A request that cannot even connect to the
current replica — refused, unreachable, connect timeout — was never seen by
any server, so sending it to the next replica is safe for every verb; the
replica that answered becomes the current one. A connection that drops
before any answer moves GET, HEAD, OPTIONS, PUT and DELETE on too (repeating
them is safe: a PUT carries its resourceVersion, a repeated DELETE finds
nothing); a POST that may have been received is the caller's to retry. A
watch that breaks is reconnected by its caller, from its last
resourceVersion, which every replica serves alike (HA3).
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import httpx
import structlog

log = structlog.get_logger(__name__)

_UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout)
# A pooled connection to a replica that died: the request may have reached a server that died with it
# before answering, so only requests that may be repeated (by HTTP's rules) go to the next replica.
_DROPPED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class FailoverTransport(httpx.BaseTransport):
    def __init__(self, servers: Sequence[str], verify: Any = True, **transport_options: Any) -> None:
        if not servers:
            raise ValueError("FailoverTransport: no servers")
        self.servers = [httpx.URL(s) for s in servers]
        self._current = 0
        self._lock = threading.Lock()
        self._inner = httpx.HTTPTransport(verify=verify, **transport_options)

    @property
    def current(self) -> str:
        return str(self.servers[self._current]).rstrip("/")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        start = self._current
        last: Exception | None = None
        for step in range(len(self.servers)):
            index = (start + step) % len(self.servers)
            target = self.servers[index]
            request.url = request.url.copy_with(scheme=target.scheme, host=target.host, port=target.port)
            request.headers["Host"] = target.netloc.decode("ascii")
            try:
                response = self._inner.handle_request(request)
            except _UNREACHABLE as exc:
                last = exc
                continue
            except _DROPPED as exc:
                if request.method not in _IDEMPOTENT:
                    raise
                last = exc
                continue
            if index != start:
                with self._lock:
                    self._current = index
                log.info("api_server_failover", server=str(target), unreachable=str(self.servers[start]))
            return response
        assert last is not None
        raise last

    def close(self) -> None:
        self._inner.close()
