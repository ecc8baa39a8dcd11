"""``pods/portforward``: kubectl's SPDY port-forward protocol, tunnelled through a WebSocket.

kubectl 1.31+ asks for the WebSocket subprotocol ``SPDY/3.1+portforward.k8s.io`` and
speaks SPDY inside it. Each forwarded connection is a pair of SPDY streams with the
same ``requestID``: an ``error`` stream (the server writes a message there when the
connection to the pod fails) and a ``data`` stream carrying the bytes. Pods share the
node's network with an address of their own, so the agent connects to that address.
"""
from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from starlette.websockets import WebSocket

from storage.api import spdy
from storage.agent.streams import _deny, _pod, offered_protocols
from storage.errors import BadRequest, StowageError

if TYPE_CHECKING:
    from storage.agent.agent import NodeAgent

log = structlog.get_logger(__name__)

TUNNEL_PROTOCOL = "SPDY/3.1+portforward.k8s.io"
# The same protocol under a name that is a valid RFC 6455 token ("/" is not), for WebSocket
# clients that check subprotocol names strictly: the API server uses it on its hop to the agent.
TUNNEL_PROTOCOL_TOKEN = "spdy-3.1.portforward.k8s.io"


@dataclass
class _Pair:
    request_id: str
    port: int
    error_stream: int = 0
    data_stream: int = 0
    writer: asyncio.StreamWriter | None = None
    pending: list[bytes] = field(default_factory=list)
    client_done: bool = False
    task: asyncio.Task[None] | None = None


class Session:
    def __init__(self, ws: WebSocket, pod_ip: str, pod_name: str) -> None:
        self.ws = ws
        self.pod_ip = pod_ip
        self.pod_name = pod_name
        self.codec = spdy.Codec()
        self.pairs: dict[str, _Pair] = {}
        self.by_stream: dict[int, _Pair] = {}
        self._lock = asyncio.Lock()
        self.open = True

    async def send(self, data: bytes) -> None:
        if not self.open:
            return
        async with self._lock:
            try:
                await self.ws.send_bytes(data)
            except Exception:
                self.open = False

    async def run(self) -> None:
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes") or (message.get("text") or "").encode()
                for frame in self.codec.feed(data):
                    if not await self.handle(frame):
                        return
        except spdy.ProtocolError as exc:
            log.warning("port-forward: bad SPDY from client", pod=self.pod_name, error=str(exc))
        finally:
            self.open = False
            for pair in list(self.pairs.values()):
                self._close_pair(pair)
            with contextlib.suppress(Exception):
                await self.ws.close(1000)

    async def handle(self, frame: spdy.Frame) -> bool:
        if not frame.control:
            pair = self.by_stream.get(frame.stream_id)
            if pair is None or frame.stream_id != pair.data_stream:
                return True  # the error stream carries nothing from the client
            if frame.payload:
                if pair.writer is None:
                    pair.pending.append(frame.payload)
                else:
                    pair.writer.write(frame.payload)
                    with contextlib.suppress(ConnectionError):
                        await pair.writer.drain()
            if frame.flags & spdy.FLAG_FIN:
                pair.client_done = True
                if pair.writer is not None and pair.writer.can_write_eof():
                    with contextlib.suppress(OSError):
                        pair.writer.write_eof()
            return True
        if frame.kind == spdy.SYN_STREAM:
            await self.open_stream(frame)
        elif frame.kind == spdy.PING:
            await self.send(spdy.Codec.ping(frame.payload))
        elif frame.kind == spdy.RST_STREAM:
            pair = self.by_stream.get(frame.stream_id)
            if pair is not None:
                self._close_pair(pair)
        elif frame.kind == spdy.GOAWAY:
            return False
        return True  # SETTINGS, WINDOW_UPDATE, HEADERS: nothing to do

    async def open_stream(self, frame: spdy.Frame) -> None:
        headers = frame.headers or {}
        kind, request_id = headers.get("streamtype", ""), headers.get("requestid", "")
        try:
            port = int(headers.get("port", ""))
        except ValueError:
            port = 0
        await self.send(self.codec.syn_reply(frame.stream_id))
        if kind not in ("error", "data") or not 0 < port < 65536:
            await self.send(spdy.Codec.rst_stream(frame.stream_id, 1))
            return
        pair = self.pairs.setdefault(request_id, _Pair(request_id, port))
        self.by_stream[frame.stream_id] = pair
        if kind == "error":
            pair.error_stream = frame.stream_id
        else:
            pair.data_stream = frame.stream_id
        if pair.error_stream and pair.data_stream and pair.task is None:
            pair.task = asyncio.create_task(self.forward(pair))

    async def forward(self, pair: _Pair) -> None:
        try:
            reader, writer = await asyncio.open_connection(self.pod_ip, pair.port)
        except OSError as exc:
            message = (f"error forwarding port {pair.port} to pod {self.pod_name}, uid : "
                       f"failed to connect to {self.pod_ip}:{pair.port}: {exc.strerror or exc}")
            await self.send(spdy.Codec.data(pair.error_stream, message.encode(), fin=True))
            await self.send(spdy.Codec.data(pair.data_stream, b"", fin=True))
            return
        pair.writer = writer
        for chunk in pair.pending:
            writer.write(chunk)
        pair.pending.clear()
        if pair.client_done and writer.can_write_eof():
            writer.write_eof()
        try:
            while chunk := await reader.read(spdy.MAX_DATA):
                await self.send(spdy.Codec.data(pair.data_stream, chunk))
        except OSError:
            pass
        finally:
            await self.send(spdy.Codec.data(pair.data_stream, b"", fin=True))
            await self.send(spdy.Codec.data(pair.error_stream, b"", fin=True))
            writer.close()
            self.pairs.pop(pair.request_id, None)

    def _close_pair(self, pair: _Pair) -> None:
        if pair.writer is not None:
            pair.writer.close()
        if pair.task is not None and self.open is False:
            pair.task.cancel()
        self.pairs.pop(pair.request_id, None)


async def portforward_ws(agent: "NodeAgent", ws: WebSocket) -> None:
    assert agent.runtime is not None
    namespace, name = ws.path_params["namespace"], ws.path_params["name"]
    try:
        offered = offered_protocols(ws)
        protocol = next((p for p in (TUNNEL_PROTOCOL, TUNNEL_PROTOCOL_TOKEN) if p in offered), None)
        if protocol is None:
            raise BadRequest(f"port-forward needs the WebSocket subprotocol {TUNNEL_PROTOCOL}")
        uid, _pod_obj = _pod(agent, namespace, name)
        pod_ip = agent.runtime.pod_ip(uid)
        if not pod_ip:
            raise BadRequest(f"pod {name} has no address on this node yet")
    except StowageError as exc:
        await _deny(ws, exc)
        return
    await ws.accept(subprotocol=protocol)
    log.info("port-forward", pod=f"{namespace}/{name}")
    await Session(ws, pod_ip, name).run()
