"""Performance-aware placement through three real node agents: the local provisioner gets a class carrying
performance parameters, the scheduler picks the measured-fast node, and the volume and the pod land there
(SEMANTICS BP6, BP9, BP19)."""
from __future__ import annotations

from agent_cluster import Cluster, claim, condition, local_class, pod, wait_until
from support import wait_for_text

from storage.api.bench_figures import label_node_annotations

FIGURES = {"n1": {"randWriteIOPS": 900, "fsyncLatencyP99Us": 12000},
           "n2": {"randWriteIOPS": 15000, "fsyncLatencyP99Us": 4000},
           "n3": {"randWriteIOPS": 80000, "fsyncLatencyP99Us": 700}}


def test_bp6_bp9_bp19_pod_and_local_volume_land_on_the_measured_fast_node(cluster: Cluster) -> None:
    cluster.start_controllers()
    for name in FIGURES:
        cluster.add_agent(name)
    for name, figures in FIGURES.items():
        wait_until(lambda name=name: condition(cluster.client.get("nodes", name), "Ready") == "True",
                   f"node {name} Ready")
        cluster.client.patch("nodes", name, {"metadata": {"annotations": label_node_annotations(
            "nvme", {**figures, "fioVersion": "fio-3.33"})}})
    nvme = local_class("nvme")
    nvme["parameters"].update(minRandomWriteIOPS="50000", maxFsyncLatencyP99="1ms")
    cluster.apply(nvme, claim("wal", storage_class="nvme"),
                  pod("db", "echo on-fast > /wal/where; trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done",
                      claims={"wal": "/wal"}))
    running = cluster.wait_running("db", timeout=120)
    assert running["spec"]["nodeName"] == "n3"
    wal = cluster.client.get("persistentvolumeclaims", "wal", "default")
    assert wal["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == "n3"
    pv = cluster.client.get("persistentvolumes", wal["spec"]["volumeName"])
    terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert [e["values"] for t in terms for e in t["matchExpressions"]] == [["n3"]]
    assert pv["spec"]["local"]["path"].startswith(str(cluster.pool_dir("n3")))
    uid = running["metadata"]["uid"]
    target = next((cluster.agent_dir("n3") / "pods" / uid / "volumes").glob("*/wal"))
    wait_for_text(target / "where", "on-fast\n", "the container's file on the volume")

    cluster.client.delete("pods", "db", "default")
    cluster.wait_gone("pods", "db", "default")
    cluster.client.delete("persistentvolumeclaims", "wal", "default")
    cluster.wait_gone("persistentvolumes", pv["metadata"]["name"])
