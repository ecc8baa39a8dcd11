"""PF72: a pod waiting for its claim gets its projected service-account token meanwhile (real agent, real API
server, runc), and its start once the claim binds reuses that token instead of asking for another."""
from __future__ import annotations

from agent_cluster import Cluster, claim, pod, wait_until


def _tokens_of(agent: object, uid: str) -> dict[tuple[str, str, str, int], str]:
    manager = agent.sa_tokens  # type: ignore[attr-defined]
    with manager._lock:
        return {key: issued.token for key, issued in manager._tokens.items() if key[0] == uid}


def test_a_waiting_pod_has_its_token_before_its_claim_binds_and_starts_with_it(cluster: Cluster) -> None:
    cluster.start_controllers()
    root = cluster.base / "hostpath"
    (root / "held").mkdir(parents=True)
    agent = cluster.add_agent("n1", host_path_prefixes=(str(root),))
    # No volume matches the claim yet, and the pod names its node itself: nothing can start it.
    cluster.apply(claim("held", storage_class=""),
                  pod("waiter", "cat /var/run/secrets/kubernetes.io/serviceaccount/token > /data/seen; "
                                "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done",
                      claims={"held": "/data"}, nodeName="n1"))
    waiting = cluster.wait_pod("waiter", lambda p: any(
        "not bound" in ((s.get("state") or {}).get("waiting") or {}).get("message", "")
        for s in (p.get("status") or {}).get("containerStatuses") or []), "waiting for its claim")
    uid = waiting["metadata"]["uid"]
    before = wait_until(lambda: _tokens_of(agent, uid), "the token of the waiting pod")
    assert len(before) == 1, before
    assert cluster.client.get("persistentvolumeclaims", "held", "default")["status"]["phase"] == "Pending"

    cluster.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "held-pv"},
                   "spec": {"capacity": {"storage": "64Mi"}, "accessModes": ["ReadWriteOnce"],
                            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                            "hostPath": {"path": str(root / "held"), "type": "Directory"},
                            "claimRef": {"namespace": "default", "name": "held"}}})
    cluster.wait_running("waiter")
    seen = wait_until(lambda: (root / "held" / "seen").read_text() or None, "the token the pod read")
    assert seen == next(iter(before.values())), "the pod mounted the token fetched while it waited"
    assert _tokens_of(agent, uid) == before, "its start asked for no other token"
