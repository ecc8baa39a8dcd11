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
