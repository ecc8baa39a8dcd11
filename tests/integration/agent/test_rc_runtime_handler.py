"""RuntimeClass on a real node agent (SEMANTICS RC3): a pod whose class names the agent's handler (runc) runs;
one naming a handler the node does not have waits in ContainerCreating with the kubelet's
FailedCreatePodSandBox event, and runs once its class is replaced by one the node has."""
from __future__ import annotations

from typing import Any

import pytest

from agent_cluster import Cluster
from storage.agent.agent import NodeAgent
from support import wait_for


@pytest.fixture
def node(cluster: Cluster) -> NodeAgent:
    cluster.start_controllers()
    return cluster.add_agent("n1")


def runtime_class(name: str, handler: str) -> dict[str, Any]:
    return {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": name}, "handler": handler}


def pod(name: str, class_name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": "n1", "runtimeClassName": class_name, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": "debian:12", "command": ["sleep", "1000"]}]}}


def test_rc3_the_agents_handler_runs_and_another_waits_with_the_kubelets_event(cluster: Cluster,
                                                                               node: NodeAgent) -> None:
    cluster.apply(runtime_class("plain", "runc"), runtime_class("sandboxed", "kata"))
    cluster.apply(pod("plain-pod", "plain"), pod("kata-pod", "sandboxed"))

    assert cluster.wait_running("plain-pod")["spec"]["runtimeClassName"] == "plain"
    message = 'Failed to create pod sandbox: no runtime for "kata" is configured'
    events = wait_for(lambda: [e for e in cluster.events_for("kata-pod") if e["reason"] == "FailedCreatePodSandBox"],
                      timeout=60, what="the FailedCreatePodSandBox event")
    assert events[0]["type"] == "Warning" and events[0]["message"] == message
    status = cluster.client.get("pods", "kata-pod", "default")["status"]
    assert status["phase"] == "Pending"
    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting == {"reason": "ContainerCreating", "message": message}

    # The class's handler is immutable: replaced by one the node has (deleted and made again), the pod runs.
    cluster.client.delete("runtimeclasses", "sandboxed")
    wait_for(lambda: not [r for r in cluster.client.list("runtimeclasses")[0] if r["metadata"]["name"] == "sandboxed"],
             timeout=30, what="the class to go")
    cluster.apply(runtime_class("sandboxed", "runc"))
    cluster.wait_running("kata-pod", timeout=120)
