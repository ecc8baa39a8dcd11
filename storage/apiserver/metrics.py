"""``metrics.k8s.io/v1beta1``: NodeMetrics and PodMetrics, read from the node agents on request.

The API server plays metrics-server's part: each request asks the agents concerned
for their ``/stats/summary`` (cgroup figures) through the same agent address the
log and exec proxies use, and turns it into the resource metrics API that
``kubectl top`` reads. Nodes whose agent does not answer are left out, as
metrics-server leaves out nodes it cannot scrape.
"""
from __future__ import annotations

import asyncio
from typing import Any, Mapping

import httpx
import ssl
import structlog
from starlette.concurrency import run_in_threadpool

from storage.api.selectors import parse_label_selector
from storage.apiserver import proxy
from storage.errors import MethodNotAllowed, NotFound, StowageError, TemporaryError
from storage.store.base import Store

log = structlog.get_logger(__name__)

GROUP, VERSION = "metrics.k8s.io", "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
PREFIX = ["apis", GROUP, VERSION]
SCRAPE_TIMEOUT = 15.0


def api_group() -> dict[str, Any]:
    entry = {"groupVersion": GROUP_VERSION, "version": VERSION}
    return {"name": GROUP, "versions": [entry], "preferredVersion": entry}


def resource_list() -> dict[str, Any]:
    verbs = ["get", "list"]
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION, "resources": [
        {"name": "nodes", "singularName": "", "namespaced": False, "kind": "NodeMetrics", "verbs": verbs},
        {"name": "pods", "singularName": "", "namespaced": True, "kind": "PodMetrics", "verbs": verbs},
    ]}


def discovery_documents() -> dict[str, dict[str, Any]]:
    """Path -> document, for the API server's static discovery table."""
    return {f"/apis/{GROUP}": {"kind": "APIGroup", "apiVersion": "v1", **api_group()},
            f"/apis/{GROUP_VERSION}": resource_list()}


# What ``nodes/NAME/proxy/...`` reaches on a node's agent: the kubelet paths the agent answers the same way,
# all read-only (the kubelet's proxy reaches every kubelet path, exec and the pods' files included).
NODE_PROXY_PATHS = frozenset({"stats/summary", "metrics", "metrics/resource", "pods", "configz", "healthz"})


def node_proxy_target(parts: list[str]) -> tuple[str, str] | None:
    """(node, path on its agent) when ``parts`` is ``/api/v1/nodes/NAME/proxy/PATH``."""
    if len(parts) > 5 and parts[:3] == ["api", "v1", "nodes"] and parts[3] and parts[4] == "proxy":
        return parts[3], "/".join(parts[5:])
    return None


async def node_proxy(store: Store, method: str, node_name: str, path: str,
                     agent_tls: ssl.SSLContext | None) -> tuple[bytes, str]:
    """(body, content type) of ``kubectl get --raw /api/v1/nodes/NAME/proxy/PATH`` (``NODE_PROXY_PATHS``): the node
    agent's answer, asked as the server itself (the user was authorized for ``nodes/proxy``), as the
    kubelet's is reached in Kubernetes."""
    if method != "GET":
        raise MethodNotAllowed(f"{method} is not supported on nodes/proxy")
    if path not in NODE_PROXY_PATHS:
        raise NotFound(f"nodes/proxy: the node agent serves {', '.join(sorted(NODE_PROXY_PATHS))} only, "
                       f"not {path}")
    node = await run_in_threadpool(store.get, "nodes", "", node_name)  # NotFound: nodes "x" not found
    async with httpx.AsyncClient(timeout=SCRAPE_TIMEOUT, verify=agent_tls if agent_tls is not None else True) as client:
        try:
            response = await client.get(f"{proxy.agent_address(node)}/{path}")
            response.raise_for_status()
        except (httpx.HTTPError, StowageError) as exc:
            log.warning("nodes/proxy: node agent did not answer", node=node_name, error=str(exc))
            raise TemporaryError(f"error trying to reach the agent of node {node_name}") from None
    return response.content, response.headers.get("content-type", "application/json")


def is_metrics_path(parts: list[str]) -> bool:
    return parts[:3] == PREFIX and len(parts) > 3


def _cpu(nanocores: int) -> str:
    return f"{int(nanocores)}n"


def _memory(size: int) -> str:
    return f"{int(size) // 1024}Ki"


def _window(summary: dict[str, Any]) -> str:
    return str(summary.get("window") or "1s")


async def _scrape(nodes: list[dict[str, Any]], agent_tls: ssl.SSLContext | None) -> list[dict[str, Any]]:
    # The server asks agents as itself (its agent-client certificate), never with a user's credential.
    headers: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=SCRAPE_TIMEOUT, verify=agent_tls if agent_tls is not None else True) as client:
        async def one(node: dict[str, Any]) -> dict[str, Any] | None:
            name = (node.get("metadata") or {}).get("name", "")
            try:
                response = await client.get(proxy.agent_address(node) + "/stats/summary", headers=headers)
                response.raise_for_status()
                return response.json()  # type: ignore[no-any-return]
            except (httpx.HTTPError, StowageError, ValueError) as exc:
                log.warning("metrics: node agent did not answer", node=name, error=str(exc))
                return None
        results = await asyncio.gather(*(one(n) for n in nodes))
    return [r for r in results if r is not None]


def _nodes_of(store: Store, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The nodes the pods run on, those that still exist."""
    nodes = []
    for node_name in sorted({(p.get("spec") or {}).get("nodeName") for p in pods} - {None, ""}):  # type: ignore[type-var]
        try:
            nodes.append(store.get("nodes", "", node_name))
        except NotFound:
            continue
    return nodes


def pod_usage(store: Store, agent_tls: ssl.SSLContext | None, pods: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The usage of ``pods`` by uid, from their nodes' agents, for the autoscaler (HPA4): ``{"containers":
    {name: {"cpu": millicores, "memory": bytes x 1000}}, "timestamp": RFC 3339, "window": seconds}``, the
    milli-values Kubernetes' resource metrics client hands its autoscaler. Called from a controller's worker
    thread, which has no event loop of its own. A node whose agent does not answer leaves its pods out (they
    count as missing)."""
    uids = {(p.get("metadata") or {}).get("uid") for p in pods}
    out: dict[str, dict[str, Any]] = {}
    for summary in asyncio.run(_scrape(_nodes_of(store, pods), agent_tls)):
        try:
            window = float(_window(summary).rstrip("s"))
        except ValueError:
            window = 1.0
        for entry in summary.get("pods") or []:
            uid = (entry.get("podRef") or {}).get("uid")
            containers = entry.get("containers") or []
            if uid not in uids or not containers:
                continue
            out[uid] = {"timestamp": (containers[0].get("cpu") or {}).get("time"), "window": window,
                        "containers": {c.get("name", ""): {
                            "cpu": int((c.get("cpu") or {}).get("usageNanoCores", 0)) // 1_000_000,
                            "memory": int((c.get("memory") or {}).get("workingSetBytes", 0)) * 1000}
                            for c in containers}}
    return out


def node_metrics(summary: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    usage = summary.get("node") or {}
    meta = node.get("metadata") or {}
    return {
        "kind": "NodeMetrics", "apiVersion": GROUP_VERSION,
        "metadata": {"name": meta.get("name", ""), "labels": meta.get("labels") or {},
                     "creationTimestamp": (usage.get("cpu") or {}).get("time")},
        "timestamp": (usage.get("cpu") or {}).get("time"), "window": _window(summary),
        "usage": {"cpu": _cpu((usage.get("cpu") or {}).get("usageNanoCores", 0)),
                  "memory": _memory((usage.get("memory") or {}).get("workingSetBytes", 0))},
    }


def pod_metrics(summary: dict[str, Any], entry: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    meta = pod.get("metadata") or {}
    containers = entry.get("containers") or []
    stamp = ((containers[0].get("cpu") or {}).get("time")) if containers else None
    return {
        "kind": "PodMetrics", "apiVersion": GROUP_VERSION,
        "metadata": {"name": meta.get("name", ""), "namespace": meta.get("namespace", ""),
                     "labels": meta.get("labels") or {}, "creationTimestamp": stamp},
        "timestamp": stamp, "window": _window(summary),
        "containers": [{"name": c.get("name", ""),
                        "usage": {"cpu": _cpu((c.get("cpu") or {}).get("usageNanoCores", 0)),
                                  "memory": _memory((c.get("memory") or {}).get("workingSetBytes", 0))}}
                       for c in containers],
    }


async def serve(store: Store, method: str, parts: list[str], query: Mapping[str, str],
                agent_tls: ssl.SSLContext | None) -> dict[str, Any]:
    """The answer for a path under /apis/metrics.k8s.io/v1beta1 (``parts`` after the prefix)."""
    rest = parts[3:]
    if method != "GET":
        raise MethodNotAllowed(f"{method} is not supported on {GROUP_VERSION}")
    selector = query.get("labelSelector") or ""
    matches = parse_label_selector(selector).matches if selector else (lambda labels: True)
    if rest[0] == "nodes" and len(rest) <= 2:
        return await _nodes(store, rest[1] if len(rest) == 2 else "", matches, agent_tls)
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if rest and rest[0] == "pods" and len(rest) <= 2:
        return await _pods(store, namespace, rest[1] if len(rest) == 2 else "", matches, agent_tls)
    raise NotFound("the server could not find the requested resource")


async def _nodes(store: Store, name: str, matches: Any, agent_tls: ssl.SSLContext | None) -> dict[str, Any]:
    if name:
        try:
            nodes = [await run_in_threadpool(store.get, "nodes", "", name)]
        except NotFound:
            raise NotFound(f'nodemetrics.metrics.k8s.io "{name}" not found') from None
    else:
        items, _ = await run_in_threadpool(store.list, "nodes", None, None, None)
        nodes = [n for n in items if matches((n.get("metadata") or {}).get("labels") or {})]
    by_name = {(n.get("metadata") or {}).get("name"): n for n in nodes}
    out = [node_metrics(s, by_name[s["node"]["nodeName"]]) for s in await _scrape(nodes, agent_tls)
           if (s.get("node") or {}).get("nodeName") in by_name]
    if name:
        if not out:
            raise NotFound(f'nodemetrics.metrics.k8s.io "{name}" not found')
        return out[0]
    return {"kind": "NodeMetricsList", "apiVersion": GROUP_VERSION, "metadata": {}, "items": out}


async def _pods(store: Store, namespace: str, name: str, matches: Any, agent_tls: ssl.SSLContext | None) -> dict[str, Any]:
    if name:
        try:
            pods = [await run_in_threadpool(store.get, "pods", namespace, name)]
        except NotFound:
            raise NotFound(f'podmetrics.metrics.k8s.io "{namespace}/{name}" not found') from None
    else:
        items, _ = await run_in_threadpool(store.list, "pods", namespace or None, None, None)
        pods = [p for p in items if matches((p.get("metadata") or {}).get("labels") or {})]
    by_uid = {(p.get("metadata") or {}).get("uid"): p for p in pods}
    nodes = await run_in_threadpool(_nodes_of, store, pods)
    out = []
    for summary in await _scrape(nodes, agent_tls):
        for entry in summary.get("pods") or []:
            pod = by_uid.get((entry.get("podRef") or {}).get("uid"))
            if pod is not None:
                out.append(pod_metrics(summary, entry, pod))
    out.sort(key=lambda m: (m["metadata"]["namespace"], m["metadata"]["name"]))
    if name:
        if not out:
            raise NotFound(f'podmetrics.metrics.k8s.io "{namespace}/{name}" not found')
        return out[0]
    return {"kind": "PodMetricsList", "apiVersion": GROUP_VERSION, "metadata": {}, "items": out}
