"""Temporary provisioning failures as events (GF9). The objects a provisioner asks for besides the PV
(GF4) are tested with rule P5 in test_volume_objects.py."""
from __future__ import annotations

from typing import Any

from binder_events import wait_event
from provisioners import registry
from provisioners.base import ProvisionRequest, ProvisionResult, Provisioner
from storage.errors import TemporaryError
from test_binder import PVC, PV, SC, mk_pvc, mk_sc


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
