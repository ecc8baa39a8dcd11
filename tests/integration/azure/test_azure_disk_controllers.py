"""Azure disks through the real controllers (binder, attach/detach) and API server, Azurite as the
account: the Secret reaches the provisioner and the attacher only through the controllers' reader
(CZ5), attach takes the lease (CZ6, A1), a second node's pod is refused (A2), and the claim's
deletion deletes the blob (P1, B10)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from azure.storage.blob import BlobServiceClient

from provisioners.azure_disk import CONTAINER, META_LUN, META_NODE, META_VOLUME
from storage.errors import NotFound

from conftest import DEV_KEY, Azurite
from serverutil import running_server
from support import running_controllers, wait_for

Obj = dict[str, Any]


def _ready_node(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "allocatable": {"attachable-volumes-azure-disk": "8", "cpu": "4", "memory": "8Gi", "pods": "50"}}}


def _pod(name: str, node: str, claim: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "debian:12"}],
                     "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]}}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Any]:
    with running_server(tmp_path) as server, running_controllers(server.store):
        client = server.client()
        try:
            yield server, client
        finally:
            client.close()


def test_claim_pod_attach_refusal_detach_and_delete(cluster: Any, azurite: Azurite) -> None:
    """CZ5, CZ6, A1, A2, P1, B10 through the controllers."""
    server, client = cluster
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    client.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "azure-account", "namespace": "kube-system"},
                   "stringData": {"connectionString": azurite.connection_string}})
    client.create({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "azure"},
                   "provisioner": "disk.csi.azure.com", "reclaimPolicy": "Delete",
                   "parameters": {"kind": "Dedicated", "secretName": "azure-account", "secretNamespace": "kube-system"}})
    client.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "default"},
                   "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "azure",
                            "resources": {"requests": {"storage": "1Gi"}}}})
    claim = wait_for(lambda: (lambda c: c if (c.get("status") or {}).get("phase") == "Bound" else None)(
        client.get("persistentvolumeclaims", "data", "default")), "claim bound", 60)
    pv = client.get("persistentvolumes", claim["spec"]["volumeName"])
    disk = pv["spec"]["azureDisk"]
    assert pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == "disk.csi.azure.com"
    blob = service.get_blob_client(CONTAINER, disk["diskName"])
    assert blob.get_blob_properties().metadata[META_VOLUME] == pv["metadata"]["name"]

    for node in ("n1", "n2"):
        client.create(_ready_node(node))
    client.create(_pod("first", "n1", "data"))

    def attached() -> Obj | None:
        items, _ = client.list("volumeattachments")
        return next((va for va in items if va["spec"]["nodeName"] == "n1" and (va.get("status") or {}).get("attached")), None)

    va = wait_for(attached, "the disk attached to n1", 60)
    assert va["status"]["attachmentMetadata"] == {"lun": "0", "diskURI": disk["diskURI"]}
    props = blob.get_blob_properties()
    assert props.lease.state == "leased" and props.metadata[META_NODE] == "n1" and props.metadata[META_LUN] == "0"

    client.create(_pod("second", "n2", "data"))  # A2: the controller refuses before the backend would

    def multi_attach() -> bool:
        items, _ = client.list("events", "default")
        return any(e["reason"] == "FailedAttachVolume" and "Multi-Attach" in e["message"]
                   and e["involvedObject"]["name"] == "second" for e in items)

    wait_for(multi_attach, "a Multi-Attach event for the second pod", 60)
    assert blob.get_blob_properties().metadata[META_NODE] == "n1"

    for name in ("first", "second"):
        client.delete("pods", name, "default", grace_period_seconds=0)
    wait_for(lambda: blob.get_blob_properties().lease.state != "leased", "the lease released", 60)
    client.delete("persistentvolumeclaims", "data", "default")

    def blob_gone() -> bool:
        return not blob.exists()

    wait_for(blob_gone, "the blob deleted", 60)

    def pv_gone() -> bool:
        try:
            client.get("persistentvolumes", pv["metadata"]["name"])
        except NotFound:
            return True
        return False

    wait_for(pv_gone, "the PV deleted", 60)
    for text in [str(e) for e in client.list("events", "default")[0]]:
        assert DEV_KEY not in text and "AccountKey" not in text
