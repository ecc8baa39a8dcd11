"""PF72: a pod waiting for its claim gets its projected service-account token meanwhile (real agent, real API
server, runc), and its start once the claim binds reuses that token instead of asking for another.
PF94: a new pod's token is asked for while the agent writes its finalizer, not after."""
from __future__ import annotations

import threading

from agent_cluster import Cluster, claim, pod, wait_until
from storage.agent.agent import AGENT_FINALIZER
from storage.errors import NotFound


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


def test_pf94_a_new_pods_token_is_asked_for_while_its_finalizer_is_written(cluster: Cluster) -> None:
    cluster.start_controllers()
    agent = cluster.add_agent("n1")
    asked = threading.Event()
    overlapped: list[bool] = []
    real_request, real_update = agent.sa_tokens._request, agent.client.update

    def request(p: dict, *args: object) -> object:
        if p["metadata"]["name"] == "quick":
            asked.set()
        return real_request(p, *args)

    def update(obj: dict, *args: object, **kwargs: object) -> dict:
        meta = obj.get("metadata") or {}
        if meta.get("name") == "quick" and AGENT_FINALIZER in (meta.get("finalizers") or []) \
                and not meta.get("deletionTimestamp") and not overlapped:
            # The finalizer write is held until the token is asked for: one after the other, never.
            overlapped.append(asked.wait(10))
        return real_update(obj, *args, **kwargs)

    agent.sa_tokens._request = request  # type: ignore[method-assign]
    agent.client.update = update  # type: ignore[method-assign]
    cluster.apply(pod("quick", "cat /var/run/secrets/kubernetes.io/serviceaccount/token; "
                               "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"))
    uid = cluster.wait_running("quick")["metadata"]["uid"]
    assert overlapped == [True]
    assert len(_tokens_of(agent, uid)) == 1, "the start reused the token asked for beside the finalizer write"


def test_pf94_a_pod_gone_before_its_finalizer_gives_back_what_was_prepared_for_it(cluster: Cluster) -> None:
    """What a first sync prepares beside the finalizer write (the pod's user namespace and id range) goes back
    when the pod is gone before the write (force-deleted, or replaced under its name): nothing stays held."""
    cluster.start_controllers()
    agent = cluster.add_agent("n1")
    assert agent.runtime is not None
    if agent.runtime.userns is None:
        import pytest
        pytest.skip("user namespaces are off in this agent's runtime")
    real_update = agent.client.update
    seen: list[str] = []

    def update(obj: dict, *args: object, **kwargs: object) -> dict:
        meta = obj.get("metadata") or {}
        if meta.get("name") == "ghost" and AGENT_FINALIZER in (meta.get("finalizers") or []):
            seen.append(meta["uid"])
            # The pod is force-deleted right before the agent's finalizer write reaches the server.
            cluster.client.delete("pods", "ghost", "default", grace_period_seconds=0)
            raise NotFound('pods "ghost" not found')
        return real_update(obj, *args, **kwargs)

    agent.client.update = update  # type: ignore[method-assign]
    cluster.apply(pod("ghost", "sleep 1000"))
    uid = wait_until(lambda: seen[0] if seen else None, "the agent's finalizer write")
    cluster.wait_gone("pods", "ghost", "default")
    wait_until(lambda: uid not in agent.runtime.prepared_pods() and agent.runtime.userns.get(uid) is None,
               "the prepared namespace and range given back")
    assert uid not in agent.runtime.running_pods()
