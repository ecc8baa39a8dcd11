"""An EBS volume backed up to object storage and restored into a local volume, through the controllers
(docs/semantics.md LS12, LS21, DS10, BK1): a pod writes on an EBS claim (moto's EC2; the attach harness's real
loop device formatted and mounted by a real agent), a VolumeSnapshot of a `backup.stowage.io` class is read
file by file by the agent of the node where the disk is mounted and sent to each object store (moto's S3, the GCS emulator, Azurite), and a local claim
restored from it holds the file. The EBS-native snapshot path is test_ebs_snapshots.py."""
from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "agent"))

from agent_cluster import Cluster, claim, cluster, local_class, pod, tmp_base, wait_until  # noqa: E402,F401
from attach_harness import SimulatedDisks, ebs_link  # noqa: E402

from provisioners import registry as provisioner_registry  # noqa: E402
from provisioners.aws_ebs import AwsEbsProvisioner  # noqa: E402
from provisioners.backup import BackupSnapshotter  # noqa: E402
from provisioners.local import LocalProvisioner  # noqa: E402

pytestmark = pytest.mark.root

ZONE = "us-east-1a"
GROUP = "snapshot.storage.k8s.io"
IDLE = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"


@pytest.fixture
def backup_cluster(cluster: Cluster, aws: Any) -> Iterator[Cluster]:  # noqa: F811
    ebs = AwsEbsProvisioner(nodes=cluster._node, attach_timeout=30.0, detach_timeout=30.0, max_wait=1.0)
    local = LocalProvisioner(nodes=cluster._node, tls=cluster.agent_client_tls)
    backups = BackupSnapshotter(local, node_lister=lambda: cluster.store.list("nodes")[0])
    provisioner_registry.register(ebs)
    provisioner_registry.register(backups)
    try:
        yield cluster
    finally:
        provisioner_registry.unregister(BackupSnapshotter.name)
        provisioner_registry.unregister(AwsEbsProvisioner.name)


def test_ebs_volume_backed_up_restores_into_a_local_volume(backup_cluster: Cluster, aws: Any,
                                                                 object_store_target: Any) -> None:
    cluster = backup_cluster  # noqa: F811
    cluster.start_controllers()
    instance = aws.instance_of("node-a")
    cluster.add_agent("n1", zone=ZONE, provider_id=f"aws:///{ZONE}/{instance}",
                      dev_disk_dir=cluster.base / "dev-disk-n1")
    store_url, credentials = object_store_target
    with SimulatedDisks(cluster.client, node="n1", dev_disk=cluster.base / "dev-disk-n1",
                        backing=cluster.base / "ebs-backing", link_for=ebs_link) as disks:
        ebs_class = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "ebs"},
                     "provisioner": "ebs.csi.aws.com", "volumeBindingMode": "WaitForFirstConsumer",
                     "reclaimPolicy": "Delete", "parameters": {"type": "gp3", "csi.storage.k8s.io/fstype": "ext4"}}
        cluster.apply(ebs_class, local_class(), claim("data", "1Gi", "ebs"),
                      pod("writer", f"echo from-ebs > /data/f && mkdir -p /data/d && echo deep > /data/d/g && sync; {IDLE}",
                          claims={"data": "/data"}))
        cluster.wait_running("writer", timeout=120)
        wait_until(lambda: disks.devices, "the EBS disk attached", 60)
        cluster.apply(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3", "namespace": "default"},
             "data": {k: base64.b64encode(v.encode()).decode() for k, v in credentials.items()}},
            {"apiVersion": f"{GROUP}/v1", "kind": "VolumeSnapshotClass", "metadata": {"name": "to-s3"},
             "driver": "backup.stowage.io", "deletionPolicy": "Delete",
             "parameters": {"store": store_url, "csi.storage.k8s.io/snapshotter-secret-name": "s3",
                            "csi.storage.k8s.io/snapshotter-secret-namespace": "default"}},
            {"apiVersion": f"{GROUP}/v1", "kind": "VolumeSnapshot", "metadata": {"name": "ebs-backup", "namespace": "default"},
             "spec": {"volumeSnapshotClassName": "to-s3", "source": {"persistentVolumeClaimName": "data"}}})

        def ready() -> Any:
            vs = cluster.client.get("volumesnapshots", "ebs-backup", "default")
            return vs if (vs.get("status") or {}).get("readyToUse") else None

        vs = wait_until(ready, "the EBS volume's backup ready", 180)
        content = cluster.client.get("volumesnapshotcontents", vs["status"]["boundVolumeSnapshotContentName"])
        assert content["status"]["snapshotHandle"].startswith(store_url.split("?")[0])

        restored = claim("restored", "256Mi")
        restored["spec"]["dataSource"] = {"apiGroup": GROUP, "kind": "VolumeSnapshot", "name": "ebs-backup"}
        cluster.apply(restored, pod("reader", "grep -qx from-ebs /data/f && grep -qx deep /data/d/g",
                                    claims={"restored": "/data"}, restartPolicy="Never"))
        done = cluster.wait_pod("reader", lambda p: p["status"].get("phase") in ("Succeeded", "Failed"),
                                "finished", 180)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        pv = cluster.client.get("persistentvolumes",
                                cluster.client.get("persistentvolumeclaims", "restored", "default")["spec"]["volumeName"])
        assert "local" in pv["spec"]  # the data moved from an EBS disk into a pool volume

        for name in ("reader", "writer"):
            cluster.client.delete("pods", name, "default")
            cluster.wait_gone("pods", name)
        cluster.client.delete("volumesnapshots", "ebs-backup", "default")
        for name in ("restored", "data"):
            cluster.client.delete("persistentvolumeclaims", name, "default")
        wait_until(lambda: not cluster.client.list("persistentvolumes")[0], "every volume deleted", 120)
        wait_until(lambda: not cluster.client.list("volumesnapshotcontents")[0], "the content and backup deleted", 120)
        assert aws.cluster_volumes() == []
        assert not disks.errors
