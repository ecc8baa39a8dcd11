"""The node agent's own small HTTP API, for the control plane.

The local provisioner asks the agent on the chosen node to carve, delete or
grow a pool volume; the API server proxies ``pods/log`` here. Every call
needs a bearer token: the agent's own, or one whose user the API server says
may use this node's API (``nodes/proxy``), asked with a SelfSubjectAccessReview
under the caller's token, as a kubelet's webhook authorizer does. So an agent
running under its node credential still serves the control plane's admin.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from typing import TYPE_CHECKING, Any

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from storage.agent import metrics, portforward, streams

from storage.errors import BadRequest, Forbidden, StowageError, Unauthorized

if TYPE_CHECKING:
    from storage.agent.agent import NodeAgent

log = structlog.get_logger(__name__)


def _error(exc: StowageError) -> JSONResponse:
    return JSONResponse(exc.to_status(), status_code=exc.code)


# How long the API server's answer about a caller is reused (a pool-volume burst asks once).
_ALLOWED_TTL = 30.0
_DENIED_TTL = 5.0
_VERBS = {"GET": "get", "POST": "create", "DELETE": "delete", "PUT": "update", "PATCH": "patch"}


class _DelegatedAuth:
    """Asks the API server whether a caller's token may use this node's API; remembers answers briefly."""

    def __init__(self, agent: "NodeAgent") -> None:
        self.agent = agent
        self._answers: dict[tuple[str, str], tuple[bool, float]] = {}
        self._lock = threading.Lock()

    def check(self, token: str, verb: str) -> None:
        key = (hashlib.sha256(token.encode()).hexdigest(), verb)
        now = time.monotonic()
        with self._lock:
            known = self._answers.get(key)
        if known is None or known[1] < now:
            review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                      "spec": {"resourceAttributes": {"verb": verb, "resource": "nodes", "subresource": "proxy",
                                                      "name": self.agent.node}}}
            try:
                answer = self.agent.client.create_as(token, review)
            except Unauthorized:
                raise Unauthorized("Unauthorized") from None
            allowed = bool((answer.get("status") or {}).get("allowed"))
            known = (allowed, now + (_ALLOWED_TTL if allowed else _DENIED_TTL))
            with self._lock:
                if len(self._answers) > 1000:
                    self._answers.clear()
                self._answers[key] = known
        if not known[0]:
            raise Forbidden(f'the caller may not {verb} resource "nodes/proxy" of node "{self.agent.node}"')


def build_app(agent: "NodeAgent", token: str | None) -> Starlette:
    delegated = _DelegatedAuth(agent)

    async def authorized(request: Request | WebSocket) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        if not given:
            raise Unauthorized("Unauthorized")
        if hmac.compare_digest(given.encode(), token.encode()):
            return
        # A stream (exec, attach, port-forward) is a create, as the kubelet's authorizer counts it.
        verb = _VERBS.get(request.method, "get") if isinstance(request, Request) else "create"
        await run_in_threadpool(delegated.check, given, verb)

    async def guarded(request: Request, fn: Any) -> Response:
        try:
            await authorized(request)
            return await fn()
        except StowageError as exc:
            return _error(exc)

    async def healthz(_request: Request) -> Response:
        return Response("ok")

    async def create_volume(request: Request) -> Response:
        async def run() -> Response:
            body = await request.json()
            for key in ("name", "sizeBytes"):
                if key not in body:
                    raise BadRequest(f"{key}: Required value")
            pool = agent.pool(body.get("pool"))
            vol = await run_in_threadpool(pool.create, str(body["name"]), int(body["sizeBytes"]),
                                          body.get("fsType") or "ext4", body.get("volumeMode") or "Filesystem")
            return JSONResponse({"name": vol.name, "sizeBytes": vol.size, "fsType": vol.fs_type, "volumeMode": vol.mode,
                                 "path": str(pool.image_path(vol.name)), "pool": body.get("pool") or next(iter(agent.pools))})
        return await guarded(request, run)

    async def delete_volume(request: Request) -> Response:
        async def run() -> Response:
            pool = agent.pool(request.query_params.get("pool"))
            await run_in_threadpool(pool.delete, request.path_params["name"])
            return JSONResponse({"deleted": request.path_params["name"]})
        return await guarded(request, run)

    async def expand_volume(request: Request) -> Response:
        async def run() -> Response:
            body = await request.json()
            pool = agent.pool(body.get("pool"))
            vol = await run_in_threadpool(pool.expand, request.path_params["name"], int(body["sizeBytes"]))
            return JSONResponse({"name": vol.name, "sizeBytes": vol.size, "resizePending": vol.resize_pending})
        return await guarded(request, run)

    async def finish_resize(request: Request) -> Response:
        async def run() -> Response:
            done = await run_in_threadpool(agent.volumes.finish_resize, request.path_params["name"])
            return JSONResponse({"name": request.path_params["name"], "resized": done})
        return await guarded(request, run)

    async def pod_log(request: Request) -> Response:
        return await guarded(request, lambda: streams.log_response(agent, request))

    def streaming(handler: Any) -> Any:
        async def endpoint(ws: WebSocket) -> None:
            try:
                await authorized(ws)
            except StowageError as exc:
                await ws.send_denial_response(_error(exc))
                return
            await handler(agent, ws)
        return endpoint

    async def stats_summary(request: Request) -> Response:
        async def run() -> Response:
            return JSONResponse(await run_in_threadpool(metrics.summary, agent))
        return await guarded(request, run)

    return Starlette(routes=[
        Route("/healthz", healthz),
        Route("/volumes", create_volume, methods=["POST"]),
        Route("/volumes/{name}", delete_volume, methods=["DELETE"]),
        Route("/volumes/{name}/expand", expand_volume, methods=["POST"]),
        Route("/volumes/{name}/finish-resize", finish_resize, methods=["POST"]),
        Route("/pods/{namespace}/{name}/log", pod_log),
        WebSocketRoute("/pods/{namespace}/{name}/exec", streaming(streams.exec_ws)),
        WebSocketRoute("/pods/{namespace}/{name}/attach", streaming(streams.attach_ws)),
        WebSocketRoute("/pods/{namespace}/{name}/portforward", streaming(portforward.portforward_ws)),
        Route("/stats/summary", stats_summary),
    ])


def start_agent_server(agent: "NodeAgent", host: str, port: int, token: str | None) -> tuple[uvicorn.Server, int]:
    # wsproto: kubectl's port-forward subprotocol name has a "/", which the websockets library refuses.
    config = uvicorn.Config(build_app(agent, token), host=host, port=port, log_level="warning", access_log=False,
                            lifespan="off", ws="wsproto")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    started = threading.Event()

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(_serve(server, started))

    thread = threading.Thread(target=run, name="agent-http", daemon=True)
    thread.start()
    if not started.wait(15):
        raise RuntimeError("the agent's HTTP server did not start")
    sockets = [s for srv in server.servers for s in srv.sockets]
    bound = sockets[0].getsockname()[1] if sockets else port
    return server, bound


async def _serve(server: uvicorn.Server, started: threading.Event) -> None:
    config = server.config
    if not config.loaded:
        config.load()
    server.lifespan = config.lifespan_class(config)
    await server.startup()
    started.set()
    await server.main_loop()
    await server.shutdown()
