"""``GET /api/v1/namespaces/{ns}/pods/{name}/log``: proxied to the node agent running the pod.

The API server checks what it can answer itself (the pod exists, is placed on
a node, names a real container) so the user gets Kubernetes' messages even
when the agent is down; the log bytes themselves stream through untouched.
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping
from urllib.parse import quote

import httpx
import orjson
import structlog
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from storage.api.timestamps import parse_time
from storage.errors import BadRequest, FieldError, Invalid, NotFound, StowageError, from_status
from storage.store.base import Store

log = structlog.get_logger(__name__)

# Connecting to an agent on the same network is quick; a slow answer means it is not there.
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class LogRequest:
    namespace: str
    name: str
    container: str = ""
    follow: bool = False
    previous: bool = False
    tail_lines: int | None = None
    since_seconds: int | None = None
    since_time: str = ""
    timestamps: bool = False
    limit_bytes: int | None = None


# Pod subresources served through the node agent; each is authorized as ``pods/<name>``.
POD_PROXY_SUBRESOURCES = frozenset({"log", "exec", "attach", "portforward"})


def pod_subresource_target(parts: list[str]) -> tuple[str, str, str] | None:
    """(namespace, pod, subresource) when ``parts`` (the path split on "/", no leading "") is
    ``/api/v1/namespaces/NS/pods/NAME/{log,exec,attach,portforward}``."""
    if (len(parts) == 7 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods"
            and parts[6] in POD_PROXY_SUBRESOURCES and parts[3] and parts[5]):
        return parts[3], parts[5], parts[6]
    return None


def log_target(parts: list[str]) -> tuple[str, str] | None:
    """(namespace, pod) when ``parts`` (the path split on "/", no leading "") is a pod's log path."""
    target = pod_subresource_target(parts)
    return (target[0], target[1]) if target is not None and target[2] == "log" else None


def _flag(query: Mapping[str, str], key: str) -> bool:
    value = query.get(key)
    if value is None or value == "":
        return False
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise BadRequest(f'{key}: Invalid value: "{value}": must be true or false')


def _integer(query: Mapping[str, str], key: str, errors: list[FieldError], minimum: int, rule: str) -> int | None:
    raw = query.get(key)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)  # type: ignore[arg-type]
    except ValueError:
        raise BadRequest(f'{key}: Invalid value: "{raw}": must be an integer') from None
    if value < minimum:
        errors.append(FieldError(key, "Invalid value", rule, value, True))
    return value


def parse_log_request(namespace: str, name: str, query: Mapping[str, str]) -> LogRequest:
    """The log options from the query string, checked as Kubernetes' PodLogOptions are."""
    errors: list[FieldError] = []
    tail = _integer(query, "tailLines", errors, 0, "must be greater than or equal to 0")
    since_seconds = _integer(query, "sinceSeconds", errors, 1, "must be greater than 0")
    limit = _integer(query, "limitBytes", errors, 1, "must be greater than 0")
    since_time = query.get("sinceTime") or ""
    if since_time:
        if parse_time(since_time) is None:
            raise BadRequest(f'sinceTime: Invalid value: "{since_time}": must be an RFC 3339 time')
        if since_seconds is not None:
            errors.append(FieldError("", "Forbidden", "at most one of `sinceTime` or `sinceSeconds` may be specified"))
    if errors:
        raise Invalid(errors, kind="PodLogOptions", name=name)
    return LogRequest(
        namespace, name, query.get("container") or "", _flag(query, "follow"), _flag(query, "previous"), tail,
        since_seconds, since_time, _flag(query, "timestamps"), limit,
    )


def resolve_container(pod: dict[str, Any], wanted: str) -> str:
    """The container the request means, or Kubernetes' BadRequest when it is missing or ambiguous."""
    name = (pod.get("metadata") or {}).get("name", "")
    spec = pod.get("spec") or {}
    containers = [c.get("name", "") for c in spec.get("containers") or []]
    init = [c.get("name", "") for c in spec.get("initContainers") or []]
    ephemeral = [c.get("name", "") for c in spec.get("ephemeralContainers") or []]
    if not wanted:
        if len(containers) == 1:
            return containers[0]
        choices = " ".join(containers)
        message = f"a container name must be specified for pod {name}, choose one of: [{choices}]"
        if init:
            message += f" or one of the init containers: [{' '.join(init)}]"
        if ephemeral:
            message += f" or one of the ephemeral containers: [{' '.join(ephemeral)}]"
        raise BadRequest(message)
    if wanted not in containers and wanted not in init and wanted not in ephemeral:
        raise BadRequest(f"container {wanted} is not valid for pod {name}")
    return wanted


def _check_previous(pod: dict[str, Any], container: str) -> None:
    """``previous`` needs a terminated earlier run; the pod's status says whether there is one."""
    status = pod.get("status") or {}
    name = (pod.get("metadata") or {}).get("name", "")
    for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
        if cs.get("name") == container:
            if int(cs.get("restartCount") or 0) > 0 or (cs.get("lastState") or {}).get("terminated"):
                return
            break
    raise BadRequest(f'previous terminated container "{container}" in pod "{name}" not found')


def agent_address(node: dict[str, Any]) -> str:
    """``https://IP:PORT`` of a node's agent from its status, as the kubelet's is found in Kubernetes."""
    status = node.get("status") or {}
    name = (node.get("metadata") or {}).get("name", "")
    addresses = status.get("addresses") or []
    by_type = {a.get("type"): a.get("address") for a in addresses if a.get("address")}
    host = by_type.get("InternalIP") or by_type.get("ExternalIP") or by_type.get("Hostname")
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
    if not host or not port:
        raise StowageError(f"node {name} has not reported the address of its agent (status.addresses and "
                           "status.daemonEndpoints.kubeletEndpoint.Port)")
    shown = f"[{host}]" if ":" in host else host
    return f"https://{shown}:{int(port)}"


def _locate(store: Store, req: LogRequest) -> tuple[str, str]:
    """(agent URL, container) for the request; raises the Kubernetes error when it cannot be served."""
    pod = store.get("pods", req.namespace, req.name)  # NotFound: pods "x" not found
    container = resolve_container(pod, req.container)
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:
        raise BadRequest(f"pod {req.name} does not have a host assigned")
    if req.previous:
        _check_previous(pod, container)
    try:
        node = store.get("nodes", "", node_name)
    except NotFound:
        raise StowageError(f'pod {req.name} is placed on node "{node_name}", which is not registered') from None
    return agent_address(node), container


async def pod_log(store: Store, namespace: str, name: str, query: Mapping[str, str],
                  agent_tls: ssl.SSLContext | None) -> Response:
    """The log response; StowageError for anything the caller should see as a Status."""
    req = parse_log_request(namespace, name, query)
    base, container = await run_in_threadpool(_locate, store, req)
    params = {"container": container}
    if req.follow:
        params["follow"] = "true"
    if req.previous:
        params["previous"] = "true"
    if req.tail_lines is not None:
        params["tailLines"] = str(req.tail_lines)
    params.update(_extra_log_params(req))
    url = f"{base}/pods/{quote(namespace, safe='')}/{quote(name, safe='')}/log"
    # The caller was authenticated here; towards the agent the server speaks as itself (its agent-client
    # certificate), as kube-apiserver does towards the kubelet, and user credentials never leave the server.
    headers: dict[str, str] = {}
    # A followed log may be quiet for hours; only connecting is bounded.
    client = httpx.AsyncClient(timeout=httpx.Timeout(CONNECT_TIMEOUT, read=None if req.follow else 60.0),
                               verify=agent_tls if agent_tls is not None else True)
    try:
        upstream = await client.send(client.build_request("GET", url, params=params, headers=headers), stream=True)
    except httpx.TransportError as exc:
        await client.aclose()
        log.warning("pod log: agent unreachable", pod=f"{namespace}/{name}", agent=base, error=str(exc))
        raise StowageError(f'Get "{url}": cannot reach the node agent at {base}: {exc or type(exc).__name__}') from None
    if upstream.status_code >= 400:
        body = await upstream.aread()
        await upstream.aclose()
        await client.aclose()
        raise _agent_error(upstream.status_code, body, base)

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        except httpx.TransportError as exc:
            log.warning("pod log: agent stream ended", pod=f"{namespace}/{name}", error=str(exc))
        finally:
            await upstream.aclose()
            await client.aclose()

    return StreamingResponse(relay(), media_type="text/plain")


def _extra_log_params(req: LogRequest) -> dict[str, str]:
    params = {}
    if req.since_seconds is not None:
        params["sinceSeconds"] = str(req.since_seconds)
    if req.since_time:
        params["sinceTime"] = req.since_time
    if req.timestamps:
        params["timestamps"] = "true"
    if req.limit_bytes is not None:
        params["limitBytes"] = str(req.limit_bytes)
    return params


def _agent_error(code: int, body: bytes, base: str) -> StowageError:
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        decoded = None
    if isinstance(decoded, dict) and decoded.get("kind") == "Status":
        return from_status(decoded, code)
    text = body.decode("utf-8", "replace").strip()[:300] or f"HTTP {code}"
    return StowageError(f"the node agent at {base} failed to serve the log: {text}")
