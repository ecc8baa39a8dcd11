"""pods/exec, pods/attach, pods/portforward, pods/log options and the metrics API, end to end:
real runc pods on a real agent, reached through the API server with the official
``kubernetes`` Python client (WebSocket v4 channels) and the real kubectl binary
(WebSocket v5 channels, SPDY-in-WebSocket port-forward)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.stream import stream as k8s_stream

from agent_cluster import Cluster, wait_until
from storage.agent.agent import NodeAgent
from storage.apiserver.auth import TokenAuth
from storage.apiserver.server import bind_socket, serve
from storage.client.kubeconfig import write_kubeconfig

from support import wait_for

KUBECTL = shutil.which("kubectl")


@pytest.fixture
def node(cluster: Cluster) -> NodeAgent:
    """One agent that takes no token of its own (see ``open_server``)."""
    agent = NodeAgent(cluster.server.client(), cluster.agent_config("n1"), token=None)
    agent.start()
    cluster.agents["n1"] = agent
    return agent


@pytest.fixture
def core(cluster: Cluster) -> Iterator[k8s.CoreV1Api]:
    api_client = k8s_config.new_client_from_config(config_file=str(cluster.server.kubeconfig))
    try:
        yield k8s.CoreV1Api(api_client)
    finally:
        api_client.close()


@pytest.fixture
def open_server(cluster: Cluster, tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig for a second API server on the same store with authentication off, over plain
    HTTP: kubectl sends tokens only over TLS, so this is how the real kubectl reaches a test
    cluster until the API server serves TLS (then: the TLS kubeconfig with the token)."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=serve, args=(cluster.store,), daemon=True, kwargs=dict(
        port=port, data_dir=tmp_path / "open", stop_event=stop, ready=ready, tokens=TokenAuth.disabled(), sock=sock))
    thread.start()
    assert ready.wait(30), "open API server did not start"
    kubeconfig = tmp_path / "open-kubeconfig"
    write_kubeconfig(kubeconfig, f"http://127.0.0.1:{port}", "")
    config = json.loads(json.dumps(__import__("yaml").safe_load(kubeconfig.read_text())))
    for user in config.get("users") or []:
        user["user"] = {}
    kubeconfig.write_text(json.dumps(config))
    try:
        yield kubeconfig
    finally:
        stop.set()
        thread.join(30)


def kubectl(kubeconfig: Path, *args: str, input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    return subprocess.run([KUBECTL, *args], input=input, capture_output=True, timeout=timeout, env=env)


def pod(name: str, command: list[str], **container: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 1, "containers": [
                {"name": "main", "image": "debian:12", "command": command,
                 "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}], **container}]}}


def run_pod(cluster: Cluster, name: str, command: list[str], **container: Any) -> dict[str, Any]:
    cluster.apply(pod(name, command, **container))
    return cluster.wait_running(name)


# ---- exec ----------------------------------------------------------------------------------

def test_exec_with_the_kubernetes_client_stdout_stderr_and_exit_code(cluster: Cluster, node: NodeAgent,
                                                                      core: k8s.CoreV1Api) -> None:
    run_pod(cluster, "shell", ["sleep", "1d"], workingDir="/tmp")
    resp = k8s_stream(core.connect_get_namespaced_pod_exec, "shell", "default",
                      command=["sh", "-c", "echo out; echo err >&2; pwd; id -u; exit 3"],
                      stdin=False, stdout=True, stderr=True, tty=False, _preload_content=False)
    resp.run_forever(timeout=60)
    assert resp.read_stdout() == "out\n/tmp\n0\n"  # the container's own cwd and user
    assert resp.read_stderr() == "err\n"
    assert resp.returncode == 3
    ok = k8s_stream(core.connect_get_namespaced_pod_exec, "shell", "default", command=["true"],
                    stdin=False, stdout=True, stderr=True, tty=False, _preload_content=False)
    ok.run_forever(timeout=60)
    assert ok.returncode == 0


def test_kubectl_exec_stdout_stderr_exit_code_and_stdin(cluster: Cluster, node: NodeAgent, open_server: Path) -> None:
    run_pod(cluster, "shell", ["sleep", "1d"])
    done = kubectl(open_server, "exec", "shell", "--", "sh", "-c", "echo hello; echo oops >&2; exit 7")
    assert done.stdout == b"hello\n"
    assert done.stderr.startswith(b"oops\n")
    assert done.returncode == 7  # kubectl exits with the command's code (NonZeroExitCode cause)
    # stdin reaches the command and its end reaches it too (v5's close signal): wc ends.
    counted = kubectl(open_server, "exec", "-i", "shell", "--", "wc", "-c", input=b"x" * 100000)
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.strip() == b"100000"


def test_kubectl_exec_with_a_terminal(cluster: Cluster, node: NodeAgent, open_server: Path) -> None:
    run_pod(cluster, "shell", ["sleep", "1d"])
    # kubectl wants a terminal of its own for -t; `script` gives it one.
    if shutil.which("script") is None:
        pytest.skip("script (util-linux) is not installed")
    env = {**os.environ, "KUBECONFIG": str(open_server)}
    command = f"{KUBECTL} exec -it shell -- sh -c 'tty; stty size; exit 4'"
    done = subprocess.run(["script", "-qec", command, "/dev/null"], input=b"", capture_output=True, timeout=120, env=env)
    out = done.stdout.replace(b"\r", b"")
    assert b"/dev/pts/" in out, out
    assert done.returncode == 4, out


def test_kubectl_cp_both_ways(cluster: Cluster, node: NodeAgent, open_server: Path, tmp_path: Path) -> None:
    run_pod(cluster, "box", ["sleep", "1d"])
    local = tmp_path / "payload.bin"
    local.write_bytes(os.urandom(300_000))
    up = kubectl(open_server, "cp", str(local), "default/box:/tmp/payload.bin")
    assert up.returncode == 0, up.stderr
    sums = kubectl(open_server, "exec", "box", "--", "sha256sum", "/tmp/payload.bin")
    import hashlib
    assert sums.stdout.split()[0].decode() == hashlib.sha256(local.read_bytes()).hexdigest()
    back = tmp_path / "back.bin"
    down = kubectl(open_server, "cp", "default/box:/tmp/payload.bin", str(back))
    assert down.returncode == 0, down.stderr
    assert back.read_bytes() == local.read_bytes()


def test_exec_errors_are_statuses(cluster: Cluster, node: NodeAgent, open_server: Path) -> None:
    missing = kubectl(open_server, "exec", "nope", "--", "true")
    assert missing.returncode != 0
    assert b'pods "nope" not found' in missing.stderr
    run_pod(cluster, "shell", ["sleep", "1d"])
    wrong = kubectl(open_server, "exec", "shell", "-c", "other", "--", "true")
    assert b"container other is not valid for pod shell" in wrong.stderr


# ---- attach --------------------------------------------------------------------------------

def test_attach_sees_output_and_feeds_stdin(cluster: Cluster, node: NodeAgent, core: k8s.CoreV1Api) -> None:
    # The container echoes each line it reads, so what we send comes back through its log.
    run_pod(cluster, "echo", ["sh", "-c", "echo ready; while read line; do echo \"got $line\"; done"], stdin=True)
    resp = k8s_stream(core.connect_get_namespaced_pod_attach, "echo", "default",
                      stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
    try:
        resp.write_stdin("ping\n")
        seen = ""
        deadline = time.monotonic() + 60
        while "got ping" not in seen and resp.is_open() and time.monotonic() < deadline:
            resp.update(timeout=1)
            seen += resp.read_stdout() or ""
        assert "got ping" in seen
        assert "ready" not in seen  # attach starts at the end of what was written before
    finally:
        resp.close()


def test_kubectl_attach_ends_with_the_container(cluster: Cluster, node: NodeAgent, open_server: Path) -> None:
    run_pod(cluster, "talker", ["sh", "-c", "read x; echo \"bye $x\"; exit 0"], stdin=True)
    done = kubectl(open_server, "attach", "-i", "talker", input=b"now\n")
    assert b"bye now" in done.stdout, done.stderr


# ---- port-forward --------------------------------------------------------------------------

@contextlib.contextmanager
def port_forward(kubeconfig: Path, target: str, remote: int) -> Iterator[int]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed")
    proc = subprocess.Popen([KUBECTL, "port-forward", target, f":{remote}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "KUBECONFIG": str(kubeconfig)},
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()  # "Forwarding from 127.0.0.1:PORT -> REMOTE"
        assert line.startswith("Forwarding from 127.0.0.1:"), line + proc.stderr.read(20000).decode()  # type: ignore[union-attr]
        yield int(line.split(":")[1].split()[0])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_kubectl_port_forward_carries_real_bytes(cluster: Cluster, node: NodeAgent, open_server: Path) -> None:
    served = "served.txt"
    run_pod(cluster, "web", ["sh", "-c", f"cd /tmp && head -c 200000 /dev/urandom > {served} && sha256sum {served} > sum "
                                         "&& exec python3 -m http.server 8080 --bind \"$POD_IP\""])
    expected = wait_for(lambda: kubectl(open_server, "exec", "web", "--", "cat", "/tmp/sum").stdout.split()[:1],
                        "the pod's checksum")[0].decode()
    with port_forward(open_server, "pod/web", 8080) as local:
        import hashlib
        for _ in range(3):  # each request is a new forwarded connection (a new stream pair)
            body = wait_for(lambda: _fetch(f"http://127.0.0.1:{local}/{served}"), "the file through the tunnel")
            assert hashlib.sha256(body).hexdigest() == expected


def _fetch(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()  # type: ignore[no-any-return]
    except OSError:
        return None


def test_port_forward_to_a_closed_port_reports_the_error(cluster: Cluster, node: NodeAgent, open_server: Path) -> None:
    run_pod(cluster, "quiet", ["sleep", "1d"])
    with port_forward(open_server, "pod/quiet", 9) as local:
        with socket.create_connection(("127.0.0.1", local), timeout=30) as conn:
            conn.settimeout(30)
            assert conn.recv(100) == b""  # the connection closes: nothing listens in the pod
