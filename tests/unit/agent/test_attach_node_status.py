"""Node.status.volumesAttached names and the attach gate of the volume manager (AD2)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from storage.agent.agent import attached_volume_name
from storage.agent.volume_manager import PodVolumes, VolumeManager, VolumeRequest
from volume_plugins.base import Device, DevicePlugin, VolumeContext
from volume_plugins.registry import PluginRegistry

Obj = dict[str, Any]
VA = {"spec": {"attacher": "kubernetes.io/aws-ebs", "nodeName": "n1", "source": {"persistentVolumeName": "pv1"}}}


class Ebs(DevicePlugin):
    name = "kubernetes.io/aws-ebs"
    source_key = "awsElasticBlockStore"
    attachable = True

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    def find_device(self, ctx: VolumeContext) -> Device | None:
        self.seen.append(dict(ctx.attachment))
        return None


def test_ad2_volumes_attached_names_follow_kubernetes_unique_volume_names() -> None:
    registry = PluginRegistry([Ebs()])
    ebs = {"spec": {"awsElasticBlockStore": {"volumeID": "vol-0abc"}}}
    assert attached_volume_name(ebs, "pv1", VA, registry) == "kubernetes.io/aws-ebs/vol-0abc"
    csi = {"spec": {"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"}}}
    assert attached_volume_name(csi, "pv1", VA, registry) == "kubernetes.io/csi/ebs.csi.aws.com^vol-1"
    # A PV this node cannot read, or no plugin for it: the attacher and the PV name.
    assert attached_volume_name(None, "pv1", VA, registry) == "kubernetes.io/aws-ebs/pv1"
    assert attached_volume_name({"spec": {"nfs": {"server": "s"}}}, "pv1", VA, registry) == "kubernetes.io/aws-ebs/pv1"


def test_ad2_an_attachable_volume_is_looked_for_only_once_attached_and_with_its_metadata(tmp_path: Path) -> None:
    plugin = Ebs()
    attachments: dict[str, dict[str, str]] = {}
    manager = VolumeManager(tmp_path, PluginRegistry([plugin]), attachment_of=attachments.get)
    wanted = PodVolumes("uid-1", "default", "p", [VolumeRequest(
        "data", {"awsElasticBlockStore": {"volumeID": "vol-0abc"}}, pv_name="pv1")])
    _paths, errors = manager.setup_pod(wanted)
    assert errors == {"data": "waiting for volume pv1 to be attached to this node"}
    assert plugin.seen == []  # nothing looked for before the control plane said attached
    attachments["pv1"] = {"devicePath": "/dev/xvdba"}
    import storage.agent.volume_manager as vm

    old, vm.DEVICE_WAIT_SECONDS = vm.DEVICE_WAIT_SECONDS, 0.3
    try:
        _paths, errors = manager.setup_pod(wanted)
    finally:
        vm.DEVICE_WAIT_SECONDS = old
    assert errors == {"data": "volume pv1 is attached to this node but its device has not appeared yet"}
    assert plugin.seen and all(seen == {"devicePath": "/dev/xvdba"} for seen in plugin.seen)
    assert len(plugin.seen) > 1  # looked for again with back-off before giving up

