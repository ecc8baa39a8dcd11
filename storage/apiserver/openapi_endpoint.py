"""``/openapi/v2`` and ``/openapi/v3[/<group-version>]``, computed once (about 50 ms), with ETags.

client-go asks for ``/openapi/v2`` in protobuf only
(``application/com.github.proto-openapi.spec.v2@v1.0+protobuf``); Stowage
has no protobuf encoding of it, so such a request gets 406 and kubectl goes
on with OpenAPI v3, which it prefers anyway (JSON). A client that accepts
JSON gets the Swagger 2.0 document as JSON.
"""
from __future__ import annotations

import functools
from typing import Any

import orjson

from starlette.responses import Response

from storage.api import openapi
from storage.apiserver.rendering import JSON_TYPE, accepts_json
from storage.errors import NotFound, StowageError

PREFIX = "/openapi/"


class NotAcceptable(StowageError):
    code, reason = 406, "NotAcceptable"


def is_openapi_path(path: str) -> bool:
    return path == "/openapi/v2" or path == "/openapi/v3" or path.startswith("/openapi/v3/")


def serve(path: str, query: Any, headers: Any) -> Response:
    """Answer a GET of an OpenAPI path (the caller has authenticated the user)."""
    accept = headers.get("accept")
    if not accepts_json(accept):
        raise NotAcceptable(
            f"only the following media types are accepted: {JSON_TYPE}"
            + ("" if path != "/openapi/v2" else " (no protobuf encoding of the OpenAPI v2 document is served)")
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
    etag = f'"{digest}"'
    wanted = query.get("hash")
    if group_version is not None and wanted and wanted != digest:
        # As Kubernetes: an outdated hash is redirected to the current document, never served stale.
        location = f"/openapi/v3/{openapi.v3_path(group_version)}?hash={digest}"
        return Response(status_code=301, headers={"Location": location, "Cache-Control": "no-cache, private"})
    cache = "public, immutable" if wanted else "no-cache, private"
    if etag in [t.strip() for t in (headers.get("if-none-match") or "").split(",")]:
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": cache})
    return Response(data, media_type=JSON_TYPE, headers={"ETag": etag, "Cache-Control": cache})


@functools.lru_cache(maxsize=1)
def _index() -> bytes:
    return orjson.dumps(openapi.v3_index())


def warm() -> None:
    """Build every document now (once per process), so no request waits for it."""
    _index()
    openapi.encoded(None)
