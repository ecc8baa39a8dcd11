"""Per-node attach limits in the scheduler (AD3; Kubernetes' NodeVolumeLimits filter)."""
from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from storage.controllers.scheduler import (
    R_MAX_VOLUMES, Snapshot, exceeds_volume_limits, place, pod_attachable_volumes, volume_limit_key,
)
from volume_plugins.base import Device, DevicePlugin, VolumeContext
from volume_plugins.registry import LimitKeys, PluginRegistry, attach_limit_keys

Obj = dict[str, Any]
KEY = "attachable-volumes-aws-ebs"
KEYS = LimitKeys({"awsElasticBlockStore": KEY}, {"kubernetes.io/aws-ebs": KEY, "ebs.csi.aws.com": KEY})


def node(name: str, limit: int | None) -> Obj:
    allocatable: Obj = {"pods": "110"}
    if limit is not None:
        allocatable[KEY] = str(limit)
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "allocatable": allocatable}}


def ebs_pv(name: str) -> Obj:
    return {"metadata": {"name": name}, "spec": {"awsElasticBlockStore": {"volumeID": f"vol-{name}"},
                                                 "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}}


def bound_claim(name: str, pv: str) -> Obj:
    return {"metadata": {"name": name, "namespace": "default",
                         "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},  # what the binder writes (B6)
            "spec": {"volumeName": pv}, "status": {"phase": "Bound"}}


def pod(name: str, claims: list[str], node_name: str | None = None, phase: str = "Pending",
        inline: list[Obj] | None = None) -> Obj:
    volumes = [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in claims] + list(inline or [])
    spec: Obj = {"volumes": volumes, "containers": [{"name": "c", "image": "x"}]}
    if node_name:
        spec["nodeName"] = node_name
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"}, "spec": spec,
            "status": {"phase": phase}}


def snapshot(nodes: list[Obj], pods: list[Obj], n_volumes: int, classes: dict[str, Obj] | None = None,
             extra_claims: list[Obj] | None = None) -> Snapshot:
    pvs = {f"d{i}": ebs_pv(f"d{i}") for i in range(n_volumes)}
    claims = {("default", f"c{i}"): bound_claim(f"c{i}", f"d{i}") for i in range(n_volumes)}
    for c in extra_claims or []:
        claims[("default", c["metadata"]["name"])] = c
    return Snapshot(nodes, pods, claims, pvs, classes or {}, limit_keys=KEYS)


def test_ad3_a_pod_beyond_the_limit_stays_pending_with_kubernetes_message() -> None:
    placed = pod("first", ["c0"], "n1", phase="Running")
    out = place(pod("second", ["c1"]), snapshot([node("n1", 1)], [placed], 2))
    assert out.node is None
    assert out.message == "0/1 nodes are available: 1 node(s) exceed max volume count."
    # The same volume again is no new attachment: a second pod sharing the first one's disk fits.
    assert place(pod("sharer", ["c0"]), snapshot([node("n1", 1)], [placed], 2)).node == "n1"
    # A finished pod holds nothing; a node with room is chosen over a full one.
    done = pod("first", ["c0"], "n1", phase="Succeeded")
    assert place(pod("second", ["c1"]), snapshot([node("n1", 1)], [done], 2)).node == "n1"
    assert place(pod("second", ["c1"]), snapshot([node("n1", 1), node("n2", 1)], [placed], 2)).node == "n2"
    # A node that reports no limit for the kind takes any number; a pod with no such volume always fits.
    assert place(pod("second", ["c1"]), snapshot([node("n1", None)], [placed], 2)).node == "n1"
    assert place(pod("plain", []), snapshot([node("n1", 0)], [placed], 2)).node == "n1"


def test_ad3_limit_zero_and_mixed_reasons_in_the_summary() -> None:
    nodes = [node("n1", 0), {**node("n2", 5), "status": {"conditions": [{"type": "Ready", "status": "False"}]}}]
    out = place(pod("p", ["c0"]), snapshot(nodes, [], 1))
    assert out.message == "0/2 nodes are available: 1 node(s) exceed max volume count, 1 node(s) were not ready."


def test_ad3_unbound_claims_of_an_attaching_class_inline_disks_and_csi_volumes_count() -> None:
    classes = {"ebs": {"metadata": {"name": "ebs"}, "provisioner": "ebs.csi.aws.com",
                       "volumeBindingMode": "WaitForFirstConsumer"},
               "other": {"metadata": {"name": "other"}, "provisioner": "example.com/nfs",
                         "volumeBindingMode": "WaitForFirstConsumer"}}
    late = {"metadata": {"name": "late", "namespace": "default"}, "spec": {"storageClassName": "ebs"}}
    nfs = {"metadata": {"name": "nfs", "namespace": "default"}, "spec": {"storageClassName": "other"}}
    inline = [{"name": "raw", "awsElasticBlockStore": {"volumeID": "vol-x"}},
              {"name": "raw-again", "awsElasticBlockStore": {"volumeID": "vol-x", "readOnly": True}}]
    snap = snapshot([node("n1", 2)], [], 1, classes, [late, nfs])
    wanted = pod_attachable_volumes(pod("p", ["c0", "late", "nfs"], inline=inline), snap)
    assert wanted == {KEY: {"pv:d0", "claim:default/late", "inline:vol-x"}}
    assert exceeds_volume_limits(node("n1", 2), wanted, [], snap)
    assert not exceeds_volume_limits(node("n1", 3), wanted, [], snap)
    assert volume_limit_key({"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "v"}}, KEYS) == KEY
    assert volume_limit_key({"csi": {"driver": "other.example.com"}}, KEYS) is None
    assert volume_limit_key({"nfs": {"server": "s"}}, KEYS) is None


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(min_value=0, max_value=4),
       existing=st.lists(st.lists(st.integers(min_value=0, max_value=5), max_size=3), max_size=4),
       new=st.lists(st.integers(min_value=0, max_value=5), max_size=3))
def test_ad3_property_placement_never_takes_a_node_beyond_its_limit(limit: int, existing: list[list[int]],
                                                                     new: list[int]) -> None:
    placed = [pod(f"p{i}", [f"c{v}" for v in vols], "n1", phase="Running") for i, vols in enumerate(existing)]
    snap = snapshot([node("n1", limit)], placed, 6)
    out = place(pod("new", [f"c{v}" for v in new]), snap)
    before = {v for vols in existing for v in vols}
    after = before | set(new)
    if not new or len(after) <= limit:
        assert out.node == "n1"
    else:
        assert out.node is None and R_MAX_VOLUMES in out.message
        assert len(after) > limit


class _Limited(DevicePlugin):
    name = "kubernetes.io/aws-ebs"
    source_key = "awsElasticBlockStore"
    attachable = True
    attach_limit_key = KEY
    default_attach_limit = 39

    def find_device(self, ctx: VolumeContext) -> Device | None:
        return None


def test_ad3_limit_keys_come_from_the_registered_device_plugins() -> None:
    keys = attach_limit_keys(PluginRegistry([_Limited()]))
    assert keys == LimitKeys({"awsElasticBlockStore": KEY}, {"kubernetes.io/aws-ebs": KEY})
    assert attach_limit_keys(PluginRegistry([])) == LimitKeys({}, {})



class _Cinder(DevicePlugin):
    name = "kubernetes.io/cinder"
    source_key = "cinder"
    attachable = True
    attach_limit_key = "attachable-volumes-cinder"
    default_attach_limit = 256

    def find_device(self, ctx: VolumeContext) -> Device | None:
        return None


def test_ad3_the_scheduler_maps_a_provisioners_csi_alias_to_its_plugins_key() -> None:
    from provisioners import registry as provisioner_registry
    from provisioners.base import ProvisionRequest, ProvisionResult, Provisioner
    from storage.controllers.scheduler import SchedulerReconciler
    from volume_plugins import registry as plugin_registry

    class CinderProvisioner(Provisioner):
        name = "kubernetes.io/cinder"
        aliases = frozenset({"cinder.csi.openstack.org"})

        def provision(self, req: ProvisionRequest) -> ProvisionResult:
            raise NotImplementedError

        def delete(self, pv: Obj) -> None:
            return None

    class _Ctx:
        cache = None
        options = None

    cinder_key = _Cinder.attach_limit_key
    assert "cinder" not in attach_limit_keys().by_source
    provisioner_registry.register(CinderProvisioner())
    plugin_registry.register_plugin(_Cinder.name, lambda resolver: _Cinder())
    try:
        keys = SchedulerReconciler(_Ctx())._limit_keys()
        assert keys.by_source.get("cinder") == cinder_key
        assert keys.by_name.get("cinder.csi.openstack.org") == cinder_key
        assert keys.by_name.get("kubernetes.io/cinder") == cinder_key
        assert volume_limit_key({"csi": {"driver": "cinder.csi.openstack.org", "volumeHandle": "v"}}, keys) == cinder_key
    finally:
        plugin_registry.unregister_plugin(_Cinder.name)
        provisioner_registry.unregister(CinderProvisioner.name)
    assert "cinder" not in attach_limit_keys().by_source  # the cached keys follow the unregistration
