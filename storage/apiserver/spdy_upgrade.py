"""Port-forward for clients that upgrade straight to SPDY (kubectl 1.30 by default, older ones always).

ASGI has no way to take over a connection for a protocol other than WebSocket, so this is
an HTTP protocol class for uvicorn: a ``POST .../pods/NAME/portforward`` asking for
``Upgrade: SPDY/3.1`` gets the same checks as the WebSocket path, then ``101 Switching
Protocols``, and from there the raw SPDY bytes are relayed to the node agent inside its
SPDY-over-WebSocket tunnel (the agent speaks the SPDY; this only moves bytes). Every
other request is uvicorn's usual handling.
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import orjson
import structlog
from starlette.concurrency import run_in_threadpool
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from storage.apiserver import proxy
from storage.apiserver.streams import agent_ssl, locate, until_one_ends
from storage.errors import NotFound, StowageError
from storage.system.tlsserver import PeerCertHttpToolsProtocol

log = structlog.get_logger(__name__)

SPDY = b"spdy/3.1"
AGENT_TUNNEL = "spdy-3.1.portforward.k8s.io"  # the agent's name for SPDY tunnelled in a WebSocket


def _portforward_target(url: bytes) -> tuple[str, str, str] | None:
    path = urlsplit(url.decode("latin-1")).path.rstrip("/")
    target = proxy.pod_subresource_target(path.split("/")[1:])
    return target if target is not None and target[2] == "portforward" else None


class HttpProtocol(PeerCertHttpToolsProtocol):
    """uvicorn's httptools protocol with the client certificate visible, plus the SPDY upgrade of
    ``pods/portforward``."""

    def _should_upgrade(self) -> bool:
        if self._get_upgrade() == SPDY and _portforward_target(self.url) is not None:
            return True  # handled in handle_websocket_upgrade: no ASGI request for it
        return super()._should_upgrade()

    def handle_websocket_upgrade(self) -> None:
        if self._get_upgrade() != SPDY:
            super().handle_websocket_upgrade()
            return
        self.connections.discard(self)
        tunnel = _Tunnel(self.transport, self.config.app, dict(self.headers), self.url, self._peer_pem)
        self.transport.set_protocol(tunnel)
        tunnel.start()


class _Tunnel(asyncio.Protocol):
    def __init__(self, transport: Any, app: Any, headers: dict[bytes, bytes], url: bytes,
                 peer_pem: str | None) -> None:
        self.transport = transport
        self.peer_pem = peer_pem
        self.app = app
        self.headers = headers
        self.url = url
        self.incoming: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    def data_received(self, data: bytes) -> None:
        self.incoming.put_nowait(data)

    def eof_received(self) -> bool | None:
        self.incoming.put_nowait(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.incoming.put_nowait(None)

    def _respond_error(self, exc: StowageError) -> None:
        body = orjson.dumps(exc.to_status())
        reason = exc.reason.encode()
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n\r\n" % (exc.code, reason, len(body)) + body)
        self.transport.close()

    async def run(self) -> None:
        state = self.app.state
        target = _portforward_target(self.url)
        authorization = self.headers.get(b"authorization", b"").decode("latin-1") or None
        try:
            path = urlsplit(self.url.decode("latin-1")).path
            await state.admit_stream(authorization, self.peer_pem, path, dict(parse_qsl(urlsplit(self.url.decode("latin-1")).query)))
            if target is None:
                raise NotFound("the server could not find the requested resource")
            namespace, name, _ = target
            query = dict(parse_qsl(urlsplit(self.url.decode("latin-1")).query))
            # The same checks as the WebSocket path.
            base, _container = await run_in_threadpool(locate, state.store, namespace, name, "portforward", query)
        except StowageError as exc:
            self._respond_error(exc)
            return
        url = (base.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
               + f"/pods/{quote(namespace, safe='')}/{quote(name, safe='')}/portforward")
        try:
            upstream = await connect(url, subprotocols=[AGENT_TUNNEL],  # type: ignore[list-item]
                                     ssl=agent_ssl(url, state.agent_tls), open_timeout=proxy.CONNECT_TIMEOUT, max_size=None, compression=None,
                                     ping_interval=None)
        except InvalidStatus as exc:
            self._respond_error(StowageError(exc.response.body.decode("utf-8", "replace")[:300] or "agent refused"))
            return
        except (OSError, asyncio.TimeoutError, WebSocketException) as exc:
            self._respond_error(StowageError(f"error dialing backend: cannot reach the node agent at {base}: {exc}"))
            return
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                             b"X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n")
        log.info("port-forward over SPDY", pod=f"{namespace}/{name}")
        async with upstream:
            await self._relay(upstream)
        self.transport.close()

    async def _relay(self, upstream: Any) -> None:
        async def to_agent() -> None:
            while (data := await self.incoming.get()) is not None:
                await upstream.send(data)

        async def to_client() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for message in upstream:
                    if self.transport.is_closing():
                        return
                    self.transport.write(message if isinstance(message, bytes) else message.encode())

        await until_one_ends(to_agent(), to_client())
