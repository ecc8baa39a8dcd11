"""A real pod on an EBS claim: the EBS provisioner and attacher against moto, the attach/detach controller,
a real agent that formats and mounts a real loop device (tests/attach_harness.SimulatedDisks plays the part
of the disk showing up on the VM once moto reports the attachment). SEMANTICS A1-A3, P1, B10;
docs/semantics.md CE1-CE9."""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "agent"))

from agent_cluster import Cluster, claim, cluster, pod, tmp_base, wait_until  # noqa: E402,F401
from attach_harness import SimulatedDisks, ebs_link  # noqa: E402

from provisioners import registry as provisioner_registry  # noqa: E402
from provisioners.aws_ebs import AwsEbsProvisioner  # noqa: E402

pytestmark = pytest.mark.root

ZONE = "us-east-1a"


def ebs_class() -> dict[str, Any]:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "ebs"},
            "provisioner": "ebs.csi.aws.com", "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Delete", "parameters": {"type": "gp3", "csi.storage.k8s.io/fstype": "ext4"}}


class AttachCalls:
    """Counts the AttachVolume requests the provisioner really sends."""

    def __init__(self, client: Any) -> None:
        self.count = 0
        self._lock = threading.Lock()
        client.meta.events.register("before-send.ec2.AttachVolume", self._hook)

    def _hook(self, **_: Any) -> None:
        with self._lock:
            self.count += 1


@pytest.fixture
def ebs_cluster(cluster: Cluster, aws: Any) -> Iterator[tuple[Cluster, AwsEbsProvisioner]]:
    """The cluster with this test's EBS provisioner (its cluster id, the cluster's node lookup) registered
    under both names; on the way out every volume of this cluster id must be gone from moto."""
    ebs = AwsEbsProvisioner(nodes=cluster._node, attach_timeout=30.0, detach_timeout=30.0, max_wait=1.0)
    provisioner_registry.register(ebs)
    try:
        yield cluster, ebs
    finally:
        provisioner_registry.unregister(AwsEbsProvisioner.name)


def start_node(cluster: Cluster, aws: Any, name: str = "n1") -> None:
    instance = aws.instance_of("node-a")
    cluster.add_agent(name, zone=ZONE, provider_id=f"aws:///{ZONE}/{instance}",
                      dev_disk_dir=cluster.base / f"dev-disk-{name}")


def moto_attachments(aws: Any) -> list[dict[str, Any]]:
    return [a for v in aws.cluster_volumes() for a in v["Attachments"]]


def attachment_objects(cluster: Cluster) -> list[dict[str, Any]]:
    return cluster.client.list("volumeattachments")[0]


def test_pod_on_ebs_claim_mounts_detaches_and_leaks_nothing(ebs_cluster: tuple[Cluster, AwsEbsProvisioner], aws: Any) -> None:
    """P1/CE2: WaitForFirstConsumer makes the volume in the node's zone; A1: attached before the pod runs,
    detached after it is gone; the data survives a detach and a new attachment; B10: deleting the claim
    deletes the EBS volume (nothing of this cluster left in moto)."""
    cluster, ebs = ebs_cluster
    cluster.start_controllers()
    start_node(cluster, aws)
    with SimulatedDisks(cluster.client, node="n1", dev_disk=cluster.base / "dev-disk-n1",
                        backing=cluster.base / "ebs-backing", link_for=ebs_link) as disks:
        cluster.apply(ebs_class(), claim("data", "1Gi", "ebs"),
                      pod("writer", "echo hello > /data/f && sync && echo written; "
                                    "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done", claims={"data": "/data"}))
        cluster.wait_running("writer", timeout=120)
        pv_name = cluster.client.get("persistentvolumeclaims", "data", "default")["spec"]["volumeName"]
        pv = cluster.client.get("persistentvolumes", pv_name)
        [volume] = aws.cluster_volumes()
        assert volume["AvailabilityZone"] == ZONE and volume["VolumeType"] == "gp3" and volume["Size"] == 1
        assert pv["spec"]["awsElasticBlockStore"]["volumeID"] == f"aws://{ZONE}/{volume['VolumeId']}"
        assert pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == [ZONE]
        [attachment] = volume["Attachments"]
        assert (attachment["InstanceId"], attachment["State"]) == (aws.instance_of("node-a"), "attached")
        [va] = attachment_objects(cluster)
        assert va["status"]["attached"] is True
        assert va["status"]["attachmentMetadata"] == {"devicePath": attachment["Device"]}
        device = disks.devices[pv_name]
        # The agent formatted and mounted the loop device for real.
        mounts_text = Path("/proc/self/mounts").read_text()
        assert any(line.split()[0] == device and line.split()[2] == "ext4" for line in mounts_text.splitlines())

        cluster.client.delete("pods", "writer", "default")
        cluster.wait_gone("pods", "writer")
        wait_until(lambda: moto_attachments(aws) == [] and attachment_objects(cluster) == [], "the EBS detach", 60)
        assert disks.wait(lambda: pv_name not in disks.devices, 30)

        # The same volume again: attached anew, and the data written before is there.
        cluster.apply(pod("reader", "grep -q hello /data/f", claims={"data": "/data"}, restartPolicy="Never"))
        done = cluster.wait_pod("reader", lambda p: p["status"].get("phase") in ("Succeeded", "Failed"), "finished", 120)
        assert done["status"]["phase"] == "Succeeded"
        cluster.client.delete("pods", "reader", "default")
        cluster.wait_gone("pods", "reader")
        wait_until(lambda: moto_attachments(aws) == [], "the second detach", 60)

        cluster.client.delete("persistentvolumeclaims", "data", "default")
        cluster.wait_gone("persistentvolumes", pv_name)
        assert aws.cluster_volumes() == []
        assert not disks.errors


def test_agent_killed_between_attach_and_mount(ebs_cluster: tuple[Cluster, AwsEbsProvisioner], aws: Any) -> None:
    """A1 + CE5: ``stowage agent --provider-id ... --zone ...`` (its own process) is SIGKILLed once the pod is
    placed on its node; the volume is attached while it is dead; the restarted agent mounts it and the pod
    runs. AttachVolume was sent exactly once, and the volume has one attachment throughout."""
    cluster, ebs = ebs_cluster
    calls = AttachCalls(ebs.ec2)
    cluster.start_controllers()
    dev_disk = cluster.base / "dev-disk-n1"
    flags = ("--zone", ZONE, "--provider-id", f"aws:///{ZONE}/{aws.instance_of('node-a')}", "--dev-disk-dir", str(dev_disk))
    first = cluster.spawn_agent("n1", *flags)
    wait_until(lambda: cluster.client.get("nodes", "n1")["spec"].get("providerID"), "node n1 registered", 60)
    with SimulatedDisks(cluster.client, node="n1", dev_disk=dev_disk, backing=cluster.base / "ebs-backing",
                        link_for=ebs_link) as disks:
        cluster.apply(ebs_class(), claim("data", "1Gi", "ebs"), pod("app", claims={"data": "/data"}))
        cluster.wait_pod("app", lambda p: bool(p["spec"].get("nodeName")), "scheduled", 120)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)

        def attached() -> bool:
            vas = attachment_objects(cluster)
            return bool(vas) and all((va.get("status") or {}).get("attached") for va in vas)
        wait_until(attached, "the attachment while the agent is dead", 60)
        pv_name = cluster.client.get("persistentvolumeclaims", "data", "default")["spec"]["volumeName"]
        assert disks.wait(lambda: pv_name in disks.devices, 30)
        assert cluster.pod("app")["status"].get("phase") != "Running"
        assert not any(line.split()[0] == disks.devices[pv_name]
                       for line in Path("/proc/self/mounts").read_text().splitlines())

        cluster.spawn_agent("n1", *flags)  # the same node, restarted
        cluster.wait_running("app", timeout=120)
        assert calls.count == 1
        assert len(moto_attachments(aws)) == 1 and len(attachment_objects(cluster)) == 1

        cluster.client.delete("pods", "app", "default")
        cluster.wait_gone("pods", "app")
        cluster.client.delete("persistentvolumeclaims", "data", "default")
        cluster.wait_gone("persistentvolumes", pv_name)
        assert aws.cluster_volumes() == []
        assert calls.count == 1
