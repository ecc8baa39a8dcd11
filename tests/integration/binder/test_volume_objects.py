"""P5: objects a provisioned volume needs (ProvisionResult.objects) are created before its PV and
deleted after its backend volume, never touching an object of the same name that is not the volume's."""
from __future__ import annotations

import base64

import pytest

from binder_events import wait_event
from provisioners import registry
from provisioners.base import ANN_PROVISIONED_OBJECTS, LABEL_PROVISIONED_FOR, ProvisionRequest, ProvisionResult, Provisioner
from storage.controllers.volume_objects import delete_objects, ensure_objects
from storage.errors import NotFound, PermanentError
from support import get_or_none, wait_for
from test_binder import PV, PVC, SC, mk_pvc, mk_sc, wait_phase


def _secret(ns: str, name: str, value: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/rbd",
            "metadata": {"namespace": ns, "name": name}, "data": {"key": base64.b64encode(value.encode()).decode()}}


class WithObjects(Provisioner):
    """Asks for a Secret and an Endpoints in the claim's namespace, like CephFS and GlusterFS do."""

    name = "test.stowage.io/with-objects"

    def __init__(self) -> None:
        self.deleted: list[str] = []

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        ns = req.claim["metadata"]["namespace"]
        objects = [_secret(ns, f"{req.volume_name}-user", "k1"),
                   {"kind": "Endpoints", "metadata": {"namespace": ns, "name": f"ep-{req.claim['metadata']['name']}"},
                    "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": 1}]}]}]
        return ProvisionResult.finished({"local": {"path": "/x"}}, "1Gi", objects=objects)

    def delete(self, pv) -> None:
        self.deleted.append(pv["metadata"]["name"])


def test_p5_objects_created_with_the_volume_and_deleted_after_it(store, controllers):
    provisioner = WithObjects()
    registry.register(provisioner)
    try:
        store.create(SC, mk_sc("objs", provisioner=provisioner.name))
        store.create(PVC, mk_pvc("c", cls="objs"))
        claim = wait_phase(store, PVC, "default", "c", "Bound")
        pv_name = claim["spec"]["volumeName"]
        pv = store.get(PV, "", pv_name)
        assert '"kind": "Secret"' in pv["metadata"]["annotations"][ANN_PROVISIONED_OBJECTS]
        secret = store.get("secrets", "default", f"{pv_name}-user")
        assert secret["metadata"]["labels"][LABEL_PROVISIONED_FOR] == pv_name
        assert store.get("endpoints", "default", "ep-c")["subsets"][0]["addresses"][0]["ip"] == "127.0.0.1"
        store.delete(PVC, "default", "c")
        wait_for(lambda: get_or_none(store, PV, "", pv_name) is None, "volume deleted", 30)
        assert provisioner.deleted == [pv_name]
        assert get_or_none(store, "secrets", "default", f"{pv_name}-user") is None
        assert get_or_none(store, "endpoints", "default", "ep-c") is None
    finally:
        registry.unregister(provisioner.name)


def test_p5_foreign_object_of_the_same_name_fails_provisioning_and_survives(store, controllers):
    provisioner = WithObjects()
    registry.register(provisioner)
    try:
        store.create("endpoints", {"apiVersion": "v1", "kind": "Endpoints",
                                   "metadata": {"namespace": "default", "name": "ep-mine"}, "subsets": []})
        store.create(SC, mk_sc("objs2", provisioner=provisioner.name))
        claim = store.create(PVC, mk_pvc("mine", cls="objs2"))
        event = wait_event(store, claim, "ProvisioningFailed")
        assert "Endpoints default/ep-mine already exists and does not belong to volume" in event["message"]
        assert get_or_none(store, PV, "", f"pvc-{claim['metadata']['uid']}") is None
        assert store.get("endpoints", "default", "ep-mine")["subsets"] == []
    finally:
        registry.unregister(provisioner.name)


def test_p5_ensure_is_idempotent_and_refuses_other_kinds(store):
    objects = [_secret("default", "vol-a-user", "k1")]
    first = ensure_objects(store, "vol-a", objects)
    assert ensure_objects(store, "vol-a", [_secret("default", "vol-a-user", "k2")]) == first
    assert base64.b64decode(store.get("secrets", "default", "vol-a-user")["data"]["key"]) == b"k2"
    with pytest.raises(PermanentError, match="only namespaced Endpoints, Secret, Service"):
        ensure_objects(store, "vol-a", [{"kind": "RoleBinding", "metadata": {"namespace": "default", "name": "x"}}])
    # Relabelled by someone else: delete leaves it alone.
    secret = store.get("secrets", "default", "vol-a-user")
    secret["metadata"]["labels"][LABEL_PROVISIONED_FOR] = "other"
    store.update("secrets", secret)
    delete_objects(store, {"metadata": {"name": "vol-a", "annotations": {ANN_PROVISIONED_OBJECTS: first}}})
    assert store.get("secrets", "default", "vol-a-user") is not None
    secret = store.get("secrets", "default", "vol-a-user")
    secret["metadata"]["labels"][LABEL_PROVISIONED_FOR] = "vol-a"
    store.update("secrets", secret)
    delete_objects(store, {"metadata": {"name": "vol-a", "annotations": {ANN_PROVISIONED_OBJECTS: first}}})
    with pytest.raises(NotFound):
        store.get("secrets", "default", "vol-a-user")
