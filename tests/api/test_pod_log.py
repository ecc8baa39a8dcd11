"""``GET /api/v1/namespaces/{ns}/pods/{name}/log``: the API server's proxy to the node agent.

The agent here is a small real HTTP server standing in at the agent's HTTP
boundary (the path, query and TLS client certificate of ``storage/agent/server.py``), so
each test controls exactly what the agent says; the real agent is exercised
end to end by tests/cli/test_cli_logs.py through ``stowage up``.
"""
from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from storage.apiserver.server import RunningServer, bind_socket
from storage.system import pki
from storage.system.tlsserver import peer_cert_pem, uvicorn_ssl_options
from storage.client import Client
from storage.errors import Invalid, NotFound, StowageError


@dataclass
class StandInAgent:
    url: str
    port: int
    requests: list[dict[str, Any]] = field(default_factory=list)
    lines: "queue.Queue[str | None]" = field(default_factory=queue.Queue)
    fail_with: tuple[int, Any] | None = None


def _agent_app(agent: StandInAgent) -> Starlette:
    async def pod_log(request: Request) -> Response:
        agent.requests.append({
            "path": request.url.path,
            "query": dict(request.query_params),
            "authorization": request.headers.get("authorization"),
            "client": _client_identity(request),
        })
        if agent.fail_with is not None:
            code, body = agent.fail_with
            return JSONResponse(body, status_code=code) if isinstance(body, dict) else Response(body, status_code=code)
        if request.query_params.get("follow") != "true":
            return Response("first line\nsecond line\n", media_type="text/plain")

        async def follow() -> AsyncIterator[bytes]:
            while True:
                line = await run_in_threadpool(agent.lines.get)
                if line is None:
                    return
                yield (line + "\n").encode()

        return StreamingResponse(follow(), media_type="text/plain")

    return Starlette(routes=[Route("/pods/{namespace}/{name}/log", pod_log)])


def _client_identity(request: Request) -> tuple[str, tuple[str, ...]] | None:
    pem = peer_cert_pem(request.scope)
    return pki.identity(pki.load_cert(pem.encode())) if pem else None


@pytest.fixture
def agent(api_server: RunningServer, tmp_path: Path) -> Iterator[StandInAgent]:
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    stand_in = StandInAgent(f"https://127.0.0.1:{port}", port)
    # A serving certificate from the cluster CA, as a real agent gets through its CSR.
    assert api_server.tls is not None
    cert, key = api_server.tls.pki.issue_serving("system:node:n1", ["127.0.0.1"])
    (tmp_path / "agent.crt").write_bytes(cert)
    pki.write_private(tmp_path / "agent.key", key)
    tls = uvicorn_ssl_options(str(tmp_path / "agent.crt"), str(tmp_path / "agent.key"), str(api_server.tls.pki.ca_file))
    server = uvicorn.Server(uvicorn.Config(_agent_app(stand_in), log_level="warning", lifespan="off",
                                           timeout_graceful_shutdown=1, **tls))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "stand-in agent did not start"
        time.sleep(0.01)
    try:
        yield stand_in
    finally:
        stand_in.lines.put(None)  # releases a follow stream still waiting for a line
        server.should_exit = True
        thread.join(30)
        sock.close()


def _node(client: Client, name: str, port: int, host: str = "127.0.0.1") -> None:
    client.create({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {
            "addresses": [{"type": "InternalIP", "address": host}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        },
    })
    node = client.get("nodes", name)
    if not node.get("status"):
        node["status"] = {
            "addresses": [{"type": "InternalIP", "address": host}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        }
        client.update_status(node)


def _pod(client: Client, name: str, node: str | None = "n1", containers: tuple[str, ...] = ("main",)) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": c, "image": "debian:12", "command": ["sleep", "1d"]} for c in containers]}
    if node:
        spec["nodeName"] = node
    return client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                          "spec": spec})


def _get(server: RunningServer, path: str, **params: str) -> httpx.Response:
    return httpx.get(server.url + path, params=params, headers={"Authorization": f"Bearer {server.token}"}, timeout=30,
                     verify=server.verify())


def _log_path(name: str, namespace: str = "default") -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}/log"


def test_log_is_proxied_to_the_agent_of_the_pods_node(api_server: RunningServer, client: Client,
                                                      agent: StandInAgent) -> None:
    _node(client, "n1", agent.port)
    _pod(client, "web")
    response = _get(api_server, _log_path("web"), tailLines="2", timestamps="true")
    assert response.status_code == 200, response.text
    assert response.text == "first line\nsecond line\n"
    [seen] = agent.requests
    assert seen["path"] == "/pods/default/web/log"
    # The single container is named for the agent and the options go along; the caller's token stays in
    # the API server, which speaks to the agent over TLS as itself, with its agent-client certificate
    # (as kube-apiserver to kubelets).
    assert seen["query"] == {"container": "main", "tailLines": "2", "timestamps": "true"}
    assert seen["authorization"] is None
    assert seen["client"] == ("system:apiserver-agent-client", ("system:masters",))


def test_client_logs_reads_the_proxied_log(api_server: RunningServer, client: Client, agent: StandInAgent) -> None:
    _node(client, "n1", agent.port)
    _pod(client, "web", containers=("a", "b"))
    assert b"".join(client.logs("web", "default", container="b")) == b"first line\nsecond line\n"
    assert agent.requests[0]["query"] == {"container": "b"}


def test_follow_streams_each_line_as_the_agent_sends_it(api_server: RunningServer, client: Client,
                                                        agent: StandInAgent) -> None:
    _node(client, "n1", agent.port)
    _pod(client, "web")
    headers = {"Authorization": f"Bearer {api_server.token}"}
    timeout = httpx.Timeout(30.0)
    with httpx.stream("GET", api_server.url + _log_path("web"), params={"follow": "true"}, headers=headers,
                      timeout=timeout, verify=api_server.verify()) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        agent.lines.put("one")
        assert next(lines) == "one"
        # "two" does not exist until "one" has arrived: the proxy streams, it does not buffer.
        agent.lines.put("two")
        assert next(lines) == "two"
    assert agent.requests[0]["query"]["follow"] == "true"


def test_missing_pod_is_404(api_server: RunningServer, client: Client) -> None:
    response = _get(api_server, _log_path("nope"))
    assert response.status_code == 404
    assert response.json()["reason"] == "NotFound"
    assert response.json()["message"] == 'pods "nope" not found'
    with pytest.raises(NotFound):
        b"".join(client.logs("nope", "default"))


def test_unscheduled_pod_has_no_host_assigned(api_server: RunningServer, client: Client) -> None:
    _pod(client, "pending", node=None)
    response = _get(api_server, _log_path("pending"))
    assert response.status_code == 400
    assert response.json()["message"] == "pod pending does not have a host assigned"


def test_two_containers_need_a_container_name(api_server: RunningServer, client: Client, agent: StandInAgent) -> None:
    _node(client, "n1", agent.port)
    _pod(client, "two", containers=("a", "b"))
    response = _get(api_server, _log_path("two"))
    assert response.status_code == 400
    assert response.json()["message"] == "a container name must be specified for pod two, choose one of: [a b]"
    wrong = _get(api_server, _log_path("two"), container="c")
    assert wrong.status_code == 400
    assert wrong.json()["message"] == "container c is not valid for pod two"
    assert agent.requests == []  # answered by the API server, without bothering the agent


def test_previous_needs_a_terminated_run(api_server: RunningServer, client: Client, agent: StandInAgent) -> None:
    _node(client, "n1", agent.port)
    pod = _pod(client, "web")
    response = _get(api_server, _log_path("web"), previous="true")
    assert response.status_code == 400
    assert response.json()["message"] == 'previous terminated container "main" in pod "web" not found'
    pod = client.get("pods", "web", "default")
    pod["status"] = {"phase": "Running", "containerStatuses": [
        {"name": "main", "restartCount": 1, "ready": True, "image": "debian:12", "imageID": "",
         "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}},
         "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}
    client.update_status(pod)
    assert _get(api_server, _log_path("web"), previous="true").status_code == 200
    assert agent.requests[-1]["query"] == {"container": "main", "previous": "true"}


def test_bad_tail_lines_is_invalid(api_server: RunningServer, client: Client, agent: StandInAgent) -> None:
    _node(client, "n1", agent.port)
    _pod(client, "web")
    # A negative count is an invalid PodLogOptions (422, as Kubernetes); a non-number cannot be decoded (400).
    response = _get(api_server, _log_path("web"), tailLines="-3")
    assert response.status_code == 422
    assert "tailLines" in response.json()["message"]
    assert _get(api_server, _log_path("web"), tailLines="x").status_code == 400


def test_unreachable_agent_is_500_naming_the_agent(api_server: RunningServer, client: Client) -> None:
    # A bound socket that never listens: connecting to it is refused, and no one else can take the port.
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as hole:
        hole.bind(("127.0.0.1", 0))
        port = hole.getsockname()[1]
        _node(client, "n1", port)
        _pod(client, "web")
        response = _get(api_server, _log_path("web"))
    assert response.status_code == 500
    body = response.json()
    assert body["reason"] == "InternalError"
    assert f"cannot reach the node agent at https://127.0.0.1:{port}" in body["message"]
    with pytest.raises(StowageError) as err:
        b"".join(client.logs("web", "default"))
    assert err.value.code == 500


def test_agent_errors_reach_the_caller(api_server: RunningServer, client: Client, agent: StandInAgent) -> None:
    _node(client, "n1", agent.port)
    _pod(client, "web")
    agent.fail_with = (404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                             "message": 'pods "web" not found on node n1', "code": 404})
    response = _get(api_server, _log_path("web"))
    assert response.status_code == 404
    assert response.json()["message"] == 'pods "web" not found on node n1'
    agent.fail_with = (500, "Internal Server Error")
    response = _get(api_server, _log_path("web"))
    assert response.status_code == 500
    assert response.json()["message"] == (
        f"the node agent at {agent.url} failed to serve the log: Internal Server Error")
    with pytest.raises(Invalid):
        b"".join(client.logs("web", "default", tail_lines=-1))


def test_log_needs_authentication(api_server: RunningServer, client: Client, agent: StandInAgent) -> None:
    _node(client, "n1", agent.port)
    _pod(client, "web")
    response = httpx.get(api_server.url + _log_path("web"), timeout=30, verify=api_server.verify())
    assert response.status_code == 401
    assert agent.requests == []
