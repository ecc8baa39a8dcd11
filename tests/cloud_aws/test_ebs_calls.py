"""How many EC2 calls provisioning and attaching make, counted on the provisioner's own boto3 client with a
botocore event hook (docs/semantics.md CE2, CE4, CE5; SEMANTICS A1). The refusal rules themselves are
tested in test_ebs_attach.py; here: no call more than needed."""
from __future__ import annotations

from typing import Any

import pytest

from provisioners.aws_ebs import NAME, AwsEbsProvisioner
from provisioners.base import ProvisionRequest
from provisioners.testing import make_claim
from storage.controllers.attachdetach import AttachDetachReconciler
from storage.controllers.manager import ControllerManager
from storage.errors import PermanentError, TemporaryError
from storage.store.sql import SqlStore

from ebs_nodes import make_node
from test_ebs_attach import new_pv


class Calls:
    """EC2 operation names in the order the client sent them."""

    def __init__(self, client: Any) -> None:
        self.names: list[str] = []
        client.meta.events.register("before-call.ec2", self._hook)

    def _hook(self, model: Any, **_: Any) -> None:
        self.names.append(model.name)

    def take(self) -> list[str]:
        taken, self.names = self.names, []
        return taken


def provision_immediate(ebs: AwsEbsProvisioner) -> None:
    """A class with no zone: the zone comes from the region's list (CE2)."""
    storage_class = {"metadata": {"name": "ebs"}, "provisioner": NAME, "parameters": {}}
    claim = make_claim("1Gi", class_name="ebs")
    req = ProvisionRequest(volume_name=f"pvc-{claim['metadata']['uid']}", claim=claim, storage_class=storage_class)
    assert ebs.provision(req).status == "finished"


def test_zones_are_asked_once_per_region_while_fresh(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """CE2: three Immediate claims, one DescribeAvailabilityZones; each claim still one search + one create."""
    calls = Calls(ebs.ec2)
    for _ in range(3):
        provision_immediate(ebs)
    assert calls.take().count("DescribeAvailabilityZones") == 1
    assert calls.names == []


def test_zones_are_asked_again_once_stale(aws: Any) -> None:
    """With no time to live every claim asks (the cache above is what saves the calls)."""
    ebs = AwsEbsProvisioner(zones_ttl=0.0)
    calls = Calls(ebs.ec2)
    for _ in range(2):
        provision_immediate(ebs)
    assert calls.take().count("DescribeAvailabilityZones") == 2


def test_attach_describes_the_volume_once_before_attaching(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """A1: a fresh attach is one DescribeVolumes (the checks), DescribeInstances (a free device name),
    AttachVolume, then the wait, whose first look comes at once (no back-off before it: moto attaches at
    once, so one look); attaching again is the one DescribeVolumes and the wait's look."""
    pv = new_pv(ebs)
    calls = Calls(ebs.ec2)
    assert ebs.attach(pv, aws.nodes["node-a"]) == {"devicePath": "/dev/xvdba"}
    assert calls.take() == ["DescribeVolumes", "DescribeInstances", "AttachVolume", "DescribeVolumes"]
    ebs.attach(pv, aws.nodes["node-a"])
    assert calls.take() == ["DescribeVolumes", "DescribeVolumes"]


def test_refusals_cost_one_describe(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """CE4 (other zone) and CE5 (attached elsewhere) are decided on the one describe, nothing attached.
    Each refusal itself is tested in test_ebs_attach.py."""
    pv = new_pv(ebs, "us-east-1a")
    calls = Calls(ebs.ec2)
    with pytest.raises(PermanentError, match="us-east-1a.*us-east-1b"):
        ebs.attach(pv, aws.nodes["node-b"])
    assert calls.take() == ["DescribeVolumes"]
    ebs.attach(pv, aws.nodes["node-a"])
    calls.take()
    ec2 = aws.ec2
    image = ec2.describe_instances(InstanceIds=[aws.instance_of("node-a")])["Reservations"][0]["Instances"][0]["ImageId"]
    other = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                              Placement={"AvailabilityZone": "us-east-1a"})["Instances"][0]["InstanceId"]
    with pytest.raises(TemporaryError, match="attached to"):
        ebs.attach(pv, make_node("node-c", "us-east-1a", other))
    assert calls.take() == ["DescribeVolumes"]


def test_attach_detach_controller_runs_eight_workers(store: SqlStore) -> None:
    """Attaches wait on the cloud for seconds each: the controller runs 8 at once (one PV per key)."""
    manager = ControllerManager(store, [AttachDetachReconciler])
    [controller] = manager.controllers
    assert controller.workers == 8
