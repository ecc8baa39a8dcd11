"""A namespace deleted with a running pod and a claim (reclaim Delete) on a real agent (SEMANTICS N3); node
heartbeats as Leases and NotReady from a stale Lease; the Node's real CPU and memory figures."""
from __future__ import annotations

import copy
import os
from datetime import timedelta

import psutil

from agent_cluster import GiB, Cluster, claim, condition, local_class, pod, wait_until
from storage.agent.node_lease import renew_lease
from storage.api.quantity import parse_quantity
from storage.api.timestamps import parse_time
from storage.controllers.base import ControllerOptions
from storage.errors import NotFound
from storage.system import loop


def in_namespace(obj: dict, namespace: str) -> dict:
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    return obj


def test_deleting_a_namespace_stops_its_pod_gracefully_and_reclaims_its_volume(cluster: Cluster) -> None:
    cluster.start_controllers()
    out = cluster.base / "host-out"
    out.mkdir()
    out.chmod(0o777)  # whatever user the container's root maps to may write here
    cluster.add_agent("n1", host_path_prefixes=(str(out),))
    # The pod reports through a hostPath, which Pod Security's baseline refuses: the namespace allows it.
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "team", "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}, local_class())
    script = "trap 'echo bye > /out/stopped; exit 0' TERM; while true; do sleep 1 & wait $!; done"
    app = pod("app", script, claims={"data": "/data"},
              volumes=[{"name": "out", "hostPath": {"path": str(out), "type": "Directory"}}],
              mounts_=[{"name": "out", "mountPath": "/out"}])
    cluster.apply(in_namespace(claim("data"), "team"), in_namespace(app, "team"))
    cluster.wait_pod("app", lambda p: (p.get("status") or {}).get("phase") == "Running", "Running", namespace="team")
    volume = cluster.client.get("persistentvolumeclaims", "data", "team")["spec"]["volumeName"]
    assert loop.loops_under(cluster.pool_dir("n1")), "the claim's volume lives in the pool"

    deleted = cluster.client.delete("namespaces", "team")
    assert deleted["status"]["phase"] == "Terminating"
    cluster.wait_gone("namespaces", "team", timeout=120)
    for resource in ("pods", "persistentvolumeclaims", "events"):
        assert cluster.client.list(resource, "team")[0] == []
    # The pod was stopped, not killed: SIGTERM ran its trap within the grace period.
    assert (out / "stopped").read_text() == "bye\n"
    # Reclaim policy Delete: the volume object and its backing storage are gone too.
    wait_until(lambda: _gone(cluster, volume), "the released volume to be deleted", timeout=120)
    wait_until(lambda: not loop.loops_under(cluster.pool_dir("n1")), "the pool's loop device to be released")
    # Objects elsewhere are untouched, and the name can be used again.
    assert cluster.client.get("namespaces", "default")["status"]["phase"] == "Active"
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})


def _gone(cluster: Cluster, volume: str) -> bool:
    try:
        cluster.client.get("persistentvolumes", volume)
    except NotFound:
        return True
    return False


def test_agent_renews_its_lease_and_a_stale_lease_makes_the_node_not_ready(
        cluster: Cluster) -> None:
    cluster.start_controllers(ControllerOptions(node_monitor_grace_period=4.0))
    cluster.add_agent("n1", pool_bytes=GiB)
    lease = wait_until(lambda: _lease(cluster, "n1"), "the node's Lease")
    assert lease["apiVersion"] == "coordination.k8s.io/v1" and lease["kind"] == "Lease"
    assert lease["spec"]["holderIdentity"] == "n1" and lease["spec"]["leaseDurationSeconds"] == 40
    node = cluster.client.get("nodes", "n1")
    assert lease["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]
    first = lease["spec"]["renewTime"]
    wait_until(lambda: (_lease(cluster, "n1") or {}).get("spec", {}).get("renewTime") != first, "a renewal")
    assert condition(cluster.client.get("nodes", "n1"), "Ready") == "True"

    # The Lease alone keeps a node Ready: with an ancient Ready heartbeat but a fresh Lease, the node
    # goes NotReady only once that Lease is older than the grace period.
    cluster.stop_agent("n1")
    stale = cluster.client.get("nodes", "n1")
    for cond in stale["status"]["conditions"]:
        if cond["type"] == "Ready":
            cond["lastHeartbeatTime"] = "2020-01-01T00:00:00Z"
    renewed = renew_lease(cluster.client, None, "n1")
    assert renewed is not None
    cluster.client.update_status(stale)
    wait_until(lambda: condition(cluster.client.get("nodes", "n1"), "Ready") == "Unknown", "Ready=Unknown",
               timeout=60)
    ready = next(c for c in cluster.client.get("nodes", "n1")["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "NodeStatusUnknown"
    went = parse_time(ready["lastTransitionTime"])
    renew_time = parse_time(renewed["spec"]["renewTime"])
    assert went is not None and renew_time is not None
    # Second-precision transition time: allow the truncation, nothing more.
    assert went >= renew_time + timedelta(seconds=4.0 - 1)


def _lease(cluster: Cluster, name: str) -> dict | None:
    try:
        return cluster.client.get("leases", name, "kube-node-lease")
    except NotFound:
        return None


def test_node_reports_real_cpu_and_memory(cluster: Cluster) -> None:
    cluster.add_agent("n1", pool_bytes=GiB)
    status = cluster.client.get("nodes", "n1")["status"]
    capacity, allocatable = status["capacity"], status["allocatable"]
    assert parse_quantity(capacity["cpu"]) == len(os.sched_getaffinity(0))
    memory = parse_quantity(capacity["memory"])
    assert 0 < memory <= psutil.virtual_memory().total
    assert memory > psutil.virtual_memory().total // 2  # the host's RAM, not a placeholder
    # What kubectl describe divides by: present, positive and below capacity.
    assert 0 < parse_quantity(allocatable["memory"]) < memory
    assert parse_quantity(allocatable["cpu"]) == parse_quantity(capacity["cpu"])
    assert parse_quantity(capacity["ephemeral-storage"]) > 0 and parse_quantity(allocatable["ephemeral-storage"]) > 0
