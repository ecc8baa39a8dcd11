"""The agent's token manager renews a projected service-account token at 80% of its lifetime, as the kubelet."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from storage.agent import sa_tokens
from storage.agent.resolve import VolumeNotReady
from storage.agent.sa_tokens import ServiceAccountTokenManager, kubernetes_service_env
from storage.api.timestamps import from_epoch


class _Response:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status_code, self._body = status, body

    def json(self) -> dict[str, Any]:
        return self._body


class _Http:
    def __init__(self, clock: list[float], lifetime: float) -> None:
        self.clock, self.lifetime, self.calls = clock, lifetime, []  # type: ignore[var-annotated]

    def post(self, path: str, json: dict[str, Any]) -> _Response:
        self.calls.append((path, json))
        if "ghost" in path:
            return _Response(404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": "not found"})
        return _Response(201, {"status": {"token": f"token-{len(self.calls)}",
                                          "expirationTimestamp": from_epoch(self.clock[0] + self.lifetime)}})


class _Client:
    def __init__(self, http: _Http) -> None:
        self.http = http


POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}, "spec": {"serviceAccountName": "app"}}


def test_token_is_reused_until_80_percent_of_its_lifetime_then_renewed(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_000_000.0]
    monkeypatch.setattr(sa_tokens.time, "time", lambda: clock[0])
    http = _Http(clock, 1000.0)
    refreshed: list[str] = []
    due = threading.Event()
    manager = ServiceAccountTokenManager(_Client(http), lambda uid: (refreshed.append(uid), due.set()))
    try:
        assert manager.token(POD, "", 1000) == "token-1"
        path, body = http.calls[0]
        assert path == "/api/v1/namespaces/ns/serviceaccounts/app/token"
        assert body["spec"]["boundObjectRef"] == {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "u1"}
        clock[0] += 799
        assert manager.token(POD, "", 1000) == "token-1"
        clock[0] += 2  # past 80% of 1000 s
        assert manager.token(POD, "", 1000) == "token-2"
        assert len(http.calls) == 2
    finally:
        manager.stop()


def test_cs21_csi_tokens_per_audience_are_filled_and_renewed_with_the_pods_other_tokens(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A CSI volume's driver tokenRequests become the kubelet's JSON of TokenRequest statuses by audience (an empty
    audience asks for the API server's own), renewed at 80% of their life like a projected token."""
    import json

    from storage.agent.volume_manager import PodVolumes, VolumeRequest
    from volume_plugins.csi import CSI_DRIVER_DATA_KEY, CSI_TOKENS_DATA_KEY

    clock = [1_000_000.0]
    monkeypatch.setattr(sa_tokens.time, "time", lambda: clock[0])
    http = _Http(clock, 1000.0)
    manager = ServiceAccountTokenManager(_Client(http), lambda uid: None)
    driver = {"tokenRequests": [{"audience": "vault", "expirationSeconds": 1000}, {"audience": ""}]}
    request = VolumeRequest("data", {"csi": {"driver": "d"}}, data={CSI_DRIVER_DATA_KEY: driver})
    plain = VolumeRequest("other", {"csi": {"driver": "e"}}, data={CSI_DRIVER_DATA_KEY: {}})
    try:
        manager.fill(POD, PodVolumes("u1", "ns", "p", [request, plain]))
        tokens = json.loads(request.data[CSI_TOKENS_DATA_KEY])
        assert sorted(tokens) == ["", "vault"] and CSI_TOKENS_DATA_KEY not in plain.data
        assert tokens["vault"] == {"token": "token-1", "expirationTimestamp": from_epoch(clock[0] + 1000)}
        audiences = [body["spec"].get("audiences") for _path, body in http.calls]
        assert audiences == [["vault"], None]
        assert [body["spec"]["expirationSeconds"] for _path, body in http.calls] == [1000, 3600]
        clock[0] += 801
        manager.fill(POD, PodVolumes("u1", "ns", "p", [request]))
        assert json.loads(request.data[CSI_TOKENS_DATA_KEY])["vault"]["token"] == "token-3"
    finally:
        manager.stop()


def test_cs22_a_requires_republish_driver_brings_the_pod_back_every_sync_period(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """requiresRepublish: the pod is synced again (NodePublishVolume called again) every REPUBLISH_SECONDS, as
    kubelet's sync loop does; a driver without it leaves the pod alone."""
    from storage.agent.volume_manager import PodVolumes, VolumeRequest
    from volume_plugins.csi import CSI_DRIVER_DATA_KEY

    monkeypatch.setattr(sa_tokens, "REPUBLISH_SECONDS", 0.05)
    synced: list[str] = []
    due = threading.Event()
    manager = ServiceAccountTokenManager(_Client(_Http([0.0], 600)), lambda uid: (synced.append(uid), due.set()))
    try:
        quiet = VolumeRequest("a", {"csi": {"driver": "d"}}, data={CSI_DRIVER_DATA_KEY: {"requiresRepublish": False}})
        manager.fill(POD, PodVolumes("u0", "ns", "p", [quiet]))
        republished = VolumeRequest("b", {"csi": {"driver": "e"}}, data={CSI_DRIVER_DATA_KEY: {"requiresRepublish": True}})
        manager.fill(POD, PodVolumes("u1", "ns", "p", [republished]))
        assert due.wait(10)
        assert synced == ["u1"]
    finally:
        manager.stop()


def test_refresh_marks_the_pod_for_a_sync() -> None:
    clock = [0.0]
    http = _Http(clock, 0.0)  # already at its end: the refresh is due at once
    due = threading.Event()
    manager = ServiceAccountTokenManager(_Client(http), lambda uid: due.set() if uid == "u1" else None)
    try:
        manager.token(POD, "", 600)
        assert due.wait(10)
    finally:
        manager.stop()


def test_missing_service_account_waits() -> None:
    manager = ServiceAccountTokenManager(_Client(_Http([0.0], 600)), lambda uid: None)
    ghost = {**POD, "spec": {"serviceAccountName": "ghost"}}
    with pytest.raises(VolumeNotReady, match='serviceaccount "ghost" not found'):
        manager.token(ghost, "", 600)


def test_kubernetes_service_env_points_at_the_api_server_and_yields_to_the_container() -> None:
    pod = {"spec": {"containers": [{"name": "a"}, {"name": "b", "env": [{"name": "KUBERNETES_SERVICE_HOST",
                                                                         "value": "mine"}]}]}}
    out = kubernetes_service_env(pod, "https://10.1.2.3:6443")
    a, b = out["spec"]["containers"]
    assert {"name": "KUBERNETES_SERVICE_HOST", "value": "10.1.2.3"} in a["env"]
    assert {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"} in a["env"]
    assert [e["value"] for e in b["env"] if e["name"] == "KUBERNETES_SERVICE_HOST"] == ["mine"]


def test_a_pod_waiting_for_its_service_account_is_looked_at_again() -> None:
    """Nothing else wakes such a pod (no claim event comes): the manager marks it for a sync, backing off."""
    woken = threading.Event()
    manager = ServiceAccountTokenManager(_Client(_Http([0.0], 600)), lambda uid: woken.set() if uid == "u1" else None)
    try:
        with pytest.raises(VolumeNotReady):
            manager.token({**POD, "spec": {"serviceAccountName": "ghost"}}, "", 600)
        assert woken.wait(10)
    finally:
        manager.stop()


def _projected(path: str = "token", audience: str = "", expiration: int | None = None) -> dict[str, Any]:
    projection: dict[str, Any] = {"path": path, "audience": audience}
    if expiration is not None:
        projection["expirationSeconds"] = expiration
    return {"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": projection},
                                                                 {"configMap": {"name": "kube-root-ca.crt"}}]}}


def test_prefetch_gets_the_token_a_waiting_pod_will_mount_so_its_start_asks_for_none() -> None:
    """PF72: a pod waiting for its claim gets its token meanwhile; ``fill`` at the start reuses it."""
    from storage.agent.volume_manager import PodVolumes, VolumeRequest

    http = _Http([time.time()], 3600.0)  # tokens valid for an hour from now
    manager = ServiceAccountTokenManager(_Client(http), lambda uid: None)
    volume = _projected(expiration=3600)
    pod = {**POD, "spec": {**POD["spec"], "volumes": [volume, {"name": "data", "persistentVolumeClaim": {"claimName": "c"}}]}}
    try:
        manager.prefetch(pod)
        assert [path for path, _ in http.calls] == ["/api/v1/namespaces/ns/serviceaccounts/app/token"]
        assert http.calls[0][1]["spec"]["expirationSeconds"] == 3600
        request = VolumeRequest(name="kube-api-access", plugin_source={"projected": volume["projected"]})
        manager.fill(pod, PodVolumes(uid="u1", namespace="ns", name="p", volumes=[request]))
        assert request.data["serviceAccountToken"] == {"token": "token-1"}
        assert len(http.calls) == 1, "the start reused the prefetched token"
    finally:
        manager.stop()


def test_prefetch_of_a_missing_account_does_not_raise_and_the_start_still_reports_it() -> None:
    manager = ServiceAccountTokenManager(_Client(_Http([0.0], 600)), lambda uid: None)
    ghost = {**POD, "spec": {"serviceAccountName": "ghost", "volumes": [_projected()]}}
    try:
        manager.prefetch(ghost)  # best effort: no exception
        with pytest.raises(VolumeNotReady, match='serviceaccount "ghost" not found'):
            manager.token(ghost, "", sa_tokens.DEFAULT_EXPIRATION)
    finally:
        manager.stop()


def test_prefetch_without_projected_tokens_asks_for_nothing() -> None:
    http = _Http([0.0], 600)
    manager = ServiceAccountTokenManager(_Client(http), lambda uid: None)
    try:
        manager.prefetch({**POD, "spec": {"volumes": [{"name": "data", "emptyDir": {}}]}})
        assert http.calls == []
    finally:
        manager.stop()
