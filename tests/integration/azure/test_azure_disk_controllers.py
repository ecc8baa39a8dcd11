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

from azurite_service import DEV_KEY, Azurite
from serverutil import running_server
from support import get_or_none, running_controllers, wait_for

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


_CRASHING_CONTROLLERS = """
import sys, threading
from storage.controllers.manager import run_controllers
from storage.store import open_store
store = open_store(sys.argv[1])
run_controllers(store, threading.Event())  # killed at the fault point
"""


def test_controller_killed_between_blob_and_pv_save_makes_one_blob(tmp_path: Path, azurite: Azurite) -> None:
    """P2, CZ3: the controller process is SIGKILLed after the backend made the blob and before the PV
    is saved; controllers started again provision the claim with the same blob (one blob, bound claim)."""
    import os
    import subprocess
    import sys

    from storage.store import open_store

    db = str(tmp_path / "store.db")
    store = open_store(db)
    try:
        store.create("secrets", {"apiVersion": "v1", "kind": "Secret",
                                 "metadata": {"name": "azure-account", "namespace": "kube-system"},
                                 "type": "Opaque", "data": {"connectionString": __import__("base64").b64encode(
                                     azurite.connection_string.encode()).decode()}})
        store.create("storageclasses", {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                                        "metadata": {"name": "azure"}, "provisioner": "kubernetes.io/azure-disk",
                                        "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
                                        "parameters": {"secretName": "azure-account", "secretNamespace": "kube-system"}})
        claim = store.create("persistentvolumeclaims", {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "azure", "volumeMode": "Filesystem",
                     "resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Pending"}})
    finally:
        store.close()
    pv_name = f"pvc-{claim['metadata']['uid']}"
    env = {**os.environ, "STOWAGE_FAULT_KILL_AT": "provision:after-backend",
           "PYTHONPATH": os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parents[3])}
    done = subprocess.run([sys.executable, "-c", _CRASHING_CONTROLLERS, db], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == -9, done.stderr[-2000:]
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.get_container_client(CONTAINER)

    def blobs() -> list[str]:
        return [b.name for b in container.list_blobs(include=["metadata"]) if (b.metadata or {}).get(META_VOLUME) == pv_name]

    assert blobs() == [f"{pv_name}.vhd"]
    store = open_store(db)
    try:
        assert get_or_none(store, "persistentvolumes", "", pv_name) is None  # the crash came before the save
        with running_controllers(store):
            wait_for(lambda: (get_or_none(store, "persistentvolumeclaims", "default", "data") or {})
                     .get("status", {}).get("phase") == "Bound", "the claim bound after the restart", 60)
            assert blobs() == [f"{pv_name}.vhd"]
            store.delete("persistentvolumeclaims", "default", "data")
            wait_for(lambda: not blobs(), "the blob deleted with the claim", 60)
    finally:
        store.close()
