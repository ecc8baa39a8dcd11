"""PF83: the hosts files follow the endpoints on the agent's own hosts thread (real agent, real API server,
runc). A hosts pass that is held up, here by a running pod's worker that cannot be entered, no longer holds
back the sync of a new pod, and the pass still completes once it can."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from agent_cluster import Cluster, pod, wait_until

Obj = dict[str, Any]


def _member(name: str) -> Obj:
    body = pod(name, nodeName="n1")
    body["metadata"]["labels"]["tier"] = "web"
    return body


def _hosts_file(agent: Any, uid: str) -> Path:
    return agent.runtime.pods_dir / uid / "runtime" / "etc-hosts"


def _agent_sees_ready(agent: Any, ip: str) -> bool:
    with agent._lock:
        endpoints = agent._endpoints.get(("default", "web")) or {}
    return any(a.get("ip") == ip for s in endpoints.get("subsets") or [] for a in s.get("addresses") or [])


def test_pf83_a_held_up_hosts_pass_does_not_hold_back_a_new_pod(cluster: Cluster) -> None:
    cluster.start_controllers()
    agent = cluster.add_agent("n1")
    cluster.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                   "spec": {"clusterIP": "None", "selector": {"tier": "web"}, "ports": [{"port": 80}]}},
                  _member("a"))
    a = cluster.wait_running("a", ready=True)
    a_uid, a_ip = a["metadata"]["uid"], a["status"]["podIP"]
    wait_until(lambda: f"{a_ip}\tweb.default.svc.cluster.local" in _hosts_file(agent, a_uid).read_text(),
               "a's own address in its hosts file")

    worker = agent.runtime._pods[a_uid]
    with worker.lock:  # no hosts pass can write a's file while this is held
        cluster.apply(_member("b"))
        b = cluster.wait_running("b", ready=True)
        b_ip = b["status"]["podIP"]
        # The endpoints change is in the agent: a hosts pass is due, and it is stuck at a.
        wait_until(lambda: _agent_sees_ready(agent, b_ip), "the agent seeing b as a ready endpoint")
        # A pod created now is synced and started all the same (on the pod loop the pass held it back).
        cluster.apply(pod("c", nodeName="n1"))
        cluster.wait_running("c", timeout=60)
        assert f"{b_ip}\tweb.default.svc.cluster.local" not in _hosts_file(agent, a_uid).read_text()

    # Released, the pass goes on and a sees b.
    wait_until(lambda: f"{b_ip}\tweb.default.svc.cluster.local" in _hosts_file(agent, a_uid).read_text(),
               "b's address in a's hosts file")
    wait_until(lambda: f"{b_ip}\tweb.default.svc.cluster.local" in _hosts_file(agent, b["metadata"]["uid"]).read_text(),
               "b's own address in its hosts file")
