"""uvicorn over TLS with the client certificate visible to the app (API server and node agent)."""
from __future__ import annotations

import asyncio
import ssl
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.wsproto_impl import WSProtocol

__all__ = ["PeerCertHttpToolsProtocol", "PeerCertWSProtocol", "peer_cert_pem", "uvicorn_ssl_options"]


class PeerCertHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's protocol, plus the verified client certificate in ``scope["extensions"]["tls"]`` (ASGI's TLS
    extension) so the app can authenticate it; uvicorn itself does not expose it."""

    _peer_pem: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._peer_pem = _peer_pem(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._peer_pem is not None:
            self.scope["extensions"] = {"tls": {"client_cert_chain": [self._peer_pem]}}

    def shutdown(self) -> None:
        # Closing an idle TLS connection waits for the client's close_notify, which an idle client never
        # sends: every stop with a kept-alive client waited out uvicorn's whole graceful-shutdown timeout.
        # Nothing is in flight on an idle connection, so it is dropped at once.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.abort()
        else:
            super().shutdown()


def _peer_pem(transport: asyncio.Transport) -> str | None:
    ssl_object = transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return ssl.DER_cert_to_PEM_cert(der) if der else None


class PeerCertWSProtocol(WSProtocol):
    """uvicorn's wsproto WebSocket protocol, with the verified client certificate in the scope as
    for HTTP (streams such as exec authenticate by certificate too). wsproto, not websockets:
    kubectl's port-forward subprotocol name has a "/", which the websockets library refuses."""

    _peer_pem: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._peer_pem = _peer_pem(transport)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if self._peer_pem is not None:
            self.scope["extensions"] = {**(self.scope.get("extensions") or {}),
                                        "tls": {"client_cert_chain": [self._peer_pem]}}


def peer_cert_pem(scope: Any) -> str | None:
    chain = ((scope.get("extensions") or {}).get("tls") or {}).get("client_cert_chain") or []
    return chain[0] if chain else None


def uvicorn_ssl_options(cert_file: str, key_file: str, client_ca_file: str) -> dict[str, Any]:
    """``uvicorn.Config`` keywords: HTTPS, client certificates optional but verified against the CA when sent."""
    return {"ssl_certfile": cert_file, "ssl_keyfile": key_file, "ssl_ca_certs": client_ca_file,
            "ssl_cert_reqs": ssl.CERT_OPTIONAL, "http": PeerCertHttpToolsProtocol, "ws": PeerCertWSProtocol}
