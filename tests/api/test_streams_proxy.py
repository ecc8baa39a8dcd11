"""The API server's side of pods/exec, attach, portforward, log options and metrics.k8s.io:
what it answers itself, before any node agent is involved (the agent side runs real pods in
tests/integration/agent/test_streams_exec.py)."""
from __future__ import annotations

import asyncio
import json
import socket
import ssl

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.asyncio.client import connect

from storage.apiserver.server import RunningServer
from storage.client import Client


def _ws_url(server: RunningServer, path: str) -> str:
    return server.url.replace("https://", "wss://").replace("http://", "ws://") + path


def _tls(server: RunningServer) -> ssl.SSLContext | None:
    """The client side of the server's TLS (its cluster CA), or None over plain HTTP."""
    return ssl.create_default_context(cadata=server.ca_pem.decode()) if server.ca_pem else None


def _refused(server: RunningServer, path: str, token: str | None, protocol: str = "v5.channel.k8s.io") -> InvalidStatus:
    # The asyncio client, not websockets' sync one: the sync client reads the TLS connection on a thread of its
    # own while its caller writes the request, and OpenSSL forbids concurrent SSL_read and SSL_write on one
    # connection; now and then the request was lost and the test hung in the client's join.
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def attempt() -> None:
        async with connect(_ws_url(server, path), subprotocols=[protocol], additional_headers=headers,  # type: ignore[list-item]
                           open_timeout=30, ssl=_tls(server)):
            pass

    with pytest.raises(InvalidStatus) as caught:
        asyncio.run(attempt())
    return caught.value


def _pod(client: Client, name: str, *, node: str | None = "n1", phase: str | None = None) -> None:
    spec = {"containers": [{"name": "main", "image": "debian:12", "command": ["sleep", "1d"]}]}
    if node:
        spec["nodeName"] = node  # type: ignore[assignment]
    client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec})
    if phase:
        pod = client.get("pods", name, "default")
        pod["status"] = {"phase": phase}
        client.update_status(pod)


def test_exec_on_a_missing_pod_is_a_404_status_before_the_upgrade(api_server: RunningServer) -> None:
    refused = _refused(api_server, "/api/v1/namespaces/default/pods/nope/exec?command=true&stdout=true", api_server.token)
    assert refused.response.status_code == 404
    status = json.loads(refused.response.body)
    assert status["kind"] == "Status" and status["reason"] == "NotFound"
    assert status["message"] == 'pods "nope" not found'
    assert status["details"]["name"] == "nope" and status["details"]["kind"] == "pods"


def test_streams_need_authentication(api_server: RunningServer) -> None:
    refused = _refused(api_server, "/api/v1/namespaces/default/pods/x/attach?stdout=true", None)
    assert refused.response.status_code == 401


def test_exec_checks_what_the_api_server_knows(api_server: RunningServer, client: Client) -> None:
    _pod(client, "pending", node=None)
    refused = _refused(api_server, "/api/v1/namespaces/default/pods/pending/exec?command=true&stdout=true", api_server.token)
    assert refused.response.status_code == 400
    assert b"pod pending does not have a host assigned" in refused.response.body
    _pod(client, "done", phase="Succeeded")
    refused = _refused(api_server, "/api/v1/namespaces/default/pods/done/exec?command=true&stdout=true", api_server.token)
    assert b"cannot exec into a container in a completed pod; current phase is Succeeded" in refused.response.body
    refused = _refused(api_server, "/api/v1/namespaces/default/pods/pending/exec?stdout=true", api_server.token)
    assert b"command: Required value" in refused.response.body
    _pod(client, "placed")
    wrong = _refused(api_server, "/api/v1/namespaces/default/pods/placed/exec?command=true&container=other", api_server.token)
    assert b"container other is not valid for pod placed" in wrong.response.body


def test_a_plain_request_gets_the_same_checks_then_upgrade_required(api_server: RunningServer, client: Client) -> None:
    headers = {"Authorization": f"Bearer {api_server.token}"}
    missing = httpx.post(api_server.url + "/api/v1/namespaces/default/pods/nope/portforward", headers=headers, verify=api_server.verify())
    assert missing.status_code == 404 and missing.json()["message"] == 'pods "nope" not found'
    _pod(client, "placed")
    plain = httpx.post(api_server.url + "/api/v1/namespaces/default/pods/placed/exec?command=true", headers=headers, verify=api_server.verify())
    # The pod's node is not registered here: the API server says so rather than pretending to upgrade.
    assert plain.status_code == 500 and 'placed on node "n1", which is not registered' in plain.json()["message"]


def test_log_options_are_validated_as_pod_log_options(api_server: RunningServer, client: Client) -> None:
    _pod(client, "web")
    headers = {"Authorization": f"Bearer {api_server.token}"}
    url = api_server.url + "/api/v1/namespaces/default/pods/web/log"
    for params, message in [
        ({"limitBytes": "0"}, 'PodLogOptions "web" is invalid: limitBytes: Invalid value: 0: must be greater than 0'),
        ({"sinceSeconds": "0"}, 'PodLogOptions "web" is invalid: sinceSeconds: Invalid value: 0: must be greater than 0'),
        ({"sinceSeconds": "1", "sinceTime": "2024-01-01T00:00:00Z"},
         'PodLogOptions "web" is invalid: : Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified'),
    ]:
        got = httpx.get(url, params=params, headers=headers, verify=api_server.verify())
        assert got.status_code == 422, params
        assert got.json()["message"] == message
        assert got.json()["details"]["causes"]
    bad_time = httpx.get(url, params={"sinceTime": "yesterday"}, headers=headers, verify=api_server.verify())
    assert bad_time.status_code == 400 and "sinceTime" in bad_time.json()["message"]


def test_metrics_api_is_discoverable(api_server: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {api_server.token}"}
    groups = httpx.get(api_server.url + "/apis", headers=headers, verify=api_server.verify()).json()["groups"]
    [metrics] = [g for g in groups if g["name"] == "metrics.k8s.io"]
    assert metrics["preferredVersion"]["groupVersion"] == "metrics.k8s.io/v1beta1"
    resources = httpx.get(api_server.url + "/apis/metrics.k8s.io/v1beta1", headers=headers, verify=api_server.verify()).json()["resources"]
    assert {(r["name"], r["kind"], r["namespaced"]) for r in resources} == {
        ("nodes", "NodeMetrics", False), ("pods", "PodMetrics", True)}
    empty = httpx.get(api_server.url + "/apis/metrics.k8s.io/v1beta1/pods", headers=headers, verify=api_server.verify()).json()
    assert empty == {"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": []}
    missing = httpx.get(api_server.url + "/apis/metrics.k8s.io/v1beta1/nodes/n9", headers=headers, verify=api_server.verify())
    assert missing.status_code == 404 and missing.json()["message"] == 'nodemetrics.metrics.k8s.io "n9" not found'


def test_spdy_port_forward_upgrade_gets_the_same_checks(api_server: RunningServer) -> None:
    # kubectl 1.30 upgrades pods/portforward straight to SPDY; a missing pod is a 404 Status, not a 101.
    host, port = api_server.url.removeprefix("https://").removeprefix("http://").split(":")
    context = _tls(api_server)

    def connection() -> socket.socket:
        raw = socket.create_connection((host, int(port)), timeout=30)
        return context.wrap_socket(raw, server_hostname=host) if context is not None else raw

    with connection() as conn:
        conn.sendall(b"POST /api/v1/namespaces/default/pods/nope/portforward HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + api_server.token.encode() + b"\r\n"
                     b"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n"
                     b"Content-Length: 0\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 ")
    assert json.loads(body)["message"] == 'pods "nope" not found'
    with connection() as conn:
        conn.sendall(b"POST /api/v1/namespaces/default/pods/nope/portforward HTTP/1.1\r\nHost: x\r\n"
                     b"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n\r\n")
        assert conn.recv(65536).startswith(b"HTTP/1.1 401 ")  # no token, no tunnel


def _spdy_upgrade(server: RunningServer, path: str, *extra: bytes) -> tuple[bytes, bytes]:
    """(status line and headers, body) of a direct ``Upgrade: SPDY/3.1`` POST, as kubectl before 1.30 sends."""
    host, port = server.url.removeprefix("https://").removeprefix("http://").split(":")
    context = _tls(server)
    raw = socket.create_connection((host, int(port)), timeout=30)
    with (context.wrap_socket(raw, server_hostname=host) if context is not None else raw) as conn:
        conn.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + server.token.encode() + b"\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                     + b"".join(extra) + b"Content-Length: 0\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def test_spdy_exec_upgrade_gets_the_same_checks_and_speaks_v4(api_server: RunningServer, client: Client) -> None:
    """kubectl 1.20 upgrades exec and attach straight to SPDY, offering v4.channel.k8s.io and older."""
    offers = (b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\nX-Stream-Protocol-Version: v3.channel.k8s.io\r\n"
              b"X-Stream-Protocol-Version: v2.channel.k8s.io\r\nX-Stream-Protocol-Version: channel.k8s.io\r\n")
    head, body = _spdy_upgrade(api_server, "/api/v1/namespaces/default/pods/nope/exec?command=true&stdout=true",
                               offers)
    assert head.startswith(b"HTTP/1.1 404 ") and json.loads(body)["message"] == 'pods "nope" not found'
    _pod(client, "placed", node=None)
    head, body = _spdy_upgrade(api_server, "/api/v1/namespaces/default/pods/placed/attach?stdout=true", offers)
    assert head.startswith(b"HTTP/1.1 400 ") and json.loads(body)["message"] == "pod placed does not have a host assigned"
    # A registered node whose agent does not answer: the checks pass, then the protocol is negotiated.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
        node = client.get("nodes", "n1")
        node["status"] = {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                          "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}
        client.update_status(node)
        _pod(client, "ready")
        path = "/api/v1/namespaces/default/pods/ready/exec?command=true&stdout=true"
        head, body = _spdy_upgrade(api_server, path, b"X-Stream-Protocol-Version: v2.channel.k8s.io\r\n")
        assert head.startswith(b"HTTP/1.1 403 ")
        assert json.loads(body)["message"] == ("unable to upgrade: unable to negotiate protocol: client supports "
                                               "[v2.channel.k8s.io], server accepts [v4.channel.k8s.io]")
        head, body = _spdy_upgrade(api_server, path, offers)
        assert head.startswith(b"HTTP/1.1 500 ") and b"error dialing backend" in body
