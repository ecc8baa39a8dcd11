"""End to end: a pod on a claim of a kubernetes.io/azure-disk class (kind Dedicated), Azurite as the
storage account, a real node agent, and the disk appearing on the node as a loop device behind
azure/scsi1/lun<N> (CZ1-CZ8, A1-A3, P1, B10)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))

from agent_cluster import Cluster, cluster, claim, pod, tmp_base, wait_until  # noqa: E402,F401  (fixtures)
from azurite_service import Azurite  # noqa: E402
from provisioners.azure_disk import CONTAINER, META_LUN, META_NODE  # noqa: E402
from storage.errors import NotFound  # noqa: E402
from storage.system import mounts  # noqa: E402
from support import wait_for_text  # noqa: E402

pytestmark = pytest.mark.root

harness = pytest.importorskip("attach_harness", reason="tests/attach_harness.py (the simulated cloud disks) is not here")
SimulatedDisks, azure_link = harness.SimulatedDisks, harness.azure_link


def _agent_passes_attachment_metadata() -> bool:
    """The Azure device is found by the LUN the attacher chose: the agent must hand the VolumeAttachment's
    metadata to the plugin (VolumeManager's ``attachment_of``, from the attach/detach work)."""
    import inspect

    from storage.agent.volume_manager import VolumeManager

    return "attachment_of" in inspect.signature(VolumeManager.__init__).parameters


def _azure_objects(connection_string: str) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "azure-account", "namespace": "kube-system"},
         "stringData": {"connectionString": connection_string}},
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "azure-disk"},
         "provisioner": "kubernetes.io/azure-disk", "reclaimPolicy": "Delete",
         "volumeBindingMode": "WaitForFirstConsumer",
         "parameters": {"kind": "Dedicated", "cachingMode": "ReadOnly", "fsType": "ext4",
                        "secretName": "azure-account", "secretNamespace": "kube-system"}},
    ]


def test_pod_on_an_azure_disk_writes_data_detaches_and_the_blob_goes_with_the_claim(
        cluster: Cluster, azurite: Azurite) -> None:
    """A pod's claim is provisioned as a VHD page blob, attached under n1's lease at LUN 0, formatted and
    mounted for real, and written; deleting the pod unmounts, detaches and releases the lease; a pod on n2
    then gets the disk under n2's lease and reads the data; deleting the claim deletes the blob."""
    if not _agent_passes_attachment_metadata():
        pytest.skip("this agent does not pass attachment metadata (the LUN) to volume plugins yet")
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    cluster.start_controllers()
    dev_disk = {node: cluster.base / f"dev-disk-{node}" for node in ("n1", "n2")}
    backing = cluster.base / "disks"  # one cloud: the same backing file follows the disk between nodes
    with SimulatedDisks(cluster.client, node="n1", dev_disk=dev_disk["n1"], backing=backing, link_for=azure_link) as n1, \
            SimulatedDisks(cluster.client, node="n2", dev_disk=dev_disk["n2"], backing=backing, link_for=azure_link) as n2:
        for node in ("n1", "n2"):
            cluster.add_agent(node, dev_disk_dir=dev_disk[node])
        cluster.apply(*_azure_objects(azurite.connection_string), claim("data", "1Gi", "azure-disk"))
        cluster.apply(pod("writer", "echo hello-azure > /data/greeting && sync && "
                                    "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done",
                          claims={"data": "/data"}, nodeSelector={"kubernetes.io/hostname": "n1"}))
        writer = cluster.wait_running("writer", timeout=120)
        pvc = cluster.client.get("persistentvolumeclaims", "data", "default")
        pv = cluster.client.get("persistentvolumes", pvc["spec"]["volumeName"])
        pv_name = pv["metadata"]["name"]
        spec = pv["spec"]["azureDisk"]
        assert spec["kind"] == "Dedicated" and spec["cachingMode"] == "ReadOnly"
        assert pv["spec"]["capacity"]["storage"] == "1Gi"
        blob = service.get_blob_client(CONTAINER, spec["diskName"])
        props = blob.get_blob_properties()
        assert props.lease.state == "leased" and props.metadata[META_NODE] == "n1" and props.metadata[META_LUN] == "0"
        device = n1.devices[pv_name]
        assert (dev_disk["n1"] / "azure/scsi1/lun0").resolve() == Path(device).resolve()
        assert any(e.source == device and e.fstype == "ext4" for e in mounts.read_mountinfo())
        volume_dir = next((cluster.agent_dir("n1") / "pods" / writer["metadata"]["uid"] / "volumes").glob("*/data"))
        wait_for_text(volume_dir / "greeting", "hello-azure\n", "the pod's file on the disk")

        cluster.client.delete("pods", "writer", "default")
        cluster.wait_gone("pods", "writer", "default")
        wait_until(lambda: blob.get_blob_properties().lease.state != "leased", "the lease released", 90)
        wait_until(lambda: pv_name not in n1.devices, "the disk gone from n1", 90)
        assert not any(e.source == device for e in mounts.read_mountinfo())

        # On the other node, under that node's lease: the data came along.
        cluster.apply(pod("reader", "grep -q hello-azure /data/greeting || exit 1; "
                                    "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done",
                          claims={"data": "/data"}, nodeSelector={"kubernetes.io/hostname": "n2"}))
        reader = cluster.wait_running("reader", timeout=120)
        assert reader["spec"]["nodeName"] == "n2" and pv_name in n2.devices
        props = blob.get_blob_properties()
        assert props.lease.state == "leased" and props.metadata[META_NODE] == "n2" and props.metadata[META_LUN] == "0"
        cluster.client.delete("pods", "reader", "default")
        cluster.wait_gone("pods", "reader", "default")
        wait_until(lambda: blob.get_blob_properties().lease.state != "leased", "the lease released by n2", 90)

        cluster.client.delete("persistentvolumeclaims", "data", "default")
        wait_until(lambda: not blob.exists(), "the blob deleted with the claim", 90)

        def pv_gone() -> bool:
            try:
                cluster.client.get("persistentvolumes", pv_name)
            except NotFound:
                return True
            return False

        wait_until(pv_gone, "the PV deleted", 60)
