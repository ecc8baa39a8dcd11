"""Shared pieces of the RBD tests: one pool per session, classes in both spellings, an image counter."""
from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterator

import pytest

from ceph_service import CephCluster
from provisioners.rbd import volumes_of
from storage.api.ceph import Credentials, import_binding, rados_conf

POOL = "stowage-rbd"
ADMIN_SECRET = ("kube-system", "ceph-admin")
USER_SECRET = ("default", "ceph-user")
CSI_SECRET = ("ceph-csi", "csi-rbd-secret")
CLUSTER_ID = "test-cluster"


@pytest.fixture(scope="session")
def rbd_pool(ceph_cluster: CephCluster) -> str:
    ceph_cluster.ceph("osd", "pool", "create", POOL, "8")
    ceph_cluster.rbd("pool", "init", POOL)
    return POOL


def secrets_of(cluster: CephCluster) -> dict[tuple[str, str], dict[str, str]]:
    return {
        ADMIN_SECRET: {"key": cluster.admin_key},
        USER_SECRET: {"key": cluster.admin_key},
        CSI_SECRET: {"userID": "admin", "userKey": cluster.admin_key, "adminID": "admin", "adminKey": cluster.admin_key},
    }


def secret_reader(cluster: CephCluster) -> Callable[[str, str], dict[str, str] | None]:
    table = secrets_of(cluster)
    return lambda namespace, name: table.get((namespace, name))


def csi_config(cluster: CephCluster) -> dict[str, str]:
    return {"config.json": json.dumps([{"clusterID": CLUSTER_ID, "monitors": [cluster.monitors]}])}


def config_map_reader(cluster: CephCluster) -> Callable[[str, str], dict[str, str] | None]:
    return lambda namespace, name: csi_config(cluster) if (namespace, name) == ("kube-system", "ceph-csi-config") else None


def in_tree_class(cluster: CephCluster, name: str = "rbd", **extra: str) -> dict[str, Any]:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": "kubernetes.io/rbd", "reclaimPolicy": "Delete", "allowVolumeExpansion": True,
            "parameters": {"monitors": cluster.monitors, "adminId": "admin", "adminSecretName": ADMIN_SECRET[1],
                           "adminSecretNamespace": ADMIN_SECRET[0], "pool": POOL, "userId": "admin",
                           "userSecretName": USER_SECRET[1], "userSecretNamespace": USER_SECRET[0],
                           "imageFormat": "2", "imageFeatures": "layering", "fsType": "ext4", **extra}}


def csi_class(name: str = "csi-rbd", **extra: str) -> dict[str, Any]:
    p = "csi.storage.k8s.io/"
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": "rbd.csi.ceph.com", "reclaimPolicy": "Delete", "allowVolumeExpansion": True,
            "parameters": {"clusterID": CLUSTER_ID, "pool": POOL, "imageFeatures": "layering",
                           f"{p}provisioner-secret-name": CSI_SECRET[1], f"{p}provisioner-secret-namespace": CSI_SECRET[0],
                           f"{p}controller-expand-secret-name": CSI_SECRET[1],
                           f"{p}controller-expand-secret-namespace": CSI_SECRET[0],
                           f"{p}node-stage-secret-name": CSI_SECRET[1], f"{p}node-stage-secret-namespace": CSI_SECRET[0],
                           f"{p}fstype": "ext4", **extra}}


class Images:
    """The pool seen through the rbd binding, as an administrator."""

    def __init__(self, cluster: CephCluster, pool: str = POOL) -> None:
        rados = import_binding("rados")
        self.rbd = import_binding("rbd")
        self.cluster = rados.Rados(rados_id="admin", conf=rados_conf((cluster.monitors,), Credentials("admin", cluster.admin_key)))
        self.cluster.connect(timeout=10)
        self.ioctx = self.cluster.open_ioctx(pool)

    def count(self, volume_name: str) -> int:
        return len(volumes_of(self.ioctx, volume_name))

    def names(self) -> list[str]:
        return list(self.rbd.RBD().list(self.ioctx))

    def size(self, image: str) -> int:
        with self.rbd.Image(self.ioctx, image, read_only=True) as handle:
            return int(handle.size())

    def create(self, image: str, size: int) -> None:
        self.rbd.RBD().create(self.ioctx, image, size, old_format=False, features=1)

    def remove(self, image: str, timeout: float = 90.0) -> None:
        """Remove ``image``; a killed client's watch lingers until the OSD times it out (30 s): wait for that."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.rbd.RBD().remove(self.ioctx, image)
                return
            except self.rbd.ImageNotFound:
                return
            except self.rbd.ImageBusy:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def blocklist_watchers(self, image: str) -> list[str]:
        """Blocklist every client watching ``image`` (what an administrator does for a dead client) so its
        watch ends now instead of at the OSD's 30 s timeout; returns their addresses. Only for an image
        whose clients the caller knows are gone: a live client blocklisted loses its cluster access."""
        with self.rbd.Image(self.ioctx, image, read_only=True) as handle:  # a read-only open adds no watch
            addrs = [str(w["addr"]) for w in handle.watchers_list()]
        for addr in addrs:
            ret, _, err = self.cluster.mon_command(
                json.dumps({"prefix": "osd blocklist", "blocklistop": "add", "addr": addr}), b"")
            if ret != 0:
                raise RuntimeError(f"osd blocklist add {addr}: {err}")
        return addrs

    def close(self) -> None:
        self.ioctx.close()
        self.cluster.shutdown()


@pytest.fixture(scope="session")
def images(ceph_cluster: CephCluster, rbd_pool: str) -> Iterator[Images]:
    handle = Images(ceph_cluster, rbd_pool)
    try:
        yield handle
    finally:
        handle.close()
