"""LR7: the local provisioner calls a volume's agent only while the volume's node is Ready.

The agent here is a real listening socket that counts the connections it gets: while the node is
Ready=Unknown, deleting or expanding a volume makes no connection and the error names the node and its
condition; once the node is Ready again the same call reaches the socket."""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from provisioners.local import LocalProvisioner
from storage.api.node_affinity import hostname_affinity
from storage.errors import TemporaryError


class CountingListener:
    """Accepts connections on 127.0.0.1 and closes them at once: any call to it fails, after being counted."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1  # before the hang-up, so the caller's failure comes after the count
            conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept(); close() alone does not on Linux
        self.sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def listener() -> Iterator[CountingListener]:
    server = CountingListener()
    try:
        yield server
    finally:
        server.close()


def _node(port: int, ready: str | None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
    }
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": ready, "reason": "NodeStatusUnknown"}]
    return {"metadata": {"name": "n1"}, "status": status}


def _volume() -> dict[str, Any]:
    return {
        "metadata": {"name": "pvc-1", "annotations": {"pv.kubernetes.io/provisioned-by": "stowage.io/local"}},
        "spec": {"local": {"path": "/pool/pvc-1"}, "nodeAffinity": hostname_affinity("n1"),
                 "capacity": {"storage": "1Gi"}},
    }


@pytest.mark.parametrize("ready", ["Unknown", "False"])
def test_lr7_delete_and_expand_wait_for_the_node_without_calling_its_agent(listener: CountingListener,
                                                                           ready: str) -> None:
    node = _node(listener.port, ready)
    provisioner = LocalProvisioner(token="t", nodes=lambda name: node if name == "n1" else None, timeout=5.0)
    with pytest.raises(TemporaryError) as deleting:
        provisioner.delete(_volume())
    assert f"node n1 of the volume is not Ready (Ready={ready})" in deleting.value.message
    assert deleting.value.delay > 0
    with pytest.raises(TemporaryError, match="not Ready"):
        provisioner.expand(_volume(), 2 << 30)
    assert listener.accepted == 0

    # Back: the same delete goes to the agent (which hangs up here, so it is still a TemporaryError, a
    # different one).
    node["status"]["conditions"][0]["status"] = "True"
    with pytest.raises(TemporaryError) as calling:
        provisioner.delete(_volume())
    assert "is unreachable" in calling.value.message and "not Ready" not in calling.value.message
    assert listener.accepted == 1


def test_lr7_a_node_without_a_ready_condition_yet_is_called(listener: CountingListener) -> None:
    """An agent publishes its endpoint with its first status; a node that has no Ready condition at all
    was never seen failing, so it is not held back."""
    provisioner = LocalProvisioner(token="t", nodes=lambda name: _node(listener.port, None), timeout=5.0)
    with pytest.raises(TemporaryError, match="is unreachable"):
        provisioner.delete(_volume())
    assert listener.accepted == 1
