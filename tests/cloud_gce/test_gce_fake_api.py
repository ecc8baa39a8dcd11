"""The Compute Engine fake refuses what the real API refuses, through the real google-cloud-compute client
over plain HTTP (TEST-BACKENDS.md): the provisioner's error handling is only as good as these refusals."""
from __future__ import annotations

import pytest
from gce_fake import GceFake
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

P, Z = "test-project", "us-central1-a"


@pytest.fixture
def clients(gce: GceFake) -> tuple[compute_v1.DisksClient, compute_v1.InstancesClient]:
    kw = {"credentials": AnonymousCredentials(), "client_options": ClientOptions(api_endpoint=gce.endpoint)}
    return compute_v1.DisksClient(**kw), compute_v1.InstancesClient(**kw)


def _disk(name: str, size: int = 10, disk_type: str = "pd-standard", zone: str = Z) -> compute_v1.Disk:
    return compute_v1.Disk(name=name, size_gb=size, type_=f"projects/{P}/zones/{zone}/diskTypes/{disk_type}")


def _reason(exc: gexc.GoogleAPICallError) -> str:
    return exc.errors[0]["reason"]


def test_duplicate_name_is_409_already_exists(clients, gce: GceFake) -> None:
    disks, _ = clients
    disks.insert_unary(project=P, zone=Z, disk_resource=_disk("d1"))
    with pytest.raises(gexc.Conflict) as info:
        disks.insert_unary(project=P, zone=Z, disk_resource=_disk("d1"))
    assert _reason(info.value) == "alreadyExists"


def test_unknown_disk_instance_and_zone_are_404(clients) -> None:
    disks, instances = clients
    for call in (lambda: disks.get(project=P, zone=Z, disk="nope", retry=None),
                 lambda: instances.get(project=P, zone=Z, instance="nope", retry=None),
                 lambda: disks.get(project=P, zone="mars-north1-a", disk="d", retry=None)):
        with pytest.raises(gexc.NotFound) as info:
            call()
        assert _reason(info.value) == "notFound"


@pytest.mark.parametrize("size,disk_type,name", [(9, "pd-standard", "ok"), (65537, "pd-ssd", "ok"),
                                                 (10, "pd-fancy", "ok"), (10, "pd-ssd", "Not_Valid")])
def test_invalid_size_type_or_name_is_400(clients, gce: GceFake, size: int, disk_type: str, name: str) -> None:
    disks, _ = clients
    with pytest.raises(gexc.BadRequest) as info:
        disks.insert_unary(project=P, zone=Z, disk_resource=_disk(name, size, disk_type))
    assert _reason(info.value) == "invalid"
    assert gce.disk_names() == []


def test_regional_pd_standard_minimum_and_two_zones(gce: GceFake) -> None:
    kw = {"credentials": AnonymousCredentials(), "client_options": ClientOptions(api_endpoint=gce.endpoint)}
    regional = compute_v1.RegionDisksClient(**kw)
    def disk(size: int, zones: list[str]) -> compute_v1.Disk:
        return compute_v1.Disk(name="r1", size_gb=size, type_=f"projects/{P}/regions/us-central1/diskTypes/pd-standard",
                               replica_zones=[f"projects/{P}/zones/{z}" for z in zones])
    with pytest.raises(gexc.BadRequest):
        regional.insert_unary(project=P, region="us-central1", disk_resource=disk(100, [Z, "us-central1-b"]))
    with pytest.raises(gexc.BadRequest):
        regional.insert_unary(project=P, region="us-central1", disk_resource=disk(200, [Z]))
    with pytest.raises(gexc.BadRequest):
        regional.insert_unary(project=P, region="us-central1", disk_resource=disk(200, [Z, "europe-west1-b"]))
    regional.insert_unary(project=P, region="us-central1", disk_resource=disk(200, [Z, "us-central1-b"]))
    assert gce.disk_names() == ["r1"]


def test_attach_rules_and_delete_in_use(clients, gce: GceFake) -> None:
    disks, instances = clients
    disks.insert_unary(project=P, zone=Z, disk_resource=_disk("d1"))
    source = f"projects/{P}/zones/{Z}/disks/d1"
    rw = compute_v1.AttachedDisk(source=source, device_name="d1", mode="READ_WRITE")
    ro = compute_v1.AttachedDisk(source=source, device_name="d1", mode="READ_ONLY")
    with pytest.raises(gexc.BadRequest) as info:  # across zones
        instances.attach_disk_unary(project=P, zone="us-central1-b", instance="node-b1", attached_disk_resource=rw)
    assert _reason(info.value) == "invalid"
    instances.attach_disk_unary(project=P, zone=Z, instance="node-a1", attached_disk_resource=rw)
    for body in (rw, ro):  # read-write holder: nobody else, in any mode
        with pytest.raises(gexc.BadRequest) as info:
            instances.attach_disk_unary(project=P, zone=Z, instance="node-a2", attached_disk_resource=body)
        assert _reason(info.value) == "resourceInUseByAnotherResource"
    with pytest.raises(gexc.BadRequest) as info:
        disks.delete_unary(project=P, zone=Z, disk="d1")
    assert _reason(info.value) == "resourceInUseByAnotherResource"
    instances.detach_disk_unary(project=P, zone=Z, instance="node-a1", device_name="d1")
    with pytest.raises(gexc.BadRequest):  # detaching what is not attached
        instances.detach_disk_unary(project=P, zone=Z, instance="node-a1", device_name="d1")
    # Read-only holders share; a read-write attach then is refused.
    instances.attach_disk_unary(project=P, zone=Z, instance="node-a1", attached_disk_resource=ro)
    instances.attach_disk_unary(project=P, zone=Z, instance="node-a2", attached_disk_resource=ro)
    assert [d["mode"] for d in gce.attached("node-a1") + gce.attached("node-a2")] == ["READ_ONLY", "READ_ONLY"]
    with pytest.raises(gexc.BadRequest):
        instances.attach_disk_unary(project=P, zone=Z, instance="node-a2",
                                    attached_disk_resource=compute_v1.AttachedDisk(source=source, device_name="x",
                                                                                   mode="READ_WRITE"))


def test_shrink_is_400_and_operations_can_stay_running(clients, gce: GceFake) -> None:
    disks, _ = clients
    gce.op_delay = 60.0
    op = disks.insert_unary(project=P, zone=Z, disk_resource=_disk("d1", 20))
    assert op.status == compute_v1.Operation.Status.RUNNING
    assert gce.disk("d1")["status"] == "CREATING"
    gce.finish_operations()
    assert gce.disk("d1")["status"] == "READY"
    with pytest.raises(gexc.BadRequest):
        disks.resize_unary(project=P, zone=Z, disk="d1",
                           disks_resize_request_resource=compute_v1.DisksResizeRequest(size_gb=20))


def test_injected_throttling_has_the_real_shape(clients, gce: GceFake) -> None:
    disks, _ = clients
    gce.inject("GET", r"disks/", 429)
    with pytest.raises(gexc.TooManyRequests) as info:
        disks.get(project=P, zone=Z, disk="d1", retry=None)
    assert _reason(info.value) == "rateLimitExceeded"
    with pytest.raises(gexc.NotFound):  # the injection is used up
        disks.get(project=P, zone=Z, disk="d1", retry=None)


def test_operation_wait_returns_when_done(gce: GceFake) -> None:
    import threading

    kw = {"credentials": AnonymousCredentials(), "client_options": ClientOptions(api_endpoint=gce.endpoint)}
    disks, ops = compute_v1.DisksClient(**kw), compute_v1.ZoneOperationsClient(**kw)
    gce.op_delay = 60.0
    op = disks.insert_unary(project=P, zone=Z, disk_resource=_disk("d1"))
    running = ops.wait(project=P, zone=Z, operation=op.name)  # the fake's wait gives up after 2 s, as GCE after 2 min
    assert running.status == compute_v1.Operation.Status.RUNNING
    threading.Timer(0.3, gce.finish_operations).start()
    assert ops.wait(project=P, zone=Z, operation=op.name).status == compute_v1.Operation.Status.DONE
    with pytest.raises(gexc.NotFound):
        ops.get(project=P, zone=Z, operation="operation-nope", retry=None)


def test_list_with_a_label_or_name_filter(clients, gce: GceFake) -> None:
    disks, _ = clients
    disks.insert_unary(project=P, zone=Z, disk_resource=compute_v1.Disk(
        name="d1", size_gb=10, labels={"team": "a"}, type_=f"projects/{P}/zones/{Z}/diskTypes/pd-ssd"))
    disks.insert_unary(project=P, zone=Z, disk_resource=_disk("d2"))
    assert sorted(d.name for d in disks.list(project=P, zone=Z)) == ["d1", "d2", "node-a1-boot", "node-a2-boot"]
    def listed(flt: str) -> list[str]:
        return [d.name for d in disks.list(request=compute_v1.ListDisksRequest(project=P, zone=Z, filter=flt))]
    assert listed('labels.team = "a"') == ["d1"]
    assert listed("name = d2") == ["d2"]
    with pytest.raises(gexc.BadRequest):
        listed("sizeGb > 3 OR nonsense")
    assert list(disks.list(project=P, zone="europe-west1-b")) == []
