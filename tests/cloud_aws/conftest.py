"""One moto EC2 server per test session (127.0.0.1, a free port), and boto3 pointed at it only through
boto3's standard environment (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, credentials): no Stowage setting."""
from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest

from provisioners.aws_ebs import TAG_CLUSTER_PREFIX, TAG_PV_NAME, AwsEbsProvisioner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ebs_nodes import make_node  # noqa: E402
from objectstore_servers import running_moto  # noqa: E402

REGION = "us-east-1"
ZONES = ("us-east-1a", "us-east-1b")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    # One moto server answers every AWS service; this session's EC2 one is separate from the S3 one
    # the backup tests share, so resets of either never touch the other.
    with running_moto() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def moto_image(moto_endpoint: str) -> str:
    """An AMI id moto knows (listing them is slow, so once per session)."""
    ec2 = boto3.client("ec2", endpoint_url=moto_endpoint, region_name=REGION, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    return str(ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"])


@dataclass
class Aws:
    endpoint: str
    cluster_id: str
    nodes: dict[str, dict[str, Any]]  # node name -> Node object (zone label, providerID)

    @property
    def ec2(self) -> Any:
        return boto3.client("ec2")

    def volumes_for(self, pv_name: str) -> list[dict[str, Any]]:
        filters = [{"Name": f"tag:{TAG_PV_NAME}", "Values": [pv_name]},
                   {"Name": f"tag:{TAG_CLUSTER_PREFIX}{self.cluster_id}", "Values": ["owned"]}]
        return [v for v in self.ec2.describe_volumes(Filters=filters)["Volumes"] if v["State"] not in ("deleting", "deleted")]

    def cluster_volumes(self) -> list[dict[str, Any]]:
        filters = [{"Name": f"tag:{TAG_CLUSTER_PREFIX}{self.cluster_id}", "Values": ["owned"]}]
        return self.ec2.describe_volumes(Filters=filters)["Volumes"]

    def instance_of(self, node: str) -> str:
        return str(self.nodes[node]["spec"]["providerID"]).rsplit("/", 1)[-1]


@pytest.fixture
def aws(moto_endpoint: str, moto_image: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Aws:
    """Two fresh instances, one in each of two zones (nodes "node-a", "node-b"), and a cluster id of the test's
    own: every assertion counts volumes by that cluster's tag, so tests share the server without resets
    (a reset makes moto reload its catalogues, seconds each time)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    cluster_id = f"test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("STOWAGE_CLUSTER_ID", cluster_id)
    ec2 = boto3.client("ec2")
    image = moto_image
    nodes = {}
    for name, zone in zip(("node-a", "node-b"), ZONES):
        instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="m5.large",
                                     Placement={"AvailabilityZone": zone})["Instances"][0]["InstanceId"]
        nodes[name] = make_node(name, zone, instance)
    return Aws(moto_endpoint, cluster_id, nodes)


@pytest.fixture
def ebs(aws: Aws) -> AwsEbsProvisioner:
    """A provisioner with short waits (a test must not sit out two-minute deadlines)."""
    return AwsEbsProvisioner(attach_timeout=3.0, detach_timeout=3.0, modify_timeout=2.0, max_wait=0.2)
