"""The CSI provisioner and attacher against a real CSI driver (kubernetes-csi's mock driver)."""
from __future__ import annotations

import json

import pytest

from provisioners import csi as csi_prov
from provisioners import registry
from provisioners.base import ProvisionRequest, secrets_available
from storage.errors import PermanentError, TemporaryError
from storage.system.csi import CsiClient

CLAIM = {"metadata": {"name": "data", "namespace": "team-a", "uid": "u1"},
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Mi"}}}}


@pytest.fixture
def driver(mock_driver):
    csi_prov.register_driver(mock_driver.name, mock_driver.endpoint)
    try:
        yield mock_driver
    finally:
        csi_prov.unregister_driver(mock_driver.name)


def _class(**params: str) -> dict:
    return {"metadata": {"name": "mock"}, "provisioner": "io.kubernetes.storage.mock", "parameters": params}


def _pv(result, name: str = "pvc-u1") -> dict:
    return {"metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": "io.kubernetes.storage.mock",
                                                       **result.annotations}},
            "spec": {**result.source, "capacity": {"storage": result.capacity}, "accessModes": ["ReadWriteOnce"]}}


def test_registry_selects_any_registered_driver(driver) -> None:
    """CS4: registry.get() of a registered driver's name gives the CSI provisioner (attaching: the
    mock driver has PUBLISH_UNPUBLISH_VOLUME); an unknown name stays unknown; unregistering forgets it."""
    p = registry.get(driver.name)
    assert isinstance(p, csi_prov.CsiAttachingProvisioner) and p.name == driver.name
    assert registry.get("example.com/not-registered") is None
    csi_prov.unregister_driver(driver.name)
    assert registry.get(driver.name) is None


def test_provision_creates_by_pv_name_and_maps_the_class(driver) -> None:
    """CS3, CS5, CS6: CreateVolume named after the PV (a retry finds the same volume); csi.storage.k8s.io/*
    parameters are not sent; secret refs land on the PV with templates substituted."""
    p = registry.get(driver.name)
    secrets_read: list[tuple[str, str]] = []

    def reader(ns: str, name: str):
        secrets_read.append((ns, name))
        return {"password": "hunter22"}

    sc = _class(**{"tier": "gold", "csi.storage.k8s.io/fstype": "ext4",
                   "csi.storage.k8s.io/provisioner-secret-name": "prov-${pvc.name}",
                   "csi.storage.k8s.io/provisioner-secret-namespace": "${pvc.namespace}",
                   "csi.storage.k8s.io/node-stage-secret-name": "stage-${pv.name}",
                   "csi.storage.k8s.io/node-stage-secret-namespace": "kube-system"})
    req = ProvisionRequest("pvc-u1", CLAIM, sc, secrets=reader)
    r1 = p.provision(req)
    r2 = p.provision(req)
    assert r1.status == "finished"
    src = r1.source["csi"]
    assert src["volumeHandle"] == r2.source["csi"]["volumeHandle"]
    assert src["driver"] == driver.name and src["fsType"] == "ext4"
    # The mock driver echoes CreateVolume's name and parameters in the volume context.
    assert src["volumeAttributes"]["name"] == "pvc-u1"
    assert not any(k.startswith("csi.storage.k8s.io/") for k in src["volumeAttributes"] if k != "storage.kubernetes.io/csiProvisionerIdentity")
    assert src["nodeStageSecretRef"] == {"name": "stage-pvc-u1", "namespace": "kube-system"}
    assert secrets_read[0] == ("team-a", "prov-data")
    assert int(r1.capacity) == 10 << 20
    assert r1.annotations[csi_prov.ANN_DELETION_SECRET_NAME] == "prov-data"
    with secrets_available(reader):
        p.delete(_pv(r1))
        p.delete(_pv(r1))  # already gone: success (CS3)


def test_bad_templates_and_missing_secrets(driver) -> None:
    """CS5: ${pvc.name} in a namespace is refused; a missing Secret is temporary."""
    p = registry.get(driver.name)
    bad = _class(**{"csi.storage.k8s.io/provisioner-secret-name": "s",
                    "csi.storage.k8s.io/provisioner-secret-namespace": "${pvc.name}"})
    with pytest.raises(PermanentError, match="provisioner-secret-namespace"):
        p.provision(ProvisionRequest("pvc-u1", CLAIM, bad, secrets=lambda ns, n: {}))
    half = _class(**{"csi.storage.k8s.io/node-publish-secret-name": "s"})
    with pytest.raises(PermanentError, match="together"):
        p.provision(ProvisionRequest("pvc-u1", CLAIM, half, secrets=lambda ns, n: {}))
    missing = _class(**{"csi.storage.k8s.io/provisioner-secret-name": "s",
                        "csi.storage.k8s.io/provisioner-secret-namespace": "default"})
    with pytest.raises(TemporaryError, match="default/s"):
        p.provision(ProvisionRequest("pvc-u1", CLAIM, missing, secrets=lambda ns, n: None))


def test_attach_expand_detach(driver) -> None:
    """CS7, CS8: ControllerPublish with the node's driver node id gives the publish context; expansion
    through ControllerExpandVolume; unpublish; a node without the driver registered waits."""
    p = registry.get(driver.name)
    r = p.provision(ProvisionRequest("pvc-u1", CLAIM, _class()))
    pv = _pv(r)
    node_id = CsiClient(driver.endpoint).node_info().node_id
    node = {"metadata": {"name": "n1", "annotations": {csi_prov.ANN_NODE_IDS: json.dumps({driver.name: node_id})}}}
    with pytest.raises(TemporaryError, match="has not registered"):
        p.attach(pv, {"metadata": {"name": "n2"}})
    meta = p.attach(pv, node)
    assert meta["device"] == "/dev/mock"
    assert p.expand(pv, 30 << 20) == 30 << 20
    p.detach(pv, "n1")
    p.detach(pv, "n1")
    p.delete(pv)


def test_unreachable_driver_is_not_resolved(tmp_path) -> None:
    """CS4: a registered name whose socket does not answer is not a provisioner (the claim waits)."""
    csi_prov.register_driver("example.com/gone", f"unix://{tmp_path}/none.sock")
    try:
        assert csi_prov.resolve("example.com/gone") is None
    finally:
        csi_prov.unregister_driver("example.com/gone")
