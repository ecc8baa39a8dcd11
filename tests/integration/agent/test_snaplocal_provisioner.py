"""LocalProvisioner as a Snapshotter against real node agents (SEMANTICS LS16-LS20): the shared
SnapshotterContract, restore on the snapshot's node, reschedule from another node, clones."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_cluster import Cluster, wait_until

from provisioners.base import DataSource, ProvisionRequest
from provisioners.local import LocalProvisioner, parse_snapshot_handle
from provisioners.testing import SnapshotterContract, pv_from_result
from storage.errors import NotFound, PermanentError
from storage.system import loop, mounts

Obj = dict[str, Any]


def _device(pv: Obj) -> str:
    path = pv["spec"]["local"]["path"]
    dev = loop.find_by_backing_file(path)
    assert dev is not None, f"no loop device for {path}"
    return dev


def write_file(pv: Obj, data: bytes, name: str = "data") -> None:
    with tempfile.TemporaryDirectory(prefix="snaplocal-w-") as mnt:
        mounts.mount(_device(pv), mnt, pv["spec"]["local"].get("fsType") or "ext4")
        try:
            with open(Path(mnt) / name, "wb") as f:
                f.write(data)
                os.fsync(f.fileno())
        finally:
            mounts.unmount(mnt)


def read_file(pv: Obj, name: str = "data") -> bytes:
    with tempfile.TemporaryDirectory(prefix="snaplocal-r-") as mnt:
        mounts.mount(_device(pv), mnt, pv["spec"]["local"].get("fsType") or "ext4", ["ro"])
        try:
            return (Path(mnt) / name).read_bytes()
        finally:
            mounts.unmount(mnt)


@pytest.fixture
def two_nodes(cluster: Cluster) -> Cluster:
    for name in ("n1", "n2"):
        cluster.add_agent(name)
    for name in ("n1", "n2"):
        wait_until(lambda n=name: ((cluster.store.get("nodes", "", n).get("status") or {}).get("daemonEndpoints")),
                   f"node {name} registered")
    return cluster


class TestLocalSnapshotter(SnapshotterContract):
    @pytest.fixture
    def provisioner(self, two_nodes: Cluster) -> LocalProvisioner:
        self.node = two_nodes.store.get("nodes", "", "n1")
        return LocalProvisioner(nodes=two_nodes._node, tls=two_nodes.agent_client_tls)

    def _request(self, storage_class: dict[str, Any], size: str = "64Mi", **kw: Any) -> ProvisionRequest:
        # Pool volumes need their node (WaitForFirstConsumer); the contract's sizes up to 10Gi fit the 4Gi
        # pool as sparse files only when asked for one by one, so they are kept small where it does not matter.
        kw.setdefault("selected_node", self.node)
        return super()._request(storage_class, size, **kw)

    @pytest.fixture
    def storage_class(self) -> Obj:
        return {"metadata": {"name": "local"}, "provisioner": "stowage.io/local", "parameters": {"fsType": "ext4"},
                "volumeBindingMode": "WaitForFirstConsumer"}

    @pytest.fixture
    def backend_count(self, two_nodes: Cluster) -> Callable[[str], int]:
        pool = two_nodes.agents["n1"].pool(None)
        return lambda name: 1 if (pool.get(name) is not None and pool.get(name).state == "Ready") else 0

    @pytest.fixture
    def snapshot_parameters(self) -> dict[str, str]:
        return {}

    @pytest.fixture
    def snapshot_count(self, two_nodes: Cluster) -> Callable[[str], int]:
        def count(handle: str) -> int:
            node, name = parse_snapshot_handle(handle)
            return 1 if two_nodes.agents[node].pool(None).get_snapshot(name) is not None else 0
        return count

    @pytest.fixture
    def write_data(self) -> Callable[[Obj, bytes], None]:
        return write_file

    @pytest.fixture
    def read_data(self) -> Callable[[Obj], bytes]:
        return read_file

    # A pool volume holds a filesystem, which needs more than 1 byte (the agent does not round tiny
    # requests up; that is the provisioning part, not the snapshot one); 10Gi exceeds the test pool.
    @pytest.mark.parametrize("size", ["1Mi", "1G", "1536Mi"])
    def test_capacity_at_least_request(self, provisioner: Any, storage_class: dict[str, Any], size: str) -> None:
        super().test_capacity_at_least_request(provisioner, storage_class, size)

    def test_restore_on_another_node_is_rescheduled_to_the_snapshots_node(
            self, provisioner: LocalProvisioner, storage_class: Obj, two_nodes: Cluster) -> None:
        """LS17: a restore where the scheduler picked another node says which node to use; nothing is made."""
        req = self._request(storage_class)
        pv = pv_from_result(provisioner, req, self._finish(provisioner, req))
        write_file(pv, b"on n1")
        snap = self._snapshot(provisioner, pv, {})
        assert parse_snapshot_handle(snap.handle) == ("n1", parse_snapshot_handle(snap.handle)[1])
        other = two_nodes.store.get("nodes", "", "n2")
        source = DataSource(kind="VolumeSnapshot", driver=provisioner.name, snapshot_handle=snap.handle,
                            restore_size=snap.restore_size)
        elsewhere = self._request(storage_class, "128Mi", data_source=source, selected_node=other)
        result = provisioner.provision(elsewhere)
        assert result.status == "reschedule"
        assert "node n1" in result.message
        assert two_nodes.agents["n2"].pool(None).get(elsewhere.volume_name) is None
        # On its node, bigger than the snapshot: the data, in a grown filesystem.
        here = self._request(storage_class, "128Mi", data_source=source)
        restored = pv_from_result(provisioner, here, self._finish(provisioner, here))
        assert read_file(restored) == b"on n1"
        with tempfile.TemporaryDirectory() as mnt:
            mounts.mount(_device(restored), mnt, "ext4")
            try:
                st = os.statvfs(mnt)
                assert st.f_blocks * st.f_frsize > 100 * 2**20
            finally:
                mounts.unmount(mnt)
        provisioner.delete(restored)
        provisioner.delete_snapshot(snap.handle, {})
        provisioner.delete(pv)

    def test_clone_removes_its_temporary_snapshot_and_other_nodes_reschedule(
            self, provisioner: LocalProvisioner, storage_class: Obj, two_nodes: Cluster) -> None:
        """LS19."""
        req = self._request(storage_class)
        pv = pv_from_result(provisioner, req, self._finish(provisioner, req))
        write_file(pv, b"clone me")
        other = two_nodes.store.get("nodes", "", "n2")
        away = self._request(storage_class, data_source=DataSource(kind="PersistentVolumeClaim", source_pv=pv),
                             selected_node=other)
        assert provisioner.provision(away).status == "reschedule"
        clone_req = self._request(storage_class, data_source=DataSource(kind="PersistentVolumeClaim", source_pv=pv))
        clone = pv_from_result(provisioner, clone_req, self._finish(provisioner, clone_req))
        assert read_file(clone) == b"clone me"
        assert two_nodes.agents["n1"].pool(None).list_snapshots() == []
        provisioner.delete(clone)
        provisioner.delete(pv)

    def test_foreign_snapshot_sources_are_refused(self, provisioner: LocalProvisioner, storage_class: Obj) -> None:
        """LS20."""
        source = DataSource(kind="VolumeSnapshot", driver="ebs.csi.aws.com", snapshot_handle="snap-123")
        with pytest.raises(PermanentError, match="cannot restore"):
            provisioner.provision(self._request(storage_class, data_source=source))
        with pytest.raises(PermanentError, match="snapshotHandle"):
            provisioner.delete_snapshot("snap-123", {})


def test_agent_snapshot_endpoints_refuse_bad_input_naming_the_field(two_nodes: Cluster) -> None:
    """LS28, LS14."""
    from provisioners.local import agent_url
    from storage.errors import BadRequest

    local = LocalProvisioner(nodes=two_nodes._node, tls=two_nodes.agent_client_tls)
    url = agent_url(two_nodes.store.get("nodes", "", "n1"))
    with pytest.raises(BadRequest, match="volume: Required value"):
        local._call("POST", f"{url}/snapshots", {"name": "s"})
    with pytest.raises(BadRequest, match="source.backup.store: Required value"):
        local._call("POST", f"{url}/volumes", {"name": "v", "sizeBytes": 2**24, "source": {"backup": {"backupId": "x"}}})
    with pytest.raises(BadRequest, match="source: Invalid value"):
        local._call("POST", f"{url}/volumes", {"name": "v", "sizeBytes": 2**24, "source": {"snapshot": "a", "backup": {}}})
    with pytest.raises(NotFound):
        local._call("GET", f"{url}/snapshots/none")
    with pytest.raises(NotFound):
        local._call("GET", f"{url}/backups/none")
    with pytest.raises(BadRequest, match="store: Required value"):
        local._call("POST", f"{url}/backups", {"name": "b", "volume": "v"})
    assert two_nodes.agents["n1"].pool(None).list() == []
