"""``pods/exec``, ``pods/attach`` and ``pods/portforward``: WebSocket relays to the pod's node agent.

The API server answers what it can itself (the pod exists, runs on a node, names a
real container, has not finished) with Kubernetes' messages, then opens a WebSocket
to the agent offering the client's subprotocols and relays every message both ways,
untouched, as kube-apiserver relays to the kubelet. The agent speaks the protocols
(channels for exec and attach, SPDY for port-forward).

A plain HTTP request for these paths gets the same checks, so errors read the same, and
then 400. A direct SPDY upgrade (kubectl before 1.30 for all three) never reaches this app:
see spdy_upgrade.py.
"""
from __future__ import annotations

import asyncio
import ssl
import contextlib
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import quote, urlencode

import orjson
import structlog
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from storage.apiserver import proxy
from storage.system.tlsserver import peer_cert_pem
from storage.errors import BadRequest, NotFound, StowageError
from storage.store.base import Store

log = structlog.get_logger(__name__)

STREAMED = frozenset({"exec", "attach", "portforward"})
# kubectl's port-forward subprotocol has a "/" in it, which RFC 6455 does not allow in a
# subprotocol name; the WebSocket client used for the agent hop checks names strictly, so
# that hop uses the agent's token-safe alias.
_TO_AGENT = {"SPDY/3.1+portforward.k8s.io": "spdy-3.1.portforward.k8s.io"}
_FROM_AGENT = {v: k for k, v in _TO_AGENT.items()}


def _query_pairs(query: Any) -> list[tuple[str, str]]:
    return list(query.multi_items()) if hasattr(query, "multi_items") else list(query.items())


def locate(store: Store, namespace: str, name: str, subresource: str, query: Mapping[str, str]) -> tuple[str, str]:
    """(agent base URL, container or "") of a streaming request; the Kubernetes error otherwise."""
    pod = store.get("pods", namespace, name)  # NotFound: pods "x" not found
    container = ""
    if subresource != "portforward":
        container = proxy.resolve_container(pod, query.get("container") or "")
    if subresource == "exec" and not query.get("command"):
        raise BadRequest("command: Required value: you must specify the command to run")
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:
        raise BadRequest(f"pod {name} does not have a host assigned")
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        verb = {"exec": "exec into", "attach": "attach to", "portforward": "port-forward to"}[subresource]
        raise BadRequest(f"cannot {verb} a container in a completed pod; current phase is {phase}")
    try:
        node = store.get("nodes", "", node_name)
    except NotFound:
        raise StowageError(f'pod {name} is placed on node "{node_name}", which is not registered') from None
    return proxy.agent_address(node), container


def agent_stream_url(base: str, namespace: str, name: str, subresource: str, query: list[tuple[str, str]],
                     container: str) -> str:
    """The agent's WebSocket URL of a pod stream: the client's query with the container ``locate`` chose."""
    pairs = [(k, v) for k, v in query if k != "container"]
    if container:
        pairs.append(("container", container))
    return (base.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
            + f"/pods/{quote(namespace, safe='')}/{quote(name, safe='')}/{subresource}?{urlencode(pairs)}")


def check_plain_request(store: Store, namespace: str, name: str, subresource: str, query: Mapping[str, str]) -> Response:
    """A streaming path reached without a WebSocket upgrade."""
    locate(store, namespace, name, subresource, query)
    raise BadRequest(f"Upgrade request required: pods/{subresource} is served over WebSocket "
                     "(v5.channel.k8s.io, v4.channel.k8s.io, SPDY/3.1+portforward.k8s.io) or SPDY/3.1")


def _denial(exc: StowageError) -> Response:
    return Response(orjson.dumps(exc.to_status()), status_code=exc.code, media_type="application/json")


async def until_one_ends(*directions: Any) -> None:
    """Relay in both directions until either side ends, then stop the other (a closed stream ends
    the session, as in Kubernetes' stream proxy)."""
    tasks = [asyncio.create_task(d) for d in directions]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


def agent_ssl(url: str, agent_tls: ssl.SSLContext | None) -> ssl.SSLContext | None:
    """The TLS context for a connection to an agent: ``wss://`` agents verify the server's certificate."""
    return (agent_tls or ssl.create_default_context()) if url.startswith("wss://") else None


async def serve_websocket(scope: Scope, receive: Receive, send: Send, store: Store,
                          admit: Callable[[str | None, str | None, str, Any], Awaitable[None]],
                          agent_tls: ssl.SSLContext | None) -> None:
    """``admit(authorization, client certificate, path, query)`` authenticates and authorizes the
    caller; the agent is reached with ``agent_tls`` (the server's own certificate)."""
    ws = WebSocket(scope, receive, send)
    path = scope["path"].rstrip("/")
    target = proxy.pod_subresource_target(path.split("/")[1:])
    try:
        await admit(ws.headers.get("authorization"), peer_cert_pem(scope), path, ws.query_params)
        if target is None or target[2] not in STREAMED:
            raise NotFound("the server could not find the requested resource")
        namespace, name, subresource = target
        query = ws.query_params
        base, container = await run_in_threadpool(locate, store, namespace, name, subresource, query)
    except StowageError as exc:
        await ws.send_denial_response(_denial(exc))
        return
    url = agent_stream_url(base, namespace, name, subresource, _query_pairs(query), container)
    # Some ASGI servers keep the offered subprotocols out of the headers and in the scope.
    offered = [p.strip() for p in ws.scope.get("subprotocols") or
               (ws.headers.get("sec-websocket-protocol") or "").split(",") if p.strip()]
    headers: dict[str, str] = {}
    try:
        upstream = await connect(url, subprotocols=[_TO_AGENT.get(p, p) for p in offered] or None, additional_headers=headers,  # type: ignore[arg-type]
                                 ssl=agent_ssl(url, agent_tls), open_timeout=proxy.CONNECT_TIMEOUT, max_size=None, compression=None,
                                 ping_interval=None)
    except InvalidStatus as exc:
        response = exc.response
        await ws.send_denial_response(Response(bytes(response.body or b""), status_code=response.status_code,
                                               media_type="application/json"))
        return
    except (OSError, asyncio.TimeoutError, WebSocketException) as exc:
        log.warning("pod stream: agent unreachable", pod=f"{namespace}/{name}", agent=base, error=str(exc))
        await ws.send_denial_response(_denial(StowageError(
            f"error dialing backend: cannot reach the node agent at {base}: {exc or type(exc).__name__}")))
        return
    async with upstream:
        chosen = upstream.subprotocol
        await ws.accept(subprotocol=_FROM_AGENT.get(chosen, chosen) if chosen else None)
        await _relay(ws, upstream)


async def _relay(ws: WebSocket, upstream: Any) -> None:
    async def to_agent() -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            await upstream.send(data if data is not None else message.get("text") or "")

    async def to_client() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in upstream:
                if isinstance(message, bytes):
                    await ws.send_bytes(message)
                else:
                    await ws.send_text(message)

    try:
        await until_one_ends(to_agent(), to_client())
    finally:
        await upstream.close()
        with contextlib.suppress(Exception):
            await ws.close(1000)
