"""SEMANTICS LH5: a tcpSocket hook, which validation keeps for old manifests, fails as the kubelet's handler
runner fails it ("Cannot run handler: invalid handler", with gogo-protobuf's String() of the handler), without
any command being run; and the handler's type is what the agent's log names, never its output."""
from __future__ import annotations

import threading
from typing import Any

from storage.agent.runtime.hooks import handler_kind, handler_of, run_handler


class _NoRunc:
    def exec_split(self, *args: Any) -> Any:
        raise AssertionError("a tcpSocket hook runs no command")


def _run(handler: dict[str, Any]) -> str | None:
    return run_handler(handler, container={"name": "c"}, pod={"metadata": {"name": "p", "uid": "u"}},
                       container_id="x", pod_ip="127.0.0.1", runc=_NoRunc(), timeout=1.0,  # type: ignore[arg-type]
                       stop=threading.Event())


def test_lh5_a_tcp_socket_hook_fails_in_the_kubelets_words() -> None:
    assert _run({"tcpSocket": {"port": 8080}}) == (
        "Cannot run handler: invalid handler: &LifecycleHandler{Exec:nil,HTTPGet:nil,"
        "TCPSocket:&TCPSocketAction{Port:{0 8080 },Host:,},Sleep:nil,}")
    assert _run({"tcpSocket": {"port": "http", "host": "10.0.0.1"}}) == (
        "Cannot run handler: invalid handler: &LifecycleHandler{Exec:nil,HTTPGet:nil,"
        "TCPSocket:&TCPSocketAction{Port:{1 0 http},Host:10.0.0.1,},Sleep:nil,}")


def test_lh5_b_every_handler_type_is_found_and_named() -> None:
    for kind, action in (("exec", {"command": ["true"]}), ("httpGet", {"port": 80}), ("sleep", {"seconds": 1}),
                         ("tcpSocket", {"port": 80})):
        container = {"name": "c", "lifecycle": {"preStop": {kind: action}}}
        handler = handler_of(container, "preStop")
        assert handler == {kind: action} and handler_kind(handler) == kind
    assert handler_of({"name": "c", "lifecycle": {"preStop": {}}}, "preStop") is None
    assert handler_of({"name": "c"}, "postStart") is None
