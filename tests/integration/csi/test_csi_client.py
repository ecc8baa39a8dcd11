"""The CSI client against a real third-party CSI driver (kubernetes-csi's mock driver) over a Unix socket."""
from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from storage.errors import PermanentError, TemporaryError
from storage.system.csi import CsiClient, CsiError
from storage.system.csi.client import volume_capability


def test_identity_and_capabilities(mock_driver) -> None:
    """CS1: Identity (GetPluginInfo, GetPluginCapabilities, Probe) and each service's capabilities."""
    with CsiClient(mock_driver.endpoint) as c:
        assert c.probe() is True
        info = c.info()
        assert info.name == "io.kubernetes.storage.mock"
        assert "CONTROLLER_SERVICE" in info.plugin_capabilities
        assert {"CREATE_DELETE_VOLUME", "PUBLISH_UNPUBLISH_VOLUME", "EXPAND_VOLUME",
                "CREATE_DELETE_SNAPSHOT"} <= info.controller_capabilities
        assert "STAGE_UNSTAGE_VOLUME" in info.node_capabilities
        ni = c.node_info()
        assert ni.node_id and ni.max_volumes_per_node == 2


def test_volume_lifecycle_is_idempotent(mock_driver) -> None:
    """CS3: CreateVolume by name is idempotent; DeleteVolume of a gone volume succeeds; publish, expand, snapshot."""
    with CsiClient(mock_driver.endpoint) as c:
        v1 = c.create_volume("pvc-abc", required_bytes=10 << 20, parameters={"k": "v"})
        v2 = c.create_volume("pvc-abc", required_bytes=10 << 20, parameters={"k": "v"})
        assert v1.volume_id == v2.volume_id and v1.capacity_bytes == 10 << 20
        ctx = c.controller_publish(v1.volume_id, c.node_info().node_id, volume_capability())
        assert ctx.get("device")
        size, _ = c.controller_expand(v1.volume_id, 20 << 20)
        assert size == 20 << 20
        snap = c.create_snapshot(v1.volume_id, "snap-1")
        assert snap.snapshot_id and snap.source_volume_id == v1.volume_id
        c.delete_snapshot(snap.snapshot_id)
        c.controller_unpublish(v1.volume_id, c.node_info().node_id)
        c.delete_volume(v1.volume_id)
        c.delete_volume(v1.volume_id)  # already gone: success


def test_node_stage_and_publish(mock_driver, tmp_path: Path) -> None:
    """CS6: NodeStage to a global dir, NodePublish to the pod's target, then Unpublish and Unstage."""
    with CsiClient(mock_driver.endpoint) as c:
        v = c.create_volume("pvc-node", required_bytes=1 << 20)
        node_id = c.node_info().node_id
        ctx = c.controller_publish(v.volume_id, node_id, volume_capability())
        stage, target = tmp_path / "globalmount", tmp_path / "pod" / "mount"
        stage.mkdir()
        c.node_stage(v.volume_id, str(stage), volume_capability(), publish_context=ctx)
        c.node_publish(v.volume_id, str(target), volume_capability(), staging_path=str(stage), publish_context=ctx)
        stats = c.node_volume_stats(v.volume_id, str(target))
        assert stats.total_bytes is not None
        c.node_unpublish(v.volume_id, str(target))
        c.node_unstage(v.volume_id, str(stage))


def test_errors_map_and_never_show_secrets(mock_driver) -> None:
    """CS2: a driver error is Permanent for bad input, and a secret it echoes is redacted."""
    with CsiClient(mock_driver.endpoint) as c:
        with pytest.raises(CsiError) as info:
            # The mock driver answers NOT_FOUND naming the volume id: make the id the "secret".
            c.controller_publish("topsecretvalue", "node", volume_capability(), secrets={"key": "topsecretvalue"})
        assert "topsecretvalue" not in str(info.value)
        assert info.value.code == grpc.StatusCode.NOT_FOUND
        assert isinstance(info.value.to_stowage(), PermanentError)


def test_unavailable_is_retried_until_the_deadline(tmp_path: Path) -> None:
    """CS2: no driver on the socket -> UNAVAILABLE retried with back-off, then a TemporaryError after the deadline."""
    c = CsiClient(f"unix://{tmp_path}/absent.sock", timeout=0.5)
    start = time.monotonic()
    with pytest.raises(CsiError) as info:
        c.probe()
    assert 0.4 <= time.monotonic() - start < 30  # retried up to the 0.5 s deadline; the upper bound only catches a hang
    assert info.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert isinstance(info.value.to_stowage(), TemporaryError)


def test_endpoint_must_be_a_unix_socket() -> None:
    """CS2: only unix:// endpoints with absolute paths."""
    with pytest.raises(PermanentError, match="unix"):
        CsiClient("tcp://127.0.0.1:1")
