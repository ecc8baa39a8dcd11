"""CreateSnapshot/DeleteSnapshot through the client, and a volume restored from a snapshot, against the CSI
driver written for the tests (real directories and archives)."""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from csi_drivers import start_test_driver, stop_driver  # noqa: E402
from storage.system.csi import CsiClient  # noqa: E402


@pytest.fixture
def test_driver():
    tmp = Path(tempfile.mkdtemp(prefix="stowage-csi-"))
    drv = start_test_driver(tmp, "n1")
    try:
        yield drv, tmp / "state"
    finally:
        stop_driver(drv.proc)
        shutil.rmtree(tmp, ignore_errors=True)


def test_snapshot_and_restore(test_driver) -> None:
    """CS13: CreateSnapshot when the driver has CREATE_DELETE_SNAPSHOT (idempotent by name), a new volume
    from the snapshot has the data, DeleteSnapshot twice succeeds."""
    drv, state = test_driver
    with CsiClient(drv.endpoint) as c:
        assert "CREATE_DELETE_SNAPSHOT" in c.info().controller_capabilities
        src = c.create_volume("pvc-src", required_bytes=1 << 20)
        (state / "volumes" / src.volume_id / "data.txt").write_text("snapshot me\n")
        snap = c.create_snapshot(src.volume_id, "snapshot-1")
        again = c.create_snapshot(src.volume_id, "snapshot-1")
        assert snap.snapshot_id == again.snapshot_id and snap.ready_to_use
        (state / "volumes" / src.volume_id / "data.txt").write_text("changed later\n")
        restored = c.create_volume("pvc-restored", required_bytes=1 << 20, snapshot_id=snap.snapshot_id)
        assert (state / "volumes" / restored.volume_id / "data.txt").read_text() == "snapshot me\n"
        c.delete_snapshot(snap.snapshot_id)
        c.delete_snapshot(snap.snapshot_id)
        assert not list((state / "snapshots").iterdir())
        for v in (src, restored):
            c.delete_volume(v.volume_id)
