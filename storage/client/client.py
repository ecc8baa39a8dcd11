"""A synchronous client for the Stowage API (the Kubernetes REST dialect), on httpx."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator, Literal
from urllib.parse import quote

import httpx
import orjson

from storage.api import registry
from storage.api.registry import ResourceInfo
from storage.errors import BadRequest, StowageError, TemporaryError, from_status
from storage.system.pki import client_context

PatchType = Literal["merge", "json", "strategic", "apply"]
_PATCH_CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}

# Idle connections are kept a minute (httpx's default is 5 s; the API server keeps them 90 s): a node
# agent's calls come in bursts, and each reconnect is a TLS handshake the server makes on its event loop,
# which under load took longer than the connect timeout and failed the call.
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=60.0)


def _info(resource: str) -> ResourceInfo:
    info = registry.by_name(resource)
    if info is None:
        raise BadRequest(f"resource: unknown resource type {resource!r}")
    return info


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = orjson.loads(response.read())
    except ValueError:
        body = {}
    if not isinstance(body, dict) or body.get("kind") != "Status":
        body = {"message": f"HTTP {response.status_code}: {response.text[:200]}", "code": response.status_code}
    raise from_status(body, response.status_code)


def warning_texts(response: httpx.Response) -> list[str]:
    """The texts of a response's ``Warning: 299 - "..."`` headers, unquoted."""
    out = []
    for value in response.headers.get_list("warning"):
        code, _, rest = value.partition(" ")
        _agent, _, text = rest.partition(" ")
        if code == "299" and len(text) >= 2 and text[0] == text[-1] == '"':
            out.append(text[1:-1].replace('\\"', '"').replace("\\\\", "\\"))
    return out


class Client:
    """``server`` like ``http://127.0.0.1:6443``; ``token`` is sent as a bearer token; ``ca`` a CA bundle path."""

    def __init__(
        self,
        server: str,
        token: str | None = None,
        ca: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 30.0,
        insecure: bool = False,
        on_warning: Callable[[str], None] | None = None,
        ca_data: bytes | None = None,
        cert_data: bytes | None = None,
        key_data: bytes | None = None,
        servers: tuple[str, ...] | list[str] = (),
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "stowage-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if ca is not None and ca_data is None:
            ca_data = Path(ca).read_bytes()
        verify: Any = True
        if ca_data or cert_data or insecure:
            verify = client_context(ca_data, cert_data, key_data, insecure=insecure)
        self.server = server.rstrip("/")
        self._timeout = timeout
        replicas = [u.rstrip("/") for u in dict.fromkeys([self.server, *servers])]
        if len(replicas) > 1:  # several API server replicas: move to a live one on connection errors (HA8)
            from storage.client.failover import FailoverTransport

            self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout,
                                      transport=FailoverTransport(replicas, verify, limits=_LIMITS))
        else:
            self._http = httpx.Client(base_url=self.server, headers=headers, verify=verify, timeout=timeout,
                                      limits=_LIMITS)
        # Called with the text of each "Warning: 299" header (Pod Security's warn mode, for one).
        self.on_warning = on_warning

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike[str] | None = None) -> "Client":
        from storage.client.kubeconfig import load_access

        access = load_access(path)
        return cls.from_access(access)

    @classmethod
    def from_access(cls, access: Any, **kwargs: Any) -> "Client":
        """A client for a ``ClusterAccess`` (a kubeconfig context)."""
        return cls(access.server, access.token, ca_data=access.ca_data, cert_data=access.cert_data,
                   key_data=access.key_data, insecure=access.insecure,
                   servers=getattr(access, "servers", ()) or (), **kwargs)

    @property
    def http(self) -> httpx.Client:
        """The underlying connection pool, for calls outside any resource (discovery, version)."""
        return self._http

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- paths ---------------------------------------------------------------------------
    @staticmethod
    def path(info: ResourceInfo, namespace: str | None = None, name: str = "", subresource: str = "") -> str:
        base = f"/api/{info.version}" if not info.group else f"/apis/{info.group}/{info.version}"
        if info.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{info.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
        if subresource:
            base += f"/{subresource}"
        return base

    def _request(self, method: str, url: str, *, params: dict[str, str] | None = None,
                 body: Any = None, content: bytes | None = None, content_type: str = "application/json") -> Any:
        headers = {}
        if body is not None:
            content = orjson.dumps(body)
        if content is not None:
            headers["Content-Type"] = content_type
        response = self._http.request(method, url, params=params, content=content, headers=headers)
        if self.on_warning is not None:
            for text in warning_texts(response):
                self.on_warning(text)
        _raise_for(response)
        return orjson.loads(response.content) if response.content else None

    @staticmethod
    def _object_target(obj: dict[str, Any]) -> tuple[ResourceInfo, str, str]:
        kind = obj.get("kind")
        if not kind:
            raise BadRequest("kind: Required value: the object must name its kind")
        info = registry.by_kind(kind)
        if info is None:
            raise BadRequest(f'kind: Unsupported value: "{kind}"')
        meta = obj.get("metadata") or {}
        namespace = (meta.get("namespace") or "default") if info.namespaced else ""
        return info, namespace, meta.get("name") or ""

    # ---- verbs ---------------------------------------------------------------------------
    def get(self, resource: str, name: str, namespace: str = "") -> dict[str, Any]:
        info = _info(resource)
        return self._request("GET", self.path(info, namespace or ("default" if info.namespaced else ""), name))

    def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        """Items (all namespaces when ``namespace`` is None) and the list's resourceVersion."""
        info = _info(resource)
        params = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        result = self._request("GET", self.path(info, namespace), params=params)
        return result["items"], result["metadata"]["resourceVersion"]

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        info, namespace, _ = self._object_target(obj)
        return self._request("POST", self.path(info, namespace), body=obj)

    def create_as(self, token: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create ``obj`` under another bearer token (a node agent asking the API server about its caller)."""
        info, namespace, _ = self._object_target(obj)
        response = self._http.post(self.path(info, namespace), content=orjson.dumps(obj),
                                   headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        _raise_for(response)
        return orjson.loads(response.content)  # type: ignore[no-any-return]

    def update(self, obj: dict[str, Any]) -> dict[str, Any]:
        info, namespace, name = self._object_target(obj)
        return self._request("PUT", self.path(info, namespace, name), body=obj)

    def update_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        info, namespace, name = self._object_target(obj)
        return self._request("PUT", self.path(info, namespace, name, "status"), body=obj)

    def patch(
        self,
        resource: str,
        name: str,
        patch: Any,
        namespace: str = "",
        patch_type: PatchType = "merge",
        *,
        subresource: str = "",
        field_manager: str = "",
        force: bool = False,
    ) -> dict[str, Any]:
        """``field_manager`` names the writer (an apply needs one: "stowage" when not given); ``force`` lets an
        apply take fields other managers own."""
        info = _info(resource)
        try:
            content_type = _PATCH_CONTENT_TYPES[patch_type]
        except KeyError:
            raise BadRequest(f"patch_type: Unsupported value: {patch_type!r}: use merge, json, strategic or apply") from None
        content = patch.encode() if isinstance(patch, str) else orjson.dumps(patch)
        url = self.path(info, namespace or ("default" if info.namespaced else ""), name, subresource)
        params: dict[str, str] = {}
        if field_manager or patch_type == "apply":
            params["fieldManager"] = field_manager or "stowage"
        if force:
            params["force"] = "true"
        return self._request("PATCH", url, params=params or None, content=content, content_type=content_type)

    def delete(
        self,
        resource: str,
        name: str,
        namespace: str = "",
        resource_version: str | None = None,
        *,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> dict[str, Any]:
        """Delete; ``grace_period_seconds`` as DeleteOptions.gracePeriodSeconds (None: the object's own,
        0: at once, without waiting for the node to confirm its containers stopped)."""
        info = _info(resource)
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if resource_version:
            options["preconditions"] = {"resourceVersion": resource_version}
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        url = self.path(info, namespace or ("default" if info.namespaced else ""), name)
        return self._request("DELETE", url, body=options)

    def watch(
        self,
        resource: str,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | None = None,
        timeout: float | None = None,
        *,
        field_selector: str | None = None,
        bookmarks: bool = False,
        idle_timeout: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Events ``{"type", "object"}`` until ``timeout`` seconds pass (server side) or the caller stops.

        ``idle_timeout`` (which asks for bookmarks) raises ``TemporaryError`` when the stream stays silent
        that long: the server sends a bookmark at least every 30 s, so silence means a dead connection, which
        TCP never reports to a side that only reads (a host cut off from the network, client-go's HTTP/2
        health check). Resume from the last revision delivered.

        Without ``resource_version`` the stream starts with a synthetic ADDED per
        existing object. An ERROR event is raised as its error (``Gone`` when
        the revision was compacted: relist and watch again).
        """
        info = _info(resource)
        params = {"watch": "true"}
        if resource_version:
            params["resourceVersion"] = str(resource_version)
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        if timeout is not None:
            params["timeoutSeconds"] = str(max(1, int(timeout)))
        if bookmarks or idle_timeout is not None:
            params["allowWatchBookmarks"] = "true"
        # Without an idle timeout the read timeout is off: a quiet watch without bookmarks is not a dead one.
        request_timeout = httpx.Timeout(self._timeout, read=idle_timeout)
        try:
            with self._http.stream("GET", self.path(info, namespace), params=params, timeout=request_timeout) as response:
                _raise_for(response)
                for raw in response.iter_lines():
                    if not raw.strip():
                        continue
                    event = orjson.loads(raw)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        raise from_status(status, int(status.get("code") or 500))
                    yield event
        except httpx.ReadTimeout:
            raise TemporaryError(f"watch of {resource} silent for {idle_timeout} s: the connection is taken "
                                 f"as dead", delay=0.0) from None

    def logs(
        self,
        name: str,
        namespace: str = "default",
        *,
        container: str | None = None,
        follow: bool = False,
        previous: bool = False,
        tail_lines: int | None = None,
    ) -> Iterator[bytes]:
        """A pod's log as raw chunks, through the API server's ``pods/log`` proxy; ``follow`` streams until
        the container ends or the caller stops."""
        params: dict[str, str] = {}
        if container:
            params["container"] = container
        if follow:
            params["follow"] = "true"
        if previous:
            params["previous"] = "true"
        if tail_lines is not None:
            params["tailLines"] = str(tail_lines)
        info = _info("pods")
        request_timeout = httpx.Timeout(self._timeout, read=None if follow else self._timeout)
        url = self.path(info, namespace or "default", name, "log")
        with self._http.stream("GET", url, params=params, timeout=request_timeout,
                               headers={"Accept": "*/*"}) as response:
            _raise_for(response)
            yield from response.iter_raw()


__all__ = ["Client", "StowageError"]
