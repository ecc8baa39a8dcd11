"""The Kubernetes REST dialect over HTTP for every resource in the registry.

One catch-all route parses the path itself: the grammar is small and fixed,
and a hand parser costs less per request than trying a hundred patterns.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any, Callable

import orjson
import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from storage.api import registry
from storage.api.selectors import parse_field_selector, parse_label_selector
from storage.apiserver import discovery, proxy
from storage.apiserver.admission import Admission, default_admission
from storage.apiserver import identity
from storage.apiserver.auth import TokenAuth
from storage.apiserver.authn import BOOTSTRAPPERS, Authenticator
from storage.apiserver.satokens import ServiceAccountTokens
from storage.system.tlsserver import peer_cert_pem
from storage.apiserver.handlers import Handlers, Target
from storage.apiserver.patch import PATCH_TYPES
from storage.apiserver.watch import WatchFilter, WatchRegistry, WatchResponse, line, stream_events
from storage.errors import BadRequest, Forbidden, Gone, MethodNotAllowed, NotFound, StowageError
from storage.store.base import Store

log = structlog.get_logger(__name__)

JSON_TYPE = "application/json"
_PUBLIC = {"/healthz": b"ok", "/readyz": b"ok", "/livez": b"ok"}
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_METHOD_SET = frozenset(_METHODS)
# Resources a namespaced path segment can never be: "namespaces/<ns>/status" is the namespace's own status.
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=JSON_TYPE)


def _error(err: StowageError) -> Response:
    return _json(err.to_status(), err.code)


@dataclass(frozen=True)
class _Parsed:
    target: Target
    watch_prefix: bool


def _not_found() -> NotFound:
    return NotFound("the server could not find the requested resource")


def parse_resource_path(group_version: str, rest: list[str]) -> _Parsed:
    """``rest`` is the path after ``/api/v1`` or ``/apis/<group>/<version>``, split on "/"."""
    watch_prefix = bool(rest) and rest[0] == "watch"
    if watch_prefix:
        rest = rest[1:]
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in _NAMESPACE_SUBRESOURCES:
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3 or not all(rest):
        raise _not_found()
    info = registry.by_plural(rest[0])
    if info is None or info.api_version != group_version:
        raise _not_found()
    if namespace is not None and not info.namespaced:
        raise _not_found()
    if namespace is None and not info.namespaced:
        namespace = ""
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if subresource and (subresource != "status" or not info.has_status):
        raise _not_found()
    if info.namespaced and name and namespace is None:
        raise _not_found()  # a namespaced object is only reachable under its namespace
    return _Parsed(Target(info, namespace, name, subresource), watch_prefix)


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def _dry_run(request: Request) -> bool:
    return request.query_params.get("dryRun") == "All"


def create_app(
    store: Store,
    tokens: TokenAuth | Authenticator,
    *,
    admission: Admission | None = None,
    bookmark_interval: float | None = 30.0,
    cluster_pki: Any = None,
    sa_tokens: ServiceAccountTokens | None = None,
    agent_tls: Any = None,
) -> Starlette:
    """The API server app. ``admission=None`` runs the standard chain (default class, finalizers, resize).

    ``cluster_pki`` signs approved node CSRs, ``sa_tokens`` issues and checks service-account tokens and
    ``agent_tls`` (an ``ssl.SSLContext``) is how the server calls node agents."""
    handlers = Handlers(store, admission if admission is not None else default_admission())
    authn = tokens if isinstance(tokens, Authenticator) else Authenticator(tokens, store, sa_tokens)
    watches = WatchRegistry()
    static: dict[str, bytes] = {
        "/version": orjson.dumps(discovery.version_info()),
        "/api": orjson.dumps(discovery.api_versions()),
        "/apis": orjson.dumps(discovery.api_group_list()),
    }
    for gv in registry.groups():
        prefix = "/api/" if "/" not in gv else "/apis/"
        static[prefix + gv] = orjson.dumps(discovery.api_resource_list(gv))
    for group in discovery.named_groups():
        static[f"/apis/{group}"] = orjson.dumps(discovery.api_group(group))

    async def endpoint(request: Request) -> Response:
        path = request.scope["path"].rstrip("/") or "/"
        try:
            if path in _PUBLIC:
                return Response(_PUBLIC[path], media_type="text/plain")
            if path == "/version":  # public, as Kubernetes' system:public-info-viewer role makes it
                return Response(static[path], media_type=JSON_TYPE)
            user = authn.authenticate(request.headers.get("authorization"), peer_cert_pem(request.scope))
            if BOOTSTRAPPERS in user.groups and not identity.bootstrapper_may(request.method, path):
                raise Forbidden(f'{user.name} may only request a node certificate with a bootstrap token')
            if path in static:
                if request.method != "GET":
                    raise MethodNotAllowed(f"{request.method} is not supported on {path}")
                return Response(static[path], media_type=JSON_TYPE)
            parts = path.split("/")[1:]
            pod_log = proxy.log_target(parts)
            if pod_log is not None:
                if request.method != "GET":
                    raise MethodNotAllowed(f"{request.method} is not supported on pods/log")
                return await proxy.pod_log(store, *pod_log, request.query_params, agent_tls)
            special = await _identity(request, parts, user)
            if special is not None:
                return special
            if len(parts) >= 3 and parts[0] == "api" and parts[1] == "v1":
                parsed = parse_resource_path("v1", parts[2:])
            elif len(parts) >= 4 and parts[0] == "apis":
                parsed = parse_resource_path(f"{parts[1]}/{parts[2]}", parts[3:])
            else:
                raise _not_found()
            return await _serve(request, parsed, user.name)
        except StowageError as e:
            return _error(e)
        except Exception as e:  # a bug must still answer as a Status, not a dropped connection
            # A plain traceback, not a rich one: those print local variables, which can hold credentials.
            log.error("request failed", method=request.method, path=path, error=repr(e),
                      traceback=traceback.format_exc())
            return _error(StowageError("internal error"))

    async def _identity(request: Request, parts: list[str], user: Any) -> Response | None:
        """TokenRequest and CSR creation: they need the caller's full identity, not only its name."""
        sa = identity.token_request_target(parts)
        if sa is not None:
            if request.method != "POST":
                raise MethodNotAllowed(f"{request.method} is not supported on serviceaccounts/token")
            if authn.sa_tokens is None:
                raise _not_found()
            raw = await request.body()
            if "protobuf" in request.headers.get("content-type", ""):
                body = identity.token_request_from_protobuf(raw)
            else:
                body = _decode(raw)
            return _json(identity.request_token(store, authn.sa_tokens, *sa, body), 201)
        if identity.is_csr_create(parts) and request.method == "POST":
            body = identity.stamp_requester(_decode(await request.body()), user)
            parsed = parse_resource_path("certificates.k8s.io/v1", parts[3:])
            created = handlers.create(parsed.target, body, user=user.name, dry_run=_dry_run(request))
            if not _dry_run(request):
                created = identity.approve_and_sign(store, cluster_pki, created)
            return _json(created, 201)
        return None

    async def _serve(request: Request, parsed: _Parsed, user: str) -> Response:
        t, method, query = parsed.target, request.method, request.query_params
        if method == "GET" and (parsed.watch_prefix or _truthy(query.get("watch"))):
            return await _watch(request, t)
        if parsed.watch_prefix:
            raise MethodNotAllowed("only GET is supported on watch paths")
        dry_run = _dry_run(request)
        label_selector, field_selector = query.get("labelSelector"), query.get("fieldSelector")
        call: Callable[[], dict[str, Any]]
        status = 200
        if not t.name:
            if method == "GET":
                call = lambda: handlers.list(t, label_selector, field_selector)  # noqa: E731
            elif method == "POST":
                body = _decode(await request.body())
                call = lambda: handlers.create(t, body, user=user, dry_run=dry_run)  # noqa: E731
                status = 201
            elif method == "DELETE":
                options = _delete_options(await request.body(), query)
                call = lambda: handlers.delete_collection(t, label_selector, field_selector, options, dry_run=dry_run)  # noqa: E731
            else:
                raise MethodNotAllowed(f"{method} is not supported on a collection")
        elif method == "GET":
            call = lambda: handlers.get(t)  # noqa: E731
        elif method == "PUT":
            body = _decode(await request.body())
            call = lambda: handlers.update(t, body, user=user, dry_run=dry_run)  # noqa: E731
        elif method == "PATCH":
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type not in PATCH_TYPES:
                return _json(
                    {**StowageError("").to_status(), "reason": "UnsupportedMediaType", "code": 415,
                     "message": f"the body of the request was in an unknown format - accepted media types include: {', '.join(PATCH_TYPES)}"},
                    415,
                )
            raw = await request.body()
            call = lambda: handlers.patch(t, content_type, raw, user=user, dry_run=dry_run)  # noqa: E731
        elif method == "DELETE" and not t.subresource:
            options = _delete_options(await request.body(), query)
            call = lambda: handlers.delete(t, options, dry_run=dry_run)  # noqa: E731
        else:
            raise MethodNotAllowed(f"{method} is not supported here")

        # Inline on the event loop, not in a worker thread: a store call is a short local write or one
        # database round trip, and the thread hop (queue, wake-up, GIL hand-over) cost more than the
        # call itself. Writes to one store serialize anyway, so threads bought no parallelism.
        payload = orjson.dumps(call())
        return Response(payload, status_code=status, media_type=JSON_TYPE)

    async def _watch(request: Request, t: Target) -> Response:
        query = request.query_params
        rv = query.get("resourceVersion") or ""
        label_selector, field_selector = query.get("labelSelector") or "", query.get("fieldSelector") or ""
        try:
            timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
            since = int(rv) if rv not in ("", "0") else None
        except ValueError as e:
            raise BadRequest(f"timeoutSeconds and resourceVersion must be numbers: {e}") from None
        flt = WatchFilter(
            name=t.name,
            label_matches=parse_label_selector(label_selector).matches if label_selector else None,
            field_matches=parse_field_selector(field_selector) if field_selector else None,
        )
        namespace = t.namespace if t.info.namespaced else None

        def open_watch() -> tuple[list[dict[str, Any]], int, Any]:
            if since is not None:
                return [], since, store.watch(t.info.plural, namespace, since=since)
            items, revision = store.list(t.info.plural, namespace, label_selector or None, field_selector or None)
            items = [o for o in items if flt.matches(o)]
            return items, revision, store.watch(t.info.plural, namespace, since=revision)

        try:
            initial, revision, watcher = await run_in_threadpool(open_watch)
        except Gone as e:
            # Kubernetes answers 200 and puts the 410 in the stream; clients relist on it.
            gone = Gone(e.message or f"too old resource version: {rv}")
            return Response(line("ERROR", gone.to_status()), media_type=JSON_TYPE)
        events = stream_events(
            t.info, watcher, initial, revision, flt, watches, timeout,
            bookmark_interval if _truthy(query.get("allowWatchBookmarks")) else None,
            knows_all=since is None,
        )
        return WatchResponse(events, media_type=JSON_TYPE)

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=_METHODS)])
    app.state.store = store
    app.state.watches = watches
    standard = app.build_middleware_stack()

    async def direct(scope: Scope, receive: Receive, send: Send) -> None:
        """The common case without Starlette's middleware and router layers.

        ``endpoint`` already turns every error into a Status response, and the
        single catch-all route matches every path, so those layers only add
        cost per request. Other methods (HEAD, OPTIONS, ...) and lifespan
        messages keep the standard stack and its answers.
        """
        if scope["type"] == "http" and scope["method"] in _METHOD_SET:
            response = await endpoint(Request(scope, receive))
            await response(scope, receive, send)
            return
        await standard(scope, receive, send)

    app.middleware_stack = direct
    return app


def _decode(body: bytes) -> Any:
    if not body:
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"the request body is not valid JSON: {e}") from None


def _delete_options(body: bytes, query: Any) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if body.strip():
        decoded = _decode(body)
        if not isinstance(decoded, dict):
            raise BadRequest("DeleteOptions must be a JSON object")
        options = decoded
    if query.get("propagationPolicy"):
        options["propagationPolicy"] = query["propagationPolicy"]
    return options
