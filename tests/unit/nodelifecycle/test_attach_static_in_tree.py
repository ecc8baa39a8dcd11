"""Static in-tree cloud disks reach their attacher without a provisioned-by annotation (AD1, SEMANTICS A1)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterator

import pytest

from provisioners import registry as provisioner_registry
from provisioners.base import ANN_PROVISIONED_BY, Attacher, ProvisionRequest, ProvisionResult, Provisioner
from storage.controllers.attachdetach import AttachDetachReconciler, attacher_name, attachment_name, calculate_changes
from storage.errors import PermanentError

Obj = dict[str, Any]
EBS = "kubernetes.io/aws-ebs"


class EbsLike(Provisioner, Attacher):
    """Registered under the in-tree EBS name, as the EBS backend is, with its CSI alias."""

    name = EBS
    aliases = frozenset({"ebs.csi.aws.com"})

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        raise PermanentError("not in this test")

    def delete(self, pv: Obj) -> None:
        return None

    def attach(self, pv: Obj, node: Obj) -> dict[str, str]:
        return {"devicePath": "/dev/xvdba"}

    def detach(self, pv: Obj, node_name: str) -> None:
        return None


class OnlyProvisions(Provisioner):
    name = "example.com/makes-volumes"

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        raise PermanentError("not in this test")

    def delete(self, pv: Obj) -> None:
        return None


@pytest.fixture
def ebs() -> Iterator[EbsLike]:
    found = EbsLike()
    provisioner_registry.register(found)
    provisioner_registry.register(OnlyProvisions())
    try:
        yield found
    finally:
        provisioner_registry.unregister(EBS)
        provisioner_registry.unregister(OnlyProvisions.name)


def static_pv(source: Obj, annotations: Obj | None = None) -> Obj:
    return {"metadata": {"name": "web-disk", "annotations": annotations or {}},
            "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
                     "claimRef": {"namespace": "default", "name": "web"}, **source}}


def test_ad1_static_in_tree_sources_map_to_their_in_tree_attacher(ebs: EbsLike) -> None:
    assert attacher_name(static_pv({"awsElasticBlockStore": {"volumeID": "vol-0123"}})) == EBS
    assert attacher_name(static_pv({"gcePersistentDisk": {"pdName": "d"}})) == "kubernetes.io/gce-pd"
    assert attacher_name(static_pv({"azureDisk": {"diskName": "d", "diskURI": "u"}})) == "kubernetes.io/azure-disk"
    # A CSI PV names its driver; a provisioned PV its class's provisioner (an alias selects the same attacher).
    assert attacher_name(static_pv({"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"}})) == "ebs.csi.aws.com"
    # A provisioner that cannot attach does not hide the in-tree attacher of the source it wrote.
    assert attacher_name(static_pv({"awsElasticBlockStore": {"volumeID": "vol-1"}},
                                   {ANN_PROVISIONED_BY: OnlyProvisions.name})) == EBS
    # Volumes the node reaches by itself have none.
    assert attacher_name(static_pv({"nfs": {"server": "s", "path": "/"}})) is None
    assert attacher_name(static_pv({"local": {"path": "/x"}})) is None


class _Cache:
    def __init__(self, objs: dict[str, list[Obj]]) -> None:
        self.objs = objs

    def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        return next((o for o in self.objs.get(resource, []) if o["metadata"]["name"] == name
                     and o["metadata"].get("namespace", "") == namespace), None)

    def list(self, resource: str, namespace: str | None = None, label_selector: str | None = None) -> list[Obj]:
        return [o for o in self.objs.get(resource, []) if namespace is None or o["metadata"].get("namespace") == namespace]


class _Ctx:
    def __init__(self, cache: _Cache) -> None:
        self.cache = cache
        self.options = None


def test_ad1_a_pod_on_a_static_ebs_pv_gets_a_volumeattachment_named_for_the_in_tree_attacher(ebs: EbsLike) -> None:
    pv = static_pv({"awsElasticBlockStore": {"volumeID": "vol-0123", "fsType": "ext4"}})
    claim = {"metadata": {"name": "web", "namespace": "default"}, "spec": {"volumeName": "web-disk"}}
    pod = {"metadata": {"name": "web-0", "namespace": "default", "uid": "u1"},
           "spec": {"nodeName": "n1", "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "web"}}]},
           "status": {"phase": "Pending"}}
    node = {"metadata": {"name": "n1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    reconciler = AttachDetachReconciler(_Ctx(_Cache({
        "persistentvolumes": [pv], "persistentvolumeclaims": [claim], "pods": [pod], "nodes": [node]})))
    assert reconciler._pod_volumes(pod) == ["web-disk"]  # the pod's changes reach the volume's key
    snap = reconciler._snapshot("web-disk")
    assert snap is not None and snap.attacher == EBS
    changes = calculate_changes(snap, datetime.now(timezone.utc), 360)
    assert [(a.name, a.node, a.attacher) for a in changes.attaches] == [
        (attachment_name("web-disk", EBS, "n1"), "n1", EBS)]


def test_ad1_without_an_installed_attacher_a_static_disk_gets_no_attachment() -> None:
    pv = static_pv({"vsphereVolume": {"volumePath": "[ds1] volumes/d.vmdk"}})
    assert attacher_name(pv) == "kubernetes.io/vsphere-volume"
    assert provisioner_registry.get("kubernetes.io/vsphere-volume") is None  # no vSphere backend in Stowage
    reconciler = AttachDetachReconciler(_Ctx(_Cache({"persistentvolumes": [pv]})))
    assert reconciler._snapshot("web-disk") is None
