"""The node side: CsiPlugin stages and publishes through a real CSI driver's Node service (kubernetes-csi's
mock driver records staged and published paths in the volume context ListVolumes returns)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage.errors import TemporaryError
from storage.system.csi import CsiClient
from storage.system.csi import csi_pb2 as pb
from storage.system.csi.client import volume_capability
from volume_plugins import csi as csi_plugin
from volume_plugins.base import VolumeContext
from volume_plugins.registry import default_registry


@pytest.fixture
def node_driver(mock_driver):
    csi_plugin.register_node_driver(mock_driver.name, mock_driver.endpoint)
    try:
        yield mock_driver
    finally:
        csi_plugin.unregister_node_driver(mock_driver.name)


def _context(root: Path, uid: str, source: dict, pv_name: str | None, attachment: dict | None = None) -> VolumeContext:
    target = root / "pods" / uid / "volumes" / "kubernetes.io~csi" / "data"
    return VolumeContext(pod_uid=uid, pod_namespace="ns", pod_name=f"pod-{uid}", volume_name="data", source=source,
                         target=target, pv_name=pv_name, attachment=dict(attachment or {}))


def _volume_context(endpoint: str, volume_id: str) -> dict[str, str]:
    stub = CsiClient(endpoint)._stubs()[1]
    for e in stub.ListVolumes(pb.ListVolumesRequest(), timeout=5).entries:
        if e.volume.volume_id == volume_id:
            return dict(e.volume.volume_context)
    raise AssertionError(f"volume {volume_id} not listed")


def test_registry_chooses_csi_plugin_by_source() -> None:
    """CS9: the `csi` source key selects the CSI node plugin."""
    assert default_registry().find({"csi": {"driver": "x", "volumeHandle": "h"}}).name == "kubernetes.io/csi"


def test_stage_publish_unpublish_unstage(node_driver, tmp_path: Path) -> None:
    """CS9: NodeStage into the global directory once, NodePublish per pod, unstage after the last pod."""
    with CsiClient(node_driver.endpoint) as c:
        vol = c.create_volume("pvc-n1", required_bytes=1 << 20)
        node_id = c.node_info().node_id
        publish_ctx = c.controller_publish(vol.volume_id, node_id, volume_capability())
    source = {"csi": {"driver": node_driver.name, "volumeHandle": vol.volume_id, "fsType": "ext4"},
              "accessModes": ["ReadWriteOnce"]}
    plugin = csi_plugin.CsiPlugin()
    assert plugin.needs_attachment(_context(tmp_path, "u1", source, "pvc-n1"))
    a = _context(tmp_path, "u1", source, "pvc-n1", publish_ctx)
    b = _context(tmp_path, "u2", source, "pvc-n1", publish_ctx)
    path_a = plugin.setup(a)
    path_b = plugin.setup(b)
    assert path_a == a.target / "mount"
    stage = csi_plugin.stage_path(tmp_path, node_driver.name, vol.volume_id)
    assert stage.is_dir()
    recorded = _volume_context(node_driver.endpoint, vol.volume_id)
    assert recorded[f"{node_id}{stage}"] == "/dev/mock"  # staged at the global directory
    assert json.loads((a.target / "vol_data.json").read_text())["stagingPath"] == str(stage)
    plugin.teardown(a.target, a.executor)
    assert stage.is_dir()  # still published for the second pod
    # vol_data of the torn-down pod goes with its directory (the volume manager removes it)
    (a.target / "vol_data.json").unlink()
    plugin.teardown(b.target, b.executor)
    assert not stage.exists()
    assert f"{node_id}{stage}" not in _volume_context(node_driver.endpoint, vol.volume_id)


def test_inline_ephemeral_volume(node_driver, tmp_path: Path) -> None:
    """CS10: an inline csi volume is published (no stage) with csi.storage.k8s.io/ephemeral=true and a handle
    made from the pod uid and volume name."""
    ctx = _context(tmp_path, "u9", {"csi": {"driver": node_driver.name, "volumeAttributes": {"size": "1Mi"}}}, None)
    plugin = csi_plugin.CsiPlugin()
    assert plugin.setup(ctx) == ctx.target / "mount"
    data = json.loads((ctx.target / "vol_data.json").read_text())
    assert data["ephemeral"] is True and data["volumeHandle"].startswith("csi-") and data["stagingPath"] == ""
    plugin.teardown(ctx.target, ctx.executor)


def test_unregistered_driver_waits(tmp_path: Path) -> None:
    """CS9: a volume of a driver not registered on this node is retried (it may register soon)."""
    ctx = _context(tmp_path, "u1", {"csi": {"driver": "example.com/none", "volumeHandle": "h"}}, "pv")
    with pytest.raises(TemporaryError, match="not registered"):
        csi_plugin.CsiPlugin().setup(ctx)


def test_node_registration_reports_node_id_and_topology(tmp_path: Path) -> None:
    """CS11: NodeGetInfo gives the nodeid annotation (as kubelet's) and topology labels; a driver that
    does not answer is left out."""
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from csi_drivers import start_mock_driver, stop_driver

    drv = start_mock_driver(tmp_path, "--enable-topology")
    csi_plugin.register_node_driver(drv.name, drv.endpoint)
    csi_plugin.register_node_driver("example.com/absent", f"unix://{tmp_path}/absent.sock")
    try:
        annotations, labels, drivers = csi_plugin.node_registration()
        assert drivers == [{"name": drv.name, "nodeID": "io.kubernetes.storage.mock",
                            "topologyKeys": sorted(labels), "allocatable": {"count": 2}}]
        ids = json.loads(annotations["csi.volume.kubernetes.io/nodeid"])
        assert ids == {drv.name: "io.kubernetes.storage.mock"}
        keys = json.loads(annotations["stowage.io/csi-topology-keys"])[drv.name]
        assert keys and all(labels[k] for k in keys)
    finally:
        csi_plugin.unregister_node_driver(drv.name)
        csi_plugin.unregister_node_driver("example.com/absent")
        stop_driver(drv.proc)
