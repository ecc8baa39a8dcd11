"""EBS attach and detach against moto (SEMANTICS A1-A2, docs/semantics.md CE4-CE6).

moto attaches across zones and attaches one volume twice: the refusals here are the provisioner's own."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from provisioners.aws_ebs import NAME, AwsEbsProvisioner
from provisioners.base import ProvisionRequest
from provisioners.testing import make_claim, pv_from_result
from storage.errors import PermanentError, TemporaryError

from ebs_nodes import make_node
from ebs_faults import Transitions


def new_pv(ebs: AwsEbsProvisioner, zone: str = "us-east-1a") -> dict[str, Any]:
    storage_class = {"metadata": {"name": "ebs"}, "provisioner": NAME, "parameters": {"zone": zone}}
    claim = make_claim("1Gi", class_name="ebs")
    req = ProvisionRequest(volume_name=f"pvc-{claim['metadata']['uid']}", claim=claim, storage_class=storage_class)
    result = ebs.provision(req)
    assert result.status == "finished"
    return pv_from_result(ebs, req, result)


def attachments(aws: Any, pv: dict[str, Any]) -> list[dict[str, Any]]:
    volume_id = pv["spec"]["awsElasticBlockStore"]["volumeID"].rsplit("/", 1)[-1]
    return aws.ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Attachments"]


def test_attach_returns_device_path_and_is_idempotent(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """A1: attach gives the device name in the attachment metadata; attaching again changes nothing."""
    pv = new_pv(ebs)
    first = ebs.attach(pv, aws.nodes["node-a"])
    assert first == {"devicePath": "/dev/xvdba"}
    assert ebs.attach(pv, aws.nodes["node-a"]) == first
    [attachment] = attachments(aws, pv)
    assert (attachment["InstanceId"], attachment["State"], attachment["Device"]) == (aws.instance_of("node-a"), "attached", "/dev/xvdba")


def test_device_names_are_free_per_instance(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """CE5: each volume on an instance gets its own name (/dev/xvdba, /dev/xvdbb, ... as Kubernetes)."""
    pvs = [new_pv(ebs) for _ in range(3)]
    devices = [ebs.attach(pv, aws.nodes["node-a"])["devicePath"] for pv in pvs]
    assert devices == ["/dev/xvdba", "/dev/xvdbb", "/dev/xvdbc"]
    ebs.detach(pvs[1], "node-a")
    assert ebs.attach(new_pv(ebs), aws.nodes["node-a"])["devicePath"] == "/dev/xvdbb"


def test_concurrent_attaches_to_one_instance_get_distinct_devices(aws: Any, ebs: AwsEbsProvisioner) -> None:
    pvs = [new_pv(ebs) for _ in range(4)]
    results: list[str] = []
    threads = [threading.Thread(target=lambda pv=pv: results.append(ebs.attach(pv, aws.nodes["node-a"])["devicePath"]))
               for pv in pvs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 4


def test_attach_across_zones_is_refused(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """CE4: a us-east-1a volume never attaches to a us-east-1b node (moto would do it)."""
    pv = new_pv(ebs, "us-east-1a")
    with pytest.raises(PermanentError, match="us-east-1a.*us-east-1b"):
        ebs.attach(pv, aws.nodes["node-b"])
    assert attachments(aws, pv) == []


def test_attach_while_attached_elsewhere_is_refused(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """CE5 / A2: attached to one instance, the volume is not attached to a second one (moto would allow it);
    the refusal is temporary, and once detached there it attaches."""
    pv = new_pv(ebs)
    ec2 = aws.ec2
    image = ec2.describe_instances(InstanceIds=[aws.instance_of("node-a")])["Reservations"][0]["Instances"][0]["ImageId"]
    other = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                              Placement={"AvailabilityZone": "us-east-1a"})["Instances"][0]["InstanceId"]
    node_c = make_node("node-c", "us-east-1a", other)
    ebs.attach(pv, aws.nodes["node-a"])
    with pytest.raises(TemporaryError, match="attached to"):
        ebs.attach(pv, node_c)
    [attachment] = attachments(aws, pv)
    assert attachment["InstanceId"] == aws.instance_of("node-a")
    ebs.detach(pv, "node-a")
    assert ebs.attach(pv, node_c) == {"devicePath": "/dev/xvdba"}
    assert [a["InstanceId"] for a in attachments(aws, pv)] == [other]


def test_node_without_provider_id_is_refused_clearly(aws: Any, ebs: AwsEbsProvisioner) -> None:
    pv = new_pv(ebs)
    with pytest.raises(PermanentError, match="spec.providerID"):
        ebs.attach(pv, make_node("node-x", "us-east-1a", None))
    bad = make_node("node-y", "us-east-1a", None)
    bad["spec"]["providerID"] = "gce://project/zone/vm"
    with pytest.raises(PermanentError, match="not an AWS instance"):
        ebs.attach(pv, bad)


def test_detach_is_idempotent(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """A1: detaching what is not attached succeeds."""
    pv = new_pv(ebs)
    ebs.detach(pv, "node-a")
    ebs.attach(pv, aws.nodes["node-a"])
    ebs.detach(pv, "node-a")
    ebs.detach(pv, "node-a")
    assert attachments(aws, pv) == []


def test_detach_after_controller_restart_finds_the_instance_through_node_lookup(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """A new provisioner (no memory of the attach) maps the node to its instance through the node lookup;
    without any way to tell, it refuses to guess rather than detach the wrong instance."""
    pv = new_pv(ebs)
    ebs.attach(pv, aws.nodes["node-a"])
    with pytest.raises(TemporaryError, match="cannot tell which instance"):
        AwsEbsProvisioner(max_wait=0.2).detach(pv, "node-a")
    assert len(attachments(aws, pv)) == 1
    AwsEbsProvisioner(max_wait=0.2, nodes=aws.nodes.get).detach(pv, "node-a")
    assert attachments(aws, pv) == []


def test_detach_of_another_node_leaves_the_attachment(aws: Any, ebs: AwsEbsProvisioner) -> None:
    pv = new_pv(ebs)
    ebs.attach(pv, aws.nodes["node-a"])
    ebs.attach(new_pv(ebs, "us-east-1b"), aws.nodes["node-b"])  # so node-b's instance is known
    ebs.detach(pv, "node-b")
    assert [a["InstanceId"] for a in attachments(aws, pv)] == [aws.instance_of("node-a")]


def test_slow_attach_waits_with_a_deadline(aws: Any, ebs: AwsEbsProvisioner, monkeypatch: pytest.MonkeyPatch) -> None:
    """CE6: an attachment held in ``attaching`` makes attach give up at its deadline with a TemporaryError (no
    second AttachVolume on the retry); once the cloud finishes, the retry returns the same device."""
    transitions = Transitions(monkeypatch)
    pv = new_pv(ebs)
    transitions.hold_attach = True
    started = time.monotonic()
    with pytest.raises(TemporaryError, match="still attaching"):
        ebs.attach(pv, aws.nodes["node-a"])
    assert 2.5 < time.monotonic() - started < 20  # the 3 s deadline of the test provisioner, on a busy machine
    releaser = threading.Timer(0.5, transitions.finish_attaching)
    releaser.start()
    try:
        assert ebs.attach(pv, aws.nodes["node-a"]) == {"devicePath": "/dev/xvdba"}
    finally:
        releaser.cancel()
    assert len(attachments(aws, pv)) == 1


def test_both_names_select_the_builtin_provisioner() -> None:
    """Classes copied from Kubernetes work unchanged: the in-tree name and the CSI driver's name."""
    from provisioners import registry

    found = registry.get("kubernetes.io/aws-ebs")
    assert isinstance(found, AwsEbsProvisioner) and registry.get("ebs.csi.aws.com") is found


def test_slow_detach_waits_and_blocks_attach_elsewhere(aws: Any, ebs: AwsEbsProvisioner,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """CE5/CE6: a detach held in ``detaching`` gives up at its deadline (TemporaryError, no second
    DetachVolume needed); meanwhile the volume attaches nowhere else; once detached, it can."""
    transitions = Transitions(monkeypatch)
    pv = new_pv(ebs)
    ebs.attach(pv, aws.nodes["node-a"])
    ec2 = aws.ec2
    image = ec2.describe_instances(InstanceIds=[aws.instance_of("node-a")])["Reservations"][0]["Instances"][0]["ImageId"]
    other = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                              Placement={"AvailabilityZone": "us-east-1a"})["Instances"][0]["InstanceId"]
    transitions.hold_detach = True
    with pytest.raises(TemporaryError, match="still detaching"):
        ebs.detach(pv, "node-a")
    with pytest.raises(TemporaryError, match="detaching"):
        ebs.attach(pv, make_node("node-c", "us-east-1a", other))
    transitions.finish_detaching()
    ebs.detach(pv, "node-a")
    assert ebs.attach(pv, make_node("node-c", "us-east-1a", other)) == {"devicePath": "/dev/xvdba"}


def test_restarted_controller_attaching_again_sends_no_second_attach(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """A1/CE5: the controller died after AttachVolume, before it saved the VolumeAttachment's status; the new
    one attaches again: same device, no AttachVolume sent, one attachment."""
    from ebs_faults import InjectedErrors

    pv = new_pv(ebs)
    device = ebs.attach(pv, aws.nodes["node-a"])
    restarted = AwsEbsProvisioner(max_wait=0.2)
    counter = InjectedErrors(restarted.ec2, "AttachVolume", "Unused", 0)
    assert restarted.attach(pv, aws.nodes["node-a"]) == device
    assert counter.calls == 0
    assert len(attachments(aws, pv)) == 1


def test_attach_api_error_attaches_nothing_and_the_retry_works(aws: Any) -> None:
    """Fault injection: AttachVolume answers 500 (after the client's retries): TemporaryError, nothing attached;
    the controller's retry attaches once."""
    from ebs_faults import inject

    ebs = AwsEbsProvisioner(retry_mode="standard", max_attempts=1, max_wait=0.2)
    pv = new_pv(ebs)
    with inject(ebs.ec2, "AttachVolume", "InternalError", 1, status=500):
        with pytest.raises(TemporaryError, match="InternalError"):
            ebs.attach(pv, aws.nodes["node-a"])
    assert attachments(aws, pv) == []
    assert ebs.attach(pv, aws.nodes["node-a"]) == {"devicePath": "/dev/xvdba"}
    assert len(attachments(aws, pv)) == 1


def test_static_pv_with_bare_volume_id_attaches(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """The static ``awsElasticBlockStore`` source (an administrator's volume, ``volumeID: vol-...``): attached
    and detached like a provisioned one, its zone read from the volume itself (CE4 still holds)."""
    volume_id = aws.ec2.create_volume(AvailabilityZone="us-east-1b", Size=2)["VolumeId"]
    static = {"metadata": {"name": "static-ebs"},
              "spec": {"awsElasticBlockStore": {"volumeID": volume_id, "fsType": "ext4", "readOnly": True}}}
    with pytest.raises(PermanentError, match="us-east-1b"):
        ebs.attach(static, aws.nodes["node-a"])
    assert ebs.attach(static, aws.nodes["node-b"]) == {"devicePath": "/dev/xvdba"}
    ebs.detach(static, "node-b")
    ebs.delete(static)  # not provisioned by us (no provisioned-by annotation): left alone
    assert aws.ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"] == "available"
    aws.ec2.delete_volume(VolumeId=volume_id)
