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

from provisioners.base import ANN_PROVISIONED_BY, SCHEDULING_PARAMETERS, ProvisionRequest, ProvisionResult, Provisioner
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

    def test_scheduling_parameters_accepted_and_kept_from_the_backend(
        self, provisioner: Provisioner, storage_class: dict[str, Any], backend_count: Callable[[str], int]
    ) -> None:
        """BP6: the performance-placement parameters are the scheduler's; every provisioner accepts them."""
        params = {**(storage_class.get("parameters") or {}), "minRandomWriteIOPS": "1000",
                  "maxWriteLatencyP99": "5ms", "benchPlacement": "Preferred"}
        bench_class = {**storage_class, "parameters": params}
        req = self._request(bench_class)
        assert not set(req.parameters) & SCHEDULING_PARAMETERS
        result = self._finish(provisioner, req)
        assert backend_count(req.volume_name) == 1
        provisioner.delete(pv_from_result(provisioner, req, result))

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


class SnapshotterContract(ProvisionerContract):
    """What every snapshot-capable provisioner must do (SEMANTICS VS/DS rules), on top of the provisioning
    contract. Extra fixtures:

        snapshot_parameters: the VolumeSnapshotClass parameters to use ({} for none)
        snapshot_count: handle -> how many backend snapshots carry that handle (0 or 1)
        write_data: (pv, bytes) -> None, puts the bytes into the volume
        read_data: pv -> bytes, what the volume holds (what ``write_data`` put there)

    A backend that keeps no data (moto's EBS) skips the data checks by overriding ``write_data`` with a
    fixture that calls ``pytest.skip`` naming why.
    """

    def _snapshot(self, provisioner: Any, pv: dict[str, Any], parameters: dict[str, str],
                  name: str | None = None) -> Any:
        from provisioners.base import SnapshotRequest

        req = SnapshotRequest(name=name or f"snapcontent-{uuid.uuid4()}", pv=pv, parameters=parameters)
        result = provisioner.create_snapshot(req)
        for _ in range(600):
            if result.ready:
                break
            result = provisioner.create_snapshot(req)
        assert result.ready, result.message
        return result

    def _restore(self, provisioner: Any, storage_class: dict[str, Any], snap: Any, size: str = "1Gi") -> tuple[ProvisionRequest, ProvisionResult]:
        from provisioners.base import DataSource

        source = DataSource(kind="VolumeSnapshot", driver=provisioner.name, snapshot_handle=snap.handle,
                            restore_size=snap.restore_size)
        req = self._request(storage_class, size, data_source=source)
        return req, self._finish(provisioner, req)

    def test_snapshot_twice_same_name_gives_one_snapshot(
        self, provisioner: Any, storage_class: dict[str, Any], snapshot_parameters: dict[str, str],
        snapshot_count: Callable[[str], int],
    ) -> None:
        req = self._request(storage_class)
        pv = pv_from_result(provisioner, req, self._finish(provisioner, req))
        name = f"snapcontent-{uuid.uuid4()}"
        first = self._snapshot(provisioner, pv, snapshot_parameters, name)
        second = self._snapshot(provisioner, pv, snapshot_parameters, name)
        assert first.handle == second.handle
        assert snapshot_count(first.handle) == 1
        assert first.restore_size >= 1
        provisioner.delete_snapshot(first.handle, snapshot_parameters)
        provisioner.delete(pv)

    def test_delete_snapshot_twice_succeeds(
        self, provisioner: Any, storage_class: dict[str, Any], snapshot_parameters: dict[str, str],
        snapshot_count: Callable[[str], int],
    ) -> None:
        req = self._request(storage_class)
        pv = pv_from_result(provisioner, req, self._finish(provisioner, req))
        snap = self._snapshot(provisioner, pv, snapshot_parameters)
        provisioner.delete_snapshot(snap.handle, snapshot_parameters)
        assert snapshot_count(snap.handle) == 0
        provisioner.delete_snapshot(snap.handle, snapshot_parameters)
        assert snapshot_count(snap.handle) == 0
        provisioner.delete(pv)

    def test_snapshot_outlives_its_source_and_restores_its_data(
        self, provisioner: Any, storage_class: dict[str, Any], snapshot_parameters: dict[str, str],
        write_data: Callable[[dict[str, Any], bytes], None], read_data: Callable[[dict[str, Any]], bytes],
    ) -> None:
        req = self._request(storage_class)
        pv = pv_from_result(provisioner, req, self._finish(provisioner, req))
        write_data(pv, b"before the snapshot")
        snap = self._snapshot(provisioner, pv, snapshot_parameters)
        write_data(pv, b"after the snapshot")  # the snapshot is a point-in-time copy
        provisioner.delete(pv)  # and it does not depend on its source volume
        restore_req, result = self._restore(provisioner, storage_class, snap)
        restored = pv_from_result(provisioner, restore_req, result)
        assert quantity_value(result.capacity) >= snap.restore_size
        assert read_data(restored) == b"before the snapshot"
        provisioner.delete(restored)
        provisioner.delete_snapshot(snap.handle, snapshot_parameters)

    def test_restore_from_missing_snapshot_is_refused(
        self, provisioner: Any, storage_class: dict[str, Any], snapshot_parameters: dict[str, str],
        backend_count: Callable[[str], int],
    ) -> None:
        req = self._request(storage_class)
        pv = pv_from_result(provisioner, req, self._finish(provisioner, req))
        snap = self._snapshot(provisioner, pv, snapshot_parameters)
        provisioner.delete_snapshot(snap.handle, snapshot_parameters)
        from provisioners.base import DataSource
        from storage.errors import StowageError

        source = DataSource(kind="VolumeSnapshot", driver=provisioner.name, snapshot_handle=snap.handle,
                            restore_size=snap.restore_size)
        restore = self._request(storage_class, data_source=source)
        with pytest.raises(StowageError):
            self._finish(provisioner, restore)
        assert backend_count(restore.volume_name) == 0
        provisioner.delete(pv)

    def test_clone_copies_the_source(
        self, provisioner: Any, storage_class: dict[str, Any],
        write_data: Callable[[dict[str, Any], bytes], None], read_data: Callable[[dict[str, Any]], bytes],
    ) -> None:
        if not getattr(provisioner, "supports_clone", False):
            pytest.skip(f"{provisioner.name} does not clone claims (supports_clone is False)")
        from provisioners.base import DataSource

        req = self._request(storage_class)
        pv = pv_from_result(provisioner, req, self._finish(provisioner, req))
        write_data(pv, b"the source's data")
        clone_req = self._request(storage_class, data_source=DataSource(kind="PersistentVolumeClaim", source_pv=pv))
        clone = pv_from_result(provisioner, clone_req, self._finish(provisioner, clone_req))
        write_data(pv, b"changed after the clone")
        assert read_data(clone) == b"the source's data"
        provisioner.delete(clone)
        provisioner.delete(pv)
