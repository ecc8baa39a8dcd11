"""Container lifecycle hooks (postStart, preStop) run as the kubelet's handler runner runs them (SEMANTICS LH).

A handler is an ``exec`` in the container (``runc exec``), an ``httpGet`` to the pod (or its ``host``), or a
``sleep``. A ``tcpSocket`` handler passes validation (kept for old manifests) but the kubelet cannot run it: it
fails as the kubelet's "invalid handler". A failure is described in the kubelet's words; that text may hold what
the hook printed, so it goes only into the container's status (LH5), never into an event or a log line.
"""
from __future__ import annotations

import threading
from typing import Any

import httpx

from .probes import http_get_target
from .runc import Runc

__all__ = ["handler_kind", "handler_of", "pod_name", "run_handler"]

HTTP_USER_AGENT = "kube-lifecycle/1.30"
HANDLER_KINDS = ("exec", "httpGet", "sleep", "tcpSocket")


def handler_of(container: dict[str, Any], hook: str) -> dict[str, Any] | None:
    """The container's ``lifecycle.<hook>`` when it names a handler (exec, httpGet, sleep, or tcpSocket, which
    the kubelet tries and fails)."""
    lifecycle = container.get("lifecycle")
    handler = lifecycle.get(hook) if isinstance(lifecycle, dict) else None
    if not isinstance(handler, dict):
        return None
    return handler if any(handler.get(kind) is not None for kind in HANDLER_KINDS) else None


def handler_kind(handler: dict[str, Any]) -> str:
    """The handler's type (``exec``, ``httpGet``, ``sleep`` or ``tcpSocket``), for logs that must not carry its
    output."""
    return next((kind for kind in HANDLER_KINDS if handler.get(kind) is not None), "")


def pod_name(pod: dict[str, Any]) -> str:
    """The kubelet's format.Pod: ``name_namespace(uid)``."""
    meta = pod.get("metadata") or {}
    return f"{meta.get('name', '')}_{meta.get('namespace') or 'default'}({meta.get('uid', '')})"


def _go_list(items: list[Any]) -> str:
    return "[" + " ".join(str(i) for i in items) + "]"


def run_handler(handler: dict[str, Any], *, container: dict[str, Any], pod: dict[str, Any], container_id: str,
                pod_ip: str, runc: Runc, timeout: float | None, stop: threading.Event) -> str | None:
    """Run ``handler``; None when it succeeded, else the kubelet's message for its failure. ``timeout``: how
    long it may take (None: as long as it takes, as the kubelet lets a postStart hook run); ``stop`` ends a
    sleep early (the container is being stopped)."""
    name, where = container.get("name", ""), pod_name(pod)
    if handler.get("exec") is not None:
        command = [str(c) for c in (handler["exec"] or {}).get("command") or []]
        code, out, err = runc.exec_split(container_id, command, timeout)
        if code == 0:
            return None
        # The runtime's error names the exit code and the stderr; the message is all the output.
        output = (out + err).decode("utf-8", "replace")
        error = ("command timed out" if code == -1
                 else f"command '{' '.join(command)}' exited with {code}: {err.decode('utf-8', 'replace')}")
        return (f"Exec lifecycle hook ({_go_list(command)}) for Container {_quoted(name)} in Pod {_quoted(where)} "
                f"failed - error: {error}, message: {_quoted(output)}")
    if handler.get("httpGet") is not None:
        spec = handler["httpGet"] or {}
        path = str(spec.get("path") or "")
        try:
            url, headers = http_get_target(spec, container, pod_ip, HTTP_USER_AGENT)
            # The kubelet reads no status code of a hook's answer: only a request that fails is a failure.
            httpx.get(url, headers=headers, timeout=timeout if timeout is not None else 10.0, verify=False,
                      follow_redirects=False)
            return None
        except (httpx.HTTPError, OSError, ValueError) as exc:
            return (f"HTTP lifecycle hook ({path}) for Container {_quoted(name)} in Pod {_quoted(where)} failed - "
                    f"error: {exc}")
    if handler.get("sleep") is None:
        # The kubelet's handler runner knows no tcpSocket action: "Cannot run handler", with Go's %v of the handler.
        return f"Cannot run handler: invalid handler: {_go_handler(handler)}"
    seconds = int((handler.get("sleep") or {}).get("seconds") or 0)
    stop.wait(seconds if timeout is None else min(seconds, timeout))
    return None


def _go_handler(handler: dict[str, Any]) -> str:
    """gogo-protobuf's String() of a v1.LifecycleHandler whose only action is tcpSocket."""
    tcp = handler.get("tcpSocket") or {}
    port = tcp.get("port")
    # intstr.IntOrString's %v: {Type IntVal StrVal}, Type 0 for a number and 1 for a name.
    go_port = f"{{1 0 {port}}}" if isinstance(port, str) else f"{{0 {port if port is not None else 0} }}"
    return (f"&LifecycleHandler{{Exec:nil,HTTPGet:nil,TCPSocket:&TCPSocketAction{{Port:{go_port},"
            f"Host:{tcp.get('host') or ''},}},Sleep:nil,}}")


def _quoted(text: str) -> str:
    """Go's %q for the text the kubelet quotes."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'
