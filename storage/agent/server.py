"""The node agent's own small HTTP API, for the control plane.

The local provisioner asks the agent on the chosen node to carve, delete or
grow a pool volume; the API server proxies ``pods/log``, exec, attach, port-forward and
metrics here. The agent serves HTTPS with a certificate from the cluster CA, and every call
needs a client certificate from that CA in group ``system:masters`` (the control plane's own,
as kube-apiserver calls kubelets), or, for an agent started without TLS, its bearer token.
"""
from __future__ import annotations

import asyncio
import hmac
import threading
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
from storage.agent.credentials import AgentTLS
from storage.errors import BadRequest, StowageError, Unauthorized
from storage.system import pki
from storage.system.tlsserver import PeerCertWSProtocol, peer_cert_pem, uvicorn_ssl_options

if TYPE_CHECKING:
    from storage.agent.agent import NodeAgent

log = structlog.get_logger(__name__)


def _error(exc: StowageError) -> JSONResponse:
    return JSONResponse(exc.to_status(), status_code=exc.code)


CONTROL_PLANE_GROUP = "system:masters"


def build_app(agent: "NodeAgent", token: str | None, *, tls: bool = False) -> Starlette:
    def authorized(request: Request | WebSocket) -> None:
        pem = peer_cert_pem(request.scope)
        if pem is not None:
            cert = pki.load_cert(pem.encode("ascii"))
            if pki.is_client_cert(cert) and CONTROL_PLANE_GROUP in pki.identity(cert)[1]:
                return
        if token is None:
            if tls:
                raise Unauthorized("Unauthorized")
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            raise Unauthorized("Unauthorized")

    async def guarded(request: Request, fn: Any) -> Response:
        try:
            authorized(request)
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
                authorized(ws)  # type: ignore[arg-type]
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


def start_agent_server(agent: "NodeAgent", host: str, port: int, token: str | None,
                       tls: AgentTLS | None = None) -> tuple[uvicorn.Server, int]:
    ssl_options = uvicorn_ssl_options(str(tls.cert_file), str(tls.key_file), str(tls.ca_file)) if tls else {}
    # wsproto (in PeerCertWSProtocol): kubectl's port-forward subprotocol name has a "/", which the
    # websockets library refuses.
    config = uvicorn.Config(build_app(agent, token, tls=tls is not None), host=host, port=port, log_level="warning",
                            access_log=False, lifespan="off", **{"ws": PeerCertWSProtocol, **ssl_options})
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
