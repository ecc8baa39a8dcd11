"""A real agent under its node credential (system:node:n1, group system:nodes): it runs a pod with a
Secret volume and a local claim, and that credential is refused everything of another node and of the
cluster admin (issue 8: "a node credential touching another node's pods, Secrets or Node")."""
from __future__ import annotations

import base64
import ssl

import httpx
import pytest

from agent_cluster import Cluster, claim, local_class, pod, wait_until
from storage.client import Client
from storage.errors import Forbidden

pytestmark = pytest.mark.root


def test_agent_runs_a_pod_with_a_secret_under_its_node_credential_and_nothing_more(cluster: Cluster) -> None:
    cluster.start_controllers()
    # As ``stowage agent --bootstrap-kubeconfig F``: the agent's identity is system:node:n1 (a certificate
    # from its bootstrap CSR); the token-file user of the same name below checks that identity's limits.
    agent = cluster.add_agent("n1")
    admin = cluster.client
    # Another node, with a pod of its own using its own Secret (no agent runs there: only its objects matter).
    admin.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2", "labels": {"kubernetes.io/hostname": "n2"}}})
    admin.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "other", "namespace": "default"},
                  "data": {"password": base64.b64encode(b"not-yours").decode()}})
    admin.create(pod("elsewhere", volumes=[{"name": "s", "secret": {"secretName": "other"}}],
                     mounts_=[{"name": "s", "mountPath": "/s"}], nodeName="n2"))
    admin.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mine", "namespace": "default"},
                  "data": {"password": base64.b64encode(b"s3cret").decode()}})
    cluster.apply(local_class(), claim("data"), pod(
        "reader", "cat /s/password > /data/out; trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done",
        claims={"data": "/data"}, volumes=[{"name": "s", "secret": {"secretName": "mine"}}],
        mounts_=[{"name": "s", "mountPath": "/s"}]))
    running = cluster.wait_running("reader")
    assert running["spec"]["nodeName"] == "n1"
    out = next((cluster.agent_dir("n1") / "pods" / running["metadata"]["uid"] / "volumes").glob("*/data")) / "out"
    wait_until(lambda: out.exists() and out.read_text().strip(), "the pod to copy its secret")
    assert out.read_text().strip() == "s3cret"

    node = Client(cluster.server.url, cluster.node_tokens["n1"], ca_data=cluster.server.ca_pem)
    assert node.get("secrets", "mine", "default")["metadata"]["name"] == "mine"
    with pytest.raises(Forbidden, match="no relationship found between node 'n1' and this object"):
        node.get("secrets", "other", "default")
    n2 = admin.get("nodes", "n2")
    with pytest.raises(Forbidden):
        node.update({**n2, "metadata": {**n2["metadata"], "labels": {**n2["metadata"]["labels"], "x": "y"}}})
    with pytest.raises(Forbidden):
        node.update_status({**n2, "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    elsewhere = admin.get("pods", "elsewhere", "default")
    with pytest.raises(Forbidden):
        node.update_status({**elsewhere, "status": {"phase": "Running"}})
    with pytest.raises(Forbidden):
        node.get("pods", "elsewhere", "default")
    headers = {"Authorization": f"Bearer {cluster.node_tokens['n1']}"}
    # A node's list of Secrets shows only what its pods use (SEMANTICS R6).
    assert [x["metadata"]["name"] for x in node.list("secrets")[0]] == ["mine"]
    for method, path in (("GET", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"),
                         ("DELETE", "/api/v1/nodes/n2"), ("DELETE", "/api/v1/namespaces/default/pods/elsewhere"),
                         ("POST", "/api/v1/namespaces")):
        resp = httpx.request(method, cluster.server.url + path, headers=headers, timeout=30,
                             json={"metadata": {"name": "x"}} if method == "POST" else None, verify=cluster.server.verify())
        assert resp.status_code == 403, (method, path, resp.text)
        assert "not-yours" not in resp.text and "bm90LXlvdXJz" not in resp.text
    # The agent's own API answers only the control plane's client certificate: no token opens it,
    # not even the admin's or another node's.
    log_url = f"https://127.0.0.1:{agent.port}/pods/default/reader/log"
    assert httpx.get(log_url, verify=cluster.agent_client_tls, timeout=30).status_code == 200
    ca_only = ssl.create_default_context(cadata=cluster.server.ca_pem.decode() if isinstance(cluster.server.ca_pem, bytes) else cluster.server.ca_pem)
    for token in (cluster.server.token, cluster.node_tokens["n2"], "nobody", None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        assert httpx.get(log_url, headers=headers, verify=ca_only, timeout=30).status_code == 401, token
    # Deletion still works end to end: the agent removes its finalizer under the same credential.
    admin.delete("pods", "reader", "default")
    cluster.wait_gone("pods", "reader", "default")
