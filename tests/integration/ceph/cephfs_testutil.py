"""What the CephFS tests share: in-memory Secrets and ConfigMaps for the provisioner, ceph-fuse mounts
that are always unmounted, and a sweep that removes every subvolume and Ceph user a test left."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from ceph_service import CephCluster
from provisioners.cephfs import CephfsProvisioner
from storage.api import ceph

# The groups the tests provision into (ceph-csi's default, external-storage's default, a ConfigMap's).
TEST_GROUPS = ("csi", "kubernetes", "cmgroup")


@dataclass
class Objects:
    """Secrets and ConfigMaps by (namespace, name), as the controllers' readers would serve them."""

    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    config_maps: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    def secret(self, namespace: str, name: str) -> dict[str, str] | None:
        found = self.secrets.get((namespace, name))
        return dict(found) if found is not None else None

    def config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        found = self.config_maps.get((namespace, name))
        return dict(found) if found is not None else None


def cluster_objects(cluster: CephCluster, cluster_id: str = "c1", group: str = "cmgroup") -> Objects:
    objects = Objects()
    objects.secrets[("kube-system", "csi-admin")] = {"adminID": "admin", "adminKey": cluster.admin_key}
    objects.secrets[("kube-system", "ceph-admin")] = {"key": cluster.admin_key}
    namespace, name = ceph.csi_config_location()
    objects.config_maps[(namespace, name)] = {ceph.CSI_CONFIG_KEY: json.dumps(
        [{"clusterID": cluster_id, "monitors": [cluster.monitors], "cephFS": {"subvolumeGroup": group}}])}
    return objects


def csi_class(name: str = "cephfs-csi", **extra: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "provisioner": "cephfs.csi.ceph.com",
            "parameters": {"clusterID": "c1", "fsName": "cephfs",
                           "csi.storage.k8s.io/provisioner-secret-name": "csi-admin",
                           "csi.storage.k8s.io/provisioner-secret-namespace": "kube-system",
                           "csi.storage.k8s.io/node-stage-secret-name": "csi-admin",
                           "csi.storage.k8s.io/node-stage-secret-namespace": "kube-system",
                           "csi.storage.k8s.io/controller-expand-secret-name": "csi-admin",
                           "csi.storage.k8s.io/controller-expand-secret-namespace": "kube-system", **extra}}


def external_class(cluster: CephCluster, name: str = "cephfs-ext", **extra: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "provisioner": "ceph.com/cephfs",
            "parameters": {"monitors": cluster.monitors, "adminId": "admin", "adminSecretName": "ceph-admin",
                           "adminSecretNamespace": "kube-system", **extra}}


def external_class_objects(cluster: CephCluster, name: str = "cephfs") -> list[dict[str, Any]]:
    """The admin Secret and an external-storage CephFS class (Delete) as a cluster's API takes them."""
    storage_class = external_class(cluster, name)
    storage_class.update({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "reclaimPolicy": "Delete"})
    return [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ceph-admin", "namespace": "kube-system"},
             "stringData": {"key": cluster.admin_key}}, storage_class]


def make_provisioner(objects: Objects, connect_timeout: float = 10.0) -> CephfsProvisioner:
    return CephfsProvisioner(secrets=objects.secret, config_maps=objects.config_map, connect_timeout=connect_timeout)


def subvolumes(cluster: CephCluster, group: str) -> list[str]:
    try:
        return [s["name"] for s in json.loads(cluster.ceph("fs", "subvolume", "ls", "cephfs", group, "--format", "json"))]
    except subprocess.CalledProcessError:
        return []  # no such group yet


def auth_users(cluster: CephCluster) -> list[str]:
    dump = json.loads(cluster.ceph("auth", "ls", "--format", "json"))
    return [e["entity"] for e in dump.get("auth_dump", [])]


def sweep(cluster: CephCluster) -> list[str]:
    """Remove every pvc-* subvolume and client.pvc-* user; returns what was left (for an assertion)."""
    left = []
    for group in TEST_GROUPS:
        for name in subvolumes(cluster, group):
            if name.startswith(("pvc-", "t-")):
                left.append(f"{group}/{name}")
                subprocess.run(["ceph", "-c", str(cluster.conf), "fs", "subvolume", "rm", "cephfs", name, group, "--force"],
                               capture_output=True, timeout=60)
    for entity in auth_users(cluster):
        if entity.startswith(("client.pvc-", "client.t-")):
            left.append(entity)
            subprocess.run(["ceph", "-c", str(cluster.conf), "auth", "rm", entity], capture_output=True, timeout=60)
    return left


def fuse_mounts_under(root: Path) -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[2].startswith("fuse") and
                (line.split()[1] + "/").startswith(str(root) + "/")]


def force_unmount_under(root: Path) -> None:
    """Last-resort cleanup for a failed test: kill the ceph-fuse daemons serving mounts under ``root``, unmount."""
    from volume_plugins.cephfs import ceph_fuse_pids

    for mount in fuse_mounts_under(root):
        for pid in ceph_fuse_pids(Path(mount)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
        if subprocess.run(["umount", mount], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30)


@pytest.fixture
def cephfs_clean(ceph_cluster: CephCluster, tmp_path: Path) -> Iterator[Path]:
    """A test directory whose FUSE mounts are removed, and a cluster swept of the test's subvolumes and
    users, pass or fail."""
    try:
        yield tmp_path
    finally:
        force_unmount_under(tmp_path)
        sweep(ceph_cluster)
