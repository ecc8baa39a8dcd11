"""The objects a provisioner asks for besides the PV (ProvisionResult.objects: the Service and Endpoints
of a GlusterFS volume) and temporary provisioning failures as events (GF4, GF9)."""
from __future__ import annotations

import json
from typing import Any

from binder_events import wait_event
from provisioners import registry
from provisioners.base import ANN_PROVISIONED_OBJECTS, LABEL_PROVISIONED_FOR, ProvisionRequest, ProvisionResult, Provisioner
from storage.errors import TemporaryError
from support import get_or_none, wait_for
from test_binder import PVC, PV, SC, mk_pvc, mk_sc, wait_phase


class WithObjects(Provisioner):
    name = "test.stowage.io/with-objects"

    def __init__(self) -> None:
        self.deleted: list[str] = []

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        ns, claim = req.claim["metadata"]["namespace"], req.claim["metadata"]["name"]
        objects = [
            {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": f"ep-{claim}", "namespace": ns},
             "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 1}]}]},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"ep-{claim}", "namespace": ns},
             "spec": {"ports": [{"port": 1, "protocol": "TCP", "targetPort": 1}]}},
        ]
        return ProvisionResult.finished({"glusterfs": {"endpoints": f"ep-{claim}", "path": req.volume_name}}, "1Gi",
                                        objects=objects)

    def delete(self, pv: dict[str, Any]) -> None:
        self.deleted.append(pv["metadata"]["name"])


def test_objects_created_before_the_pv_and_removed_after_the_volume(store, controllers):
    """GF4: the Endpoints and Service are created labelled with the PV and listed on it; a leftover of
    ours from a crash before the PV was saved is brought up to date; a foreign one is left alone, on
    create and on delete; ours go once the provisioner deleted the volume."""
    provisioner = WithObjects()
    registry.register(provisioner)
    try:
        claim = store.create(PVC, mk_pvc("data", cls="objs"))  # no class yet: stays Pending
        pv_name = f"pvc-{claim['metadata']['uid']}"
        # A crash after the objects were made and before the PV was saved left a stale Endpoints.
        store.create("endpoints", {"apiVersion": "v1", "kind": "Endpoints",
                                   "metadata": {"name": "ep-data", "namespace": "default",
                                                "labels": {LABEL_PROVISIONED_FOR: pv_name}},
                                   "subsets": [{"addresses": [{"ip": "10.9.9.9"}]}]})
        # Someone else's Service of the same name.
        store.create("services", {"apiVersion": "v1", "kind": "Service",
                                  "metadata": {"name": "ep-data", "namespace": "default", "labels": {"owner": "me"}},
                                  "spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]}})
        store.create(SC, mk_sc("objs", provisioner=provisioner.name))
        claim = wait_phase(store, PVC, "default", "data", "Bound")
        pv = store.get(PV, "", pv_name)
        assert json.loads(pv["metadata"]["annotations"][ANN_PROVISIONED_OBJECTS]) == [["endpoints", "default", "ep-data"]]
        endpoints = store.get("endpoints", "default", "ep-data")
        assert endpoints["subsets"][0]["addresses"] == [{"ip": "10.0.0.1"}]
        assert endpoints["metadata"]["labels"][LABEL_PROVISIONED_FOR] == pv_name
        service = store.get("services", "default", "ep-data")
        assert service["spec"]["ports"][0]["port"] == 80 and LABEL_PROVISIONED_FOR not in service["metadata"]["labels"]

        store.delete(PVC, "default", "data")
        wait_for(lambda: get_or_none(store, PV, "", pv_name) is None, "the PV deleted", 30)
        assert provisioner.deleted == [pv_name]
        assert get_or_none(store, "endpoints", "default", "ep-data") is None
        assert get_or_none(store, "services", "default", "ep-data") is not None  # not ours
    finally:
        registry.unregister(provisioner.name)


def test_objects_made_fresh_on_a_clean_run(store, controllers):
    """GF4: with nothing in the way, both objects are created and both are removed with the volume."""
    provisioner = WithObjects()
    registry.register(provisioner)
    try:
        store.create(SC, mk_sc("objs2", provisioner=provisioner.name))
        store.create(PVC, mk_pvc("logs", cls="objs2"))
        claim = wait_phase(store, PVC, "default", "logs", "Bound")
        pv_name = claim["spec"]["volumeName"]
        refs = json.loads(store.get(PV, "", pv_name)["metadata"]["annotations"][ANN_PROVISIONED_OBJECTS])
        assert sorted(map(tuple, refs)) == [("endpoints", "default", "ep-logs"), ("services", "default", "ep-logs")]
        assert store.get("services", "default", "ep-logs")["metadata"]["labels"][LABEL_PROVISIONED_FOR] == pv_name
        store.delete(PVC, "default", "logs")
        wait_for(lambda: get_or_none(store, PV, "", pv_name) is None, "the PV deleted", 30)
        assert get_or_none(store, "endpoints", "default", "ep-logs") is None
        assert get_or_none(store, "services", "default", "ep-logs") is None
    finally:
        registry.unregister(provisioner.name)


class Unreachable(Provisioner):
    name = "test.stowage.io/unreachable"

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        raise TemporaryError("glusterd at unix:/run/x.sock is unreachable: Connection refused", delay=0.5)

    def delete(self, pv: dict[str, Any]) -> None:
        pass


def test_temporary_provisioning_failure_is_an_event_and_the_claim_stays_pending(store, controllers):
    """GF9: a TemporaryError from the provisioner leaves the claim Pending with a ProvisioningFailed
    event naming the backend's endpoint and error; nothing is created."""
    provisioner = Unreachable()
    registry.register(provisioner)
    try:
        store.create(SC, mk_sc("down", provisioner=provisioner.name))
        claim = store.create(PVC, mk_pvc("stuck", cls="down"))
        event = wait_event(store, claim, "ProvisioningFailed")
        assert "unix:/run/x.sock is unreachable: Connection refused" in event["message"]
        assert event["type"] == "Warning"
        assert (store.get(PVC, "default", "stuck").get("status") or {}).get("phase") == "Pending"
        assert not store.list(PV)[0]
    finally:
        registry.unregister(provisioner.name)
