"""The scheduler places a claim restored from a pool snapshot (or cloned from a pool volume) on the node
that holds the data (SEMANTICS LS18)."""
from __future__ import annotations

from typing import Any

from storage.controllers.scheduler import R_VOLUME_AFFINITY, Snapshot, place

Obj = dict[str, Any]
GiB = 2**30


def node(name: str) -> Obj:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "allocatable": {"pods": "110"},
                       "storagePools": [{"name": "default", "path": f"/pools/{name}", "totalBytes": 4 * GiB}]}}


def claim(name: str) -> Obj:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"storageClassName": "local", "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}},
                     "dataSource": {"kind": "VolumeSnapshot", "apiGroup": "snapshot.storage.k8s.io", "name": "s"}}}


def pod(claim_name: str) -> Obj:
    return {"metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "x"}],
                     "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim_name}}]},
            "status": {"phase": "Pending"}}


CLASSES = {"local": {"metadata": {"name": "local"}, "provisioner": "stowage.io/local",
                     "volumeBindingMode": "WaitForFirstConsumer"}}


def test_ls18_restored_claim_goes_to_the_snapshots_node() -> None:
    nodes = [node("n1"), node("n2"), node("n3")]
    claims = {("default", "restored"): claim("restored")}
    for data_node in ("n1", "n2", "n3"):
        snap = Snapshot(nodes, [], claims, {}, CLASSES, source_nodes={("default", "restored"): data_node})
        out = place(pod("restored"), snap)
        assert out.node == data_node and out.select_claims == [("default", "restored")]
    # Without a known source node (the snapshot not cut yet), any node: the provisioner reschedules.
    assert place(pod("restored"), Snapshot(nodes, [], claims, {}, CLASSES)).node in ("n1", "n2", "n3")


def test_ls18_the_data_node_not_available_leaves_the_pod_pending_with_the_reason() -> None:
    nodes = [node("n1"), {**node("n2"), "status": {**node("n2")["status"],
                                                   "conditions": [{"type": "Ready", "status": "False"}]}}]
    claims = {("default", "restored"): claim("restored")}
    out = place(pod("restored"), Snapshot(nodes, [], claims, {}, CLASSES, source_nodes={("default", "restored"): "n2"}))
    assert out.node is None
    assert R_VOLUME_AFFINITY in out.message and "node(s) were not ready" in out.message
