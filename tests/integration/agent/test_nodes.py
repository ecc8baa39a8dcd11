"""Node registration, heartbeats, NotReady, and two agents on one machine (B8)."""
from __future__ import annotations

import os
from pathlib import Path

from agent_cluster import GiB, Cluster, claim, condition, local_class, pod, wait_until
from storage.controllers.base import ControllerOptions
from storage.system import loop


def test_node_registers_labels_pools_endpoint_and_goes_unknown_without_heartbeats(
        cluster: Cluster) -> None:
    cluster.start_controllers(ControllerOptions(node_monitor_grace_period=3.0))
    agent = cluster.add_agent("n1", zone="zone-a", pool_bytes=2 * GiB, labels={"disk": "ssd"})
    node = cluster.client.get("nodes", "n1")
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == "n1"
    assert labels["topology.kubernetes.io/zone"] == "zone-a"
    assert labels["disk"] == "ssd"
    # N7: the kubelet's well-known labels and machine facts, with Go's architecture name.
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    assert (labels["kubernetes.io/arch"], labels["kubernetes.io/os"]) == (arch, "linux")
    assert (labels["beta.kubernetes.io/arch"], labels["beta.kubernetes.io/os"]) == (arch, "linux")
    info = node["status"]["nodeInfo"]
    assert info["architecture"] == arch and info["kernelVersion"] == os.uname().release
    assert info["bootID"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert info["osImage"] and info["osImage"] != "Linux"
    assert info["containerRuntimeVersion"].startswith("runc://") and info["containerRuntimeVersion"] != "runc://unknown"
    pools = node["status"]["storagePools"]
    assert [p["name"] for p in pools] == ["default"]
    assert pools[0]["totalBytes"] == 2 * GiB and pools[0]["freeBytes"] == 2 * GiB
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == agent.port
    assert condition(node, "Ready") == "True"
    # The Lease's renewals keep it Ready past the grace period (3 s): an unchanged Node status is not
    # written again at each beat (L17), only the Lease.
    def renewed() -> str:
        return cluster.client.get("leases", "n1", "kube-node-lease")["spec"]["renewTime"]
    written = cluster.client.get("nodes", "n1")["metadata"]["resourceVersion"]
    renewals = {renewed()}
    wait_until(lambda: renewals.add(renewed()) or len(renewals) >= 5, "four Lease renewals", timeout=30)
    node = cluster.client.get("nodes", "n1")
    assert condition(node, "Ready") == "True"
    assert node["metadata"]["resourceVersion"] == written, "the unchanged status was written again"

    cluster.stop_agent("n1")
    wait_until(lambda: condition(cluster.client.get("nodes", "n1"), "Ready") == "Unknown", "Ready=Unknown", timeout=60)
    cluster.apply(pod("late"))
    cluster.wait_pod("late", lambda p: condition(p, "PodScheduled") == "False", "Unschedulable")
    late = cluster.pod("late")
    assert "spec" not in late or not late["spec"].get("nodeName")
    message = next(c for c in late["status"]["conditions"] if c["type"] == "PodScheduled")["message"]
    assert message == ("0/1 nodes are available: 1 node(s) were not ready. "
                       "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.")  # SC2


def test_b8_two_agents_spread_pods_and_local_volume_brings_pod_back_to_its_node(cluster: Cluster) -> None:
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.add_agent("n2")
    # Both nodes Ready first: a pod scheduled while n2 is still registering can only go to n1.
    for name in ("n1", "n2"):
        wait_until(lambda n=name: condition(cluster.client.get("nodes", n), "Ready") == "True", f"node {name} Ready")
    cluster.apply(local_class(), claim("d0"), claim("d1"))
    cluster.apply(pod("p0", claims={"d0": "/data"}), pod("p1", claims={"d1": "/data"}))
    nodes = {cluster.wait_running(n)["spec"]["nodeName"] for n in ("p0", "p1")}
    assert nodes == {"n1", "n2"}
    c0 = cluster.client.get("persistentvolumeclaims", "d0", "default")
    home = cluster.pod("p0")["spec"]["nodeName"]
    assert c0["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == home
    assert loop.loops_under(cluster.pool_dir(home)), "the volume lives in its node's pool"
    # Its file survives a delete and re-create, which must land on the same node (volume node affinity).
    uid = cluster.pod("p0")["metadata"]["uid"]
    data = next((cluster.agent_dir(home) / "pods" / uid / "volumes").glob("*/d0"))
    (data / "keep").write_text("kept")
    cluster.client.delete("pods", "p0", "default")
    cluster.wait_gone("pods", "p0", "default")
    # Two pods pinned to the home node make the other node the emptier one, so spreading alone
    # would move p0 away: only the volume's node affinity brings it home.
    cluster.apply(pod("filler-a", nodeName=home), pod("filler-b", nodeName=home))
    cluster.wait_running("filler-a")
    cluster.wait_running("filler-b")
    cluster.apply(pod("p0", "test -e /data/keep && echo found > /data/again; trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done",
                      claims={"d0": "/data"}))
    again = cluster.wait_running("p0")
    assert again["spec"]["nodeName"] == home
    data = next((cluster.agent_dir(home) / "pods" / again["metadata"]["uid"] / "volumes").glob("*/d0"))
    wait_until(lambda: (data / "again").exists(), "the re-created pod to find the old file")


def test_cs11_every_node_has_its_csinode_owned_by_the_node_even_without_drivers(cluster: Cluster) -> None:
    """As the kubelet makes it: ``kubectl get csinodes`` lists every node, with its drivers or none."""
    cluster.add_agent("plain")
    csinode = wait_until(lambda: next((c for c in cluster.client.list("csinodes")[0]
                                       if c["metadata"]["name"] == "plain"), None), "the node's CSINode")
    assert (csinode.get("spec") or {}).get("drivers") == []
    node = cluster.client.get("nodes", "plain")
    assert [(o["kind"], o["name"], o["uid"]) for o in csinode["metadata"]["ownerReferences"]] == [
        ("Node", "plain", node["metadata"]["uid"])]
