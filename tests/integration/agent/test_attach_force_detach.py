"""Forced detach from a dead node, timed with a short configured wait (SEMANTICS A3, AD4).

A disk no pod wants on a node any more is detached once the node stops listing it in
``status.volumesInUse``. A node that died mid-use never stops listing it: the detach is then forced,
but only once the node is not Ready and ``max_wait_for_unmount`` (Kubernetes' 6 minutes; here a few
seconds through ``ControllerOptions``, the `--attach-detach-max-wait-for-unmount` flag) has passed, and
never before. The out-of-service taint, which forces it at once, is tested in test_node_lifecycle.py.

The "disk" is an image file the agent reaches as a local volume; the test's Attacher stands for the
backend's attach API and records when each call came.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any, Iterator

import pytest

from agent_cluster import Cluster, condition, pod, wait_until
from provisioners import registry as provisioner_registry
from provisioners.base import ANN_PROVISIONED_BY, Attacher, ProvisionRequest, ProvisionResult, Provisioner
from storage.agent.teardown import stop_node
from storage.controllers.attachdetach import attachment_name
from storage.controllers.base import ControllerOptions
from storage.errors import NotFound, PermanentError
from storage.system import loop

Obj = dict[str, Any]
MAX_WAIT = 8.0
OPTIONS = ControllerOptions(node_monitor_grace_period=3.0, node_eviction_rate=10.0, max_wait_for_unmount=MAX_WAIT)


class TimedAttacher(Provisioner, Attacher):
    name = "timed-disks.test.stowage.io"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float]] = []
        self._lock = threading.Lock()

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        raise PermanentError("this test's disks are made by hand")

    def delete(self, pv: Obj) -> None:
        return None

    def attach(self, pv: Obj, node: Obj) -> dict[str, str]:
        with self._lock:
            self.calls.append(("attach", node["metadata"]["name"], time.monotonic()))
        return {"devicePath": pv["spec"]["local"]["path"]}

    def detach(self, pv: Obj, node_name: str) -> None:
        with self._lock:
            self.calls.append(("detach", node_name, time.monotonic()))


@pytest.fixture
def disks(cluster: Cluster) -> Iterator[TimedAttacher]:
    attacher = TimedAttacher()
    provisioner_registry.register(attacher)
    try:
        yield attacher
    finally:
        cluster.close()
        provisioner_registry.unregister(TimedAttacher.name)
        for device in loop.loops_under(cluster.base / "disks"):
            loop.detach(device)


def _attachment(cluster: Cluster) -> Obj | None:
    try:
        return cluster.client.get("volumeattachments", attachment_name("timed-disk", TimedAttacher.name, "n1"))
    except NotFound:
        return None


def _in_use(cluster: Cluster) -> bool:
    node = cluster.client.get("nodes", "n1")
    return any(str(v).endswith("/timed-disk") for v in node["status"].get("volumesInUse") or [])


def test_a3_ad4_dead_node_keeps_the_disk_until_the_configured_wait_then_it_is_detached(
        cluster: Cluster, disks: TimedAttacher) -> None:
    image = cluster.base / "disks" / "timed.img"
    image.parent.mkdir()
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    cluster.start_controllers(OPTIONS)
    proc = cluster.spawn_agent("n1")
    wait_until(lambda: condition(cluster.client.get("nodes", "n1"), "Ready") == "True", "n1 Ready", timeout=60)
    cluster.apply(
        {"apiVersion": "v1", "kind": "PersistentVolume",
         "metadata": {"name": "timed-disk", "annotations": {ANN_PROVISIONED_BY: TimedAttacher.name}},
         "spec": {"capacity": {"storage": "64Mi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                  "persistentVolumeReclaimPolicy": "Retain", "local": {"path": str(image), "fsType": "ext4"},
                  "claimRef": {"namespace": "default", "name": "timed"},
                  "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                      {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "timed", "namespace": "default"},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": "timed-disk",
                  "resources": {"requests": {"storage": "64Mi"}}}},
        pod("user", claims={"timed": "/data"}))
    cluster.wait_running("user", timeout=120)
    wait_until(lambda: ((_attachment(cluster) or {}).get("status") or {}).get("attached"), "attached to n1")
    wait_until(lambda: _in_use(cluster), "n1 to report the disk in use")

    # n1 dies mid-use: its agent, containers, mounts and loop devices go; its last status still lists the disk.
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    stop_node(cluster.agent_dir("n1"), cluster.agent_dir("n1"), grace_seconds=0)
    for device in loop.loops_under(image.parent):
        loop.detach(device)
    wait_until(lambda: condition(cluster.client.get("nodes", "n1"), "Ready") == "Unknown", "n1 not Ready", timeout=60)
    assert _in_use(cluster)

    # The pod is force-deleted (its node will never finish a graceful deletion): the disk is no longer wanted.
    unwanted = time.monotonic()
    cluster.client.delete("pods", "user", "default", grace_period_seconds=0)
    cluster.wait_gone("pods", "user", "default")
    # A3: not before the configured wait, although nothing uses the disk any more...
    while time.monotonic() < unwanted + MAX_WAIT - 1.0:
        assert _attachment(cluster) is not None, "detached before max_wait_for_unmount"
        assert [c[0] for c in disks.calls] == ["attach"]
        time.sleep(0.2)
    # ...and then without the node's word.
    wait_until(lambda: _attachment(cluster) is None, "the forced detach", timeout=MAX_WAIT + 20)
    detaches = [c for c in disks.calls if c[0] == "detach"]
    assert [c[:2] for c in detaches] == [("detach", "n1")]
    assert detaches[0][2] >= unwanted + MAX_WAIT - 0.1
    assert _in_use(cluster)  # the dead node still says so: only the wait allowed the detach
