"""One-line messages for failures the user can act on (no tracebacks)."""
from __future__ import annotations

import httpx

from storage.errors import StowageError


class CommandError(Exception):
    """A mistake in the command line or its input; printed as ``error: <message>``."""


def server_error_line(err: StowageError, context: str = "") -> str:
    """kubectl's form: ``Error from server (NotFound): persistentvolumeclaims "x" not found``."""
    message = err.message or str(err) or err.reason
    if context:
        message = f"{context}: {message}"
    return f"Error from server ({err.reason}): {message}"


def transport_error_line(err: httpx.TransportError, server: str) -> str:
    where = server or "the server"
    if isinstance(err, httpx.ConnectError):
        return f"error: the connection to the server {where} was refused - is the server running, and is that the right host and port?"
    if isinstance(err, httpx.TimeoutException):
        return f"error: timed out talking to the server {where}"
    return f"error: cannot talk to the server {where}: {err}"
