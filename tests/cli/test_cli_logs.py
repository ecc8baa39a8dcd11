"""``stowage logs`` end to end: ``stowage up`` runs the pods on its real node agent, the API server
proxies ``pods/log`` to it, and the console script prints what the containers wrote.
"""
from __future__ import annotations

import os
import queue
import subprocess
import threading
from typing import Any, Iterator

import pytest

from storage.client import Client
from storage.errors import NotFound
from support import UpProcess, cleanup_tree, stowage_executable, wait_for

WAIT_TIMEOUT = 120.0

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: debian:12
    command: ["/bin/sh", "-c", "trap 'exit 0' TERM; echo first words; echo second words; echo third words; while true; do sleep 1 & wait $!; done"]
---
apiVersion: v1
kind: Pod
metadata: {name: pair}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: left
    image: debian:12
    command: ["/bin/sh", "-c", "trap 'exit 0' TERM; echo from left; while true; do sleep 1 & wait $!; done"]
  - name: right
    image: debian:12
    command: ["/bin/sh", "-c", "trap 'exit 0' TERM; echo from right; while true; do sleep 1 & wait $!; done"]
---
apiVersion: v1
kind: Pod
metadata: {name: counter}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: debian:12
    command: ["/bin/sh", "-c", "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo count-$i; sleep 0.2 & wait $!; done"]
"""


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("logs")
    manifest = base / "pods.yaml"
    manifest.write_text(PODS)
    data_dir = base / "data"
    env = dict(os.environ)
    env.pop("KUBECONFIG", None)
    env["HOME"] = str(base / "home")
    proc = UpProcess("up", ["--data-dir", str(data_dir), "--listen", "127.0.0.1:0", "-f", str(manifest)], env)
    client: Client | None = None
    try:
        ready = proc.wait_for("stowage is ready")
        client = Client.from_kubeconfig(ready["kubeconfig"])
        for name in ("talker", "pair", "counter"):
            wait_for(lambda n=name: (client.get("pods", n, "default").get("status") or {}).get("phase") == "Running",
                     f"pod {name} Running", WAIT_TIMEOUT)
        yield {"kubeconfig": ready["kubeconfig"], "client": client, "env": env}
    finally:
        try:
            if client is not None:
                _delete_pods(client)
        finally:
            try:
                proc.stop()
            finally:
                proc.kill()
                cleanup_tree(data_dir)


def _delete_pods(client: Client) -> None:
    """Deleting the pods first lets the agent stop their containers and unmount their roots itself."""
    try:
        for name in ("talker", "pair", "counter"):
            try:
                client.delete("pods", name, "default")
            except NotFound:
                pass
        wait_for(lambda: not client.list("pods", "default")[0], "the pods to be gone", WAIT_TIMEOUT)
    finally:
        client.close()


def _logs(up: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([stowage_executable(), "logs", *args, "--kubeconfig", up["kubeconfig"]],
                          capture_output=True, text=True, timeout=60, env=up["env"])


@pytest.mark.slow
def test_logs_prints_what_the_container_wrote(up: dict[str, Any]) -> None:
    wanted = "first words\nsecond words\nthird words\n"
    out = wait_for(lambda: (r := _logs(up, "talker")).stdout == wanted and r, "talker's three lines", WAIT_TIMEOUT)
    assert out.returncode == 0
    assert out.stderr == ""
    assert _logs(up, "pod/talker", "--tail", "1").stdout == "third words\n"
    assert _logs(up, "talker", "--tail", "2", "-c", "main").stdout == "second words\nthird words\n"


@pytest.mark.slow
def test_logs_needs_a_container_when_the_pod_has_two(up: dict[str, Any]) -> None:
    result = _logs(up, "pair")
    assert result.returncode == 1
    assert result.stderr == (
        "Error from server (BadRequest): a container name must be specified for pod pair, choose one of: [left right]\n")
    right = wait_for(lambda: (r := _logs(up, "pair", "-c", "right")).stdout == "from right\n" and r, "right's line",
                     WAIT_TIMEOUT)
    assert right.returncode == 0
    assert wait_for(lambda: _logs(up, "pair", "--container", "left").stdout == "from left\n", "left's line",
                    WAIT_TIMEOUT)
    wrong = _logs(up, "pair", "-c", "middle")
    assert wrong.returncode == 1
    assert wrong.stderr == "Error from server (BadRequest): container middle is not valid for pod pair\n"


@pytest.mark.slow
def test_logs_errors_are_one_line(up: dict[str, Any]) -> None:
    missing = _logs(up, "ghost")
    assert (missing.returncode, missing.stderr) == (1, 'Error from server (NotFound): pods "ghost" not found\n')
    previous = _logs(up, "talker", "--previous")
    assert previous.returncode == 1
    assert previous.stderr == (
        'Error from server (BadRequest): previous terminated container "main" in pod "talker" not found\n')
    wrong_kind = _logs(up, "sts/web")
    assert wrong_kind.returncode == 1
    assert wrong_kind.stderr.startswith('error: cannot get the logs of "sts"')


@pytest.mark.slow
def test_logs_follow_streams_new_lines(up: dict[str, Any]) -> None:
    proc = subprocess.Popen([stowage_executable(), "logs", "-f", "counter", "--tail", "1",
                             "--kubeconfig", up["kubeconfig"]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=up["env"])
    lines: "queue.Queue[str | None]" = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        counts = []
        while len(counts) < 4:
            try:
                line = lines.get(timeout=WAIT_TIMEOUT)
            except queue.Empty:
                pytest.fail(f"no new log line within {WAIT_TIMEOUT}s; got {counts}")
            assert line is not None, f"stowage logs -f ended early: {proc.stderr.read() if proc.stderr else ''}"
            assert line.startswith("count-"), line
            counts.append(int(line.strip().split("-")[1]))
        # One old line (--tail 1), then lines the container wrote after the command started, in order.
        assert counts == list(range(counts[0], counts[0] + 4))
        assert proc.poll() is None  # still following
    finally:
        proc.kill()
        proc.wait(timeout=30)
