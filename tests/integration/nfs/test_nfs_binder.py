"""The subdirectory provisioner behind the real controllers on a real store: a claim is provisioned
on the export, Delete archives it, and a Recycle PV is scrubbed over NFS and offered again
(NF1, NF7; B10)."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from provisioners import registry
from provisioners.nfs_subdir import NfsSubdirProvisioner
from support import get_or_none, running_controllers, wait_for

pytestmark = pytest.mark.root
PV, PVC, SC = "persistentvolumes", "persistentvolumeclaims", "storageclasses"


@pytest.fixture
def nfs_provisioner(ganesha) -> Iterator[NfsSubdirProvisioner]:
    provisioner = NfsSubdirProvisioner(netns=ganesha.netns, local_exports={})
    registry.register(provisioner)
    try:
        yield provisioner
    finally:
        registry.unregister(provisioner.name)


@pytest.fixture
def share(ganesha) -> Iterator[Path]:
    import shutil

    root = Path(ganesha.export) / f"b-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def claim(name: str, cls: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": cls}}


def bound_volume(store, name: str) -> dict[str, Any]:
    pvc = wait_for(lambda: (c := get_or_none(store, PVC, "default", name)) and c.get("status", {}).get("phase") == "Bound"
                   and c, f"claim {name} bound", 30)
    return store.get(PV, "", pvc["spec"]["volumeName"])


def test_nf1_nf7_dynamic_claim_then_archive_on_delete(store, nfs_provisioner, ganesha, share: Path) -> None:
    """NF1, NF7: a claim gets a directory on the export with the class's mountOptions on its PV; deleting
    the claim archives the directory (archiveOnDelete defaults to true) and deletes the PV."""
    with running_controllers(store):
        store.create(SC, {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "nfs"},
                          "provisioner": "k8s-sigs.io/nfs-subdir-external-provisioner", "reclaimPolicy": "Delete",
                          "volumeBindingMode": "Immediate", "mountOptions": ["nfsvers=4.1"],
                          "parameters": {"server": ganesha.server, "path": str(share),
                                         "pathPattern": "${.PVC.namespace}/${.PVC.name}"}})
        store.create(PVC, claim("web", "nfs"))
        pv = bound_volume(store, "web")
        assert pv["spec"]["nfs"] == {"server": ganesha.server, "path": f"{share}/default/web"}
        assert pv["spec"]["mountOptions"] == ["nfsvers=4.1"]
        (share / "default" / "web" / "index.html").write_text("hello")
        store.delete(PVC, "default", "web")
        wait_for(lambda: get_or_none(store, PV, "", pv["metadata"]["name"]) is None, "PV deleted", 30)
    assert not (share / "default" / "web").exists()
    assert (share / "default" / "archived-web" / "index.html").read_text() == "hello"


def test_nf7_recycle_static_nfs_pv_through_the_binder(store, nfs_provisioner, ganesha, share: Path) -> None:
    """NF7, B10: a static nfs PV with reclaim policy Recycle is scrubbed over NFS and becomes Available."""
    data = share / "static"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "file").write_text("secret")
    (data / ".dot").write_text("x")
    with running_controllers(store):
        store.create(PV, {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "nfs-rec"},
                          "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                                   "persistentVolumeReclaimPolicy": "Recycle", "storageClassName": "",
                                   "nfs": {"server": ganesha.server, "path": str(data)}}})
        store.create(PVC, claim("c", ""))
        bound_volume(store, "c")
        store.delete(PVC, "default", "c")
        wait_for(lambda: (v := get_or_none(store, PV, "", "nfs-rec")) and v["status"].get("phase") == "Available"
                 and "claimRef" not in v["spec"], "recycled and Available", 30)
    assert data.is_dir() and list(data.iterdir()) == []
