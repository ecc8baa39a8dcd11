"""List paging: ``limit`` and ``continue`` read and written as the Kubernetes API server does.

A continue token has Kubernetes' own form, base64url JSON without padding:
``{"v": "meta.k8s.io/v1", "rv": R, "start": KEY + "\\x00"}``. ``R`` is the
revision the first page was read at; every later page is read as of ``R``
(the store rebuilds it from the history it keeps), so a paged list is one
consistent snapshot, as etcd serves it. ``KEY`` is the last key the page
examined, relative to the list's scope as Kubernetes keys are: ``namespace/name``
across namespaces, ``name`` inside one namespace or for a cluster-scoped kind.

Once the store has compacted past ``R`` the snapshot cannot be rebuilt: 410
Expired with Kubernetes' message and, in the Status' metadata, a token with
``rv`` -1 that continues at the newest revision after the same key (an
inconsistent continuation, which the client asks for knowingly).

Tokens are not signed, as in Kubernetes: the checks make a malformed or
tampered one a 400 naming ``continue``; a well-formed token can only start
the same list at another key, which the caller may list anyway.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from storage.errors import BadRequest, Gone

CONTINUE_VERSION = "meta.k8s.io/v1"
# k8s.io/apiserver/pkg/storage/etcd3: inconsistentContinue.
EXPIRED_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new list "
    "without the continue parameter, or use the continue token in this response to retrieve the remainder of the "
    "results. Continuing with the provided token results in an inconsistent list - objects that were created, "
    "modified, or deleted between the time the first chunk was returned and now may show up in the list."
)
_INTEGER = re.compile(r"-?[0-9]+")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_INVALID = "continue key is not valid"


class ContinueExpired(Gone):
    """410 Expired for a continue token older than the store's history, carrying the inconsistent-continue token."""

    def __init__(self, token: str) -> None:
        super().__init__(EXPIRED_CONTINUE)
        self.token = token

    def to_status(self) -> dict[str, Any]:
        status = super().to_status()
        status["metadata"] = {"continue": self.token}
        return status


@dataclass(frozen=True)
class Continue:
    revision: int  # > 0: read as of it; < 0: at the newest revision (the token of a 410)
    after: tuple[str, str]  # (namespace, name), exclusive
    start: str  # the start key as sent, for the token of a 410


def parse_limit(value: str | None) -> int | None:
    """The ``limit`` query parameter: None for none or 0 (no limit, as Kubernetes reads 0)."""
    if value is None or value == "":
        return None
    if not _INTEGER.fullmatch(value):
        raise BadRequest(f'limit: Invalid value: "{value}": must be an integer')
    limit = int(value)
    if limit < 0:
        raise BadRequest(f"limit: Invalid value: {limit}: must be greater than or equal to 0")
    return limit or None


def encode_continue(revision: int, start: str) -> str:
    raw = json.dumps({"v": CONTINUE_VERSION, "rv": revision, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def start_key(after: tuple[str, str], across_namespaces: bool) -> str:
    namespace, name = after
    return f"{namespace}/{name}\x00" if across_namespaces else f"{name}\x00"


def decode_continue(token: str, across_namespaces: bool, namespace: str | None) -> Continue:
    """Check and read a token; ``namespace`` is the list's (None across namespaces, "" cluster-scoped)."""

    def invalid(why: str) -> BadRequest:
        return BadRequest(f"invalid continue token: {why}")

    if not _BASE64URL.fullmatch(token) or len(token) % 4 == 1:
        raise invalid(f"{_INVALID}: illegal base64 data")
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError) as e:
        raise invalid(f"{_INVALID}: {e}") from None
    if not isinstance(data, dict):
        raise invalid(f"{_INVALID}: not a JSON object")
    version, revision, start = data.get("v"), data.get("rv"), data.get("start")
    if version != CONTINUE_VERSION:
        raise invalid(f"{_INVALID}: server does not recognize this encoded version {json.dumps(version)}")
    if not isinstance(revision, int) or isinstance(revision, bool) or revision == 0:
        raise invalid(f"{_INVALID}: incorrect encoded start resourceVersion (version {CONTINUE_VERSION})")
    if not isinstance(start, str) or not start:
        raise invalid(f"{_INVALID}: encoded start key empty (version {CONTINUE_VERSION})")
    # Every token this server writes starts just past a key ("\x00" appended, as Kubernetes does);
    # the key must name one object of this list's scope, never a path elsewhere.
    key = start[:-1] if start.endswith("\x00") else ""
    parts = key.split("/")
    if len(parts) != (2 if across_namespaces else 1) or any(p in ("", ".", "..") or "\x00" in p for p in parts):
        raise invalid(f"{_INVALID}: {json.dumps(start)}")
    after = (parts[0], parts[1]) if across_namespaces else (namespace or "", parts[0])
    return Continue(revision, after, start)
