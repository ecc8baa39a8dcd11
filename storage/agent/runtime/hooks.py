"""Container lifecycle hooks (postStart, preStop) run as the kubelet's handler runner runs them (SEMANTICS LH).

A handler is an ``exec`` in the container (``runc exec``), an ``httpGet`` to the pod (or its ``host``), or a
``sleep``. Its failure is reported in the kubelet's words, which the agent puts in a ``FailedPostStartHook`` or
``FailedPreStopHook`` event.
"""
from __future__ import annotations

import threading
from typing import Any

import httpx

from .probes import http_get_target
from .runc import Runc

__all__ = ["handler_of", "pod_name", "run_handler"]

HTTP_USER_AGENT = "kube-lifecycle/1.30"


def handler_of(container: dict[str, Any], hook: str) -> dict[str, Any] | None:
    """The container's ``lifecycle.<hook>`` when it names a handler the kubelet runs (exec, httpGet, sleep)."""
    lifecycle = container.get("lifecycle")
    handler = lifecycle.get(hook) if isinstance(lifecycle, dict) else None
    if not isinstance(handler, dict):
        return None
    return handler if any(handler.get(kind) is not None for kind in ("exec", "httpGet", "sleep")) else None


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
    seconds = int((handler.get("sleep") or {}).get("seconds") or 0)
    stop.wait(seconds if timeout is None else min(seconds, timeout))
    return None


def _quoted(text: str) -> str:
    """Go's %q for the text the kubelet quotes."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'
