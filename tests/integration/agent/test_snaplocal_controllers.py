"""End to end through the controllers: a VolumeSnapshot of a pool volume in use by a pod, a claim
restored from it (placed on the snapshot's node), and a clone (SEMANTICS LS2, LS6, LS16, LS18, LS19)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from agent_cluster import Cluster, claim, local_class, pod, wait_until

Obj = dict[str, Any]
GROUP = "snapshot.storage.k8s.io"


def global_mount(cluster: Cluster, node: str, pv: str) -> Path:
    return cluster.agents[node].volumes.plugins_dir / "kubernetes.io/local-volume" / "mounts" / pv


def test_snapshot_restore_and_clone_of_a_pool_volume_in_use(cluster: Cluster) -> None:
    for name in ("n1", "n2"):
        cluster.add_agent(name)
    for name in ("n1", "n2"):
        wait_until(lambda n=name: (cluster.store.get("nodes", "", n).get("status") or {}).get("daemonEndpoints"),
                   f"node {name} registered")
    cluster.start_controllers()
    cluster.apply(local_class(), {"apiVersion": f"{GROUP}/v1", "kind": "VolumeSnapshotClass",
                                  "metadata": {"name": "local-snap"}, "driver": "stowage.io/local",
                                  "deletionPolicy": "Delete"})
    writer = "i=0; while true; do echo line $i >> /data/log; i=$((i+1)); sleep 0.01; done"
    cluster.apply(claim("src"), pod("writer", writer, claims={"src": "/data"}))
    cluster.wait_running("writer")
    node = cluster.pod("writer")["spec"]["nodeName"]
    other = "n2" if node == "n1" else "n1"
    src_pv = cluster.client.get("persistentvolumeclaims", "src", "default")["spec"]["volumeName"]
    wait_until(lambda: (global_mount(cluster, node, src_pv) / "log").exists(), "the writer's log")
    cluster.apply({"apiVersion": f"{GROUP}/v1", "kind": "VolumeSnapshot", "metadata": {"name": "s1", "namespace": "default"},
                   "spec": {"volumeSnapshotClassName": "local-snap", "source": {"persistentVolumeClaimName": "src"}}})
    def ready() -> Obj | None:
        v = cluster.client.get("volumesnapshots", "s1", "default")
        return v if (v.get("status") or {}).get("readyToUse") else None

    vs = wait_until(ready, "snapshot ready", 120)
    content = cluster.client.get("volumesnapshotcontents", vs["status"]["boundVolumeSnapshotContentName"])
    assert content["status"]["snapshotHandle"].startswith(f"local:{node}/")

    restored = claim("restored", "128Mi")
    restored["spec"]["dataSource"] = {"apiGroup": GROUP, "kind": "VolumeSnapshot", "name": "s1"}
    cloned = claim("cloned", "64Mi")
    cloned["spec"]["dataSource"] = {"kind": "PersistentVolumeClaim", "name": "src"}
    idle = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"
    cluster.apply(restored, cloned, pod("reader", idle, claims={"restored": "/data"}),
                  pod("cloner", idle, claims={"cloned": "/data"}))
    for name in ("reader", "cloner"):
        cluster.wait_running(name, timeout=120)
        assert cluster.pod(name)["spec"]["nodeName"] == node  # LS18: where the data is, never `other`
    for cname in ("restored", "cloned"):
        pv = cluster.client.get("persistentvolumeclaims", cname, "default")["spec"]["volumeName"]
        lines = (global_mount(cluster, node, pv) / "log").read_text().splitlines()
        # A consistent point in time: whole lines, numbered without a gap, a prefix of the live log.
        assert lines and lines == [f"line {i}" for i in range(len(lines))]
    pool = cluster.agents[node].pool(None)
    assert [s.name for s in pool.list_snapshots()] == [content["metadata"]["name"]]  # the clone's is gone
    assert cluster.agents[other].pool(None).list() == []
