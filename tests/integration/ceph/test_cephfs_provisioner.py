"""The CephFS provisioner against the session's real Ceph (mon, mgr volumes module, MDS): the shared
contract for a ceph-csi-style class and an external-storage-style class, and CF1-CF6."""
from __future__ import annotations

import base64
import json
import socket
import time
from typing import Any, Callable

import pytest

from cephfs_testutil import (  # noqa: F401  (cephfs_clean is a fixture)
    Objects, auth_users, cephfs_clean, cluster_objects, csi_class, external_class, make_provisioner, subvolumes, sweep,
)
from ceph_service import CephCluster
from provisioners import registry
from provisioners.base import ProvisionRequest
from provisioners.cephfs import ANN_SUBVOLUME, CephfsProvisioner, user_secret_name
from provisioners.testing import ProvisionerContract, make_claim, pv_from_result
from storage.errors import PermanentError, TemporaryError


def _request(storage_class: dict[str, Any], size: str = "1Gi", modes: tuple[str, ...] = ("ReadWriteMany",),
             namespace: str = "apps") -> ProvisionRequest:
    claim = make_claim(size, modes=modes, namespace=namespace, class_name=storage_class["metadata"]["name"])
    return ProvisionRequest(volume_name=f"pvc-{claim['metadata']['uid']}", claim=claim, storage_class=storage_class)


class TestCsiStyleContract(ProvisionerContract):
    """CF1, CF4, P2: cephfs.csi.ceph.com with clusterID through ceph-csi's ConfigMap and a provisioner Secret."""

    @pytest.fixture
    def provisioner(self, ceph_cluster: CephCluster, cephfs_clean) -> CephfsProvisioner:
        return make_provisioner(cluster_objects(ceph_cluster))

    @pytest.fixture
    def storage_class(self) -> dict[str, Any]:
        return csi_class()

    @pytest.fixture
    def backend_count(self, ceph_cluster: CephCluster) -> Callable[[str], int]:
        return lambda volume: subvolumes(ceph_cluster, "cmgroup").count(volume)


class TestExternalStyleContract(ProvisionerContract):
    """CF1, CF4, P2: ceph.com/cephfs with monitors and an in-tree admin Secret (group from claimRoot)."""

    @pytest.fixture
    def provisioner(self, ceph_cluster: CephCluster, cephfs_clean) -> CephfsProvisioner:
        return make_provisioner(cluster_objects(ceph_cluster))

    @pytest.fixture
    def storage_class(self, ceph_cluster: CephCluster) -> dict[str, Any]:
        return external_class(ceph_cluster)

    @pytest.fixture
    def backend_count(self, ceph_cluster: CephCluster) -> Callable[[str], int]:
        return lambda volume: subvolumes(ceph_cluster, "kubernetes").count(volume)


def test_registered_under_all_three_names() -> None:
    """CF0: the ceph-csi name, the external-storage name and kubernetes.io/cephfs select the same provisioner."""
    found = {name: registry.get(name) for name in ("cephfs.csi.ceph.com", "ceph.com/cephfs", "kubernetes.io/cephfs")}
    assert all(isinstance(p, CephfsProvisioner) for p in found.values())
    assert len({id(p) for p in found.values()}) == 1


def test_pv_source_user_and_secret(ceph_cluster: CephCluster, cephfs_clean) -> None:
    """CF1, CF2: the in-tree cephfs source with getpath's path, a user named after the PV whose key is in a
    Secret in the claim's namespace, allowed only that path; quota = request rounded up to MiB."""
    provisioner = make_provisioner(cluster_objects(ceph_cluster))
    req = _request(csi_class(), "1500Ki")
    started = time.monotonic()
    result = provisioner.provision(req)
    elapsed = time.monotonic() - started
    print(f"\nsubvolume create+authorize: {elapsed * 1000:.0f} ms")
    assert result.status == "finished" and result.capacity == "2Mi"
    source = result.source["cephfs"]
    path = ceph_cluster.ceph("fs", "subvolume", "getpath", "cephfs", req.volume_name, "cmgroup").strip()
    assert source == {"monitors": [ceph_cluster.monitors], "path": path, "user": req.volume_name,
                      "secretRef": {"name": user_secret_name(req.volume_name), "namespace": "apps"}, "readOnly": False}
    [secret] = result.objects
    assert secret["kind"] == "Secret" and secret["metadata"] == {"name": user_secret_name(req.volume_name),
                                                                 "namespace": "apps"}
    key = base64.b64decode(secret["data"]["key"]).decode()
    assert key == ceph_cluster.ceph("auth", "get-key", f"client.{req.volume_name}").strip()
    caps = json.loads(ceph_cluster.ceph("auth", "get", f"client.{req.volume_name}", "--format", "json"))[0]["caps"]
    assert caps["mds"] == f"allow rw path={path}"
    info = json.loads(ceph_cluster.ceph("fs", "subvolume", "info", "cephfs", req.volume_name, "cmgroup", "--format", "json"))
    assert info["bytes_quota"] == 2 * 1024 * 1024
    assert key not in json.dumps(result.annotations) and key not in json.dumps(result.source)
    provisioner.delete(pv_from_result(provisioner, req, result))
    assert f"client.{req.volume_name}" not in auth_users(ceph_cluster)  # CF3: the user goes with the volume


def test_expand_raises_the_quota(ceph_cluster: CephCluster, cephfs_clean) -> None:
    """CF6: expand resizes the subvolume (never shrinks) and returns the new size."""
    provisioner = make_provisioner(cluster_objects(ceph_cluster))
    for storage_class in (csi_class(), external_class(ceph_cluster)):
        req = _request(storage_class, "10Mi")
        result = provisioner.provision(req)
        pv = pv_from_result(provisioner, req, result)
        group = pv["metadata"]["annotations"]["cephfs.stowage.io/subvolume-group"]
        assert provisioner.expand(pv, 20 * 1024 * 1024 + 1) == 21 * 1024 * 1024
        info = json.loads(ceph_cluster.ceph("fs", "subvolume", "info", "cephfs", req.volume_name, group, "--format", "json"))
        assert info["bytes_quota"] == 21 * 1024 * 1024
        provisioner.delete(pv)
        assert req.volume_name not in subvolumes(ceph_cluster, group)


def test_subvolume_made_but_not_authorized_is_finished_on_retry(ceph_cluster: CephCluster, cephfs_clean) -> None:
    """CF4: a first attempt that created the subvolume and stopped (no user) is finished by the retry:
    one subvolume, the user authorized, the PV complete."""
    provisioner = make_provisioner(cluster_objects(ceph_cluster))
    req = _request(csi_class())
    ceph_cluster.ceph("fs", "subvolumegroup", "create", "cephfs", "cmgroup")
    ceph_cluster.ceph("fs", "subvolume", "create", "cephfs", req.volume_name, "cmgroup", "--size", str(1 << 30))
    assert f"client.{req.volume_name}" not in auth_users(ceph_cluster)
    result = provisioner.provision(req)
    assert subvolumes(ceph_cluster, "cmgroup").count(req.volume_name) == 1
    assert f"client.{req.volume_name}" in auth_users(ceph_cluster)
    assert result.source["cephfs"]["path"].startswith(f"/volumes/cmgroup/{req.volume_name}/")
    provisioner.delete(pv_from_result(provisioner, req, result))
    assert req.volume_name not in subvolumes(ceph_cluster, "cmgroup")


def test_unreachable_monitor_is_a_temporary_error_naming_it(ceph_cluster: CephCluster, cephfs_clean) -> None:
    """CF5: nothing listens at the monitor address: TemporaryError naming the endpoint and the error, no
    key in the message, and nothing created."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"  # bound, never listening: connections are refused
        objects = cluster_objects(ceph_cluster)
        provisioner = make_provisioner(objects, connect_timeout=2)
        req = _request(external_class(ceph_cluster, monitors=dead))
        started = time.monotonic()
        with pytest.raises(TemporaryError) as info:
            provisioner.provision(req)
    assert time.monotonic() - started < 15
    assert dead in str(info.value) and "cannot reach Ceph monitors" in str(info.value)
    assert ceph_cluster.admin_key not in str(info.value)
    assert req.volume_name not in subvolumes(ceph_cluster, "kubernetes")


@pytest.mark.parametrize("params, needle", [
    ({"noSuchParameter": "x", "monitors": "m:1"}, "noSuchParameter"),
    ({"adminSecretName": "ceph-admin"}, "clusterID (ceph-csi) or monitors"),
    ({"clusterID": "nope", "csi.storage.k8s.io/provisioner-secret-name": "csi-admin"}, "clusterID='nope': not in ConfigMap"),
    ({"monitors": "127.0.0.1:1", "adminSecretName": "ceph-admin", "adminSecretNamespace": "kube-system",
      "claimRoot": "/elsewhere/x"}, "claimRoot='/elsewhere/x': must be /volumes/<group>"),
    ({"monitors": "127.0.0.1:1"}, "provisioner-secret-name or adminSecretName: Required value"),
    ({"monitors": "127.0.0.1:1", "adminSecretName": "ceph-admin", "mounter": "nfs"}, "mounter='nfs'"),
])
def test_bad_parameters_are_permanent_errors(ceph_cluster: CephCluster, params: dict[str, str], needle: str) -> None:
    """CF0: parameters checked before anything is contacted; the message names the parameter."""
    provisioner = make_provisioner(cluster_objects(ceph_cluster))
    with pytest.raises(PermanentError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        provisioner.provision(_request({"metadata": {"name": "x"}, "provisioner": "ceph.com/cephfs", "parameters": params}))


def test_missing_secret_is_temporary_and_block_mode_refused(ceph_cluster: CephCluster) -> None:
    """CF0: a provisioner Secret not there yet is retried; volumeMode Block is refused."""
    provisioner = make_provisioner(Objects())
    with pytest.raises(TemporaryError, match="Secret kube-system/ceph-admin not found"):
        provisioner.provision(_request(external_class(ceph_cluster)))
    req = _request(external_class(ceph_cluster))
    req.claim["spec"]["volumeMode"] = "Block"
    with pytest.raises(PermanentError, match="volumeMode Block"):
        provisioner.provision(req)


def test_delete_of_a_volume_whose_subvolume_is_gone_succeeds(ceph_cluster: CephCluster, cephfs_clean) -> None:
    """CF3: deleting what is already gone (subvolume removed by hand, user gone) succeeds."""
    provisioner = make_provisioner(cluster_objects(ceph_cluster))
    req = _request(external_class(ceph_cluster))
    pv = pv_from_result(provisioner, req, provisioner.provision(req))
    ceph_cluster.ceph("fs", "subvolume", "rm", "cephfs", pv["metadata"]["annotations"][ANN_SUBVOLUME], "kubernetes")
    ceph_cluster.ceph("auth", "rm", f"client.{req.volume_name}")
    provisioner.delete(pv)
    provisioner.delete(pv)
    assert sweep(ceph_cluster) == []
