"""The Kubernetes REST dialect over HTTP for every resource in the registry.

One catch-all route parses the path itself: the grammar is small and fixed,
and a hand parser costs less per request than trying a hundred patterns.
"""
from __future__ import annotations

import asyncio
import contextvars
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import orjson
import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from storage.api import k8s_protobuf, managedfields, registry
from storage.api.conversion import to_version
from storage.api.limits import MAX_REQUEST_BYTES, depth_message, json_depth_exceeds, request_too_large_message
from storage.api.selectors import check_field_selector, parse_field_selector, parse_label_selector
from storage.apiserver import (discovery, metrics, namespaces, openapi_endpoint, paging, proxy, rendering, scale,
                               streams)
from storage.apiserver.admission import Admission, default_admission
from storage.apiserver import csr_approval, identity
from storage.apiserver.auth import TokenAuth, User
from storage.apiserver.authn import Authenticator
from storage.apiserver.authz import Authorization, answer_review, authenticated, impersonated, request_attributes
from storage.apiserver.eviction import EvictionHandler
from storage.apiserver.fieldvalidation import FieldValidation, warning_header
from storage.apiserver.handlers import Handlers, Target, with_type
from storage.apiserver.node_authz import NodeRestriction
from storage.apiserver.patch import APPLY, PATCH_TYPES, STRATEGIC, apply_patch, parse_patch
from storage.apiserver.rbac import ALLOW, MASTERS
from storage.apiserver.rbac_escalation import CURRENT_USER, RBACEscalation
from storage.apiserver.ratelimit import FailureLimiter
from storage.apiserver.satokens import ServiceAccountTokens
from storage.system.tlsserver import peer_cert_pem
from storage.apiserver.yamlbody import decode_yaml_body
from storage.apiserver.watch import WatchFilter, WatchRegistry, WatchResponse, encode_json, line, stream_events, watch_key
from storage.errors import (
    BadRequest,
    FieldError,
    Gone,
    Invalid,
    MethodNotAllowed,
    NotFound,
    RequestEntityTooLarge,
    StowageError,
    TemporaryError,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
)
from storage.store.base import Store

log = structlog.get_logger(__name__)

JSON_TYPE = "application/json"
_HEALTH = ("/healthz", "/livez", "/readyz")
# Threads that run store calls. SQLite writes serialize on one lock anyway; the rest lets reads
# proceed while a write waits for a lock another process holds (up to the busy timeout).
STORE_THREADS = 8
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_METHOD_SET = frozenset(_METHODS)
# Resources a namespaced path segment can never be: "namespaces/<ns>/status" is the namespace's own status.
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=JSON_TYPE)


def _error(err: StowageError) -> Response:
    status = err.to_status()
    details = status.get("details")
    if details is not None and details.get("kind"):
        info = registry.by_plural(str(details["kind"]))
        if info is not None and info.group:
            details.setdefault("group", info.group)
    response = _json(status, err.code)
    if isinstance(err, TemporaryError):
        response.headers["Retry-After"] = str(max(1, int(err.delay + 0.999)))
    elif isinstance(err, TooManyRequests) and err.retry_after > 0:
        response.headers["Retry-After"] = str(err.retry_after)
    return response


def _health_report(path: str, checks: list[tuple[str, str | None]], verbose: bool) -> Response:
    """Kubernetes' format: ``[+]name ok`` / ``[-]name failed: reason`` lines, then a verdict."""
    what = path.strip("/")
    failed = any(reason is not None for _, reason in checks)
    if not failed and not verbose:
        return Response(b"ok", media_type="text/plain")
    lines = ["[+]ping ok"]
    lines += [f"[+]{name} ok" if reason is None else f"[-]{name} failed: {reason}" for name, reason in checks]
    lines.append(f"{what} check failed" if failed else f"{what} check passed")
    return Response(("\n".join(lines) + "\n").encode(), status_code=500 if failed else 200, media_type="text/plain")


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
    if info is None or not info.serves(group_version):
        raise _not_found()
    if namespace is not None and not info.namespaced:
        raise _not_found()
    if namespace is None and not info.namespaced:
        namespace = ""
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if subresource and not _has_subresource(info, subresource):
        raise _not_found()
    if info.namespaced and name and namespace is None:
        raise _not_found()  # a namespaced object is only reachable under its namespace
    version = group_version if group_version != info.api_version else ""
    return _Parsed(Target(info, namespace, name, subresource, version), watch_prefix)


def _has_subresource(info: registry.ResourceInfo, subresource: str) -> bool:
    if subresource == "status":
        return info.has_status
    if subresource == "scale":
        return info.plural in scale.SCALABLE
    if subresource in ("eviction", "ephemeralcontainers"):
        return info.plural == "pods"
    if subresource == csr_approval.APPROVAL:
        return info.plural == "certificatesigningrequests"
    return subresource == "finalize" and info.plural == "namespaces"


def _in_version(t: Target) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    """HPA8: what a request to an older version's path gets back, its objects and lists in that version.
    Tables and metadata-only forms are built from the stored version and pass unchanged."""
    version = t.version
    if not version:
        return None
    kind, list_kind = t.info.kind, t.info.kind + "List"

    def view(obj: dict[str, Any]) -> dict[str, Any]:
        if obj.get("kind") == kind:
            return to_version(obj, version)
        if obj.get("kind") == list_kind:
            return {**obj, "apiVersion": version, "items": [to_version(o, version) for o in obj.get("items") or []]}
        return obj

    return view


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


class _OptionsInvalid(Invalid):
    """Bad query options (``PatchOptions``, ...), as Kubernetes reports them: a 422 on the meta.k8s.io kind."""

    def __init__(self, kind: str, errors: list[FieldError]) -> None:
        super().__init__(errors, kind=f"{kind}.meta.k8s.io")
        self.options_kind = kind

    def to_status(self) -> dict[str, Any]:
        status = super().to_status()
        status["details"].update(kind=self.options_kind, group="meta.k8s.io")
        return status


_OPTIONS_KIND = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions"}


def _field_manager(request: Request, apply: bool) -> str:
    """The writer's manager name: ``?fieldManager`` (required for apply), else the User-Agent's product."""
    query = request.query_params
    given = query.get("fieldManager") or ""
    problems = managedfields.manager_problems(given)
    if apply and not given:
        problems.insert(0, FieldError("fieldManager", "Required value", "is required for apply patch"))
    if request.method == "PATCH" and not apply and "force" in query:
        problems.insert(0, FieldError("force", "Forbidden", "may not be specified for non-apply patch"))
    if problems:
        raise _OptionsInvalid(_OPTIONS_KIND[request.method], problems)
    return given or managedfields.manager_from_user_agent(request.headers.get("user-agent", ""))


def _dry_run(request: Request, options: dict[str, Any] | None = None) -> bool:
    """``?dryRun=All``, or (on delete) ``dryRun: ["All"]`` in the DeleteOptions body, as kubectl sends it."""
    if request.query_params.get("dryRun") == "All":
        return True
    return options is not None and options.get("dryRun") in (["All"], "All")


def create_app(
    store: Store,
    tokens: TokenAuth | Authenticator,
    *,
    admission: Admission | None = None,
    bookmark_interval: float | None = 30.0,
    pod_security_default: str = "baseline",
    authorization: Authorization | None = None,
    auth_failures: FailureLimiter | None = None,
    cluster_pki: Any = None,
    sa_tokens: ServiceAccountTokens | None = None,
    agent_tls: Any = None,
) -> Starlette:
    """The API server app. ``admission=None`` runs the standard chain (default class, finalizers, resize,
    service accounts, Pod Security with ``pod_security_default`` for namespaces without labels).

    ``authorization=None`` starts the standard one (default policy, Node and RBAC authorizers); the
    app's ``state.authz`` holds it for ``close()``. NodeRestriction always ends the admission chain.
    ``cluster_pki`` signs approved node CSRs, ``sa_tokens`` issues and checks service-account tokens and
    ``agent_tls`` (an ``ssl.SSLContext`` with the server's own client certificate) is how the server calls
    node agents, as kube-apiserver calls kubelets: user credentials never leave the server.
    """
    authz = authorization if authorization is not None else Authorization(store).start()
    chain = admission if admission is not None else default_admission(pod_security_default)
    handlers = Handlers(store, Admission([*chain.plugins, NodeRestriction(), RBACEscalation(authz)]))
    evictions = EvictionHandler(handlers)
    failures = auth_failures if auth_failures is not None else FailureLimiter()
    authn = tokens if isinstance(tokens, Authenticator) else Authenticator(tokens, store, sa_tokens)
    watches = WatchRegistry()
    # Store calls run here, never on the event loop: a database lock held by another process must
    # not stop /healthz, /livez or any request that does not need the store.
    executor = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="apiserver-store")
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
    openapi_endpoint.warm()
    # The resource metrics API is served here too (read from the agents), so it is discoverable.
    group_list = discovery.api_group_list()
    group_list["groups"].append(metrics.api_group())
    static["/apis"] = orjson.dumps(group_list)
    static.update({path: orjson.dumps(doc) for path, doc in metrics.discovery_documents().items()})
    # The same, aggregated: /api and /apis answer it to clients that ask for it (kubectl since 1.26).
    resource_lists = {gv: discovery.api_resource_list(gv) for gv in registry.groups()}
    resource_lists[metrics.GROUP_VERSION] = metrics.resource_list()
    named = [(g["name"], [v["version"] for v in g["versions"]]) for g in group_list["groups"]]
    aggregated: dict[tuple[str, str], bytes] = {}
    for version in discovery.AGGREGATED_VERSIONS:
        aggregated["/api", version] = orjson.dumps(discovery.aggregated_list([("", ["v1"])], resource_lists, version))
        aggregated["/apis", version] = orjson.dumps(discovery.aggregated_list(named, resource_lists, version))

    async def endpoint(request: Request) -> Response:
        path = request.scope["path"].rstrip("/") or "/"
        deprecation = ""  # the resource's lifecycle warning, once the path names a deprecated one
        try:
            if path in _HEALTH:
                verbose = "verbose" in request.query_params
                checks: list[tuple[str, str | None]] = []
                if path == "/readyz":  # liveness is the process answering; readiness needs the store
                    checks = await asyncio.get_running_loop().run_in_executor(None, store.health)
                    for name, reason in checks:
                        if reason is not None:
                            log.warning("readiness check failed", check=name, reason=reason)
                return _health_report(path, checks, verbose)
            if path == "/version":  # public, as Kubernetes' system:public-info-viewer role makes it
                return Response(static[path], media_type=JSON_TYPE)
            try:
                user = authn.authenticate(request.headers.get("authorization"), peer_cert_pem(request.scope))
            except Unauthorized:
                address = request.client.host if request.client else ""
                wait = failures.failed(address)
                if wait:
                    raise TooManyRequests(f"too many failed authentications from {address}, retry in {wait}s",
                                          retry_after=wait) from None
                raise
            user = authenticated(user)
            if any(k.startswith("impersonate-") for k in request.headers.keys()):
                user = await impersonated(authz, user, request.headers)
            CURRENT_USER.set(user)
            if MASTERS in user.groups:  # the common case pays for no attribute parsing
                decision = ALLOW
            else:
                decision = await authz.check(request_attributes(user, request.method, path, request.query_params))
            if openapi_endpoint.is_openapi_path(path):
                if request.method != "GET":
                    raise MethodNotAllowed(f"{request.method} is not supported on {path}")
                return openapi_endpoint.serve(path, request.query_params, request.headers)
            if path in static:
                if request.method != "GET":
                    raise MethodNotAllowed(f"{request.method} is not supported on {path}")
                wanted = discovery.aggregated_version(request.headers.get("accept")) if path in ("/api", "/apis") \
                    else None
                if wanted is not None:
                    return Response(aggregated[path, wanted], media_type=discovery.aggregated_content_type(wanted))
                return Response(static[path], media_type=JSON_TYPE)
            parts = path.split("/")[1:]
            pod_sub = proxy.pod_subresource_target(parts)
            if pod_sub is not None and pod_sub[2] == "log":
                if request.method != "GET":
                    raise MethodNotAllowed(f"{request.method} is not supported on pods/log")
                # The user was authorized for pods/log above; the agent is asked with the server's own identity.
                return await proxy.pod_log(store, *pod_sub[:2], request.query_params, agent_tls)
            if pod_sub is not None:
                return await run_in_threadpool(streams.check_plain_request, store, *pod_sub, request.query_params)
            node_proxy = metrics.node_proxy_target(parts)
            if node_proxy is not None:
                body, content_type = await metrics.node_proxy(store, request.method, *node_proxy, agent_tls)
                return Response(body, media_type=content_type)
            if metrics.is_metrics_path(parts):
                return _json(await metrics.serve(store, request.method, parts, request.query_params, agent_tls))
            special = await _identity(request, parts, user)
            if special is not None:
                return special
            if len(parts) >= 3 and parts[0] == "api" and parts[1] == "v1":
                parsed = parse_resource_path("v1", parts[2:])
            elif len(parts) >= 4 and parts[0] == "apis":
                parsed = parse_resource_path(f"{parts[1]}/{parts[2]}", parts[3:])
            else:
                raise _not_found()
            deprecation = parsed.target.info.deprecation
            response = await _serve(request, parsed, user, decision.visible)
            if deprecation:
                response.headers.append("Warning", warning_header(deprecation))
            # Method, path and status only: bodies can hold Secret values and never go into a log.
            log.debug("request", method=request.method, path=path, user=user.name, code=response.status_code)
            return response
        except StowageError as e:
            log.debug("request failed", method=request.method, path=path, code=e.code, reason=e.reason, message=e.message)
            refused = _error(e)
            if deprecation:  # Kubernetes warns on every request to a deprecated resource, refused ones too
                refused.headers.append("Warning", warning_header(deprecation))
            return refused
        except ClientDisconnect:
            # The client hung up while its body was read: nothing was stored, and there is nobody to
            # answer (the 499 is never sent). Not a server fault, so no error and no traceback.
            log.debug("client went away", method=request.method, path=path)
            return Response(status_code=CLIENT_CLOSED_REQUEST)
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
            body = await _json_body(request, api_version="authentication.k8s.io/v1", kind="TokenRequest")
            return _json(identity.request_token(store, authn.sa_tokens, *sa, body), 201)
        if identity.is_csr_create(parts) and request.method == "POST":
            manager = _field_manager(request, apply=False)
            body = identity.stamp_requester(await _json_body(request, info=registry.by_kind("CertificateSigningRequest")),
                                            user)
            parsed = parse_resource_path("certificates.k8s.io/v1", parts[3:])
            created = handlers.create(parsed.target, body, user=user.name, dry_run=_dry_run(request), manager=manager)
            if not _dry_run(request):
                created = identity.approve_and_sign(store, cluster_pki, created)
            return _json(created, 201)
        return None

    async def _serve(request: Request, parsed: _Parsed, who: User,
                     visible: Callable[[dict[str, Any]], bool] | None) -> Response:
        t, method, query = parsed.target, request.method, request.query_params
        user = who.name
        if query.get("fieldSelector"):
            check_field_selector(t.info.plural, query["fieldSelector"])  # only the fields Kubernetes selects on
        if not t.info.stored:
            if method != "POST" or t.name or parsed.watch_prefix:
                raise MethodNotAllowed(f"{t.info.plural} can only be created")
            body = await _json_body(request, info=t.info)
            review = await answer_review(authz, t.info.kind, body, who, t.namespace)
            return _json(review, 201)
        if method == "GET" and (parsed.watch_prefix or _truthy(query.get("watch"))):
            return await _watch(request, t, visible)
        if parsed.watch_prefix:
            raise MethodNotAllowed("only GET is supported on watch paths")
        dry_run = _dry_run(request)
        label_selector, field_selector = query.get("labelSelector"), query.get("fieldSelector")
        call: Callable[[], dict[str, Any]]
        status = 200
        created: list[bool] = []  # an apply that created its object answers 201, as Kubernetes does
        warnings: list[str] = []  # admission's warnings (Pod Security "warn" mode), sent as Warning headers
        fields = FieldValidation.from_query(query.get("fieldValidation") if method in ("POST", "PUT", "PATCH") else None)
        render = rendering.negotiate(request.headers.get("accept")) if method == "GET" else rendering.Rendering()
        if not t.name:
            if method == "GET":
                limit = paging.parse_limit(query.get("limit"))
                continue_token, list_rv = query.get("continue") or None, query.get("resourceVersion") or None
                call = lambda: rendering.render_list(  # noqa: E731
                    render, t.info, handlers.list(t, label_selector, field_selector, limit=limit,
                                                  continue_token=continue_token, resource_version=list_rv,
                                                  visible=visible), query)
            elif method == "POST":
                manager = _field_manager(request, apply=False)
                body = await _json_body(request, fields, info=t.info, api_version=t.version)
                call = lambda: handlers.create(t, body, user=user, dry_run=dry_run, warnings=warnings,  # noqa: E731
                                               fields=fields, manager=manager)
                status = 201
            elif method == "DELETE":
                if "deletecollection" not in t.info.verbs:  # namespaces: as Kubernetes, 405
                    raise MethodNotAllowed(f"{t.info.plural} do not support deletecollection")
                options = _delete_options(await _read_body(request), query)
                dry_run = _dry_run(request, options)
                call = lambda: handlers.delete_collection(t, label_selector, field_selector, options, dry_run=dry_run)  # noqa: E731
            else:
                raise MethodNotAllowed(f"{method} is not supported on a collection")
        elif t.subresource == "scale" and method in ("GET", "PUT", "PATCH"):
            call = await _scale_call(request, t, user, dry_run)
        elif t.subresource == "eviction":
            return await _evict(request, t, user, dry_run)
        elif t.subresource == csr_approval.APPROVAL and method in ("PUT", "PATCH"):
            call = await _approval_call(request, t, who, dry_run)
        elif t.subresource == "finalize":
            if method != "PUT":
                raise MethodNotAllowed(f"{method} is not supported on namespaces/finalize")
            body = await _json_body(request, info=t.info)
            call = lambda: with_type(t.info, namespaces.finalize(store, t.name, body, dry_run=dry_run))  # noqa: E731
        elif method == "GET":
            call = lambda: rendering.render_one(render, t.info, handlers.get(t), query)  # noqa: E731
        elif method == "PUT":
            manager = _field_manager(request, apply=False)
            body = await _json_body(request, fields, info=t.info, api_version=t.version)
            call = lambda: handlers.update(t, body, user=user, dry_run=dry_run, warnings=warnings,  # noqa: E731
                                           fields=fields, manager=manager)
        elif method == "PATCH":
            content_type = _media_type(request)
            # A kind Kubernetes serves from a CRD has no strategic merge patch (VS12).
            accepted = [p for p in PATCH_TYPES if not (t.info.crd and p == STRATEGIC)]
            if content_type not in accepted:
                return _json(
                    {**StowageError("").to_status(), "reason": "UnsupportedMediaType", "code": 415,
                     "message": f"the body of the request was in an unknown format - accepted media types include: {', '.join(accepted)}"},
                    415,
                )
            manager = _field_manager(request, apply=content_type == APPLY)
            force = _truthy(query.get("force"))
            raw = await _read_body(request)
            if content_type == APPLY:
                fields.note_yaml_duplicates(raw)
            elif fields.mode != "Ignore" and raw:
                _decode(raw, fields)  # only to note duplicate keys of the patch; handlers.patch parses it
            if content_type == APPLY:
                def call() -> dict[str, Any]:
                    obj, was_created = handlers.apply(t, parse_patch(APPLY, raw), user=user, dry_run=dry_run,
                                                      warnings=warnings, fields=fields, manager=manager, force=force)
                    created.append(was_created)
                    return obj
            else:
                call = lambda: handlers.patch(t, content_type, raw, user=user, dry_run=dry_run,  # noqa: E731
                                              warnings=warnings, fields=fields, manager=manager)
        elif method == "DELETE" and not t.subresource:
            options = _delete_options(await _read_body(request), query)
            dry_run = _dry_run(request, options)
            call = lambda: handlers.delete(t, options, dry_run=dry_run)  # noqa: E731
        else:
            raise MethodNotAllowed(f"{method} is not supported here")

        # In the store pool, off the event loop (a plain executor hop: cheaper per request than
        # anyio's to_thread with its limiter and cancel scopes).
        # The request's context goes along: admission reads the caller from a context variable.
        context = contextvars.copy_context()
        view = _in_version(t)
        payload = await asyncio.get_running_loop().run_in_executor(
            executor, context.run, (lambda: encode_json(call())) if view is None else (lambda: encode_json(view(call()))))
        if created and created[0]:
            status = 201
        response = Response(payload, status_code=status, media_type=render.content_type)
        for name, value in fields.headers():
            response.headers.append(name, value)
        for text in warnings:
            response.headers.append("Warning", warning_header(text))
        return response

    async def _evict(request: Request, t: Target, user: str, dry_run: bool) -> Response:
        if request.method != "POST":
            raise MethodNotAllowed(f"{request.method} is not supported on pods/eviction")
        body = await _json_body(request)
        context = contextvars.copy_context()
        result, code = await asyncio.get_running_loop().run_in_executor(
            executor, context.run, lambda: evictions.evict(t.store_namespace, t.name, body, user=user, dry_run=dry_run))
        return _json(result, code)

    async def _approval_call(request: Request, t: Target, who: User, dry_run: bool) -> Callable[[], dict[str, Any]]:
        """CSR1: ``kubectl certificate approve|deny`` (a PUT of the object); a merge, JSON or strategic patch too."""
        manager = _field_manager(request, apply=False)
        change: Callable[[dict[str, Any]], Any]
        if request.method == "PUT":
            body = await _json_body(request, info=t.info)
            change = lambda old: body  # noqa: E731
        else:
            content_type = _media_type(request)
            accepted = [p for p in PATCH_TYPES if p != APPLY]
            if content_type not in accepted:
                raise UnsupportedMediaType("the body of the request was in an unknown format - accepted media types "
                                           f"include: {', '.join(accepted)}")
            patch_body = parse_patch(content_type, await _read_body(request))
            change = lambda old: apply_patch(content_type, old, patch_body)  # noqa: E731
        return lambda: csr_approval.write(handlers, authz, cluster_pki, t, change, user=who, dry_run=dry_run,  # noqa: E731
                                          manager=manager)

    async def _scale_call(request: Request, t: Target, user: str, dry_run: bool) -> Callable[[], dict[str, Any]]:
        if request.method == "GET":
            return lambda: scale.get(handlers, t)
        if request.method == "PUT":
            manager = _field_manager(request, apply=False)
            body = await _json_body(request, api_version="autoscaling/v1", kind="Scale")
            return lambda: scale.update(handlers, t, body, user=user, dry_run=dry_run, manager=manager)
        content_type = _media_type(request)
        if content_type not in PATCH_TYPES:
            raise UnsupportedMediaType("the body of the request was in an unknown format - accepted media types "
                                       f"include: {', '.join(PATCH_TYPES)}")
        manager = _field_manager(request, apply=content_type == APPLY)
        raw = await _read_body(request)
        return lambda: scale.patch(handlers, t, content_type, raw, user=user, dry_run=dry_run, manager=manager)

    async def _watch(request: Request, t: Target, visible: Callable[[dict[str, Any]], bool] | None) -> Response:
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
            visible=visible,
        )
        namespace = t.namespace if t.info.namespaced else None

        # A watch-list (client-go's default since 1.32): the current objects as ADDED events, then a bookmark
        # marking their end; clients that ask for it wait for that bookmark before they trust their cache.
        initial_events = _truthy(query.get("sendInitialEvents"))

        # W1: a watch with the client's own selector, resumed from a resourceVersion, needs to know what
        # its client holds. Not for the node authorizer's filter alone: agents resume such watches every
        # few minutes, and a reading per resumption would cost a list each time.
        read_selected = since is not None and not initial_events and bool(label_selector or field_selector)
        selected_at_start: list[set[tuple[str, str]]] = []  # filled by open_watch, in the store pool

        def open_watch() -> tuple[list[dict[str, Any]], int, Any]:
            if since is not None and not initial_events:
                watcher = store.watch(t.info.plural, namespace, since=since, shared=True)
                if read_selected:
                    try:  # what the selector chose at ``since`` itself: the store keeps those versions
                        page = store.list_page(t.info.plural, namespace, label_selector or None, field_selector or None,
                                               limit=None, revision=since)
                    except BaseException:
                        watcher.close()
                        raise
                    selected_at_start.append({watch_key(o) for o in page.items if flt.matches(o)})
                return [], since, watcher
            items, revision = store.list(t.info.plural, namespace, label_selector or None, field_selector or None)
            items = [o for o in items if flt.matches(o)]
            return items, revision, store.watch(t.info.plural, namespace, since=revision, shared=True)

        try:
            initial, revision, watcher = await run_in_threadpool(open_watch)
        except Gone as e:
            # Kubernetes answers 200 and puts the 410 in the stream; clients relist on it.
            gone = Gone(e.message or f"too old resource version: {rv}")
            return Response(line("ERROR", gone.to_status()), media_type=JSON_TYPE)
        render = rendering.negotiate(request.headers.get("accept"))
        events = stream_events(
            t.info, watcher, initial, revision, flt, watches, timeout,
            bookmark_interval if _truthy(query.get("allowWatchBookmarks")) else None,
            knows_all=since is None or initial_events,
            transform=rendering.watch_transform(render, t.info, query) or _in_version(t),
            initial_events_end=initial_events,
            selected_at_start=selected_at_start[0] if selected_at_start else None,
        )
        return WatchResponse(events, media_type=render.content_type)

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=_METHODS)])
    app.state.store = store
    app.state.watches = watches
    app.state.store_executor = executor
    app.state.authz = authz
    standard = app.build_middleware_stack()

    async def admit_stream(authorization: str | None, peer_pem: str | None, path: str, query: Any) -> None:
        """Authenticates and authorizes a pod stream (exec, attach, port-forward: the verb is
        ``create``, as Kubernetes counts them, whatever the upgrade's method). The agent is then
        reached with the server's own certificate (``agent_tls``)."""
        user = authenticated(authn.authenticate(authorization, peer_pem))
        await authz.check(request_attributes(user, "POST", path.rstrip("/"), query))

    app.state.admit_stream = admit_stream
    app.state.agent_tls = agent_tls

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
        if scope["type"] == "websocket":  # pods/exec, pods/attach, pods/portforward
            await streams.serve_websocket(scope, receive, send, store, admit_stream, agent_tls)
            return
        await standard(scope, receive, send)

    app.middleware_stack = direct
    return app


YAML_TYPE = "application/yaml"


def _unknown_format(crd: bool = False) -> UnsupportedMediaType:
    """Kubernetes' 415 for an object body in a format the endpoint does not read (a custom resource's reads no
    protobuf)."""
    accepted = [JSON_TYPE, YAML_TYPE] + ([] if crd else [k8s_protobuf.MEDIA_TYPE])
    return UnsupportedMediaType("the body of the request was in an unknown format - accepted media types include: "
                                + ", ".join(accepted))


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _json_body(request: Request, fields: FieldValidation | None = None, *,
                     info: registry.ResourceInfo | None = None, api_version: str = "", kind: str = "") -> Any:
    """An object body: JSON (also when the request names no Content-Type), YAML, or Kubernetes' protobuf,
    each decoded into the same JSON form; any other Content-Type is Kubernetes' 415.

    ``info`` (or ``api_version`` and ``kind``) is what the endpoint serves: a
    protobuf envelope that leaves its type out is taken to hold that, as
    Kubernetes takes it.
    """
    content_type = _media_type(request)
    crd = info is not None and not info.reads_protobuf
    if content_type == k8s_protobuf.MEDIA_TYPE:
        if crd:
            # A custom resource's endpoint reads no protobuf at all, whatever the envelope names (VS12); nor does
            # that of a kind whose message is not carried here (CustomResourceDefinition).
            raise _unknown_format(crd=True)
        raw = await _read_body(request)
        if info is not None:  # an older version's path (HPA8) names its version in ``api_version``
            api_version, kind = api_version or info.api_version, info.kind
        # Off the event loop: a body near the size limit takes a while in pure Python.
        return await run_in_threadpool(k8s_protobuf.decode_object, raw, api_version, kind)
    if content_type == YAML_TYPE:
        raw = await _read_body(request)
        # Off the event loop too (a YAML body near the size limit parses for a while); bounded as every YAML
        # the server reads, and typed as Kubernetes' YAML-to-JSON conversion types it.
        body = await run_in_threadpool(decode_yaml_body, raw)
        if fields is not None:
            fields.note_yaml_duplicates(raw)
        return body
    if content_type not in ("", JSON_TYPE):  # CBOR (which Kubernetes also reads) included
        raise _unknown_format(crd=crd)
    return _decode(await _read_body(request), fields)


# nginx's code for a request its client abandoned; only ever seen in the server's own bookkeeping.
CLIENT_CLOSED_REQUEST = 499


async def _read_body(request: Request) -> bytes:
    """The body, read chunk by chunk and refused as soon as it passes the limit (never buffered beyond it)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        raise RequestEntityTooLarge(request_too_large_message())
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise RequestEntityTooLarge(request_too_large_message())
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(body: bytes, fields: FieldValidation | None = None) -> Any:
    if not body:
        raise BadRequest("the request body is empty; send a JSON object")
    if json_depth_exceeds(body):  # before the decoder: deep enough input crashes it, not just the request
        raise BadRequest(f"the request body is not acceptable: {depth_message()}")
    try:
        return fields.decode(body) if fields is not None else orjson.loads(body)
    except (ValueError, RecursionError) as e:  # orjson's and json's decode errors are ValueErrors
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
    # As Kubernetes decodes them: the query first, the body's fields over it.
    if options.get("gracePeriodSeconds") is None and query.get("gracePeriodSeconds") is not None:
        options["gracePeriodSeconds"] = query["gracePeriodSeconds"]
    return options
