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
from storage.errors import BadRequest, NotFound, StowageError, Unauthorized
from storage.system import pki
from storage.system.tlsserver import PeerCertWSProtocol, peer_cert_pem, uvicorn_ssl_options

if TYPE_CHECKING:
    from pathlib import Path

    from storage.agent.agent import NodeAgent
    from storage.agent.pool import Pool, PoolSnapshot, PoolVolume

log = structlog.get_logger(__name__)


def _error(exc: StowageError) -> JSONResponse:
    return JSONResponse(exc.to_status(), status_code=exc.code)


CONTROL_PLANE_GROUP = "system:masters"


def pool_holding(agent: "NodeAgent", name: str | None, *, volume: str | None = None,
                 snapshot: str | None = None) -> "Pool":
    """The named pool, else the one holding ``volume`` / ``snapshot``, else the default pool."""
    if name:
        return agent.pool(name)
    for pool in agent.pools.values():
        if (volume and pool.get(volume) is not None) or (snapshot and pool.get_snapshot(snapshot) is not None):
            return pool
    return agent.pool(None)


def snapshot_json(snap: "PoolSnapshot") -> dict[str, Any]:
    return {"name": snap.name, "volume": snap.volume, "sizeBytes": snap.size, "fsType": snap.fs_type,
            "volumeMode": snap.mode, "creationTime": snap.created, "allocatedBytes": snap.allocated,
            "method": snap.method, "readyToUse": snap.state == "Ready"}


def volume_source(pool: "Pool", source: Any) -> dict[str, Any]:
    """POST /volumes ``source``: {"snapshot": name} of this pool (LS6), or {"backup": {"store", "backupId",
    "credentials"}} from an object store (LS7): the keyword arguments of ``Pool.create``."""
    if not isinstance(source, dict) or len(source) != 1:
        raise BadRequest('source: Invalid value: must be {"snapshot": NAME} or {"backup": {...}}')
    if "snapshot" in source:
        if not isinstance(source["snapshot"], str) or not source["snapshot"]:
            raise BadRequest("source.snapshot: Invalid value: must be a snapshot name")
        return {"source_snapshot": source["snapshot"]}
    backup = source.get("backup")
    if not isinstance(backup, dict):
        raise BadRequest('source: Unsupported value: supported values: "snapshot", "backup"')
    for key in ("store", "backupId"):
        if not backup.get(key):
            raise BadRequest(f"source.backup.{key}: Required value")
    return {"fill": backup_filler(str(backup["store"]), str(backup["backupId"]),
                                  {str(k): str(v) for k, v in (backup.get("credentials") or {}).items()}, pool)}


def backup_filler(store_url: str, backup_id: str, credentials: dict[str, str], pool: "Pool") -> Any:
    """Writes a backup into a new pool image: a block backup byte for byte; a tree backup into a fresh
    filesystem of the volume's type (mkfs, a private mount, restore_tree, unmount)."""
    def fill(image: "Path", vol: "PoolVolume") -> None:
        import tempfile

        from storage.system import backupstore, blockdev, loop, mounts

        store = backupstore.open_store(store_url, credentials)
        manifest = backupstore.read_manifest(store, backup_id)
        if manifest.kind == "block":
            if manifest.size > vol.size:
                raise BadRequest(f"sizeBytes: Invalid value: {vol.size}: smaller than backup {backup_id} ({manifest.size})")
            backupstore.restore_block(store, backup_id, image)
            return
        if vol.fs_type is None:
            raise BadRequest(f"volumeMode: Invalid value: \"Block\": backup {backup_id} holds files, not a device")
        device = loop.attach(image, executor=pool.executor)
        try:
            blockdev.mkfs(device, vol.fs_type, executor=pool.executor)
            with tempfile.TemporaryDirectory(prefix=".restore-", dir=pool.root) as mnt:
                mounts.mount(device, mnt, vol.fs_type, executor=pool.executor)
                try:
                    backupstore.restore_tree(store, backup_id, mnt)
                finally:
                    mounts.unmount(mnt, executor=pool.executor)
        finally:
            loop.detach(device, executor=pool.executor)
    return fill


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
            source = body.get("source")
            snap_name = source.get("snapshot") if isinstance(source, dict) else None
            # A volume restored from a snapshot is made in the snapshot's pool (a copy never leaves it).
            pool = pool_holding(agent, body.get("pool"), snapshot=snap_name if isinstance(snap_name, str) else None)
            kwargs: dict[str, Any] = {}
            if source is not None:
                kwargs = volume_source(pool, source)
            vol = await run_in_threadpool(lambda: pool.create(
                str(body["name"]), int(body["sizeBytes"]), body.get("fsType") or "ext4",
                body.get("volumeMode") or "Filesystem", **kwargs))
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

    # ---- snapshots and backups (LS1-LS15) ---------------------------------

    async def create_snapshot(request: Request) -> Response:
        async def run() -> Response:
            body = await request.json()
            for key in ("name", "volume"):
                if not body.get(key):
                    raise BadRequest(f"{key}: Required value")
            pool = pool_holding(agent, body.get("pool"), volume=str(body["volume"]))
            snap = await run_in_threadpool(pool.snapshot, str(body["name"]), str(body["volume"]))
            return JSONResponse(snapshot_json(snap))
        return await guarded(request, run)

    async def get_snapshot(request: Request) -> Response:
        async def run() -> Response:
            name = request.path_params["name"]
            pool = pool_holding(agent, request.query_params.get("pool"), snapshot=name)
            snap = pool.get_snapshot(name)
            if snap is None or snap.state != "Ready":
                raise NotFound(f'snapshot "{name}" not found on node {agent.node}', name=name)
            return JSONResponse(snapshot_json(snap))
        return await guarded(request, run)

    async def delete_snapshot(request: Request) -> Response:
        async def run() -> Response:
            pool = pool_holding(agent, request.query_params.get("pool"), snapshot=request.path_params["name"])
            await run_in_threadpool(pool.delete_snapshot, request.path_params["name"])
            return JSONResponse({"deleted": request.path_params["name"]})
        return await guarded(request, run)

    async def create_backup(request: Request) -> Response:
        async def run() -> Response:
            body = await request.json()
            if not isinstance(body, dict):
                raise BadRequest("body: Invalid value: must be an object")
            job = await run_in_threadpool(agent.backups.start, body)
            return JSONResponse(job.to_dict(), status_code=202 if job.state == "Running" else 200)
        return await guarded(request, run)

    async def get_backup(request: Request) -> Response:
        async def run() -> Response:
            return JSONResponse(agent.backups.get(request.path_params["name"]).to_dict())
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

    async def prometheus_metrics(request: Request) -> Response:
        async def run() -> Response:
            body, content_type = await run_in_threadpool(metrics.prometheus_text, agent)
            return Response(body, media_type=content_type)
        return await guarded(request, run)

    async def resource_metrics(request: Request) -> Response:
        async def run() -> Response:
            body, content_type = await run_in_threadpool(metrics.resource_metrics_text, agent)
            return Response(body, media_type=content_type)
        return await guarded(request, run)

    async def pod_list(request: Request) -> Response:
        async def run() -> Response:
            return JSONResponse(agent.pod_list())
        return await guarded(request, run)

    async def configz(request: Request) -> Response:
        async def run() -> Response:
            return JSONResponse(agent.kubelet_configuration())
        return await guarded(request, run)

    return Starlette(routes=[
        Route("/healthz", healthz),
        Route("/pods", pod_list),
        Route("/configz", configz),
        Route("/metrics/resource", resource_metrics),
        Route("/volumes", create_volume, methods=["POST"]),
        Route("/volumes/{name}", delete_volume, methods=["DELETE"]),
        Route("/snapshots", create_snapshot, methods=["POST"]),
        Route("/snapshots/{name}", get_snapshot, methods=["GET"]),
        Route("/snapshots/{name}", delete_snapshot, methods=["DELETE"]),
        Route("/backups", create_backup, methods=["POST"]),
        Route("/backups/{name}", get_backup, methods=["GET"]),
        Route("/volumes/{name}/expand", expand_volume, methods=["POST"]),
        Route("/volumes/{name}/finish-resize", finish_resize, methods=["POST"]),
        Route("/pods/{namespace}/{name}/log", pod_log),
        WebSocketRoute("/pods/{namespace}/{name}/exec", streaming(streams.exec_ws)),
        WebSocketRoute("/pods/{namespace}/{name}/attach", streaming(streams.attach_ws)),
        WebSocketRoute("/pods/{namespace}/{name}/portforward", streaming(portforward.portforward_ws)),
        Route("/stats/summary", stats_summary),
        Route("/metrics", prometheus_metrics),
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
