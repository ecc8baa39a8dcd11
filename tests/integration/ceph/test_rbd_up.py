"""`stowage up` with an RBD class from a manifest file: a pod writes to its claim, is deleted, a new pod
on the same claim reads the data; `describe node` names the mapper; `stowage down` leaves nothing
(RB1, RB7, RB12)."""
from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "e2e"))

from ceph_service import CephCluster  # noqa: E402
from rbd_support import ADMIN_SECRET, USER_SECRET, Images, images, in_tree_class, rbd_pool  # noqa: E402,F401
from stowage_e2e import Stowage, poll, remove_data_dir  # noqa: E402
from support import need_programs, need_root  # noqa: E402

pytestmark = pytest.mark.root

FOREVER = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"


def _pod(name: str, script: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"terminationGracePeriodSeconds": 2,
                     "containers": [{"name": "main", "image": "debian:12", "command": ["/bin/sh", "-c", script],
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}}


def _secret(namespace: str, name: str, key: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "type": "kubernetes.io/rbd", "data": {"key": base64.b64encode(key.encode()).decode()}}


@pytest.fixture
def stowage(tmp_path: Path, ceph_cluster: CephCluster, rbd_pool: str) -> Iterator[Stowage]:
    need_root("pods run in runc containers")
    need_programs("runc", "losetup", "mkfs.ext4", "rbd-fuse")
    manifest = tmp_path / "rbd.json"
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        _secret(*ADMIN_SECRET, ceph_cluster.admin_key), _secret(*USER_SECRET, ceph_cluster.admin_key),
        in_tree_class(ceph_cluster),
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "default"},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "rbd", "resources": {"requests": {"storage": "32Mi"}}}},
        _pod("writer", f"echo hello-up > /data/greeting && sync && {FOREVER}"),
    ]}))
    data_dir = tmp_path / "up"
    data_dir.mkdir()
    up = Stowage(data_dir, [manifest])
    try:
        up.wait_started()
        yield up
    finally:
        problems = up.stop() + remove_data_dir(data_dir)
        assert not problems, problems


def _running(up: Stowage, name: str) -> dict[str, Any] | None:
    pod = up.client.get("pods", name, "default")
    return pod if (pod.get("status") or {}).get("phase") == "Running" else None


def _greeting(up: Stowage, pod: str) -> str | None:
    """The file as the pod's volume shows it on the host (the node's bind of the rbd-backed filesystem)."""
    uid = up.client.get("pods", pod, "default")["metadata"]["uid"]
    found = list((up.data_dir / "agent" / "pods" / uid / "volumes").glob("*/data/greeting"))
    return found[0].read_text() if found else None


def test_stowage_up_pod_writes_rbd_claim_next_pod_reads_it(stowage: Stowage, images: Images) -> None:
    """RB1, RB2, RB7, RB12: the quickstart path with an in-tree rbd class from a manifest."""
    up = stowage
    poll("writer Running", lambda: _running(up, "writer"), 180, diagnose=up.describe)
    pvc = up.client.get("persistentvolumeclaims", "data", "default")
    pv = up.client.get("persistentvolumes", pvc["spec"]["volumeName"])
    image = pv["spec"]["rbd"]["image"]
    assert image in images.names()
    assert "rbd.stowage.io/mapper=fuse" in up.cli("describe", "nodes").stdout
    poll("the greeting written", lambda: _greeting(up, "writer") == "hello-up\n", 60)
    up.client.delete("pods", "writer", "default")
    poll("writer gone", lambda: not any(p["metadata"]["name"] == "writer" for p in up.client.list("pods", "default")[0]), 120)
    up.client.create(_pod("reader", f"grep -q hello-up /data/greeting || exit 1; {FOREVER}"))
    poll("reader Running", lambda: _running(up, "reader"), 180, diagnose=up.describe)
    assert _greeting(up, "reader") == "hello-up\n"
    assert (up.client.get("pods", "reader", "default")["status"].get("containerStatuses") or [{}])[0].get("restartCount", 0) == 0
    up.client.delete("pods", "reader", "default")
    poll("reader gone", lambda: not up.client.list("pods", "default")[0], 120)
    up.client.delete("persistentvolumeclaims", "data", "default")
    poll("the image deleted with the claim", lambda: image not in images.names(), 120)
