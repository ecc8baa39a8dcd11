"""Container probes (exec, tcpSocket, httpGet), each run on its own schedule in its own thread."""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import httpx

from .runc import Runc

ProbeRun = Callable[[], tuple[bool, str]]


def resolve_port(port: Any, container: dict[str, Any]) -> int:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"port: Invalid value: {port!r}: no container port with that name")


def http_get_target(spec: dict[str, Any], container: dict[str, Any], pod_ip: str,
                    user_agent: str) -> tuple[str, dict[str, str]]:
    """The URL and headers of an ``httpGet`` action (a probe's or a lifecycle hook's): its host, else the pod's
    address; its port by number or by the container's port name; ``user_agent`` unless its headers name one.
    ValueError for a port name the container does not have."""
    port = resolve_port(spec.get("port"), container)
    scheme = str(spec.get("scheme") or "HTTP").lower()
    path = str(spec.get("path") or "/")
    url = f"{scheme}://{spec.get('host') or pod_ip}:{port}{path if path.startswith('/') else '/' + path}"
    headers = {h["name"]: h.get("value", "") for h in spec.get("httpHeaders") or [] if isinstance(h, dict)}
    headers.setdefault("User-Agent", user_agent)
    return url, headers


def make_probe(probe: dict[str, Any], container: dict[str, Any], container_id: str, pod_ip: str, runc: Runc) -> ProbeRun:
    timeout = float(probe.get("timeoutSeconds") or 1)
    if "exec" in probe:
        argv = list((probe["exec"] or {}).get("command") or [])

        def run_exec() -> tuple[bool, str]:
            code, out = runc.exec(container_id, argv, timeout)
            return code == 0, out.decode("utf-8", "replace")[-1024:]
        return run_exec
    if "tcpSocket" in probe:
        spec = probe["tcpSocket"]

        def run_tcp() -> tuple[bool, str]:
            try:
                port = resolve_port(spec.get("port"), container)
                with socket.create_connection((spec.get("host") or pod_ip, port), timeout=timeout):
                    return True, ""
            except (OSError, ValueError) as exc:
                return False, str(exc)
        return run_tcp
    if "httpGet" in probe:
        spec = probe["httpGet"]

        def run_http() -> tuple[bool, str]:
            try:
                url, headers = http_get_target(spec, container, pod_ip, "kube-probe/1.29")
                response = httpx.get(url, headers=headers, timeout=timeout, verify=False, follow_redirects=False)
                if 200 <= response.status_code < 400:
                    return True, ""
                return False, f"HTTP probe failed with statuscode: {response.status_code}"
            except (httpx.HTTPError, OSError, ValueError) as exc:
                return False, str(exc)
        return run_http
    raise ValueError("probe: Required value: one of exec, tcpSocket, httpGet")


@dataclass
class ProbeState:
    result: bool | None  # None: not known yet
    message: str = ""


class ProbeWorker(threading.Thread):
    """Runs one probe of one container instance until stopped.

    ``gate`` holds liveness and readiness back until the startup probe succeeded.
    """

    def __init__(self, kind: str, probe: dict[str, Any], run: ProbeRun, started_monotonic: float,
                 on_change: Callable[[str, bool], None], stop: threading.Event,
                 gate: threading.Event | None = None, on_failure: Callable[[str, str], None] | None = None) -> None:
        super().__init__(name=f"probe-{kind}", daemon=True)
        self.kind = kind
        self.probe = probe
        self.run_probe = run
        self.started = started_monotonic
        self.on_change = on_change
        self.on_failure = on_failure  # every failed run, with its output (the kubelet's Unhealthy event)
        self.stop_event = stop
        self.gate = gate
        initial = {"readiness": False, "liveness": True, "startup": None}[kind]
        self.state = ProbeState(initial)
        self.first_done = threading.Event()  # the first result is in (or the worker ended without one)

    def first_due_now(self) -> bool:
        """Whether the first probe runs right away: no initial delay, and no startup probe to wait for."""
        return (not self.first_done.is_set() and (self.gate is None or self.gate.is_set())
                and float(self.probe.get("initialDelaySeconds") or 0) <= 0)

    def run(self) -> None:
        try:
            self._run()
        finally:
            self.first_done.set()

    def _run(self) -> None:
        if self.gate is not None:
            while not self.gate.wait(0.1):
                if self.stop_event.is_set():
                    return
        delay = float(self.probe.get("initialDelaySeconds") or 0) - (time.monotonic() - self.started)
        if delay > 0 and self.stop_event.wait(delay):
            return
        period = float(self.probe.get("periodSeconds") or 10)
        success_threshold = int(self.probe.get("successThreshold") or 1)
        failure_threshold = int(self.probe.get("failureThreshold") or 3)
        successes = failures = 0
        while not self.stop_event.is_set():
            ok, message = self.run_probe()
            if self.stop_event.is_set():
                return
            if ok:
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
            new = self.state.result
            if ok and successes >= success_threshold:
                new = True
            elif not ok and failures >= failure_threshold:
                new = False
            self.state.message = message
            if not ok and self.on_failure is not None:
                self.on_failure(self.kind, message)
            if new != self.state.result:
                self.state.result = new
                self.on_change(self.kind, bool(new))
            self.first_done.set()
            if self.kind == "startup" and new:
                return  # a startup probe stops once it succeeded
            if self.stop_event.wait(period):
                return
