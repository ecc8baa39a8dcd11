"""The scheduler sends pods whose claims restore a pool snapshot to the snapshot's node (SEMANTICS LS18),
resolving VolumeSnapshot -> bound content -> handle from the store."""
from __future__ import annotations

from typing import Any

from agent_cluster import Cluster, claim, local_class, pod, wait_until

Obj = dict[str, Any]


def test_ls18_pods_restoring_a_pool_snapshot_all_land_on_its_node(cluster: Cluster) -> None:
    for name in ("n1", "n2"):
        cluster.add_agent(name)
    for name in ("n1", "n2"):
        wait_until(lambda n=name: (cluster.store.get("nodes", "", n).get("status") or {}).get("daemonEndpoints"),
                   f"node {name} registered")
    cluster.start_controllers()
    cluster.apply(local_class())
    content = cluster.store.create("volumesnapshotcontents", {
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
        "metadata": {"name": "snapcontent-pinned"},
        "spec": {"driver": "stowage.io/local", "deletionPolicy": "Retain",
                 "source": {"snapshotHandle": "local:n2/snapcontent-pinned"},
                 "volumeSnapshotRef": {"name": "pinned", "namespace": "default"}},
        "status": {"snapshotHandle": "local:n2/snapcontent-pinned", "readyToUse": True, "restoreSize": 2**26}})
    assert content["status"]["snapshotHandle"]
    cluster.store.create("volumesnapshots", {
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "pinned", "namespace": "default"},
        "spec": {"source": {"volumeSnapshotContentName": "snapcontent-pinned"}},
        "status": {"boundVolumeSnapshotContentName": "snapcontent-pinned", "readyToUse": True}})
    names = ["r1", "r2", "r3"]
    for name in names:
        c = claim(f"data-{name}")
        c["spec"]["dataSource"] = {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "pinned"}
        cluster.apply(c, pod(name, claims={f"data-{name}": "/data"}))
    for name in names:
        placed = wait_until(lambda n=name: (cluster.pod(n).get("spec") or {}).get("nodeName"), f"pod {name} placed")
        # Without LS18 the scheduler spreads three pods over two nodes; with it all go where the data is.
        assert placed == "n2"
        selected = cluster.client.get("persistentvolumeclaims", f"data-{name}", "default")
        assert selected["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == "n2"
