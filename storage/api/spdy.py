"""Just enough of SPDY/3.1 framing for Kubernetes' stream protocols, server side.

Port-forward: kubectl (1.31+) tunnels SPDY through a WebSocket (``SPDY/3.1+portforward.k8s.io``)
or upgrades to it directly (older kubectl, which also upgrades exec and attach to SPDY). The client opens streams (SYN_STREAM, header names and values
in one zlib stream per direction, primed with the SPDY/3 dictionary); the server
answers each with SYN_REPLY and moves bytes in data frames, FIN ending a direction.
Flow control frames are accepted and ignored, as Kubernetes' own SPDY library does.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
MAX_DATA = 32 * 1024

# The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1): length-prefixed words,
# then common values.
_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base content-encoding "
    "content-language content-length content-location content-md5 content-range content-type date etag "
    "expect expires from host if-match if-modified-since if-none-match if-range if-unmodified-since "
    "last-modified location max-forwards pragma proxy-authenticate proxy-authorization range referer "
    "retry-after server te trailer transfer-encoding upgrade user-agent vary via warning www-authenticate "
    "method get status"
).split() + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()
assert len(DICTIONARY) == 1423, len(DICTIONARY)


@dataclass
class Frame:
    control: bool
    kind: int  # control frame type; 0 for data
    flags: int
    stream_id: int
    payload: bytes
    headers: dict[str, str] | None = None


class ProtocolError(Exception):
    pass


class Codec:
    """Parses the client's bytes into frames and builds the server's frames (one per connection:
    each direction's header compression is one zlib stream)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(zdict=DICTIONARY)

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= 8:
            length = int.from_bytes(self._buffer[5:8], "big")
            if len(self._buffer) < 8 + length:
                break
            head, payload = bytes(self._buffer[:8]), bytes(self._buffer[8:8 + length])
            del self._buffer[:8 + length]
            frames.append(self._frame(head, payload))
        return frames

    def _frame(self, head: bytes, payload: bytes) -> Frame:
        flags = head[4]
        if not head[0] & 0x80:
            return Frame(False, 0, flags, int.from_bytes(head[:4], "big") & 0x7FFFFFFF, payload)
        version = int.from_bytes(head[:2], "big") & 0x7FFF
        kind = int.from_bytes(head[2:4], "big")
        if version != VERSION:
            raise ProtocolError(f"SPDY version {version} is not supported")
        stream_id = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF if len(payload) >= 4 else 0
        frame = Frame(True, kind, flags, stream_id, payload)
        if kind == SYN_STREAM:
            frame.headers = self._headers(payload[10:])
        elif kind in (SYN_REPLY, HEADERS):
            frame.headers = self._headers(payload[4:])
        return frame

    def _headers(self, block: bytes) -> dict[str, str]:
        raw = self._inflate.decompress(block)
        count, at = struct.unpack_from(">I", raw)[0], 4
        headers: dict[str, str] = {}
        for _ in range(count):
            (size,) = struct.unpack_from(">I", raw, at)
            name = raw[at + 4:at + 4 + size].decode("latin-1").lower()
            at += 4 + size
            (size,) = struct.unpack_from(">I", raw, at)
            headers[name] = raw[at + 4:at + 4 + size].decode("latin-1")
            at += 4 + size
        return headers

    @staticmethod
    def _control(kind: int, flags: int, payload: bytes) -> bytes:
        return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload

    def syn_reply(self, stream_id: int, headers: dict[str, str] | None = None) -> bytes:
        pairs = list((headers or {}).items())
        block = struct.pack(">I", len(pairs)) + b"".join(
            struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode() for k, v in pairs)
        compressed = self._deflate.compress(block) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        return self._control(SYN_REPLY, 0, struct.pack(">I", stream_id) + compressed)

    @classmethod
    def ping(cls, payload: bytes) -> bytes:
        return cls._control(PING, 0, payload[:4])

    @classmethod
    def rst_stream(cls, stream_id: int, status: int = 5) -> bytes:  # 5: CANCEL
        return cls._control(RST_STREAM, 0, struct.pack(">II", stream_id, status))

    @classmethod
    def goaway(cls, last_stream: int = 0) -> bytes:
        return cls._control(GOAWAY, 0, struct.pack(">II", last_stream, 0))

    @staticmethod
    def data(stream_id: int, data: bytes, fin: bool = False) -> bytes:
        return struct.pack(">II", stream_id, ((FLAG_FIN if fin else 0) << 24) | len(data)) + data
