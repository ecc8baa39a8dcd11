"""The contract every provisioner must pass.

Subclass ``ProvisionerContract`` in a test module and provide three fixtures:

    class TestMine(ProvisionerContract):
        @pytest.fixture
        def provisioner(self, tmp_path): return MyProvisioner(...)
        @pytest.fixture
        def storage_class(self): return {"metadata": {"name": "c"}, "provisioner": MyProvisioner.name, "parameters": {...}}
        @pytest.fixture
        def backend_count(self, provisioner): return lambda volume_name: <how many backend volumes carry that name>

The class is collected only through subclasses (its name does not start with
``Test``).
"""
from __future__ import annotations

import uuid
from typing import Any, Callable

import pytest

from provisioners.base import ANN_PROVISIONED_BY, ProvisionRequest, ProvisionResult, Provisioner
from storage.controllers.binder_index import quantity_value
from storage.errors import PermanentError


def make_claim(size: str = "1Gi", *, name: str = "data", namespace: str = "default", uid: str | None = None,
               modes: tuple[str, ...] = ("ReadWriteOnce",), class_name: str = "c") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4())},
        "spec": {"accessModes": list(modes), "resources": {"requests": {"storage": size}}, "storageClassName": class_name},
    }


def pv_from_result(provisioner: Provisioner, req: ProvisionRequest, result: ProvisionResult) -> dict[str, Any]:
    """The PV the provisioning controller would save for ``result``."""
    spec: dict[str, Any] = {
        "capacity": {"storage": result.capacity},
        "accessModes": req.access_modes,
        "persistentVolumeReclaimPolicy": req.reclaim_policy,
        "storageClassName": req.storage_class["metadata"]["name"],
        **result.source,
    }
    if result.node_affinity:
        spec["nodeAffinity"] = result.node_affinity
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": req.volume_name, "annotations": {**result.annotations, ANN_PROVISIONED_BY: provisioner.name}},
        "spec": spec,
    }


class ProvisionerContract:
    """Shared behaviour: idempotent provision, idempotent delete, foreign volumes ignored,
    unknown parameters rejected with a clear message, capacity at least the request."""

    def _request(self, storage_class: dict[str, Any], size: str = "1Gi", **kw: Any) -> ProvisionRequest:
        claim = make_claim(size, class_name=storage_class["metadata"]["name"])
        return ProvisionRequest(volume_name=f"pvc-{claim['metadata']['uid']}", claim=claim, storage_class=storage_class, **kw)

    def _finish(self, provisioner: Provisioner, req: ProvisionRequest) -> ProvisionResult:
        result = provisioner.provision(req)
        for _ in range(600):  # in-progress backends: ask again, as the controller would
            if result.status != "in_progress":
                break
            result = provisioner.provision(req)
        assert result.status == "finished", result.message
        return result

    def test_provision_twice_same_name_gives_one_volume(
        self, provisioner: Provisioner, storage_class: dict[str, Any], backend_count: Callable[[str], int]
    ) -> None:
        req = self._request(storage_class)
        first = self._finish(provisioner, req)
        second = self._finish(provisioner, req)
        assert backend_count(req.volume_name) == 1
        assert first.source == second.source
        provisioner.delete(pv_from_result(provisioner, req, first))

    def test_delete_twice_succeeds(
        self, provisioner: Provisioner, storage_class: dict[str, Any], backend_count: Callable[[str], int]
    ) -> None:
        req = self._request(storage_class)
        pv = pv_from_result(provisioner, req, self._finish(provisioner, req))
        provisioner.delete(pv)
        assert backend_count(req.volume_name) == 0
        provisioner.delete(pv)
        assert backend_count(req.volume_name) == 0

    def test_delete_of_foreign_volume_is_ignored(
        self, provisioner: Provisioner, storage_class: dict[str, Any], backend_count: Callable[[str], int]
    ) -> None:
        req = self._request(storage_class)
        pv = pv_from_result(provisioner, req, self._finish(provisioner, req))
        foreign = {**pv, "metadata": {**pv["metadata"], "annotations": {ANN_PROVISIONED_BY: "someone.else/other"}}}
        provisioner.delete(foreign)
        assert backend_count(req.volume_name) == 1
        provisioner.delete(pv)

    def test_unknown_parameters_rejected_with_clear_message(
        self, provisioner: Provisioner, storage_class: dict[str, Any], backend_count: Callable[[str], int]
    ) -> None:
        bad_class = {**storage_class, "parameters": {**(storage_class.get("parameters") or {}), "noSuchParameter": "x"}}
        req = self._request(bad_class)
        with pytest.raises(PermanentError) as info:
            provisioner.provision(req)
        assert "noSuchParameter" in str(info.value)
        assert backend_count(req.volume_name) == 0

    @pytest.mark.parametrize("size", ["1", "1Mi", "1G", "1536Mi", "10Gi"])
    def test_capacity_at_least_request(self, provisioner: Provisioner, storage_class: dict[str, Any], size: str) -> None:
        req = self._request(storage_class, size)
        result = self._finish(provisioner, req)
        assert quantity_value(result.capacity) >= quantity_value(size)
        provisioner.delete(pv_from_result(provisioner, req, result))
