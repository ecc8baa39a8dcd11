"""End to end against a one-node Ceph: real API server, controllers and two node agents (RB1-RB12).
A claim of an in-tree rbd class is provisioned as an image; a pod on n1 writes it through rbd-fuse +
loop + ext4; a pod on n2 is refused while n1 holds the image and starts once n1's pod is gone, reading
the data; deleting the claim deletes the image. A ceph-csi class works the same through the controllers.
An unreachable monitor leaves the claim Pending with an event naming it; a controller killed between
"image created" and "PV saved" heals on restart with one image."""
from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))

from agent_cluster import Cluster, claim, cluster, pod, tmp_base, wait_until  # noqa: E402,F401  (fixtures)
from ceph_service import CephCluster  # noqa: E402
from rbd_support import (ADMIN_SECRET, CSI_SECRET, USER_SECRET, Images, csi_class, csi_config,  # noqa: E402,F401
                         images, in_tree_class, rbd_pool)
from storage.errors import NotFound  # noqa: E402
from storage.system import loop, mounts  # noqa: E402

pytestmark = pytest.mark.root

Obj = dict[str, Any]
FOREVER = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"


def _secret(namespace: str, name: str, data: dict[str, str], kind: str = "kubernetes.io/rbd") -> Obj:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace}, "type": kind,
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def _ceph_objects(ceph: CephCluster) -> list[Obj]:
    return [
        _secret(*ADMIN_SECRET, {"key": ceph.admin_key}),
        _secret(*USER_SECRET, {"key": ceph.admin_key}),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CSI_SECRET[0]}},
        _secret(*CSI_SECRET, {"userID": "admin", "userKey": ceph.admin_key, "adminID": "admin", "adminKey": ceph.admin_key},
                "Opaque"),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ceph-csi-config", "namespace": "kube-system"},
         "data": csi_config(ceph)},
    ]


@pytest.fixture
def rbd_cleanup(cluster: Cluster) -> Iterator[None]:
    """Whatever a failed test leaves: agents stop first, then loops over FUSE files and FUSE mounts go."""
    try:
        yield
    finally:
        for name in list(cluster.agents):
            cluster.stop_agent(name)
        base = cluster.base / "agents"
        for entry in sorted(mounts.mounts_under(base), key=lambda e: -len(e.mount_point)):
            if not entry.fstype.startswith("fuse"):
                subprocess.run(["umount", "-l", entry.mount_point], capture_output=True, timeout=30)
        for device in loop.loops_under(base):
            subprocess.run(["losetup", "-d", device], capture_output=True, timeout=30)
        for entry in mounts.mounts_under(base):
            subprocess.run(["umount", "-l", entry.mount_point], capture_output=True, timeout=30)
        for pid_file in base.glob("**/*.pid"):
            try:
                os.kill(int(pid_file.read_text()), 9)
            except (OSError, ValueError):
                pass


def _pv_of(cluster: Cluster, name: str) -> Obj:
    pvc = wait_until(lambda: (lambda c: c if c.get("status", {}).get("phase") == "Bound" else None)(
        cluster.client.get("persistentvolumeclaims", name, "default")), f"claim {name} bound", 60)
    return cluster.client.get("persistentvolumes", pvc["spec"]["volumeName"])


def _gone(cluster: Cluster, resource: str, name: str) -> bool:
    try:
        cluster.client.get(resource, name)
    except NotFound:
        return True
    return False


@pytest.mark.skipif(Path("/sys/bus/rbd").exists(), reason="the kernel has rbd: this test covers the rbd-fuse path")
def test_rbd_claim_written_on_n1_refused_on_n2_then_moves(ceph_cluster: CephCluster, images: Images,
                                                          cluster: Cluster, rbd_cleanup: None) -> None:
    """RB1, RB2, RB7-RB9, RB11, RB12: the whole path with a class copied from Kubernetes' in-tree docs."""
    cluster.start_controllers()
    for node in ("n1", "n2"):
        cluster.add_agent(node)
    node = wait_until(lambda: (lambda n: n if (n["metadata"].get("annotations") or {}).get("rbd.stowage.io/mapper") else None)(
        cluster.client.get("nodes", "n1")), "n1's mapper annotation", 30)
    assert node["metadata"]["annotations"]["rbd.stowage.io/mapper"] == "fuse"
    cluster.apply(*_ceph_objects(ceph_cluster), in_tree_class(ceph_cluster), claim("data", "64Mi", "rbd"))
    pv = _pv_of(cluster, "data")
    image = pv["spec"]["rbd"]["image"]
    assert image in images.names() and pv["spec"]["capacity"]["storage"] == "64Mi"
    cluster.apply(pod("writer", f"echo hello-rbd > /data/greeting && sync && {FOREVER}", claims={"data": "/data"},
                      nodeSelector={"kubernetes.io/hostname": "n1"}))
    writer = cluster.wait_running("writer", timeout=120)
    volume_dir = next((cluster.agent_dir("n1") / "pods" / writer["metadata"]["uid"] / "volumes").glob("*/data"))
    wait_until(lambda: (volume_dir / "greeting").exists(), "the pod's file on the image")

    cluster.apply(pod("reader", f"grep -q hello-rbd /data/greeting || exit 1; {FOREVER}", claims={"data": "/data"},
                      nodeSelector={"kubernetes.io/hostname": "n2"}))
    wait_until(lambda: any("is used by n1" in str(e.get("message")) for e in cluster.events_for("reader")),
               "n2 refused while n1 holds the image", 60)
    assert cluster.pod("reader").get("status", {}).get("phase") != "Running"
    cluster.client.delete("pods", "writer", "default")
    cluster.wait_gone("pods", "writer", "default")
    reader = cluster.wait_running("reader", timeout=120)
    assert reader["spec"]["nodeName"] == "n2"
    assert not loop.loops_under(cluster.agent_dir("n1")), "n1 kept its loop device"
    for event in cluster.client.list("events", "default")[0]:
        assert ceph_cluster.admin_key not in str(event)
    cluster.client.delete("pods", "reader", "default")
    cluster.wait_gone("pods", "reader", "default")
    cluster.client.delete("persistentvolumeclaims", "data", "default")
    wait_until(lambda: image not in images.names(), "the image deleted with the claim", 90)
    wait_until(lambda: _gone(cluster, "persistentvolumes", pv["metadata"]["name"]), "the PV deleted", 60)


@pytest.mark.skipif(Path("/sys/bus/rbd").exists(), reason="the kernel has rbd: this test covers the rbd-fuse path")
def test_csi_class_block_claim_through_the_controllers(ceph_cluster: CephCluster, images: Images,
                                                      cluster: Cluster, rbd_cleanup: None) -> None:
    """RB1, RB12: a ceph-csi class (clusterID from ceph-csi-config, ceph-csi Secret layout) and a Block claim:
    the pod sees the device; the image goes with the claim."""
    cluster.start_controllers()
    cluster.add_agent("n1")
    block_claim = claim("raw", "16Mi", "csi-rbd")
    block_claim["spec"]["volumeMode"] = "Block"
    cluster.apply(*_ceph_objects(ceph_cluster), csi_class(), block_claim)
    pv = _pv_of(cluster, "raw")
    assert pv["spec"]["rbd"]["secretRef"] == {"name": CSI_SECRET[1], "namespace": CSI_SECRET[0]}
    body = pod("raw", f"test -b /dev/xvda && {FOREVER}", nodeSelector={"kubernetes.io/hostname": "n1"})
    body["spec"]["volumes"] = [{"name": "raw", "persistentVolumeClaim": {"claimName": "raw"}}]
    body["spec"]["containers"][0]["volumeMounts"] = []
    body["spec"]["containers"][0]["volumeDevices"] = [{"name": "raw", "devicePath": "/dev/xvda"}]
    cluster.apply(body)
    cluster.wait_running("raw", timeout=120)
    cluster.client.delete("pods", "raw", "default")
    cluster.wait_gone("pods", "raw", "default")
    wait_until(lambda: not loop.loops_under(cluster.agent_dir("n1")), "the loop device gone", 60)
    cluster.client.delete("persistentvolumeclaims", "raw", "default")
    wait_until(lambda: pv["spec"]["rbd"]["image"] not in images.names(), "the image deleted", 90)


def test_unreachable_monitor_keeps_the_claim_pending_with_an_event(ceph_cluster: CephCluster, images: Images,
                                                                    cluster: Cluster) -> None:
    """RB6: the monitor does not answer: the claim stays Pending, an event names the endpoint, and no image
    is made; retried with back-off."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    cluster.start_controllers()
    before = set(images.names())
    cluster.apply(*_ceph_objects(ceph_cluster), in_tree_class(ceph_cluster, "dead", monitors=dead), claim("stuck", "8Mi", "dead"))
    event = wait_until(lambda: next((e for e in cluster.events_for("stuck") if dead in str(e.get("message"))), None),
                       "an event naming the monitor", 90)
    assert event.get("type") == "Warning" and ceph_cluster.admin_key not in str(event)
    assert cluster.client.get("persistentvolumeclaims", "stuck", "default")["status"].get("phase") == "Pending"
    assert set(images.names()) == before


_CRASHING_CONTROLLERS = """
import sys, threading
from storage.controllers.manager import run_controllers
from storage.store import open_store
store = open_store(sys.argv[1])
run_controllers(store, threading.Event())  # killed at the fault point
"""


def test_controller_killed_between_image_and_pv_save_makes_one_image(tmp_path: Path, ceph_cluster: CephCluster,
                                                                    images: Images) -> None:
    """RB2: SIGKILL after the image is created and before the PV is saved; controllers started again bind
    the claim to that same image (one image), and its deletion removes it."""
    from storage.store import open_store
    from support import get_or_none, running_controllers, wait_for

    db = str(tmp_path / "store.db")
    store = open_store(db)
    try:
        for obj in _ceph_objects(ceph_cluster):
            resource = {"Secret": "secrets", "Namespace": "namespaces", "ConfigMap": "configmaps"}[obj["kind"]]
            store.create(resource, obj)
        store.create("storageclasses", {**in_tree_class(ceph_cluster), "volumeBindingMode": "Immediate"})
        created = store.create("persistentvolumeclaims", {**claim("data", "8Mi", "rbd"), "status": {"phase": "Pending"}})
    finally:
        store.close()
    pv_name = f"pvc-{created['metadata']['uid']}"
    env = {**os.environ, "STOWAGE_FAULT_KILL_AT": "provision:after-backend",
           "PYTHONPATH": os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parents[3])}
    done = subprocess.run([sys.executable, "-c", _CRASHING_CONTROLLERS, db], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == -9, done.stderr[-2000:]
    assert images.count(pv_name) == 1
    store = open_store(db)
    try:
        assert get_or_none(store, "persistentvolumes", "", pv_name) is None
        with running_controllers(store):
            wait_for(lambda: (get_or_none(store, "persistentvolumeclaims", "default", "data") or {})
                     .get("status", {}).get("phase") == "Bound", "the claim bound after the restart", 60)
            assert images.count(pv_name) == 1
            store.delete("persistentvolumeclaims", "default", "data")
            wait_for(lambda: images.count(pv_name) == 0, "the image deleted with the claim", 60)
    finally:
        store.close()
        images.remove(f"kubernetes-dynamic-{pv_name}")
