"""Service-account tokens for projected volumes, as the kubelet's token manager gets and refreshes them.

For each ``serviceAccountToken`` projection the agent requests a token bound to
the pod (TokenRequest, as the node itself) and hands it to the projected volume
plugin. A token is renewed once 80% of its lifetime has passed (or at most 24h
after issue, as kubelet does): the pod is marked for a sync then, which writes
the new token atomically in place. Tokens are never logged.
"""
from __future__ import annotations

import heapq
import json
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
from volume_plugins.csi import CSI_DRIVER_DATA_KEY, CSI_TOKENS_DATA_KEY

log = structlog.get_logger(__name__)

Obj = dict[str, Any]
REFRESH_FRACTION = 0.8
MAX_REFRESH_SECONDS = 24 * 3600
DEFAULT_EXPIRATION = 3600
# CS22: how often a pod whose CSI driver sets requiresRepublish has NodePublishVolume called again (kubelet's
# --sync-frequency default).
REPUBLISH_SECONDS = 60.0
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 0.5, 30.0
# The refresher re-reads the clock at least this often, so a wall-clock jump delays a refresh by no more.
MAX_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class _Issued:
    token: str
    refresh_at: float  # time.time() after which a new token is asked for
    expiration_timestamp: str = ""  # the TokenRequest status's, as a CSI driver gets it (CS21)


class ServiceAccountTokenManager:
    def __init__(self, client: Any, on_refresh: Callable[[str], None]) -> None:
        self.client = client
        self.on_refresh = on_refresh  # pod uid -> mark it for a sync
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str, str, int], _Issued] = {}
        # One refresher thread for every pod (PF43), not a threading.Timer each: a timer is a thread
        # sleeping for up to a day, ~24 KiB resident apiece. Due times by pod uid, and a heap of
        # (due, uid) whose entries no longer matching _due are skipped.
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._retry: dict[str, float] = {}  # pod uid -> back-off while its service account does not exist

    def fill(self, pod: Obj, volumes: PodVolumes) -> None:
        """Put a current token under ``data["serviceAccountToken"][path]`` of every projected volume asking for one,
        and the tokens a CSI volume's driver asks for (CS21) under ``data[CSI_TOKENS_DATA_KEY]``. A pod with a
        volume whose driver sets ``requiresRepublish`` is synced again (its volumes set up again, which calls
        NodePublishVolume) every ``REPUBLISH_SECONDS`` (CS22)."""
        republish = False
        for request in volumes.volumes:
            for path, audience, expiration in _projections(request.plugin_source):
                request.data.setdefault("serviceAccountToken", {})[path] = self.token(pod, audience, expiration)
            driver = request.data.get(CSI_DRIVER_DATA_KEY) or {}
            token_requests = driver.get("tokenRequests")
            if isinstance(token_requests, list) and token_requests:
                request.data[CSI_TOKENS_DATA_KEY] = self.csi_tokens(pod, token_requests)
            republish = republish or driver.get("requiresRepublish") is True
        if republish:
            self._schedule(volumes.uid, time.time() + REPUBLISH_SECONDS)

    def prefetch(self, pod: Obj) -> None:
        """Get the tokens of a pod that waits for something else (its claims to bind): the kubelet sets up
        a pod's volumes independently, so the token volume does not wait for the claim, and the pod's
        start, once its claims are bound, no longer waits for a TokenRequest (PF72). A service
        account that does not exist yet is reported by ``fill`` when the pod starts, as before."""
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            for _path, audience, expiration in _projections(volume):
                try:
                    self.token(pod, audience, expiration)
                except Exception as exc:  # best effort: ``fill`` asks again, and reports, when the pod starts
                    log.debug("sa_token.prefetch_failed", uid=(pod.get("metadata") or {}).get("uid"),
                              error=type(exc).__name__)
                    return

    def csi_tokens(self, pod: Obj, requests: list[Obj]) -> str:
        """CS21, kubelet's podServiceAccountTokenAttrs: a CSIDriver's ``tokenRequests`` as the JSON object of
        TokenRequest statuses by audience that NodePublishVolume gets (refreshed with the pod's other tokens)."""
        out: dict[str, dict[str, str]] = {}
        for request in requests:
            audience = str(request.get("audience") or "")
            issued = self._issued(pod, audience, int(request.get("expirationSeconds") or DEFAULT_EXPIRATION))
            out[audience] = {"token": issued.token, "expirationTimestamp": issued.expiration_timestamp}
        return json.dumps(out, sort_keys=True)

    def token(self, pod: Obj, audience: str, expiration: int) -> str:
        return self._issued(pod, audience, expiration).token

    def _issued(self, pod: Obj, audience: str, expiration: int) -> _Issued:
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        key = (uid, sa, audience, expiration)
        with self._lock:
            issued = self._tokens.get(key)
        if issued is not None and time.time() < issued.refresh_at:
            return issued
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
        return fresh

    def forget(self, uid: str) -> None:
        with self._lock:
            for key in [k for k in self._tokens if k[0] == uid]:
                del self._tokens[key]
            self._retry.pop(uid, None)
            self._due.pop(uid, None)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._due.clear()
            self._heap.clear()
            self._wake.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    def _schedule(self, uid: str, at: float) -> None:
        with self._lock:
            if self._stopped:
                return
            current = self._due.get(uid)
            if current is not None and current <= at:
                return  # an earlier refresh is already due; it re-checks every token of the pod
            self._due[uid] = at
            heapq.heappush(self._heap, (at, uid))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="agent-sa-token-refresh", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                due: list[str] = []
                while not self._stopped:
                    now = time.time()
                    while self._heap and (self._heap[0][1] not in self._due
                                          or self._due[self._heap[0][1]] != self._heap[0][0]):
                        heapq.heappop(self._heap)  # forgotten, or moved to an earlier time
                    while self._heap and self._heap[0][0] <= now:
                        _, uid = heapq.heappop(self._heap)
                        if self._due.get(uid) is not None:
                            del self._due[uid]
                            due.append(uid)
                    if due:
                        break
                    wait = self._heap[0][0] - now if self._heap else MAX_WAIT_SECONDS
                    self._wake.wait(min(max(wait, 0.0), MAX_WAIT_SECONDS))
                if self._stopped:
                    return
            for uid in due:
                try:
                    self.on_refresh(uid)
                except Exception:  # one pod's failure must not end every pod's refreshes
                    log.exception("service account token refresh failed", uid=uid)

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
        return _Issued(str(status.get("token") or ""), refresh, str(status.get("expirationTimestamp") or ""))


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


def asks_for_tokens(pod: Obj) -> bool:
    """Whether any projected volume of ``pod`` holds a service-account token."""
    return any(_projections(v) for v in (pod.get("spec") or {}).get("volumes") or [])


def _projections(source: Obj) -> list[tuple[str, str, int]]:
    """(path, audience, expirationSeconds) of each ``serviceAccountToken`` in a projected volume source."""
    found: list[tuple[str, str, int]] = []
    for item in ((source.get("projected") or {}).get("sources") or []):
        projection = item.get("serviceAccountToken")
        if projection:
            found.append((str(projection.get("path") or ""), str(projection.get("audience") or ""),
                          int(projection.get("expirationSeconds") or DEFAULT_EXPIRATION)))
    return found
