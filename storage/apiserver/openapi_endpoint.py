"""``/openapi/v2`` and ``/openapi/v3[/<group-version>]``, computed once (about 0.2 s), with ETags.

client-go asks for ``/openapi/v2`` in protobuf only
(``application/com.github.proto-openapi.spec.v2@v1.0+protobuf``) and cannot
read anything else there: kubectl before 1.27 validates and explains with it,
newer ones fall back to it when OpenAPI v3 fails. So it is served in that
protobuf form too; a client that asks for JSON gets the same document as JSON.
"""
from __future__ import annotations

import functools
import hashlib
from typing import Any

import orjson

from starlette.responses import Response

from storage.api import openapi
from storage.api.openapi_proto import encode_document
from storage.apiserver.rendering import JSON_TYPE, accepts_json, parse_accept
from storage.errors import NotFound, StowageError

PROTOBUF_V2 = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
# What the answer's Content-Type says, as Kubernetes sends it: Go's mime parser refuses the "@" form.
PROTOBUF_V2_RETURNED = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


class NotAcceptable(StowageError):
    code, reason = 406, "NotAcceptable"


def is_openapi_path(path: str) -> bool:
    return path == "/openapi/v2" or path == "/openapi/v3" or path.startswith("/openapi/v3/")


def serve(path: str, query: Any, headers: Any) -> Response:
    """Answer a GET of an OpenAPI path (the caller has authenticated the user)."""
    accept = headers.get("accept")
    if path == "/openapi/v2" and _prefers_protobuf(accept):
        data, digest = _v2_protobuf()
        return _document(data, digest, PROTOBUF_V2_RETURNED, headers, "no-cache, private")
    if not accepts_json(accept):
        raise NotAcceptable(
            f"only the following media types are accepted: {JSON_TYPE}"
            + (f", {PROTOBUF_V2}" if path == "/openapi/v2" else "")
        )
    if path == "/openapi/v3":
        return Response(_index(), media_type=JSON_TYPE, headers={"Cache-Control": "no-cache, private"})
    if path == "/openapi/v2":
        group_version = None
    else:
        rest = path[len("/openapi/v3/"):]
        if rest.startswith("api/"):
            group_version = rest[len("api/"):]
        elif rest.startswith("apis/"):
            group_version = rest[len("apis/"):]
        else:
            raise NotFound("the server could not find the requested resource")
        if rest.startswith("api/") == ("/" in group_version):
            raise NotFound("the server could not find the requested resource")
    encoded = openapi.encoded(group_version)
    if encoded is None:
        raise NotFound("the server could not find the requested resource")
    data, digest = encoded
    wanted = query.get("hash")
    if group_version is not None and wanted and wanted != digest:
        # As Kubernetes: an outdated hash is redirected to the current document, never served stale.
        location = f"/openapi/v3/{openapi.v3_path(group_version)}?hash={digest}"
        return Response(status_code=301, headers={"Location": location, "Cache-Control": "no-cache, private"})
    return _document(data, digest, JSON_TYPE, headers, "public, immutable" if wanted else "no-cache, private")


def _document(data: bytes, digest: str, media_type: str, headers: Any, cache: str) -> Response:
    etag = f'"{digest}"'
    if etag in [t.strip() for t in (headers.get("if-none-match") or "").split(",")]:
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": cache})
    return Response(data, media_type=media_type, headers={"ETag": etag, "Cache-Control": cache})


def _prefers_protobuf(accept: str | None) -> bool:
    """Whether the first media range the server can produce is the protobuf one."""
    for m in parse_accept(accept):
        if m.type in (PROTOBUF_V2, PROTOBUF_V2_RETURNED):
            return True
        if m.type in (JSON_TYPE, "application/*", "*/*"):
            return False
    return False


@functools.lru_cache(maxsize=1)
def _v2_protobuf() -> tuple[bytes, str]:
    data = encode_document(openapi.v2_document())
    return data, hashlib.sha512(data).hexdigest()[:128].upper()


@functools.lru_cache(maxsize=1)
def _index() -> bytes:
    return orjson.dumps(openapi.v3_index())


def warm() -> None:
    """Build every document now (once per process), so no request waits for it."""
    _index()
    _v2_protobuf()
