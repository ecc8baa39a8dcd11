"""AppArmor on a real node agent (SEMANTICS AA1-AA3). This host's kernel has no AppArmor, as kind's nodes
and many others: the kubelet refuses a pod that asks for confinement there (phase Failed, reason AppArmor,
`Cannot enforce AppArmor: AppArmor is not enabled on the host`) rather than run it unconfined, and Stowage's
agent does the same. A pod that asks for none runs as before (Unconfined
is refused by Pod Security's baseline level first)."""
from __future__ import annotations

from typing import Any

import pytest

from agent_cluster import Cluster
from storage.agent.agent import NodeAgent
from storage.agent.runtime.apparmor import host_enabled
from support import wait_for

MESSAGE = "Cannot enforce AppArmor: AppArmor is not enabled on the host"


@pytest.fixture
def node(cluster: Cluster) -> NodeAgent:
    if host_enabled():
        pytest.skip("this host's kernel has AppArmor enabled; the refusal is checked where it has none "
                    "(the enabled host's checks are in tests/unit/agent/test_apparmor_host.py)")
    cluster.start_controllers()
    return cluster.add_agent("n1")


def pod(name: str, annotations: dict[str, str] | None = None, **security: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations or {}},
            "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 1, "securityContext": security,
                     "containers": [{"name": "hello", "image": "debian:12", "command": ["sleep", "1000"]}]}}


def test_aa2_a_pod_asking_for_apparmor_fails_where_the_host_has_none(cluster: Cluster, node: NodeAgent) -> None:
    cluster.apply(pod("field", appArmorProfile={"type": "Localhost", "localhostProfile": "k8s-apparmor-example-deny-write"}),
                  pod("annotated", {"container.apparmor.security.beta.kubernetes.io/hello": "runtime/default"}),
                  pod("plain"))
    assert cluster.wait_running("plain")["status"]["phase"] == "Running"
    def failed(name: str) -> dict[str, Any] | None:
        status = cluster.client.get("pods", name, "default")["status"]
        return status if status.get("phase") == "Failed" else None

    for name in ("field", "annotated"):
        status = wait_for(lambda name=name: failed(name), timeout=60, what=f"{name} refused")
        assert (status["reason"], status["message"]) == ("AppArmor", MESSAGE)
        assert not status.get("containerStatuses") or all(
            "running" not in (cs.get("state") or {}) for cs in status["containerStatuses"])
        events = wait_for(lambda name=name: [e for e in cluster.events_for(name) if e["reason"] == "AppArmor"],
                          timeout=30, what="the AppArmor event")
        assert events[0]["type"] == "Warning" and events[0]["message"] == MESSAGE
    # Refused for good: no container of theirs runs on the node.
    assert node.runtime is not None
    running = node.runtime.running_pods()
    for name in ("field", "annotated"):
        assert cluster.client.get("pods", name, "default")["metadata"]["uid"] not in running
