"""GcePdProvisioner against the Compute Engine fake: parameters and refusals (CG1), zones and node affinity
(CG2, P-rules of WaitForFirstConsumer), naming, labels and idempotency (CG3), sizes (CG4), operations and
throttling (CG5), attach/detach (CG6, A1-A2), resize (CG7)."""
from __future__ import annotations

import uuid
from typing import Any

import pytest
from gce_support import ZONE, gce_node
from gce_fake import GceFake

from provisioners import registry
from provisioners.base import ANN_PROVISIONED_BY, ProvisionRequest, ProvisionResult
from provisioners.gce_pd import GcePdProvisioner
from provisioners.testing import make_claim, pv_from_result
from storage.errors import PermanentError, TemporaryError

GIB = 1 << 30


def sc(params: dict[str, str] | None = None, *, provisioner: str = "kubernetes.io/gce-pd",
       allowed: list[str] | None = None) -> dict[str, Any]:
    cls: dict[str, Any] = {"metadata": {"name": "pd"}, "provisioner": provisioner, "parameters": dict(params or {})}
    if allowed:
        cls["allowedTopologies"] = [{"matchLabelExpressions": [{"key": "topology.kubernetes.io/zone", "values": allowed}]}]
    return cls


def request(cls: dict[str, Any], size: str = "10Gi", *, node: dict | None = None,
            modes: tuple[str, ...] = ("ReadWriteOnce",), uid: str | None = None) -> ProvisionRequest:
    claim = make_claim(size, modes=modes, uid=uid, class_name="pd")
    return ProvisionRequest(f"pvc-{claim['metadata']['uid']}", claim, cls, selected_node=node)


def finish(p: GcePdProvisioner, req: ProvisionRequest) -> ProvisionResult:
    result = p.provision(req)
    assert result.status == "finished", result.message
    return result


def pv_of(p: GcePdProvisioner, req: ProvisionRequest, result: ProvisionResult) -> dict[str, Any]:
    pv = pv_from_result(p, req, result)
    pv["metadata"]["annotations"][ANN_PROVISIONED_BY] = req.storage_class["provisioner"]
    return pv


def zones_of(result: ProvisionResult) -> list[str]:
    assert result.node_affinity is not None
    expr = result.node_affinity["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert expr["key"] == "topology.kubernetes.io/zone" and expr["operator"] == "In"
    return expr["values"]


# ---- CG1 parameters -----------------------------------------------------------------------------------
def test_both_names_select_the_builtin_provisioner() -> None:
    assert isinstance(registry.get("kubernetes.io/gce-pd"), GcePdProvisioner)
    assert registry.get("pd.csi.storage.gke.io") is registry.get("kubernetes.io/gce-pd")


@pytest.mark.parametrize("params,words", [
    ({"type": "pd-fancy"}, ["type", "pd-fancy"]),
    ({"replication-type": "triple"}, ["replication-type", "triple"]),
    ({"zone": ZONE, "zones": "us-central1-b"}, ["zone and zones"]),
    ({"zone": "narnia"}, ["zone", "narnia"]),
    ({"labels": "Bad Key=x"}, ["labels", "Bad Key"]),
    ({"replication-type": "regional-pd", "zone": ZONE}, ["regional-pd", "two zones"]),
    ({"replication-type": "regional-pd", "zones": "us-central1-a,europe-west1-b"}, ["one region"]),
    ({"iopsPerGB": "10"}, ["iopsPerGB"]),
])
def test_bad_parameters_are_refused_by_name_and_create_nothing(gce_provisioner, gce: GceFake, params, words) -> None:
    with pytest.raises(PermanentError) as info:
        gce_provisioner.provision(request(sc(params)))
    for word in words:
        assert word in str(info.value)
    assert gce.disk_names() == []


def test_read_write_many_is_refused(gce_provisioner, gce: GceFake) -> None:
    with pytest.raises(PermanentError, match="ReadWriteMany"):
        gce_provisioner.provision(request(sc({"zone": ZONE}), modes=("ReadWriteMany",)))
    assert gce.disk_names() == []


def test_parameters_as_kubernetes_and_the_csi_driver_write_them(gce_provisioner, gce: GceFake) -> None:
    # Keys are case-insensitive (both lower-case them); CSI's fstype key and its labels/KMS parameters work.
    key = "projects/p/locations/global/keyRings/r/cryptoKeys/k"
    req = request(sc({"Type": "pd-balanced", "FSType": "xfs", "labels": "team=storage,tier=gold",
                      "disk-encryption-kms-key": key}, provisioner="pd.csi.storage.gke.io"))
    result = finish(gce_provisioner, req)
    assert result.source == {"gcePersistentDisk": {"pdName": req.volume_name, "fsType": "xfs"}}
    disk = gce.disk(req.volume_name)
    assert disk["type"].endswith(f"/zones/{ZONE}/diskTypes/pd-balanced")
    assert disk["diskEncryptionKey"] == {"kmsKeyName": key}
    labels = disk["labels"]
    assert labels["team"] == "storage" and labels["tier"] == "gold"
    assert labels["stowage-cluster"] == "test-cluster"
    assert labels["kubernetes-io-created-for-pv-name"] == req.volume_name
    assert labels["kubernetes-io-created-for-pvc-name"] == "data"
    assert labels["kubernetes-io-created-for-pvc-namespace"] == "default"
    csi = finish(gce_provisioner, request(sc({"csi.storage.k8s.io/fstype": "ext3", "zone": ZONE})))
    assert csi.source["gcePersistentDisk"]["fsType"] == "ext3"


# ---- CG4 sizes --------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,params,gib", [
    ("1Gi", {"type": "pd-ssd"}, 10), ("10G", {}, 10), ("10752Mi", {}, 11), ("100Gi", {"type": "pd-standard"}, 100),
    ("1Gi", {"replication-type": "regional-pd", "zones": "us-central1-a,us-central1-b"}, 200),
    ("1Gi", {"replication-type": "regional-pd", "zones": "us-central1-a,us-central1-b", "type": "pd-ssd"}, 10),
])
def test_sizes_are_whole_gib_and_at_least_the_type_minimum(gce_provisioner, gce: GceFake, size, params, gib) -> None:
    req = request(sc(params), size)
    result = finish(gce_provisioner, req)
    assert result.capacity == f"{gib}Gi"
    assert gce.disk(req.volume_name)["sizeGb"] == str(gib)


def test_over_the_largest_disk_is_refused(gce_provisioner, gce: GceFake) -> None:
    with pytest.raises(PermanentError, match="65536"):
        gce_provisioner.provision(request(sc(), "65537Gi"))
    assert gce.disk_names() == []


# ---- CG2 zones --------------------------------------------------------------------------------------
def test_default_zone_and_its_node_affinity(gce_provisioner, gce: GceFake) -> None:
    req = request(sc())
    result = finish(gce_provisioner, req)
    assert zones_of(result) == [ZONE]
    assert gce.disk(req.volume_name)["zone"].endswith(f"/zones/{ZONE}")


def test_no_zone_anywhere_is_refused(gce: GceFake, monkeypatch) -> None:
    monkeypatch.delenv("CLOUDSDK_COMPUTE_ZONE", raising=False)
    p = GcePdProvisioner(project=gce.project, endpoint=gce.endpoint, cluster_id="test-cluster")
    with pytest.raises(PermanentError, match="no zone"):
        p.provision(request(sc()))


def test_zones_parameter_spreads_volumes_and_a_retry_keeps_its_zone(gce_provisioner, gce: GceFake) -> None:
    cls = sc({"zones": "us-central1-a, us-central1-b,us-central1-c"})
    seen = set()
    for _ in range(12):
        req = request(cls)
        result = finish(gce_provisioner, req)
        (zone,) = zones_of(result)
        assert zone in ("us-central1-a", "us-central1-b", "us-central1-c")
        assert gce.disk(req.volume_name)["zone"].endswith(f"/zones/{zone}")
        assert zones_of(finish(gce_provisioner, req)) == [zone]  # same choice again
        seen.add(zone)
    assert len(seen) >= 2


def test_wait_for_first_consumer_uses_the_selected_node_zone(gce_provisioner, gce: GceFake) -> None:
    req = request(sc({"type": "pd-ssd"}), node=gce_node("node-b1", "us-central1-b"))
    result = finish(gce_provisioner, req)
    assert zones_of(result) == ["us-central1-b"]
    assert gce.disk(req.volume_name)["zone"].endswith("/zones/us-central1-b")
    # A node without the zone label: its providerID names the zone.
    node = gce_node("node-c1", "us-central1-c")
    node["metadata"]["labels"] = {}
    assert zones_of(finish(gce_provisioner, request(sc(), node=node))) == ["us-central1-c"]


def test_wait_for_first_consumer_refusals(gce_provisioner, gce: GceFake) -> None:
    node = gce_node("node-b1", "us-central1-b")
    with pytest.raises(PermanentError, match="WaitForFirstConsumer"):
        gce_provisioner.provision(request(sc({"zone": "us-central1-b"}), node=node))
    with pytest.raises(PermanentError, match="allowedTopologies"):
        gce_provisioner.provision(request(sc(allowed=["us-central1-a"]), node=node))
    bare = {"metadata": {"name": "n", "labels": {}}, "spec": {}}
    with pytest.raises(PermanentError, match="zone"):
        gce_provisioner.provision(request(sc(), node=bare))
    assert gce.disk_names() == []


def test_regional_pd_uses_region_disks_in_two_zones(gce_provisioner, gce: GceFake) -> None:
    req = request(sc({"replication-type": "regional-pd", "type": "pd-ssd", "zones": "us-central1-a,us-central1-b"}))
    result = finish(gce_provisioner, req)
    assert sorted(zones_of(result)) == ["us-central1-a", "us-central1-b"]
    disk = gce.disk(req.volume_name)
    assert disk["region"].endswith("/regions/us-central1")
    assert sorted(z.rsplit("/", 1)[1] for z in disk["replicaZones"]) == ["us-central1-a", "us-central1-b"]
    # Under WaitForFirstConsumer: the node's zone and a second one from allowedTopologies.
    req2 = request(sc({"replication-type": "regional-pd", "type": "pd-ssd"},
                      allowed=["us-central1-b", "us-central1-c"]), node=gce_node("node-c1", "us-central1-c"))
    result2 = finish(gce_provisioner, req2)
    assert zones_of(result2)[0] == "us-central1-c" and zones_of(result2)[1] == "us-central1-b"
    with pytest.raises(PermanentError, match="second zone"):
        gce_provisioner.provision(request(sc({"replication-type": "regional-pd"}),
                                          node=gce_node("node-c1", "us-central1-c")))
    gce_provisioner.delete(pv_of(gce_provisioner, req, result))
    assert gce.disk(req.volume_name) is None


def test_regional_insert_still_running_is_polled_through_region_operations(gce_provisioner, gce: GceFake) -> None:
    gce.op_delay = 60.0
    req = request(sc({"replication-type": "regional-pd", "zones": "us-central1-a,us-central1-b"}))
    assert gce_provisioner.provision(req).status == "in_progress"
    gce.finish_operations()
    assert finish(gce_provisioner, req).capacity == "200Gi"
    assert any("/regions/us-central1/operations/" in path for _, path in gce.requests)
    assert len([r for r in gce.requests if r[0] == "POST" and r[1].endswith("/disks")]) == 1


# ---- CG3 idempotency --------------------------------------------------------------------------------
def test_crash_between_insert_and_pv_save_finds_the_same_disk(gce: GceFake) -> None:
    """The controller crashes after the insert, before saving the PV; a new process provisions again."""
    def fresh() -> GcePdProvisioner:
        return GcePdProvisioner(project=gce.project, endpoint=gce.endpoint, zone=ZONE, cluster_id="test-cluster",
                                operation_timeout=0.3)
    uid = str(uuid.uuid4())
    gce.op_delay = 30.0  # the insert operation is still RUNNING when the first process dies
    first = fresh().provision(request(sc({"zones": "us-central1-a,us-central1-b"}), uid=uid))
    assert first.status == "in_progress"
    again = fresh().provision(request(sc({"zones": "us-central1-a,us-central1-b"}), uid=uid))
    assert again.status == "in_progress"  # 409 -> our disk, still CREATING
    gce.finish_operations()
    gce.op_delay = 0.0
    done = fresh().provision(request(sc({"zones": "us-central1-a,us-central1-b"}), uid=uid))
    assert done.status == "finished"
    # And once more after the disk was READY (the PV save was lost again): the same answer, one disk.
    last = fresh().provision(request(sc({"zones": "us-central1-a,us-central1-b"}), uid=uid))
    assert last.source == done.source and last.node_affinity == done.node_affinity and last.capacity == done.capacity
    assert gce.disk_names() == [f"pvc-{uid}"]
    inserts = [r for r in gce.requests if r[0] == "POST" and r[1].endswith("/disks")]
    assert len(inserts) == 4  # each attempt asked once; three got 409 alreadyExists


def test_a_disk_of_that_name_made_by_someone_else_is_refused_and_kept(gce_provisioner, gce: GceFake) -> None:
    req = request(sc())
    other = GcePdProvisioner(project=gce.project, endpoint=gce.endpoint, zone=ZONE, cluster_id="other-cluster")
    result = finish(other, req)
    with pytest.raises(PermanentError, match="not made for volume"):
        gce_provisioner.provision(req)
    gce_provisioner.delete(pv_of(gce_provisioner, req, result))  # ours by annotation, not by labels: kept
    assert gce.disk_names() == [req.volume_name]


# ---- CG5 operations and throttling ------------------------------------------------------------------
def test_throttling_and_server_errors_are_retried(gce_provisioner, gce: GceFake) -> None:
    gce.inject("POST", r"/disks$", 429)
    gce.inject("POST", r"/disks$", 503)
    gce.inject("POST", r"/disks$", 403)  # rateLimitExceeded as a 403, as Compute Engine also sends
    req = request(sc())
    finish(gce_provisioner, req)
    inserts = [r for r in gce.requests if r[0] == "POST" and r[1].endswith("/disks")]
    assert len(inserts) == 4 and gce.disk_names() == [req.volume_name]


def test_persistent_server_errors_become_temporary_after_the_retry_budget(gce_provisioner, gce: GceFake) -> None:
    gce.inject("POST", r"/disks$", 503, count=1000)
    with pytest.raises(TemporaryError, match="backendError"):
        gce_provisioner.provision(request(sc()))
    assert gce.disk_names() == []


def test_a_forbidden_answer_that_is_not_throttling_is_not_retried(gce_provisioner, gce: GceFake) -> None:
    gce.inject("POST", r"/disks$", 403, reason="forbidden")
    with pytest.raises(PermanentError, match="refused"):
        gce_provisioner.provision(request(sc()))
    assert len([r for r in gce.requests if r[0] == "POST"]) == 1


def test_operation_running_past_the_deadline_is_in_progress_not_a_block(gce_provisioner, gce: GceFake) -> None:
    import time

    gce.op_delay = 60.0
    req = request(sc())
    started = time.monotonic()
    result = gce_provisioner.provision(req)
    # Well short of the operation's 60 s: the provisioner returned rather than waiting it out.
    assert result.status == "in_progress" and time.monotonic() - started < 30
    assert gce_provisioner.provision(req).status == "in_progress"
    gce.finish_operations()
    assert gce_provisioner.provision(req).status == "finished"
    # The same process remembers its insert: it polled the operation instead of inserting again.
    assert len([r for r in gce.requests if r[0] == "POST" and r[1].endswith("/disks")]) == 1
    assert gce.disk(req.volume_name)["status"] == "READY"


def test_failed_insert_operation_is_cleaned_up_and_retried(gce_provisioner, gce: GceFake) -> None:
    gce.fail_operation("insert", "ZONE_RESOURCE_POOL_EXHAUSTED", "The zone does not have enough resources")
    req = request(sc())
    with pytest.raises(TemporaryError, match="ZONE_RESOURCE_POOL_EXHAUSTED"):
        gce_provisioner.provision(req)
    assert gce.disk(req.volume_name)["status"] == "FAILED"
    with pytest.raises(TemporaryError, match="failed; retrying"):
        gce_provisioner.provision(req)  # 409 -> our FAILED husk -> deleted
    assert gce.disk(req.volume_name) is None
    assert finish(gce_provisioner, req).capacity == "10Gi"
    assert gce.disk(req.volume_name)["status"] == "READY" and gce.disk_names() == [req.volume_name]


def test_failed_attach_operation_is_reported_and_leaves_nothing_attached(gce_provisioner, gce: GceFake) -> None:
    pv = _provisioned(gce_provisioner)
    gce.fail_operation("attachDisk", "INVALID_USAGE", "Cannot attach disk in this state")
    with pytest.raises(PermanentError, match="INVALID_USAGE"):
        gce_provisioner.attach(pv, gce_node("node-a1", ZONE))
    assert gce.attached("node-a1") == []
    gce_provisioner.attach(pv, gce_node("node-a1", ZONE))  # a later attempt succeeds
    assert len(gce.attached("node-a1")) == 1


def test_delete_is_idempotent_and_waits_for_a_running_delete(gce_provisioner, gce: GceFake) -> None:
    req = request(sc())
    pv = pv_of(gce_provisioner, req, finish(gce_provisioner, req))
    gce.op_delay = 60.0
    with pytest.raises(TemporaryError, match="being deleted"):
        gce_provisioner.delete(pv)
    with pytest.raises(TemporaryError, match="being deleted"):
        gce_provisioner.delete(pv)  # DELETING: no second delete call
    assert len([r for r in gce.requests if r[0] == "DELETE"]) == 1
    gce.finish_operations()
    gce_provisioner.delete(pv)
    gce_provisioner.delete(pv)
    assert gce.disk_names() == []


# ---- CG6 attach / detach ----------------------------------------------------------------------------
def _provisioned(p: GcePdProvisioner, modes: tuple[str, ...] = ("ReadWriteOnce",), **params: str) -> dict[str, Any]:
    req = request(sc({"zone": ZONE, **params}), modes=modes)
    return pv_of(p, req, finish(p, req))


def test_attach_read_write_to_one_node_idempotent(gce_provisioner, gce: GceFake) -> None:
    pv = _provisioned(gce_provisioner)
    name = pv["metadata"]["name"]
    meta = gce_provisioner.attach(pv, gce_node("node-a1", ZONE))
    assert meta == {"devicePath": f"/dev/disk/by-id/google-{name}", "deviceName": name}
    assert [(d["deviceName"], d["mode"]) for d in gce.attached("node-a1")] == [(name, "READ_WRITE")]
    assert gce_provisioner.attach(pv, gce_node("node-a1", ZONE)) == meta
    assert len([r for r in gce.requests if r[1].endswith("/attachDisk")]) == 1
    # A second node: refused, by the API and so by us; the first keeps it.
    with pytest.raises(TemporaryError, match="node-a2"):
        gce_provisioner.attach(pv, gce_node("node-a2", ZONE))
    assert gce.attached("node-a2") == [] and len(gce.attached("node-a1")) == 1
    # Deleting an attached disk waits.
    with pytest.raises(TemporaryError, match="attached"):
        gce_provisioner.delete(pv)
    gce_provisioner.detach(pv, "node-a1")
    assert gce.attached("node-a1") == []
    gce_provisioner.detach(pv, "node-a1")  # idempotent: no second detach call
    gce_provisioner.detach(pv, "node-c1")  # never attached there
    assert len([r for r in gce.requests if r[1].endswith("/detachDisk")]) == 1
    gce_provisioner.delete(pv)
    assert gce.disk_names() == []


def test_attach_across_zones_is_refused(gce_provisioner, gce: GceFake) -> None:
    pv = _provisioned(gce_provisioner)
    with pytest.raises(PermanentError, match="zone"):
        gce_provisioner.attach(pv, gce_node("node-b1", "us-central1-b"))
    assert gce.attached("node-b1") == []


def test_read_only_many_attaches_read_only_to_many(gce_provisioner, gce: GceFake) -> None:
    pv = _provisioned(gce_provisioner, modes=("ReadOnlyMany",))
    for node in ("node-a1", "node-a2"):
        gce_provisioner.attach(pv, gce_node(node, ZONE))
    assert [d["mode"] for d in gce.attached("node-a1") + gce.attached("node-a2")] == ["READ_ONLY", "READ_ONLY"]
    gce_provisioner.detach(pv, "node-a1")
    gce_provisioner.detach(pv, "node-a2")
    assert gce.attached("node-a1") == gce.attached("node-a2") == []


def test_regional_disk_attaches_in_either_of_its_zones_only(gce_provisioner, gce: GceFake) -> None:
    req = request(sc({"replication-type": "regional-pd", "type": "pd-ssd", "zones": "us-central1-a,us-central1-b"}))
    pv = pv_of(gce_provisioner, req, finish(gce_provisioner, req))
    gce_provisioner.attach(pv, gce_node("node-b1", "us-central1-b"))
    assert len(gce.attached("node-b1")) == 1
    with pytest.raises(PermanentError, match="zone"):
        gce_provisioner.attach(pv, gce_node("node-c1", "us-central1-c"))
    gce_provisioner.detach(pv, "node-b1")
    assert gce.attached("node-b1") == []


def test_attach_operation_past_the_deadline_then_completes(gce_provisioner, gce: GceFake) -> None:
    pv = _provisioned(gce_provisioner)
    gce.op_delay = 60.0
    with pytest.raises(TemporaryError, match="being attached"):
        gce_provisioner.attach(pv, gce_node("node-a1", ZONE))
    with pytest.raises(TemporaryError, match="being attached"):  # the API says in use by this VM: still going
        gce_provisioner.attach(pv, gce_node("node-a1", ZONE))
    gce.finish_operations()
    gce.op_delay = 0.0
    assert gce_provisioner.attach(pv, gce_node("node-a1", ZONE))["deviceName"] == pv["metadata"]["name"]
    assert len(gce.attached("node-a1")) == 1


def test_detach_finds_an_instance_named_otherwise_through_the_node(gce: GceFake) -> None:
    nodes = {"k8s-node-1": gce_node("k8s-node-1", ZONE, instance="node-a1")}
    p = GcePdProvisioner(project=gce.project, endpoint=gce.endpoint, zone=ZONE, cluster_id="test-cluster",
                         nodes=nodes.get)
    pv = _provisioned(p)
    p.attach(pv, nodes["k8s-node-1"])
    assert len(gce.attached("node-a1")) == 1
    fresh = GcePdProvisioner(project=gce.project, endpoint=gce.endpoint, zone=ZONE, cluster_id="test-cluster",
                             nodes=nodes.get)  # no memory of the attach: the Node's providerID says which VM
    fresh.detach(pv, "k8s-node-1")
    assert gce.attached("node-a1") == []


def test_attach_to_an_unknown_instance_is_temporary(gce_provisioner, gce: GceFake) -> None:
    pv = _provisioned(gce_provisioner)
    with pytest.raises(TemporaryError, match="not found"):
        gce_provisioner.attach(pv, gce_node("ghost", ZONE))


# ---- CG7 resize -------------------------------------------------------------------------------------
def test_resize_grows_only(gce_provisioner, gce: GceFake) -> None:
    pv = _provisioned(gce_provisioner)
    name = pv["metadata"]["name"]
    assert gce_provisioner.expand(pv, 15 * GIB + 1) == 16 * GIB
    assert gce.disk(name)["sizeGb"] == "16"
    assert gce_provisioner.expand(pv, 12 * GIB) == 16 * GIB  # never shrinks, no call
    assert len([r for r in gce.requests if r[1].endswith("/resize")]) == 1
    gce.op_delay = 60.0
    with pytest.raises(TemporaryError, match="being resized"):
        gce_provisioner.expand(pv, 20 * GIB)
    gce.finish_operations()
    assert gce_provisioner.expand(pv, 20 * GIB) == 20 * GIB
    assert len([r for r in gce.requests if r[1].endswith("/resize")]) == 2


# ---- configuration ----------------------------------------------------------------------------------
def test_standard_environment_points_it_at_an_endpoint(gce: GceFake, monkeypatch) -> None:
    """gcloud's endpoint override (with its /compute/v1/ path) and project variables; no Stowage setting."""
    monkeypatch.setenv("CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE", gce.base)
    monkeypatch.setenv("CLOUDSDK_CORE_PROJECT", gce.project)
    monkeypatch.setenv("CLOUDSDK_COMPUTE_ZONE", "us-central1-c")
    p = GcePdProvisioner()
    req = request(sc())
    assert zones_of(finish(p, req)) == ["us-central1-c"]
    assert gce.disk(req.volume_name) is not None


def test_missing_credentials_is_a_clear_permanent_error(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(PermanentError, match="no Google credentials"):
        GcePdProvisioner(zone=ZONE).provision(request(sc()))


def test_disk_names_fit_compute_engine() -> None:
    from provisioners.gce_pd import NAME_RE, disk_name

    assert disk_name("pvc-0b8f8c3e-1d2a-4c1e-9c55-8d1e7a3c2b10") == "pvc-0b8f8c3e-1d2a-4c1e-9c55-8d1e7a3c2b10"
    for odd in ("My.Volume_1", "0-starts-with-digit", "x" * 100, "ümlaut"):
        name = disk_name(odd)
        assert NAME_RE.match(name) and len(name) <= 63, name
        assert disk_name(odd) == name  # stable: a retry uses the same name
    assert disk_name("A" * 70) != disk_name("A" * 71)


def test_unreachable_endpoint_is_temporary(gce: GceFake) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = GcePdProvisioner(project="test-project", endpoint=f"http://127.0.0.1:{port}", zone=ZONE, api_retry_timeout=0.5)
    with pytest.raises(TemporaryError, match="disks.insert"):
        p.provision(request(sc()))
