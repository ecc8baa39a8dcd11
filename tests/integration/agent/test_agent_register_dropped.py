"""HA8: a node agent's registration survives the API server dropping a connection after it received a
write and before it answered, as when the replica serving it dies: every step is done again by name,
where before the agent process exited at start ("Server disconnected without sending a response")."""
from __future__ import annotations

import httpx
import pytest

from agent_cluster import Cluster
from storage.agent.agent import NodeAgent
from storage.agent.credentials import node_credentials
from storage.client import Client

pytestmark = pytest.mark.root


class _DropAfterServing(httpx.BaseTransport):
    """Sends the first request matching ``method`` and ``suffix`` to the real server, which applies it, then
    loses the answer: the connection drops as if the replica died between its commit and its reply."""

    def __init__(self, inner: httpx.BaseTransport, method: str, suffix: str) -> None:
        self.inner, self.method, self.suffix = inner, method, suffix
        self.dropped = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not self.dropped and request.method == self.method and request.url.path.endswith(self.suffix):
            self.dropped += 1
            response.read()
            response.close()
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("method,suffix", [("POST", "/csinodes"), ("PUT", "/nodes/n1/status")])
def test_registration_is_done_again_after_a_dropped_answer(cluster: Cluster, method: str, suffix: str) -> None:
    creds = node_credentials("n1", cluster.agent_dir("n1") / "pki", "127.0.0.1", cluster.bootstrap_access)
    client = Client.from_access(creds.access)
    faulty = _DropAfterServing(client.http._transport, method, suffix)
    client.http._transport = faulty
    agent = NodeAgent(client, cluster.agent_config("n1", tls=creds.tls))
    cluster.agents["n1"] = agent  # stopped by the cluster, also when start fails
    agent.start()
    assert faulty.dropped == 1
    admin = cluster.client
    node = admin.get("nodes", "n1")
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
    assert admin.get("leases", "n1", "kube-node-lease")["spec"]["holderIdentity"] == "n1"
    csinode = admin.get("csinodes", "n1")
    assert csinode["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]
