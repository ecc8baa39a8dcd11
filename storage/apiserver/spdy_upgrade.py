"""Pod streams for clients that upgrade straight to SPDY: kubectl before 1.30 for exec, attach
(and so cp) and port-forward, kubectl 1.30 for port-forward.

ASGI has no way to take over a connection for a protocol other than WebSocket, so this is an
HTTP protocol class for uvicorn: a ``POST .../pods/NAME/{exec,attach,portforward}`` asking for
``Upgrade: SPDY/3.1`` gets the same checks as the WebSocket path, then ``101 Switching
Protocols``. Every other request is uvicorn's usual handling.

- port-forward: the raw SPDY bytes are relayed to the node agent inside its SPDY-over-WebSocket
  tunnel (the agent speaks the SPDY; this only moves bytes).
- exec and attach: Kubernetes' v4 stream protocol over SPDY (one SPDY stream per standard stream,
  named by its ``streamType`` header) is translated to the agent's WebSocket channels
  (``v5.channel.k8s.io``). Data on a stream becomes a message on its channel and back, the end of
  the client's stdin becomes v5's close message, and the final metav1.Status travels on the error
  stream, which both protocols use for it. The agent is then the same for every client.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import structlog
from starlette.concurrency import run_in_threadpool
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from storage.api import spdy
from storage.apiserver import proxy
from storage.apiserver.streams import STREAMED, agent_ssl, agent_stream_url, locate, until_one_ends
from storage.errors import Forbidden, NotFound, StowageError
from storage.system.tlsserver import PeerCertHttpToolsProtocol

log = structlog.get_logger(__name__)

SPDY = b"spdy/3.1"
AGENT_TUNNEL = "spdy-3.1.portforward.k8s.io"  # the agent's name for SPDY tunnelled in a WebSocket
PORTFORWARD_PROTOCOL = "portforward.k8s.io"
CLIENT_CHANNELS = "v4.channel.k8s.io"  # the SPDY stream protocol served (kubectl 1.5 to 1.29 offer it)
AGENT_CHANNELS = "v5.channel.k8s.io"  # asked of the agent: only v5 can say "stdin ended"
# How long the client has to open the streams its query asks for (the kubelet's default).
STREAM_CREATION_TIMEOUT = 30.0
# The WebSocket channel of each SPDY stream type, and v5's message that closes a channel.
CHANNEL_OF = {"stdin": 0, "stdout": 1, "stderr": 2, "error": 3, "resize": 4}
STREAM_OF = {channel: kind for kind, channel in CHANNEL_OF.items()}
CLOSE = 255
# Unread client bytes past which the socket stops being read (the agent is slower than the client).
_MAX_QUEUED_READS = 64


def _target(url: bytes) -> tuple[str, str, str] | None:
    path = urlsplit(url.decode("latin-1")).path.rstrip("/")
    target = proxy.pod_subresource_target(path.split("/")[1:])
    return target if target is not None and target[2] in STREAMED else None


class HttpProtocol(PeerCertHttpToolsProtocol):
    """uvicorn's httptools protocol with the client certificate visible, plus the SPDY upgrade of
    ``pods/exec``, ``pods/attach`` and ``pods/portforward``."""

    def _should_upgrade(self) -> bool:
        if self._get_upgrade() == SPDY and _target(self.url) is not None:
            return True  # handled in handle_websocket_upgrade: no ASGI request for it
        return super()._should_upgrade()

    def handle_websocket_upgrade(self) -> None:
        target = _target(self.url)
        if self._get_upgrade() != SPDY or target is None:
            super().handle_websocket_upgrade()
            return
        self.connections.discard(self)
        kind = _PortForward if target[2] == "portforward" else _Channels
        session = kind(self.transport, self.config.app, list(self.headers), self.url, self._peer_pem)
        self.transport.set_protocol(session)
        session.start()


class _Upgraded(asyncio.Protocol):
    """A connection taken over from uvicorn: the checks, the agent's WebSocket, the 101, the relay."""

    agent_protocol = ""

    def __init__(self, transport: Any, app: Any, headers: list[tuple[bytes, bytes]], url: bytes,
                 peer_pem: str | None) -> None:
        self.transport = transport
        self.peer_pem = peer_pem
        self.app = app
        self.headers = headers
        self.url = url
        self.incoming: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._reading_paused = False
        self._writable = asyncio.Event()
        self._writable.set()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    # ---- asyncio.Protocol: bytes in, back-pressure out ------------------------------------
    def data_received(self, data: bytes) -> None:
        self.incoming.put_nowait(data)
        if self.incoming.qsize() > _MAX_QUEUED_READS and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self.incoming.put_nowait(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.incoming.put_nowait(None)
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def read(self) -> bytes | None:
        """The client's next bytes; None once it is gone."""
        data = await self.incoming.get()
        if self._reading_paused and self.incoming.qsize() < _MAX_QUEUED_READS // 4:
            self._reading_paused = False
            with contextlib.suppress(Exception):
                self.transport.resume_reading()
        return data

    async def write(self, data: bytes) -> None:
        """Send, then wait while the client reads slower than the agent writes."""
        if self.transport.is_closing():
            return
        self.transport.write(data)
        await self._writable.wait()

    # ---- the upgrade ------------------------------------------------------------------------
    def header_values(self, name: bytes) -> list[str]:
        """Every value of a header that may be repeated or comma-joined."""
        return [part.strip() for key, value in self.headers if key == name
                for part in value.decode("latin-1").split(",") if part.strip()]

    def negotiate(self) -> str:
        """The X-Stream-Protocol-Version answered; a StowageError when nothing offered is served."""
        raise NotImplementedError

    def _respond(self, code: int, reason: bytes, body: bytes) -> None:
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n\r\n" % (code, reason, len(body)) + body)
        self.transport.close()

    def _respond_error(self, exc: StowageError) -> None:
        self._respond(exc.code, exc.reason.encode(), orjson.dumps(exc.to_status()))

    async def run(self) -> None:
        state = self.app.state
        parts = urlsplit(self.url.decode("latin-1"))
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query = dict(pairs)
        target = _target(self.url)
        authorization = next((v for k, v in self.headers if k == b"authorization"), b"").decode("latin-1") or None
        try:
            await state.admit_stream(authorization, self.peer_pem, parts.path, query)
            if target is None:
                raise NotFound("the server could not find the requested resource")
            namespace, name, subresource = target
            # The same checks as the WebSocket path.
            base, container = await run_in_threadpool(locate, state.store, namespace, name, subresource, query)
            protocol = self.negotiate()
        except StowageError as exc:
            self._respond_error(exc)
            return
        url = agent_stream_url(base, namespace, name, subresource, pairs, container)
        try:
            upstream = await connect(url, subprotocols=[self.agent_protocol],  # type: ignore[list-item]
                                     ssl=agent_ssl(url, state.agent_tls), open_timeout=proxy.CONNECT_TIMEOUT,
                                     max_size=None, compression=None, ping_interval=None)
        except InvalidStatus as exc:  # the agent's own refusal (container not running, ...): passed on as is
            response = exc.response
            self._respond(response.status_code, response.reason_phrase.encode("latin-1", "replace"),
                          bytes(response.body or b""))
            return
        except (OSError, asyncio.TimeoutError, WebSocketException) as exc:
            self._respond_error(StowageError(f"error dialing backend: cannot reach the node agent at {base}: {exc}"))
            return
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                             b"X-Stream-Protocol-Version: %s\r\n\r\n" % protocol.encode())
        log.info(f"{subresource} over SPDY", pod=f"{namespace}/{name}")
        async with upstream:
            await self.relay(upstream, query)
        self.transport.close()

    async def relay(self, upstream: Any, query: dict[str, str]) -> None:
        raise NotImplementedError


class _PortForward(_Upgraded):
    """SPDY bytes moved as they are, inside the agent's tunnel."""

    agent_protocol = AGENT_TUNNEL

    def negotiate(self) -> str:
        return PORTFORWARD_PROTOCOL

    async def relay(self, upstream: Any, query: dict[str, str]) -> None:
        async def to_agent() -> None:
            while (data := await self.read()) is not None:
                await upstream.send(data)

        async def to_client() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for message in upstream:
                    await self.write(message if isinstance(message, bytes) else message.encode())

        await until_one_ends(to_agent(), to_client())


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


class _Channels(_Upgraded):
    """exec and attach: SPDY streams on the client's side, WebSocket channels on the agent's."""

    agent_protocol = AGENT_CHANNELS

    def negotiate(self) -> str:
        offered = self.header_values(b"x-stream-protocol-version")
        if CLIENT_CHANNELS not in offered:
            raise Forbidden(f"unable to upgrade: unable to negotiate protocol: client supports [{' '.join(offered)}], "
                            f"server accepts [{CLIENT_CHANNELS}]")
        return CLIENT_CHANNELS

    async def relay(self, upstream: Any, query: dict[str, str]) -> None:
        expected = {"error"} | {kind for kind in ("stdin", "stdout", "stderr") if _truthy(query.get(kind))}
        if _truthy(query.get("tty")):
            expected = (expected - {"stderr"}) | {"resize"}  # a terminal has one output; its size has a stream
        codec = spdy.Codec()
        stream_of: dict[str, int] = {}
        kind_of: dict[int, str] = {}
        ready = asyncio.Event()
        resizes = bytearray()

        async def from_client() -> None:
            while (data := await self.read()) is not None:
                try:
                    frames = codec.feed(data)
                except spdy.ProtocolError as exc:
                    log.warning("exec/attach: bad SPDY from client", error=str(exc))
                    return
                for frame in frames:
                    if not await on_frame(frame):
                        return

        async def on_frame(frame: spdy.Frame) -> bool:
            if frame.control:
                if frame.kind == spdy.SYN_STREAM:
                    kind = (frame.headers or {}).get("streamtype", "")
                    await self.write(codec.syn_reply(frame.stream_id))
                    if kind not in CHANNEL_OF or kind in stream_of:
                        await self.write(spdy.Codec.rst_stream(frame.stream_id, 1))  # PROTOCOL_ERROR
                        return True
                    stream_of[kind], kind_of[frame.stream_id] = frame.stream_id, kind
                    if expected <= stream_of.keys():
                        ready.set()
                elif frame.kind == spdy.PING:
                    await self.write(spdy.Codec.ping(frame.payload))
                elif frame.kind == spdy.RST_STREAM and kind_of.get(frame.stream_id) == "stdin":
                    await upstream.send(bytes([CLOSE, CHANNEL_OF["stdin"]]))
                elif frame.kind == spdy.GOAWAY:
                    return False
                return True  # SETTINGS, WINDOW_UPDATE, HEADERS: nothing to do
            kind = kind_of.get(frame.stream_id)
            if kind == "stdin":
                if frame.payload:
                    await upstream.send(bytes([CHANNEL_OF["stdin"]]) + frame.payload)
                if frame.flags & spdy.FLAG_FIN:
                    await upstream.send(bytes([CLOSE, CHANNEL_OF["stdin"]]))
            elif kind == "resize":
                # A stream of JSON sizes ({"Width":..,"Height":..}) that frames may split or join;
                # the channel carries one size per message.
                resizes.extend(frame.payload)
                for size in _complete_json_values(resizes):
                    await upstream.send(bytes([CHANNEL_OF["resize"]]) + size)
            return True

        async def to_client() -> None:
            try:
                await asyncio.wait_for(ready.wait(), STREAM_CREATION_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("exec/attach: the client did not open its streams", wanted=sorted(expected),
                            opened=sorted(stream_of))
                return
            with contextlib.suppress(ConnectionClosed):
                async for message in upstream:
                    data = message if isinstance(message, bytes) else message.encode()
                    stream = stream_of.get(STREAM_OF.get(data[0], "")) if data else None
                    if stream is not None and len(data) > 1 and data[0] != CHANNEL_OF["stdin"]:
                        await self.write(spdy.Codec.data(stream, data[1:]))
            # The agent ended the session (its status is on the error stream): end every stream.
            for stream in stream_of.values():
                await self.write(spdy.Codec.data(stream, b"", fin=True))

        await until_one_ends(from_client(), to_client())


def _complete_json_values(buffer: bytearray) -> list[bytes]:
    """The whole JSON values at the start of ``buffer``, removed from it; a partial one stays."""
    decoder = json.JSONDecoder()
    values: list[bytes] = []
    text = buffer.decode("utf-8", "replace")
    at = 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            break
        try:
            _, end = decoder.raw_decode(text, at)
        except ValueError:
            if len(text) - at > 4096:  # not JSON and never will be: drop it rather than grow
                at = len(text)
            break
        values.append(text[at:end].encode())
        at = end
    del buffer[:len(text[:at].encode())]
    return values
