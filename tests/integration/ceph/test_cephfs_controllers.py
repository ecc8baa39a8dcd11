"""The CephFS provisioner under the real controllers: a controller process SIGKILLed between "subvolume
created" and "PV saved" heals with one subvolume (CF4, P2, P5)."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from cephfs_testutil import auth_users, cephfs_clean, subvolumes  # noqa: F401  (fixture)
from ceph_service import CephCluster
from storage.api import ceph
from support import get_or_none, running_controllers, wait_for

_CRASHING_CONTROLLERS = """
import sys, threading
from storage.controllers.manager import run_controllers
from storage.store import open_store
store = open_store(sys.argv[1])
run_controllers(store, threading.Event())  # killed at the fault point
"""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_controller_killed_between_subvolume_and_pv_save_heals_with_one_subvolume(
        tmp_path: Path, ceph_cluster: CephCluster, cephfs_clean) -> None:
    """CF4, P2: the controllers are SIGKILLed after the subvolume and user were made and before the PV
    was saved; restarted, they bind the claim to a PV of the same subvolume (one subvolume, one user,
    the user's Secret created), and deleting the claim removes all three."""
    from storage.store import open_store

    db = str(tmp_path / "store.db")
    store = open_store(db)
    namespace, name = ceph.csi_config_location()
    try:
        store.create("secrets", {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                 "metadata": {"name": "csi-cephfs-secret", "namespace": "kube-system"},
                                 "data": {"adminID": _b64("admin"), "adminKey": _b64(ceph_cluster.admin_key)}})
        store.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
                                    "data": {"config.json": json.dumps([{"clusterID": "c1",
                                                                         "monitors": [ceph_cluster.monitors]}])}})
        store.create("storageclasses", {
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "cephfs"},
            "provisioner": "cephfs.csi.ceph.com", "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
            "parameters": {"clusterID": "c1", "csi.storage.k8s.io/provisioner-secret-name": "csi-cephfs-secret",
                           "csi.storage.k8s.io/provisioner-secret-namespace": "kube-system"}})
        claim = store.create("persistentvolumeclaims", {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "cephfs", "volumeMode": "Filesystem",
                     "resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Pending"}})
    finally:
        store.close()
    pv_name = f"pvc-{claim['metadata']['uid']}"
    env = {**os.environ, "STOWAGE_FAULT_KILL_AT": "provision:after-backend", "PYTHONFAULTHANDLER": "1",
           "PYTHONPATH": os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parents[3])}
    done = subprocess.run([sys.executable, "-c", _CRASHING_CONTROLLERS, db], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == -9, done.stderr[done.stderr.find("Current thread"):][:3000]
    assert subvolumes(ceph_cluster, "csi").count(pv_name) == 1
    assert f"client.{pv_name}" in auth_users(ceph_cluster)
    store = open_store(db)
    try:
        assert get_or_none(store, "persistentvolumes", "", pv_name) is None  # the crash came before the save
        with running_controllers(store):
            wait_for(lambda: (get_or_none(store, "persistentvolumeclaims", "default", "data") or {})
                     .get("status", {}).get("phase") == "Bound", "the claim bound after the restart", 60)
            assert subvolumes(ceph_cluster, "csi").count(pv_name) == 1
            secret = get_or_none(store, "secrets", "default", f"{pv_name}-cephfs-user")
            assert secret is not None
            assert base64.b64decode(secret["data"]["key"]).decode() == \
                ceph_cluster.ceph("auth", "get-key", f"client.{pv_name}").strip()
            store.delete("persistentvolumeclaims", "default", "data")
            wait_for(lambda: pv_name not in subvolumes(ceph_cluster, "csi"), "the subvolume deleted with the claim", 60)
            wait_for(lambda: get_or_none(store, "secrets", "default", f"{pv_name}-cephfs-user") is None,
                     "the user's Secret deleted", 60)
            assert f"client.{pv_name}" not in auth_users(ceph_cluster)
    finally:
        store.close()
