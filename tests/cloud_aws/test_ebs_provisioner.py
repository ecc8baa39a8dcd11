"""The EBS provisioner against moto's EC2 server (rules P*, B*, docs/semantics.md CE1-CE8)."""
from __future__ import annotations

import time
from typing import Any, Callable

import pytest

from provisioners.aws_ebs import (CSI_NAME, NAME, TAG_CLUSTER_LEGACY, TAG_CLUSTER_PREFIX, TAG_PV_NAME, TAG_PVC_NAME,
                                  TAG_PVC_NAMESPACE, AwsEbsProvisioner)
from provisioners.base import ANN_PROVISIONED_BY, ProvisionRequest, ProvisionResult
from provisioners.testing import ProvisionerContract, make_claim, pv_from_result
from storage.errors import PermanentError, TemporaryError

from ebs_faults import Transitions, inject

GiB = 1024**3


def sc(params: dict[str, str] | None = None, provisioner: str = NAME, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": "ebs"}, "provisioner": provisioner, "parameters": dict(params or {}), **extra}


def request(storage_class: dict[str, Any], size: str = "1Gi", node: dict[str, Any] | None = None,
            name: str = "data", namespace: str = "default") -> ProvisionRequest:
    claim = make_claim(size, name=name, namespace=namespace, class_name=storage_class["metadata"]["name"])
    return ProvisionRequest(volume_name=f"pvc-{claim['metadata']['uid']}", claim=claim, storage_class=storage_class,
                            selected_node=node)


def finish(ebs: AwsEbsProvisioner, req: ProvisionRequest) -> ProvisionResult:
    result = ebs.provision(req)
    assert result.status == "finished", result
    return result


def volume_of(aws: Any, result: ProvisionResult) -> dict[str, Any]:
    volume_id = result.source["awsElasticBlockStore"]["volumeID"].rsplit("/", 1)[-1]
    return aws.ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]


class TestEbsContract(ProvisionerContract):
    """The shared contract (P1, B9, B10) against moto."""

    @pytest.fixture
    def provisioner(self, ebs: AwsEbsProvisioner) -> AwsEbsProvisioner:
        return ebs

    @pytest.fixture
    def storage_class(self) -> dict[str, Any]:
        return {"metadata": {"name": "c"}, "provisioner": NAME, "parameters": {"type": "gp3", "zone": "us-east-1a"}}

    @pytest.fixture
    def backend_count(self, aws: Any) -> Callable[[str], int]:
        return lambda volume_name: len(aws.volumes_for(volume_name))


# ---- parameters

def test_parameters_reach_the_volume(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """CE7: type, iops, throughput, encrypted, kmsKeyId and fsType as the class says."""
    result = finish(ebs, request(sc({"type": "gp3", "iops": "4000", "throughput": "250", "encrypted": "true",
                                     "kmsKeyId": "arn:aws:kms:us-east-1:123456789012:key/abc", "fsType": "xfs",
                                     "zone": "us-east-1b"}), "10Gi"))
    volume = volume_of(aws, result)
    assert (volume["VolumeType"], volume["Iops"], volume["Throughput"], volume["Encrypted"]) == ("gp3", 4000, 250, True)
    assert volume["KmsKeyId"].endswith("key/abc")
    assert volume["AvailabilityZone"] == "us-east-1b"
    assert result.source["awsElasticBlockStore"]["fsType"] == "xfs"
    assert result.source["awsElasticBlockStore"]["volumeID"] == f"aws://us-east-1b/{volume['VolumeId']}"


def test_iops_per_gb_multiplies_size_and_is_capped(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """CE7: io1 iopsPerGB x GiB, capped at the type's 50 IOPS per GiB."""
    volume = volume_of(aws, finish(ebs, request(sc({"type": "io1", "iopsPerGB": "10", "zone": "us-east-1a"}), "20Gi")))
    assert (volume["VolumeType"], volume["Iops"]) == ("io1", 200)
    volume = volume_of(aws, finish(ebs, request(sc({"type": "io1", "iopsPerGB": "80", "zone": "us-east-1a"}), "20Gi")))
    assert volume["Iops"] == 1000


def test_default_type_follows_the_name_the_class_used(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """The in-tree name defaults to gp2 (as Kubernetes did), the CSI driver's name to gp3 (as the driver does)."""
    assert volume_of(aws, finish(ebs, request(sc({"zone": "us-east-1a"}))))["VolumeType"] == "gp2"
    assert volume_of(aws, finish(ebs, request(sc({"zone": "us-east-1a"}, CSI_NAME))))["VolumeType"] == "gp3"


@pytest.mark.parametrize("params, named", [
    ({"type": "gp4"}, "type"),
    ({"type": "gp2", "iops": "3000"}, "iops"),
    ({"type": "st1", "iopsPerGB": "3"}, "iopsPerGB"),
    ({"type": "io1"}, "iops"),
    ({"type": "io1", "iops": "99"}, "iops"),
    ({"type": "io1", "iops": "1000"}, "iops"),  # 1000 IOPS on 4 GiB > 50/GiB
    ({"type": "gp3", "iops": "2000"}, "iops"),
    ({"type": "gp3", "iops": "abc"}, "iops"),
    ({"type": "gp3", "iops": "4000", "iopsPerGB": "10"}, "iopsPerGB"),
    ({"type": "gp2", "throughput": "200"}, "throughput"),
    ({"type": "gp3", "throughput": "100"}, "throughput"),
    ({"type": "gp3", "throughput": "1000"}, "throughput"),  # > 0.25 MiB/s per IOPS at 3000 IOPS
    ({"encrypted": "yes"}, "encrypted"),
    ({"kmsKeyId": "arn:aws:kms:us-east-1:1:key/x"}, "kmsKeyId"),
    ({"fsType": "ntfs"}, "fsType"),
    ({"zone": "us-east-1a", "zones": "us-east-1a,us-east-1b"}, "zones"),
])
def test_bad_parameters_are_permanent_errors_naming_the_parameter(
        aws: Any, ebs: AwsEbsProvisioner, params: dict[str, str], named: str) -> None:
    """CE7: a parameter the type cannot take is refused before anything is created, naming it."""
    req = request(sc(params), "4Gi")
    with pytest.raises(PermanentError) as info:
        ebs.provision(req)
    assert named in str(info.value)
    assert aws.cluster_volumes() == []


def test_parameter_names_are_case_insensitive(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """As Kubernetes' EBS plugin and the CSI driver: ``Type`` and ``IOPSPERGB`` are ``type`` and ``iopsPerGB``."""
    volume = volume_of(aws, finish(ebs, request(sc({"Type": "io2", "IOPSPERGB": "100", "Zone": "us-east-1a"}), "8Gi")))
    assert (volume["VolumeType"], volume["Iops"]) == ("io2", 800)


@pytest.mark.parametrize("volume_type, size, gib", [
    ("gp3", "1", 1), ("gp3", "1Mi", 1), ("gp3", "1G", 1), ("gp3", "1536Mi", 2), ("gp2", "10Gi", 10),
    ("io1", "1Gi", 4), ("st1", "1Gi", 125), ("sc1", "200Gi", 200),
])
def test_sizes_round_up_to_whole_gib_and_type_minimum(aws: Any, ebs: AwsEbsProvisioner, volume_type: str, size: str,
                                                      gib: int) -> None:
    """CE3: whole GiB, rounded up; io1 at least 4 GiB, st1/sc1 at least 125 GiB; the PV says what was made."""
    params = {"type": volume_type, "zone": "us-east-1a", **({"iops": "100"} if volume_type == "io1" else {})}
    result = finish(ebs, request(sc(params), size))
    assert volume_of(aws, result)["Size"] == gib
    assert result.capacity == f"{gib}Gi"


def test_request_above_the_type_maximum_is_refused(aws: Any, ebs: AwsEbsProvisioner) -> None:
    with pytest.raises(PermanentError, match="16384 GiB maximum of st1"):
        ebs.provision(request(sc({"type": "st1"}), "17Ti"))


def test_shared_access_modes_are_refused(aws: Any, ebs: AwsEbsProvisioner) -> None:
    req = request(sc({"zone": "us-east-1a"}))
    req.claim["spec"]["accessModes"] = ["ReadWriteMany"]
    with pytest.raises(PermanentError, match="accessModes: ReadWriteMany"):
        ebs.provision(req)


# ---- tags, idempotency

def test_volume_tagged_with_claim_volume_and_cluster(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """CE1: the tags that make a volume findable again."""
    req = request(sc({"zone": "us-east-1a"}), name="db", namespace="shop")
    tags = {t["Key"]: t["Value"] for t in volume_of(aws, finish(ebs, req))["Tags"]}
    assert tags[TAG_PVC_NAME] == "db" and tags[TAG_PVC_NAMESPACE] == "shop"
    assert tags[TAG_PV_NAME] == req.volume_name
    assert tags[TAG_CLUSTER_LEGACY] == aws.cluster_id
    assert tags[f"{TAG_CLUSTER_PREFIX}{aws.cluster_id}"] == "owned"


def test_crash_between_create_and_pv_save_finds_the_same_volume(aws: Any) -> None:
    """CE1 / P1: the controller dies after the cloud made the volume, before the PV was saved; a new
    controller (a new provisioner, no memory) asks again and gets the same volume, not a second one."""
    req = request(sc({"zone": "us-east-1a"}))
    first = finish(AwsEbsProvisioner(), req)
    again = finish(AwsEbsProvisioner(), req)  # after the "restart"
    assert again.source == first.source
    assert len(aws.volumes_for(req.volume_name)) == 1


def test_other_cluster_volume_with_same_pv_name_is_not_taken(aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """CE1: the cluster id is part of the key (two clusters may both have a pvc-<uid>... by accident)."""
    req = request(sc({"zone": "us-east-1a"}))
    theirs = finish(AwsEbsProvisioner(cluster_id="other-cluster"), req)
    ours = finish(AwsEbsProvisioner(), req)
    assert ours.source != theirs.source
    assert len(aws.volumes_for(req.volume_name)) == 1


def test_racing_duplicates_answer_one_volume_and_all_go_on_delete(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """CE1: two controllers racing could make two tagged volumes; every later call answers the same one
    (provision never deletes: the saved PV may name either), and deleting the PV removes both."""
    req = request(sc({"zone": "us-east-1a"}))
    first = finish(ebs, req)
    tags = volume_of(aws, first)["Tags"]
    aws.ec2.create_volume(AvailabilityZone="us-east-1a", Size=1,
                          TagSpecifications=[{"ResourceType": "volume", "Tags": tags}])
    assert len(aws.volumes_for(req.volume_name)) == 2
    answer = finish(ebs, req).source
    assert finish(AwsEbsProvisioner(), req).source == answer
    assert len(aws.volumes_for(req.volume_name)) == 2
    ebs.delete(pv_from_result(ebs, req, first))
    assert aws.volumes_for(req.volume_name) == []


def test_cluster_id_comes_from_environment(aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOWAGE_CLUSTER_ID", "prod-eu")
    tags = {t["Key"]: t["Value"] for t in volume_of(aws, finish(AwsEbsProvisioner(), request(sc({"zone": "us-east-1a"}))))["Tags"]}
    assert tags[TAG_CLUSTER_LEGACY] == "prod-eu" and tags["kubernetes.io/cluster/prod-eu"] == "owned"
    monkeypatch.delenv("STOWAGE_CLUSTER_ID")
    assert AwsEbsProvisioner().cluster_id == "stowage"


# ---- zones

def test_wait_for_first_consumer_uses_the_selected_node_zone(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """CE2: under WaitForFirstConsumer the volume goes to the selected node's zone, and the PV's node affinity says so."""
    result = finish(ebs, request(sc(), node=aws.nodes["node-b"]))
    assert volume_of(aws, result)["AvailabilityZone"] == "us-east-1b"
    assert result.node_affinity == {"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["us-east-1b"]}]}]}}


def test_selected_node_outside_the_class_zones_reschedules(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """CE2: the class allows only us-east-1a; a node in us-east-1b gets the claim rescheduled, nothing created."""
    result = ebs.provision(request(sc({"zones": "us-east-1a"}), node=aws.nodes["node-b"]))
    assert result.status == "reschedule" and "us-east-1b" in result.message
    assert aws.cluster_volumes() == []


def test_zones_parameter_spreads_and_is_stable(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """CE2: without a node, a zone from ``zones``; the same claim always maps to the same zone, and claims
    spread over both (at most 40 claims: both zones are seen unless the hash is broken, chance 2**-39)."""
    zones = set()
    for _ in range(40):
        req = request(sc({"zones": "us-east-1a, us-east-1b"}))
        result = finish(ebs, req)
        zone = volume_of(aws, result)["AvailabilityZone"]
        assert zone in ("us-east-1a", "us-east-1b")
        zones.add(zone)
        ebs.delete(pv_from_result(ebs, req, result))
        again = finish(ebs, req)
        assert volume_of(aws, again)["AvailabilityZone"] == zone
        ebs.delete(pv_from_result(ebs, req, again))
        if len(zones) == 2:
            break
    assert zones == {"us-east-1a", "us-east-1b"}
    assert aws.cluster_volumes() == []


def test_selected_node_without_zone_label_uses_provider_id(aws: Any, ebs: AwsEbsProvisioner) -> None:
    node = {"metadata": {"name": "bare"}, "spec": {"providerID": "aws:///us-east-1b/i-0123456789abcdef0"}}
    assert volume_of(aws, finish(ebs, request(sc(), node=node)))["AvailabilityZone"] == "us-east-1b"


def test_selected_node_without_any_zone_is_refused(aws: Any, ebs: AwsEbsProvisioner) -> None:
    with pytest.raises(PermanentError, match="topology.kubernetes.io/zone"):
        ebs.provision(request(sc(), node={"metadata": {"name": "nowhere"}, "spec": {}}))


# ---- throttling, transient errors, slow transitions

def test_request_limit_exceeded_is_retried_by_the_client(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """CE6: RequestLimitExceeded twice, then the real answer: one volume, three attempts sent."""
    req = request(sc({"zone": "us-east-1a"}))
    with inject(ebs.ec2, "CreateVolume", "RequestLimitExceeded", 2) as injected:
        finish(ebs, req)
    assert injected.calls == 3
    assert len(aws.volumes_for(req.volume_name)) == 1


def test_throttling_beyond_client_retries_is_a_temporary_error(aws: Any) -> None:
    """CE6: still throttled after botocore's attempts: TemporaryError (the controller retries later), not a failure;
    the retry then finds no stray volume and makes exactly one."""
    ebs = AwsEbsProvisioner(retry_mode="standard", max_attempts=2)
    req = request(sc({"zone": "us-east-1a"}))
    with inject(ebs.ec2, "CreateVolume", "RequestLimitExceeded", 2) as injected:
        with pytest.raises(TemporaryError, match="RequestLimitExceeded"):
            ebs.provision(req)
    assert injected.calls == 2
    assert aws.volumes_for(req.volume_name) == []
    finish(ebs, req)
    assert len(aws.volumes_for(req.volume_name)) == 1


def test_server_error_is_temporary_and_bad_request_permanent(aws: Any) -> None:
    ebs = AwsEbsProvisioner(retry_mode="standard", max_attempts=1)
    req = request(sc({"zone": "us-east-1a"}))
    with inject(ebs.ec2, "CreateVolume", "InternalError", 1, status=500):
        with pytest.raises(TemporaryError):
            ebs.provision(req)
    with inject(ebs.ec2, "CreateVolume", "InvalidParameterValue", 1):
        with pytest.raises(PermanentError, match="InvalidParameterValue") as info:
            ebs.provision(req)
        assert not isinstance(info.value, TemporaryError)
    assert aws.volumes_for(req.volume_name) == []


def test_creating_volume_answers_in_progress_without_blocking(aws: Any, ebs: AwsEbsProvisioner,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """CE6: a volume held in ``creating``: provision returns in_progress at once (no second volume on the
    next call), and finishes once the volume is available."""
    transitions = Transitions(monkeypatch)
    transitions.hold_new_volumes = True
    req = request(sc({"zone": "us-east-1a"}))
    started = time.monotonic()
    for _ in range(3):
        result = ebs.provision(req)
        assert result.status == "in_progress" and "creating" in result.message
        assert 0 < result.retry_after <= ebs.max_wait
    assert time.monotonic() - started < 15  # held for ever: a provision that waited would never return
    assert len(aws.volumes_for(req.volume_name)) == 1
    slow = AwsEbsProvisioner(create_timeout=0.0, max_wait=7.0).provision(req)
    assert slow.status == "in_progress" and "still creating after" in slow.message and slow.retry_after == 7.0
    transitions.finish_creating()
    assert finish(ebs, req).status == "finished"
    assert len(aws.volumes_for(req.volume_name)) == 1


# ---- delete

def test_delete_of_attached_volume_is_retried_until_detached(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """CE8: deleting an in-use volume is a TemporaryError; after the detach it goes."""
    req = request(sc({"zone": "us-east-1a"}))
    pv = pv_from_result(ebs, req, finish(ebs, req))
    ebs.attach(pv, aws.nodes["node-a"])
    with pytest.raises(TemporaryError, match="attached"):
        ebs.delete(pv)
    assert len(aws.volumes_for(req.volume_name)) == 1
    ebs.detach(pv, "node-a")
    ebs.delete(pv)
    assert aws.volumes_for(req.volume_name) == []


def test_volume_in_use_answer_from_the_api_is_temporary(aws: Any) -> None:
    """CE8: the API's own VolumeInUse (an attach that raced the check) is retried, not a failure."""
    ebs = AwsEbsProvisioner(retry_mode="standard", max_attempts=1)
    req = request(sc({"zone": "us-east-1a"}))
    pv = pv_from_result(ebs, req, finish(ebs, req))
    with inject(ebs.ec2, "DeleteVolume", "VolumeInUse", 1):
        with pytest.raises(TemporaryError, match="VolumeInUse"):
            ebs.delete(pv)
    ebs.delete(pv)
    assert aws.volumes_for(req.volume_name) == []


def test_delete_leaves_a_volume_made_for_another_pv(aws: Any, ebs: AwsEbsProvisioner) -> None:
    req = request(sc({"zone": "us-east-1a"}))
    pv = pv_from_result(ebs, req, finish(ebs, req))
    other = {**pv, "metadata": {"name": "pvc-someone-else", "annotations": {ANN_PROVISIONED_BY: NAME}}}
    ebs.delete(other)
    assert len(aws.volumes_for(req.volume_name)) == 1


# ---- expand

def test_expand_through_modify_volume_rounds_up(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """CE3: ModifyVolume to whole GiB; asking again for a size it has is a no-op."""
    req = request(sc({"zone": "us-east-1a", "type": "gp3"}), "2Gi")
    pv = pv_from_result(ebs, req, finish(ebs, req))
    assert ebs.expand(pv, 5 * GiB + 1) == 6 * GiB
    volume_id = pv["spec"]["awsElasticBlockStore"]["volumeID"].rsplit("/", 1)[-1]
    assert aws.ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Size"] == 6
    assert ebs.expand(pv, 4 * GiB) == 6 * GiB
    assert len(aws.ec2.describe_volumes_modifications(VolumeIds=[volume_id])["VolumesModifications"]) == 1


def test_expand_beyond_type_maximum_is_refused(aws: Any, ebs: AwsEbsProvisioner) -> None:
    req = request(sc({"zone": "us-east-1a", "type": "gp2"}))
    pv = pv_from_result(ebs, req, finish(ebs, req))
    with pytest.raises(PermanentError, match="maximum"):
        ebs.expand(pv, 20000 * GiB)


def test_expand_while_a_modification_is_running_is_temporary(aws: Any, ebs: AwsEbsProvisioner) -> None:
    ebs_once = AwsEbsProvisioner(retry_mode="standard", max_attempts=1)
    req = request(sc({"zone": "us-east-1a"}))
    pv = pv_from_result(ebs, req, finish(ebs, req))
    with inject(ebs_once.ec2, "ModifyVolume", "IncorrectModificationState", 1):
        with pytest.raises(TemporaryError, match="IncorrectModificationState"):
            ebs_once.expand(pv, 3 * GiB)
    assert ebs_once.expand(pv, 3 * GiB) == 3 * GiB


def test_readme_storage_class_provisions(aws: Any, ebs: AwsEbsProvisioner) -> None:
    """The README's "AWS EBS" class works as written (a 1 GiB claim on a node in us-east-1a)."""
    import re
    from pathlib import Path

    import yaml

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## AWS EBS"):]
    storage_class = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    assert storage_class["provisioner"] == CSI_NAME
    result = finish(ebs, request(storage_class, "1Gi", node=aws.nodes["node-a"]))
    volume = volume_of(aws, result)
    assert (volume["VolumeType"], volume["Encrypted"], volume["AvailabilityZone"]) == ("gp3", True, "us-east-1a")
