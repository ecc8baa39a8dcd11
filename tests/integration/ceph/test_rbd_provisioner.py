"""The RBD provisioner against a real one-node Ceph: the shared contract for both class spellings,
expansion, and the errors users see (RB1-RB6)."""
from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import pytest

from ceph_service import CephCluster
from provisioners.base import ProvisionRequest, secrets_available
from provisioners.rbd import (ANN_ADMIN_SECRET, IMAGE_PREFIX, RbdProvisioner, image_name)
from provisioners.testing import ProvisionerContract, make_claim, pv_from_result
from rbd_support import (ADMIN_SECRET, CSI_SECRET, USER_SECRET, Images, config_map_reader, csi_class,  # noqa: F401
                         images, in_tree_class, rbd_pool, secret_reader)
from storage.errors import PermanentError, TemporaryError


@pytest.fixture
def readers(ceph_cluster: CephCluster) -> Iterator[None]:
    with secrets_available(secret_reader(ceph_cluster), config_map_reader(ceph_cluster)):
        yield


class _Base(ProvisionerContract):
    @pytest.fixture
    def provisioner(self, readers: None) -> RbdProvisioner:
        return RbdProvisioner()

    @pytest.fixture
    def backend_count(self, images: Images) -> Callable[[str], int]:
        return images.count

    def _request(self, storage_class: dict[str, Any], size: str = "1Gi", **kw: Any) -> ProvisionRequest:
        cluster = self._cluster
        kw.setdefault("secrets", secret_reader(cluster))
        kw.setdefault("config_maps", config_map_reader(cluster))
        return super()._request(storage_class, size, **kw)

    @pytest.fixture(autouse=True)
    def _remember(self, ceph_cluster: CephCluster) -> None:
        self._cluster = ceph_cluster


class TestRbdInTreeContract(_Base):
    """RB1, RB2, RB3: the contract with a class copied from Kubernetes' in-tree rbd docs."""

    @pytest.fixture
    def storage_class(self, ceph_cluster: CephCluster, rbd_pool: str) -> dict[str, Any]:
        return in_tree_class(ceph_cluster)


class TestRbdCsiContract(_Base):
    """RB1, RB2, RB3: the contract with a ceph-csi class (clusterID through ceph-csi-config)."""

    @pytest.fixture
    def storage_class(self, rbd_pool: str) -> dict[str, Any]:
        return csi_class(**{"csi.storage.k8s.io/provisioner-secret-name": CSI_SECRET[1]})


def _provision(ceph_cluster: CephCluster, storage_class: dict[str, Any], size: str = "100Mi") -> tuple[ProvisionRequest, dict[str, Any]]:
    provisioner = RbdProvisioner()
    claim = make_claim(size, class_name=storage_class["metadata"]["name"])
    req = ProvisionRequest(volume_name=f"pvc-{claim['metadata']['uid']}", claim=claim, storage_class=storage_class,
                           secrets=secret_reader(ceph_cluster), config_maps=config_map_reader(ceph_cluster))
    result = provisioner.provision(req)
    assert result.status == "finished"
    return req, pv_from_result(provisioner, req, result)


def test_in_tree_pv_carries_the_in_tree_source(ceph_cluster: CephCluster, images: Images) -> None:
    """RB1, RB2: the PV has the rbd source Kubernetes' in-tree provisioner writes; the image is named after
    the PV, sized in whole MiB, and records the PV's name."""
    req, pv = _provision(ceph_cluster, in_tree_class(ceph_cluster), "1500Ki")
    try:
        source = pv["spec"]["rbd"]
        assert source == {"monitors": [ceph_cluster.monitors], "pool": "stowage-rbd", "image": image_name(req.volume_name),
                          "user": "admin", "secretRef": {"name": USER_SECRET[1], "namespace": USER_SECRET[0]},
                          "fsType": "ext4"}
        assert source["image"].startswith(IMAGE_PREFIX)
        assert pv["spec"]["capacity"]["storage"] == "2Mi" and images.size(source["image"]) == 2 << 20
        assert pv["metadata"]["annotations"][ANN_ADMIN_SECRET] == "/".join(ADMIN_SECRET)
        assert "key" not in str(pv).lower().replace("monitors", "")  # no key material anywhere in the PV
        assert ceph_cluster.admin_key not in str(pv)
    finally:
        with secrets_available(secret_reader(ceph_cluster)):
            RbdProvisioner().delete(pv)


def test_csi_class_maps_node_stage_secret_to_secret_ref(ceph_cluster: CephCluster, images: Images) -> None:
    """RB1: a ceph-csi class: monitors from ceph-csi-config, the node-stage Secret becomes the PV's secretRef
    and its userID the source's user; unknown csi.storage.k8s.io/ keys are accepted."""
    req, pv = _provision(ceph_cluster, csi_class(**{"csi.storage.k8s.io/pvc/name": "x"}))
    try:
        source = pv["spec"]["rbd"]
        assert source["monitors"] == [ceph_cluster.monitors]
        assert source["secretRef"] == {"name": CSI_SECRET[1], "namespace": CSI_SECRET[0]} and source["user"] == "admin"
        assert source["fsType"] == "ext4"
    finally:
        with secrets_available(secret_reader(ceph_cluster)):
            RbdProvisioner().delete(pv)


def test_expand_grows_the_image(ceph_cluster: CephCluster, images: Images) -> None:
    """RB5: expand resizes the image (rounded up to MiB), never shrinks it, through the expand Secret."""
    for storage_class in (in_tree_class(ceph_cluster), csi_class()):
        _, pv = _provision(ceph_cluster, storage_class, "64Mi")
        image = pv["spec"]["rbd"]["image"]
        with secrets_available(secret_reader(ceph_cluster)):
            provisioner = RbdProvisioner()
            try:
                assert provisioner.expand(pv, (128 << 20) + 1) == 129 << 20
                assert images.size(image) == 129 << 20
                assert provisioner.expand(pv, 64 << 20) == 129 << 20  # smaller: unchanged
                assert images.size(image) == 129 << 20
            finally:
                provisioner.delete(pv)
        assert image not in images.names()


def test_bad_parameters_are_permanent_errors_naming_them(ceph_cluster: CephCluster, rbd_pool: str) -> None:
    """RB1: bad features, formats and a missing clusterID are PermanentErrors naming the parameter."""
    cases = [
        (in_tree_class(ceph_cluster, imageFeatures="no-such-feature"), "imageFeatures"),
        (in_tree_class(ceph_cluster, imageFormat="3"), "imageFormat"),
        (csi_class(clusterID="elsewhere"), "clusterID"),
    ]
    for storage_class, parameter in cases:
        with pytest.raises(PermanentError) as info:
            _provision(ceph_cluster, storage_class)
        assert parameter in str(info.value)


def test_missing_secret_is_temporary_and_names_it(ceph_cluster: CephCluster, rbd_pool: str) -> None:
    """RB3: a class whose admin Secret does not exist (yet) waits for it, naming it, never a key."""
    with pytest.raises(TemporaryError) as info:
        _provision(ceph_cluster, in_tree_class(ceph_cluster, adminSecretName="absent"))
    assert "kube-system/absent" in str(info.value)


def test_unreachable_monitor_is_temporary_naming_the_endpoint(ceph_cluster: CephCluster, images: Images) -> None:
    """RB6: a monitor that does not answer is a TemporaryError naming the endpoint; nothing is created."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    before = set(images.names())
    storage_class = in_tree_class(ceph_cluster, monitors=dead)
    provisioner = RbdProvisioner(connect_timeout=2)
    claim = make_claim("10Mi", class_name="rbd")
    req = ProvisionRequest(volume_name=f"pvc-{claim['metadata']['uid']}", claim=claim, storage_class=storage_class,
                           secrets=secret_reader(ceph_cluster))
    began = time.monotonic()
    with pytest.raises(TemporaryError) as info:
        provisioner.provision(req)
    assert dead in str(info.value) and ceph_cluster.admin_key not in str(info.value)
    assert time.monotonic() - began < 30
    assert set(images.names()) == before


def test_delete_refused_while_the_image_is_watched(ceph_cluster: CephCluster, images: Images) -> None:
    """RB4: delete waits (TemporaryError) while a client has the image open, then removes it."""
    _, pv = _provision(ceph_cluster, in_tree_class(ceph_cluster), "8Mi")
    image = pv["spec"]["rbd"]["image"]
    with secrets_available(secret_reader(ceph_cluster)):
        with images.rbd.Image(images.ioctx, image) as handle:  # a read-write open registers a watch
            assert handle.size() == 8 << 20
            with pytest.raises(TemporaryError) as info:
                RbdProvisioner().delete(pv)
            assert "still being used" in str(info.value)
        RbdProvisioner().delete(pv)
    assert image not in images.names()
