"""FlexVolume end to end: API server, controllers (attach/detach, expansion), a node agent running pods
with runc, and the test driver backing the volume with a real loop device (FV1-FV9, AD rules, P4)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))

from agent_cluster import Cluster, cluster, pod, tmp_base, wait_until  # noqa: E402,F401  (fixtures)
from flex_support import FlexEnv  # noqa: E402
from storage.errors import NotFound  # noqa: E402
from storage.system import loop, mounts  # noqa: E402
from storage.system.flexvolume import PLUGIN_DIR_ENV  # noqa: E402
from support import wait_for_text  # noqa: E402

pytestmark = pytest.mark.root
MiB = 2**20
Obj = dict[str, Any]


def objects(env: FlexEnv, size_mib: int = 320) -> list[Obj]:
    return [
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "flex"},
         "provisioner": "kubernetes.io/flexvolume", "allowVolumeExpansion": True},
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-flex"},
         "spec": {"capacity": {"storage": f"{size_mib}Mi"}, "accessModes": ["ReadWriteOnce"],
                  "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "flex",
                  # xfs grows while mounted (online ext4 resize needs CAP_SYS_RESOURCE, withheld here)
                  "flexVolume": {"driver": "stowage/loop", "fsType": "xfs",
                                 "options": {"backingDir": str(env.backing), "size": str(size_mib * MiB)}}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "default"},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "flex",
                  "resources": {"requests": {"storage": f"{size_mib}Mi"}}}},
    ]


def attachments(cluster: Cluster) -> list[Obj]:
    return [va for va in cluster.client.list("volumeattachments")[0]
            if (va["spec"].get("source") or {}).get("persistentVolumeName") == "pv-flex"]


@pytest.fixture
def flex_cluster(flex_env: FlexEnv, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> tuple[FlexEnv, Cluster]:
    flex_env.install("stowage~loop")
    # The control plane runs the driver from the same directory, as under `stowage up --volume-plugin-dir`.
    monkeypatch.setenv(PLUGIN_DIR_ENV, str(flex_env.plugin_dir))
    cluster.start_controllers()
    cluster.add_agent("n1", volume_plugin_dir=flex_env.plugin_dir)
    return flex_env, cluster


def test_fv5_fv6_fv8_pod_writes_next_pod_reads_detach_after_the_pod_and_the_claim_grows(
        flex_cluster: tuple[FlexEnv, Cluster]) -> None:
    """FV5 the controller attaches through the driver (VolumeAttachment devicePath = the loop device), the
    agent's waitforattach/mountdevice/bind give the pod its volume; FV6 deleting the pod unmounts,
    unmountdevice's and then detaches (the loop device goes, after the pod); a second pod reads the data;
    FV8 a bigger claim runs expandvolume, and the mounted xfs grows."""
    env, cluster = flex_cluster
    backing = env.backing / "pv-flex.img"
    cluster.apply(*objects(env))
    script = "echo flex-data > /data/f; trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"
    cluster.apply(pod("writer", script, claims={"data": "/data"}))
    cluster.wait_running("writer")
    [va] = attachments(cluster)
    device = va["status"]["attachmentMetadata"]["devicePath"]
    assert va["status"]["attached"] is True and loop.find_by_backing_file(backing) == device
    global_path = cluster.agent_dir("n1") / "plugins/kubernetes.io/flexvolume/stowage/loop/mounts/pv-flex"
    assert [e.source for e in mounts.mounts_at(global_path)] == [device]
    wait_until(lambda: (global_path / "f").exists(), "the writer's file")

    cluster.client.delete("pods", "writer", "default")
    cluster.wait_gone("pods", "writer", "default")
    wait_until(lambda: not attachments(cluster), "the VolumeAttachment deleted after the pod is gone")
    assert loop.find_by_backing_file(backing) is None
    assert not mounts.mounts_at(global_path)
    calls = env.calls()
    assert calls.index(f"loop unmountdevice {global_path}") < calls.index("loop detach pv-flex")

    cluster.apply(pod("reader", "cp /data/f /data/g; trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done",
                      claims={"data": "/data"}))
    cluster.wait_running("reader")
    wait_for_text(global_path / "g", "flex-data\n", "the reader's copy")

    claim = cluster.client.get("persistentvolumeclaims", "data", "default")
    claim["spec"]["resources"]["requests"]["storage"] = "400Mi"
    cluster.client.update(claim)

    def grown() -> bool:
        c = cluster.client.get("persistentvolumeclaims", "data", "default")
        conditions = [x["type"] for x in (c.get("status") or {}).get("conditions") or []]
        return (c.get("status") or {}).get("capacity", {}).get("storage") == "400Mi" and not conditions

    wait_until(grown, "claim capacity 400Mi", timeout=90)
    assert cluster.client.get("persistentvolumes", "pv-flex")["spec"]["capacity"]["storage"] == "400Mi"
    assert backing.stat().st_size == 400 * MiB
    assert any(c.startswith("loop expandvolume") for c in env.calls())

    cluster.client.delete("pods", "reader", "default")
    cluster.wait_gone("pods", "reader", "default")
    wait_until(lambda: not attachments(cluster), "the VolumeAttachment deleted after the reader")
    assert loop.find_by_backing_file(backing) is None


def test_fv9_attach_failure_reaches_the_pods_event_with_the_drivers_message(
        flex_cluster: tuple[FlexEnv, Cluster]) -> None:
    """FV9: a driver answering Failure to attach -> FailedAttachVolume naming the driver's message."""
    env, cluster = flex_cluster
    objs = objects(env)
    objs[1]["spec"]["flexVolume"]["options"]["fail"] = "backend pool is full"
    cluster.apply(*objs)
    cluster.apply(pod("failing", claims={"data": "/data"}))

    def event() -> bool:
        return any(e.get("reason") == "FailedAttachVolume"
                   and "attach command failed, status: Failure, reason: backend pool is full" in e.get("message", "")
                   for e in cluster.events_for("failing"))

    wait_until(event, "FailedAttachVolume with the driver's message", timeout=60)
    assert cluster.pod("failing")["status"].get("phase") == "Pending"
    cluster.client.delete("pods", "failing", "default")
    cluster.wait_gone("pods", "failing", "default")
    try:
        cluster.client.delete("persistentvolumeclaims", "data", "default")
    except NotFound:
        pass
