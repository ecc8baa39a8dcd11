"""``stowage logs`` end to end: ``stowage up`` runs the pods on its real node agent, the API server
proxies ``pods/log`` to it, and the console script prints what the containers wrote.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import pytest

from cliutil import stowage_executable
from storage.client import Client
from storage.client.kubeconfig import load_kubeconfig
from storage.errors import NotFound

STARTUP_TIMEOUT = 120.0
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


def _wait(what: str, check: Callable[[], Any]) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after WAIT_TIMEOUT."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


class _Up:
    """``stowage up`` in the foreground, its JSON log lines collected as they arrive."""

    def __init__(self, data_dir: Path, manifest: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [stowage_executable(), "up", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
             "--log-format", "json", "-f", str(manifest)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        self.seen: list[str] = []
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def ready(self) -> dict[str, Any]:
        ended = 0
        while True:
            try:
                line = self.lines.get(timeout=STARTUP_TIMEOUT)
            except queue.Empty:
                pytest.fail(f"stowage up not ready within {STARTUP_TIMEOUT}s:\n{''.join(self.seen)}")
            if line is None:
                ended += 1
                if ended == 2:
                    pytest.fail(f"stowage up ended before it was ready:\n{''.join(self.seen)}")
                continue
            self.seen.append(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == "stowage is ready":
                return record

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STARTUP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def _leftovers_cleaned(data_dir: Path) -> None:
    """Whatever the agent of this test left behind: only containers, mounts and loop devices under ``data_dir``."""
    runc_root = data_dir / "agent" / "runc"
    if runc_root.is_dir():
        listed = subprocess.run(["runc", "--root", str(runc_root), "list", "-q"], capture_output=True, text=True)
        for container in listed.stdout.split():
            subprocess.run(["runc", "--root", str(runc_root), "kill", container, "KILL"], capture_output=True)
            subprocess.run(["runc", "--root", str(runc_root), "delete", "--force", container], capture_output=True)
    prefix = str(data_dir) + "/"
    with open("/proc/self/mounts", encoding="utf-8") as f:
        targets = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)
    losetup = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
                             capture_output=True, text=True)
    for line in losetup.stdout.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[1].strip().startswith(prefix):
            subprocess.run(["losetup", "-d", parts[0]], capture_output=True)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("logs")
    manifest = base / "pods.yaml"
    manifest.write_text(PODS)
    data_dir = base / "data"
    env = dict(os.environ)
    env.pop("KUBECONFIG", None)
    env["HOME"] = str(base / "home")
    proc = _Up(data_dir, manifest, env)
    client: Client | None = None
    try:
        ready = proc.ready()
        server, token = load_kubeconfig(ready["kubeconfig"])
        client = Client(server, token)
        for name in ("talker", "pair", "counter"):
            _wait(f"pod {name} Running", lambda n=name: (client.get("pods", n, "default").get("status") or {})
                  .get("phase") == "Running")
        yield {"kubeconfig": ready["kubeconfig"], "client": client, "env": env}
    finally:
        if client is not None:
            # Deleting the pods first lets the agent stop their containers and unmount their roots itself.
            for name in ("talker", "pair", "counter"):
                try:
                    client.delete("pods", name, "default")
                except NotFound:
                    pass
            deadline = time.monotonic() + WAIT_TIMEOUT
            while client.list("pods", "default")[0] and time.monotonic() < deadline:
                time.sleep(0.2)
            client.close()
        proc.stop()
        _leftovers_cleaned(data_dir)


def _logs(up: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([stowage_executable(), "logs", *args, "--kubeconfig", up["kubeconfig"]],
                          capture_output=True, text=True, timeout=60, env=up["env"])


@pytest.mark.slow
def test_logs_prints_what_the_container_wrote(up: dict[str, Any]) -> None:
    wanted = "first words\nsecond words\nthird words\n"
    out = _wait("talker's three lines", lambda: (r := _logs(up, "talker")).stdout == wanted and r)
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
    right = _wait("right's line", lambda: (r := _logs(up, "pair", "-c", "right")).stdout == "from right\n" and r)
    assert right.returncode == 0
    assert _wait("left's line", lambda: _logs(up, "pair", "--container", "left").stdout == "from left\n")
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
