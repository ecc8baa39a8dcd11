"""Service-account tokens for projected volumes, as the kubelet's token manager gets and refreshes them.

For each ``serviceAccountToken`` projection the agent requests a token bound to
the pod (TokenRequest, as the node itself) and hands it to the projected volume
plugin. A token is renewed once 80% of its lifetime has passed (or at most 24h
after issue, as kubelet does): the pod is marked for a sync then, which writes
the new token atomically in place. Tokens are never logged.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote, urlsplit

import structlog

from storage.agent.resolve import VolumeNotReady
from storage.agent.volume_manager import PodVolumes
from storage.api.timestamps import parse_time
from storage.errors import NotFound, StowageError, from_status

log = structlog.get_logger(__name__)

Obj = dict[str, Any]
REFRESH_FRACTION = 0.8
MAX_REFRESH_SECONDS = 24 * 3600
DEFAULT_EXPIRATION = 3600
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 0.5, 30.0


@dataclass(frozen=True)
class _Issued:
    token: str
    refresh_at: float  # time.time() after which a new token is asked for


class ServiceAccountTokenManager:
    def __init__(self, client: Any, on_refresh: Callable[[str], None]) -> None:
        self.client = client
        self.on_refresh = on_refresh  # pod uid -> mark it for a sync
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str, str, int], _Issued] = {}
        self._timers: dict[str, threading.Timer] = {}
        self._retry: dict[str, float] = {}  # pod uid -> back-off while its service account does not exist

    def fill(self, pod: Obj, volumes: PodVolumes) -> None:
        """Put a current token under ``data["serviceAccountToken"][path]`` of every projected volume asking for one."""
        for request in volumes.volumes:
            for source in ((request.plugin_source.get("projected") or {}).get("sources") or []):
                projection = source.get("serviceAccountToken")
                if not projection:
                    continue
                path = str(projection.get("path") or "")
                audience = str(projection.get("audience") or "")
                expiration = int(projection.get("expirationSeconds") or DEFAULT_EXPIRATION)
                request.data.setdefault("serviceAccountToken", {})[path] = self.token(pod, audience, expiration)

    def token(self, pod: Obj, audience: str, expiration: int) -> str:
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        key = (uid, sa, audience, expiration)
        with self._lock:
            issued = self._tokens.get(key)
        if issued is not None and time.time() < issued.refresh_at:
            return issued.token
        try:
            fresh = self._request(pod, sa, audience, expiration)
        except VolumeNotReady:
            # Nothing else wakes the pod when its account appears: look again, backing off.
            with self._lock:
                delay = self._retry[uid] = min(RETRY_MAX_SECONDS, self._retry.get(uid, RETRY_FIRST_SECONDS / 2) * 2)
            self._schedule(uid, time.time() + delay)
            raise
        with self._lock:
            self._retry.pop(uid, None)
            self._tokens[key] = fresh
        self._schedule(uid, fresh.refresh_at)
        return fresh.token

    def forget(self, uid: str) -> None:
        with self._lock:
            for key in [k for k in self._tokens if k[0] == uid]:
                del self._tokens[key]
            self._retry.pop(uid, None)
            timer = self._timers.pop(uid, None)
        if timer is not None:
            timer.cancel()

    def stop(self) -> None:
        with self._lock:
            timers = list(self._timers.values())
            self._timers.clear()
        for timer in timers:
            timer.cancel()

    def _schedule(self, uid: str, at: float) -> None:
        with self._lock:
            old = self._timers.get(uid)
            if old is not None and old.is_alive():
                return  # an earlier refresh is already due; it re-checks every token of the pod
            timer = threading.Timer(max(0.0, at - time.time()), self._due, args=(uid,))
            timer.daemon = True
            self._timers[uid] = timer
        timer.start()

    def _due(self, uid: str) -> None:
        with self._lock:
            self._timers.pop(uid, None)
        self.on_refresh(uid)

    def _request(self, pod: Obj, sa: str, audience: str, expiration: int) -> _Issued:
        meta = pod.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        spec: Obj = {"expirationSeconds": expiration,
                     "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta.get("name"),
                                        "uid": meta.get("uid")}}
        if audience:
            spec["audiences"] = [audience]
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/serviceaccounts/{quote(sa, safe='')}/token"
        response = self.client.http.post(path, json={"apiVersion": "authentication.k8s.io/v1",
                                                     "kind": "TokenRequest", "spec": spec})
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"message": f"HTTP {response.status_code}"}
            err = from_status(body, response.status_code)
            if isinstance(err, NotFound):
                raise VolumeNotReady(f'serviceaccount "{sa}" not found') from None
            raise StowageError(f"cannot get a token for service account {namespace}/{sa}: {err.message}")
        status = response.json().get("status") or {}
        issued_at = time.time()
        expires = parse_time(status.get("expirationTimestamp"))
        lifetime = (expires.timestamp() - issued_at) if expires else float(expiration)
        refresh = issued_at + min(lifetime * REFRESH_FRACTION, MAX_REFRESH_SECONDS)
        log.info("service account token issued", pod=f"{namespace}/{meta.get('name')}", serviceaccount=sa,
                 refresh_in_seconds=round(refresh - issued_at))
        return _Issued(str(status.get("token") or ""), refresh)


def kubernetes_service_env(pod: Obj, server_url: str) -> Obj:
    """``KUBERNETES_SERVICE_HOST``/``_PORT`` (and ``_PORT_HTTPS``) in every container, pointing at the API server,
    so in-cluster client configuration finds it; a container's own value wins."""
    parts = urlsplit(server_url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    if not host:
        return pod
    variables = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port),
                 "KUBERNETES_SERVICE_PORT_HTTPS": str(port)}
    spec = pod.get("spec") or {}
    out = {**spec}
    for key in ("initContainers", "containers"):
        if not spec.get(key):
            continue
        updated = []
        for container in spec[key]:
            own = {e.get("name") for e in container.get("env") or []}
            injected = [{"name": k, "value": v} for k, v in variables.items() if k not in own]
            updated.append({**container, "env": injected + list(container.get("env") or [])})
        out[key] = updated
    return {**pod, "spec": out}
