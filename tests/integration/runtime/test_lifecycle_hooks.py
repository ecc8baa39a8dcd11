"""SEMANTICS LH1-LH3, LH5: containers' postStart and preStop hooks (exec, httpGet, sleep) as the kubelet runs them,
against real runc: a postStart hook runs right after its container starts and before the containers after it,
the container counts as being created until it is done, and one that fails has its container killed and
restarted with the kubelet's events; preStop hooks of every kind run inside the grace period."""
from __future__ import annotations

import http.server
import threading
import time
import uuid
from typing import Any, Iterator

import pytest

from storage.agent.runtime import StaticEnvSources

NO_SOURCES = StaticEnvSources({}, {})
LOOP = "trap 'exit 0' TERM; while true; do sleep 0.2; done"


def _pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4()), "labels": {}, "annotations": {}},
            "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 5, "containers": containers, **spec}}


def _container(name: str, command: str, lifecycle: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "image": "debian:12", "command": ["sh", "-c", command]}
    if lifecycle is not None:
        out["lifecycle"] = lifecycle
    return out


class _Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, str, str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, pod: dict[str, Any], type_: str, reason: str, message: str, field_path: str) -> None:
        with self.lock:
            self.items.append((type_, reason, message, field_path))

    def of(self, reason: str) -> list[tuple[str, str, str, str]]:
        with self.lock:
            return [e for e in self.items if e[1] == reason]


@pytest.fixture
def hits() -> Iterator[tuple[int, list[str]]]:
    """A plain HTTP server on the host's loopback for httpGet hooks: (its port, the paths it was asked for)."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            seen.append(f"{self.path} {self.headers.get('User-Agent')} {self.headers.get('X-Hook')}")
            self.send_response(500)  # the kubelet reads no status code of a hook's answer
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def test_lh1_post_start_runs_after_the_start_and_before_the_next_container(harness: Any) -> None:
    """The hook sees its container running; the container counts as being created (the pod Pending) until the
    hook is done, and the container after it starts only then."""
    events = _Events()
    rt = harness.runtime(on_event=events)
    pod = _pod("post-start", [
        _container("first", LOOP, {"postStart": {"exec": {"command": [
            "sh", "-c", "sleep 1.5; echo Hello from the postStart handler > /tmp/message"]}}}),
        _container("second", "cat /tmp/message 2>/dev/null > /tmp/seen; " + LOOP)])
    uid = pod["metadata"]["uid"]
    runc = rt.settings.runc
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    deadline = time.monotonic() + 60
    while runc.state(f"stowage-{uid}-first") is None:  # started: its hook runs now, for 1.5 s
        assert time.monotonic() < deadline, "the first container never started"
        time.sleep(0.05)
    creating = rt.pod_status(uid)
    assert creating is not None and creating["phase"] == "Pending"
    assert creating["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert runc.state(f"stowage-{uid}-second") is None, "the next container waits for the hook"
    running = harness.wait(rt, uid, lambda s: s["phase"] == "Running" and all(
        "running" in c["state"] for c in s["containerStatuses"]), "both containers running", timeout=60)
    assert running["containerStatuses"][0]["started"] is True
    code, out = runc.exec(f"stowage-{uid}-first", ["cat", "/tmp/message"], 10)
    assert (code, out) == (0, b"Hello from the postStart handler\n")
    first = [e for e in events.of("Started") if e[3] == "spec.containers{first}"]
    second = [e for e in events.of("Started") if e[3] == "spec.containers{second}"]
    assert first and second and events.items.index(first[0]) < events.items.index(second[0])
    assert not events.of("FailedPostStartHook")
    rt.kill_pod(uid, 5)
    rt.remove_pod(uid)


def _post_start_kills_a_never_pod(harness: Any, rt: Any, events: _Events, name: str, hook: dict[str, Any]) -> str:
    """A restartPolicy Never pod whose postStart ``hook`` fails: its container is killed (137) and the pod Failed,
    with the kubelet's FailedPostStartHook event, which says only that the hook failed (LH5). Its uid."""
    # sleep, as PID 1, has no handler for the kill's SIGTERM: it ends on the SIGKILL after the grace period.
    pod = _pod(name, [{**_container("c", "", {"postStart": hook}), "command": ["sleep", "3600"]}],
               restartPolicy="Never", terminationGracePeriodSeconds=1)
    uid = pod["metadata"]["uid"]
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    failed = harness.wait(rt, uid, lambda s: s["phase"] == "Failed", "the pod Failed (restartPolicy Never)", timeout=60)
    assert failed["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137
    assert events.of("FailedPostStartHook") == [("Warning", "FailedPostStartHook", "PostStartHook failed",
                                                 "spec.containers{c}")]
    return uid


def test_lh2_a_failed_post_start_kills_its_container_with_the_kubelets_events(harness: Any) -> None:
    events = _Events()
    rt = harness.runtime(on_event=events)
    uid = _post_start_kills_a_never_pod(harness, rt, events, "post-start-fails", {
        "exec": {"command": ["sh", "-c", "echo broken; echo why >&2; exit 3"]}})
    assert ("Normal", "Killing", "FailedPostStartHook", "spec.containers{c}") in events.items
    assert not [e for e in events.items if "broken" in e[2] or "why" in e[2]]
    rt.kill_pod(uid, 5)
    rt.remove_pod(uid)

    # With restartPolicy Always the killed container is started again (and its hook runs again). Until its first
    # restart it waits with the hook's whole error, as the kubelet's reason cache shows it (LH5).
    pod = _pod("post-start-restarts", [_container("c", LOOP, {"postStart": {"exec": {"command": [
        "sh", "-c", "echo token-1234; exit 4"]}}})])
    uid = pod["metadata"]["uid"]
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    harness.wait(rt, uid, lambda s: s["containerStatuses"][0]["restartCount"] >= 1, "a restart", timeout=60)
    deadline = time.monotonic() + 60
    while len(events.of("FailedPostStartHook")) < 3:
        assert time.monotonic() < deadline, "the restarted container's hook did not run (and fail) again"
        time.sleep(0.1)
    waiting = [c["state"]["waiting"] for u, st in list(harness.events) if u == uid and st
               for c in st["containerStatuses"] if "waiting" in c["state"]]
    hook_errors = [w for w in waiting if w["reason"] == "PostStartHookError"]
    assert hook_errors and hook_errors[0]["message"] == (
        f'Exec lifecycle hook ([sh -c echo token-1234; exit 4]) for Container "c" in Pod '
        f'"post-start-restarts_default({uid})" failed - error: command \'sh -c echo token-1234; exit 4\' exited '
        f'with 4: , message: "token-1234\\n"')
    assert not [e for e in events.items if "token-1234" in e[2]]
    rt.kill_pod(uid, 5)
    rt.remove_pod(uid)


def test_lh5_a_tcp_socket_hook_is_the_kubelets_invalid_handler(harness: Any) -> None:
    """A tcpSocket action passes validation (kept for old manifests), but the kubelet cannot run it as a hook:
    a postStart one fails and kills its container, a preStop one fails and the stop goes on."""
    events = _Events()
    rt = harness.runtime(on_event=events)
    uid = _post_start_kills_a_never_pod(harness, rt, events, "tcp-hook", {"tcpSocket": {"port": 8080}})
    rt.kill_pod(uid, 5)
    rt.remove_pod(uid)

    pod = _pod("tcp-pre-stop", [_container("c", LOOP, {"preStop": {"tcpSocket": {"port": "http"}}})])
    uid = pod["metadata"]["uid"]
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    harness.wait(rt, uid, lambda s: s["phase"] == "Running", "the pod Running", timeout=60)
    final = rt.kill_pod(uid, 5)
    assert final["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert events.of("FailedPreStopHook") == [("Warning", "FailedPreStopHook", "PreStopHook failed",
                                               "spec.containers{c}")]
    rt.remove_pod(uid)


def test_lh3_http_and_sleep_hooks(harness: Any, hits: tuple[int, list[str]]) -> None:
    """An httpGet hook is a GET to its host and port with its headers and kube-lifecycle's User-Agent, a
    success whatever the answer's status; a sleep hook holds the container's stop for its seconds."""
    port, seen = hits
    events = _Events()
    rt = harness.runtime(on_event=events)
    http_get = {"host": "127.0.0.1", "port": port, "httpHeaders": [{"name": "X-Hook", "value": "yes"}]}
    pod = _pod("http-hooks", [_container("c", LOOP, {"postStart": {"httpGet": {**http_get, "path": "/started"}},
                                                     "preStop": {"httpGet": {**http_get, "path": "/stopping"}}})])
    uid = pod["metadata"]["uid"]
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    harness.wait(rt, uid, lambda s: s["phase"] == "Running", "the pod Running", timeout=60)
    assert seen == ["/started kube-lifecycle/1.30 yes"]
    rt.kill_pod(uid, 5)
    assert seen == ["/started kube-lifecycle/1.30 yes", "/stopping kube-lifecycle/1.30 yes"]
    assert not events.of("FailedPostStartHook") and not events.of("FailedPreStopHook")
    rt.remove_pod(uid)

    refused = _pod("http-refused", [_container("c", LOOP, {"preStop": {"httpGet": {
        "host": "127.0.0.1", "port": 1, "path": "/x"}}})])
    uid = refused["metadata"]["uid"]
    rt.sync_pod(refused, {}, NO_SOURCES, [])
    harness.wait(rt, uid, lambda s: s["phase"] == "Running", "the pod Running", timeout=60)
    rt.kill_pod(uid, 5)
    assert events.of("FailedPreStopHook") == [("Warning", "FailedPreStopHook", "PreStopHook failed",
                                               "spec.containers{c}")]
    rt.remove_pod(uid)

    sleepy = _pod("sleep-hook", [_container("c", LOOP, {"preStop": {"sleep": {"seconds": 2}}})])
    uid = sleepy["metadata"]["uid"]
    rt.sync_pod(sleepy, {}, NO_SOURCES, [])
    harness.wait(rt, uid, lambda s: s["phase"] == "Running", "the pod Running", timeout=60)
    began = time.monotonic()
    final = rt.kill_pod(uid, 5)
    assert time.monotonic() - began >= 2, "the stop waited for the sleep"
    assert final["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    rt.remove_pod(uid)
