"""PF87: a claim's change finds the pods waiting for it through the agent's index of claims to pods, not a
walk over every pod of the node (real agent, real API server, runc). The index follows the pods: a pod's
claims enter with it and leave with it, and a pod waiting for its claim starts when the claim binds."""
from __future__ import annotations

from typing import Any

from agent_cluster import Cluster, claim, pod, wait_until


def _users(agent: Any) -> dict[tuple[str, str], set[str]]:
    with agent._lock:
        return {key: set(uids) for key, uids in agent._claim_users.items()}


def _waiting_for_claim(p: dict[str, Any]) -> bool:
    return any("not bound" in ((s.get("state") or {}).get("waiting") or {}).get("message", "")
               for s in (p.get("status") or {}).get("containerStatuses") or [])


def test_pf87_the_claim_index_follows_the_pods_and_a_claim_binding_wakes_its_waiting_pod(cluster: Cluster) -> None:
    cluster.start_controllers()
    root = cluster.base / "hostpath"
    (root / "late").mkdir(parents=True)
    agent = cluster.add_agent("n1", host_path_prefixes=(str(root),))
    # Two pods of the node share the claim "late" (ReadWriteMany), a third uses none: nothing else is indexed.
    cluster.apply(claim("late", storage_class="", modes=["ReadWriteMany"]),
                  pod("w1", claims={"late": "/data"}, nodeName="n1"),
                  pod("w2", claims={"late": "/data"}, nodeName="n1"),
                  pod("plain", nodeName="n1"))
    w1 = cluster.wait_pod("w1", _waiting_for_claim, "w1 waiting for its claim")
    w2 = cluster.wait_pod("w2", _waiting_for_claim, "w2 waiting for its claim")
    cluster.wait_running("plain")
    assert _users(agent) == {("default", "late"): {w1["metadata"]["uid"], w2["metadata"]["uid"]}}

    # The claim binds: its event is the only thing that brings the waiting pods back (no periodic pass does).
    cluster.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "late-pv"},
                   "spec": {"capacity": {"storage": "64Mi"}, "accessModes": ["ReadWriteMany"],
                            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                            "hostPath": {"path": str(root / "late"), "type": "Directory"},
                            "claimRef": {"namespace": "default", "name": "late"}}})
    cluster.wait_running("w1", timeout=30)
    cluster.wait_running("w2", timeout=30)

    # A deleted pod leaves the index; the last one takes the claim's entry with it.
    cluster.client.delete("pods", "w1", "default")
    cluster.wait_gone("pods", "w1", "default")
    wait_until(lambda: _users(agent) == {("default", "late"): {w2["metadata"]["uid"]}}, "w1 out of the index")
    cluster.client.delete("pods", "w2", "default")
    cluster.wait_gone("pods", "w2", "default")
    wait_until(lambda: _users(agent) == {}, "the claim's entry gone with its last pod")
