"""The node's half of attach/detach against a real API server, controllers, agent, runc pods, loop devices,
mkfs and mounts (AD2, AD3; SEMANTICS A1-A3).

A test "cinder" disk stands for a cloud disk: its Attacher (run by the attach/detach controller) makes a
loop device from the disk's image file and returns it as ``devicePath``; its DevicePlugin on the node finds
the device from that attachment metadata alone. ``cinder`` is a real in-tree attachable source with no
plugin in Stowage, so nothing else claims it; its static PVs carry no provisioned-by annotation (AD1).
"""
from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from agent_cluster import Cluster, pod, wait_until
from provisioners import registry as provisioner_registry
from provisioners.base import Attacher, ProvisionRequest, ProvisionResult, Provisioner
from storage.agent.backoff import Backoff
from storage.controllers.attachdetach import attachment_name
from storage.errors import NotFound, PermanentError
from storage.system import loop
from support import wait_for_text
from volume_plugins import registry as plugin_registry
from volume_plugins.base import Device, DevicePlugin, VolumeContext

Obj = dict[str, Any]
NAME = "kubernetes.io/cinder"
LIMIT_KEY = "attachable-volumes-cinder"


class CinderPlugin(DevicePlugin):
    name = NAME
    source_key = "cinder"
    attachable = True
    attach_limit_key = LIMIT_KEY
    default_attach_limit = 7

    def find_device(self, ctx: VolumeContext) -> Device | None:
        path = ctx.attachment.get("devicePath", "")
        try:
            if path and stat.S_ISBLK(os.stat(path).st_mode):
                return Device(path, self.fs_type(ctx))
        except FileNotFoundError:
            pass
        return None


class CinderAttacher(Provisioner, Attacher):
    """The cloud's attach API: a loop device over the disk's image file; ``gate`` holds attaches back."""

    name = NAME

    def __init__(self, images: Path) -> None:
        self.images = images
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[tuple[str, str, str]] = []
        self.attached_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        raise PermanentError("this test's disks are made by hand")

    def delete(self, pv: Obj) -> None:
        return None

    def _image(self, pv: Obj) -> Path:
        return self.images / f"{pv['spec']['cinder']['volumeID']}.img"

    def attach(self, pv: Obj, node: Obj) -> dict[str, str]:
        assert self.gate.wait(120), "the test never released the attach"
        with self._lock:
            device = loop.find_by_backing_file(self._image(pv)) or loop.attach(self._image(pv))
            self.calls.append(("attach", pv["metadata"]["name"], node["metadata"]["name"]))
            self.attached_at.setdefault(pv["metadata"]["name"], time.monotonic())
        return {"devicePath": device}

    def detach(self, pv: Obj, node_name: str) -> None:
        with self._lock:
            for device in loop.find_all_by_backing_file(self._image(pv)):
                loop.detach(device)
            self.calls.append(("detach", pv["metadata"]["name"], node_name))


@pytest.fixture
def disks(cluster: Cluster) -> Iterator[CinderAttacher]:
    images = cluster.base / "cinder"
    images.mkdir()
    attacher = CinderAttacher(images)
    provisioner_registry.register(attacher)
    plugin_registry.register_plugin(NAME, lambda resolver: CinderPlugin())
    try:
        yield attacher
    finally:
        attacher.gate.set()
        cluster.close()  # agents and controllers first: nothing may attach again behind the clean-up
        plugin_registry.unregister_plugin(NAME)
        provisioner_registry.unregister(NAME)
        for device in loop.loops_under(images):
            loop.detach(device)


def disk(cluster: Cluster, attacher: CinderAttacher, name: str) -> list[Obj]:
    """A static in-tree PV (no provisioned-by annotation) and its claim, pre-bound."""
    with open(attacher.images / f"vol-{name}.img", "wb") as f:
        f.truncate(64 << 20)
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
          "spec": {"capacity": {"storage": "64Mi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                   "persistentVolumeReclaimPolicy": "Retain", "cinder": {"volumeID": f"vol-{name}", "fsType": "ext4"},
                   "claimRef": {"namespace": "default", "name": name}}}
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "default"},
             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": name,
                      "resources": {"requests": {"storage": "64Mi"}}}}
    return cluster.apply(pv, claim)


def _va(cluster: Cluster, pv: str, node: str) -> Obj | None:
    try:
        return cluster.client.get("volumeattachments", attachment_name(pv, NAME, node))
    except NotFound:
        return None


def _node_status(cluster: Cluster, name: str = "n1") -> Obj:
    return cluster.client.get("nodes", name)["status"]


WRITER = "echo hello > /data/greeting; trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"


def test_ad2_agent_mounts_an_attached_disk_the_moment_it_is_attached_and_reports_it(
        cluster: Cluster, disks: CinderAttacher) -> None:
    cluster.start_controllers()
    agent = cluster.add_agent("n1")
    # Long back-off: a pod that waits for its disk must be woken by the attachment, not by its timer.
    agent.volume_backoff = Backoff(initial=60.0, maximum=120.0)
    disks.gate.clear()
    disk(cluster, disks, "data")
    cluster.apply(pod("app", WRITER, claims={"data": "/data"}))
    # The attachment exists but is not attached: the agent waits, and says why.
    wait_until(lambda: _va(cluster, "data", "n1"), "the VolumeAttachment for (data, n1)")
    cluster.wait_pod("app", lambda p: "waiting for volume data to be attached to this node" in str(p["status"]),
                     "waiting for the attach")
    wait_until(lambda: agent.volume_backoff.attempts(cluster.pod("app")["metadata"]["uid"]), "the pod backing off")
    disks.gate.set()
    running = cluster.wait_running("app", timeout=40)
    # Event-driven: far sooner than the 60 s back-off the failed set-up had started.
    assert time.monotonic() - disks.attached_at["data"] < 30
    assert running["spec"]["nodeName"] == "n1"
    va = _va(cluster, "data", "n1")
    assert va is not None and va["status"]["attached"] is True
    device = va["status"]["attachmentMetadata"]["devicePath"]
    assert device.startswith("/dev/loop")
    # Really mounted from that device: mkfs'd ext4 holding what the pod wrote.
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    # This cluster's node only: other tests (xdist workers) may mount a disk of the same name elsewhere.
    global_mount = next(line for line in mounts
                        if "/plugins/kubernetes.io/cinder/mounts/data " in line and f" {cluster.base}/" in line)
    assert f" {device} " in global_mount and " ext4 " in global_mount
    mount_point = global_mount.split()[4]
    wait_for_text(Path(mount_point) / "greeting", "hello\n", "the pod's write on the disk")
    # Node status: the attached disk by its unique name and device path; in use while mounted (SEMANTICS A3).
    wait_until(lambda: {"name": "kubernetes.io/cinder/vol-data", "devicePath": device}
               in (_node_status(cluster).get("volumesAttached") or []), "volumesAttached to list the disk")
    # volumesInUse is published by its own status update, which may come a moment after volumesAttached's.
    wait_until(lambda: "kubernetes.io/cinder/data" in (_node_status(cluster).get("volumesInUse") or []),
               "volumesInUse to list the disk")
    assert sum(1 for v in _node_status(cluster)["volumesAttached"] if v["devicePath"] == device) == 1

    # Gone: unmounted, no longer in use, then detached (the loop device is gone too), and no longer reported.
    cluster.client.delete("pods", "app", "default")
    cluster.wait_gone("pods", "app", "default")
    wait_until(lambda: _va(cluster, "data", "n1") is None, "the detach", timeout=60)
    assert disks.calls == [("attach", "data", "n1"), ("detach", "data", "n1")]
    assert not loop.find_all_by_backing_file(disks.images / "vol-data.img")
    wait_until(lambda: not any(v["name"].startswith("kubernetes.io/cinder/")
                               for v in _node_status(cluster).get("volumesAttached") or []),
               "volumesAttached to drop the disk")


def test_ad3_node_reports_its_limit_and_the_scheduler_keeps_a_second_disk_off_a_full_node(
        cluster: Cluster, disks: CinderAttacher) -> None:
    cluster.start_controllers()
    # A slow heartbeat: a Node update (which also wakes the scheduler) must not be what places the second pod.
    cluster.add_agent("n1", attach_limits={LIMIT_KEY: 1}, heartbeat=30.0)
    status = _node_status(cluster)
    assert status["allocatable"][LIMIT_KEY] == "1" and status["capacity"][LIMIT_KEY] == "1"
    disk(cluster, disks, "one")
    disk(cluster, disks, "two")
    cluster.apply(pod("first", WRITER, claims={"one": "/data"}))
    cluster.wait_running("first")
    cluster.apply(pod("second", WRITER, claims={"two": "/data"}))
    message = ("0/1 nodes are available: 1 node(s) exceed max volume count. "
               "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.")  # SC2
    pending = cluster.wait_pod("second", lambda p: any(c.get("type") == "PodScheduled" and c.get("message") == message
                                                       for c in p["status"].get("conditions") or []),
                               "unschedulable for the attach limit")
    assert not pending["spec"].get("nodeName")
    assert any(e["reason"] == "FailedScheduling" and e["message"] == message for e in cluster.events_for("second"))
    assert _va(cluster, "two", "n1") is None  # never attached beyond the limit
    # Room again once the first pod is gone: placed (by the pod's deletion, not a resync), attached, running.
    cluster.client.delete("pods", "first", "default")
    cluster.wait_gone("pods", "first", "default")
    gone = time.monotonic()
    cluster.wait_pod("second", lambda p: p["spec"].get("nodeName") == "n1", "placed on n1", timeout=60)
    assert time.monotonic() - gone < 15  # the controllers' periodic resync is 30 s
    cluster.wait_running("second", timeout=60)


def test_ad3_default_limit_is_the_plugins(cluster: Cluster, disks: CinderAttacher) -> None:
    cluster.add_agent("n1")
    assert _node_status(cluster)["allocatable"][LIMIT_KEY] == str(CinderPlugin.default_attach_limit)
