"""Pod GC of pods bound to a deleted node (rule L8, docs/semantics.md), against a real agent and runc pod.

The agent of n1 runs as its own process and is killed, as a host that died;
the operator then deletes the Node. Its pod is an orphan: once the node has
been gone for the quarantine (the node monitor grace period, seconds long
here) it is marked DisruptionTarget/DeletionByPodGC and Failed, and deleted
with no grace, although no agent will ever confirm its containers stopped.
"""
from __future__ import annotations

import os
import signal

from agent_cluster import Cluster, condition, pod, wait_until
from storage.controllers.base import ControllerOptions
from storage.controllers.node_lifecycle import PODGC_MESSAGE, PODGC_REASON

FAST = ControllerOptions(node_monitor_grace_period=3.0, node_eviction_rate=10.0)


def test_l8_pods_of_a_deleted_node_are_failed_and_deleted_after_the_quarantine(cluster: Cluster) -> None:
    cluster.start_controllers(FAST)
    proc = cluster.spawn_agent("n1")
    cluster.add_agent("n2")  # a healthy node: the zone is not fully disrupted
    for name in ("n1", "n2"):
        wait_until(lambda n=name: condition(cluster.client.get("nodes", n), "Ready") == "True", f"node {name} Ready")
    cluster.apply(pod("stranded", nodeSelector={"kubernetes.io/hostname": "n1"},
                      tolerations=[{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                                    "effect": "NoExecute"}]))
    cluster.wait_running("stranded")
    survivor = cluster.apply(pod("elsewhere", nodeSelector={"kubernetes.io/hostname": "n2"}))[0]
    cluster.wait_running("elsewhere")

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    _, since = cluster.client.list("pods", "default")
    cluster.client.delete("nodes", "n1")

    # The pod tolerates the unreachable taint forever, so only the pod GC can remove it.
    cluster.wait_gone("pods", "stranded", "default", timeout=60)
    seen = []
    for event in cluster.client.watch("pods", "default", resource_version=since, timeout=1):
        obj = event["object"]
        if obj["metadata"]["name"] == "stranded":
            seen.append((event["type"], obj.get("status", {}).get("phase"),
                         [(c["type"], c.get("reason"), c.get("message")) for c in obj.get("status", {}).get("conditions") or []
                          if c["type"] == "DisruptionTarget"]))
        if event["type"] == "DELETED" and obj["metadata"]["name"] == "stranded":
            break
    assert ("DisruptionTarget", PODGC_REASON, PODGC_MESSAGE) in [c for _, _, conds in seen for c in conds], seen
    assert seen[-1][0] == "DELETED" and seen[-1][1] == "Failed", seen
    # The healthy node's pod is untouched.
    assert cluster.pod("elsewhere")["metadata"]["uid"] == survivor["metadata"]["uid"]
