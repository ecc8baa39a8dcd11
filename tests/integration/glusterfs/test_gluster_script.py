"""examples/glusterfs/start-glusterd.sh, the script the session fixture starts glusterd with: while that
glusterd runs, a second start refuses clearly (port 24007 cannot move), and the first one's processes are
all recorded under its state directory, so `stop` can end exactly them (GF10)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gluster_service import SCRIPT, Glusterd

pytestmark = pytest.mark.root


def test_second_start_refuses_because_port_24007_is_taken(glusterd: Glusterd, tmp_path: Path) -> None:
    result = subprocess.run([str(SCRIPT), "start", str(tmp_path / "second")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 3, result
    assert "24007" in result.stderr and "already in use" in result.stderr
    assert not (tmp_path / "second" / "glusterd.pid").exists()


def test_glusterd_and_its_bricks_are_tracked_in_the_state_dir(glusterd: Glusterd) -> None:
    print(f"glusterd start (script, until the socket answers): {glusterd.start_seconds:.2f}s")
    pid = int((glusterd.state / "glusterd.pid").read_text())
    assert f"{glusterd.state}/glusterd.vol" in Path(f"/proc/{pid}/cmdline").read_bytes().decode().replace("\0", " ")
    glusterd.create_volume("scriptcheck")
    try:
        pidfiles = list((glusterd.state / "run").rglob("*.pid"))
        assert pidfiles, "brick pid files under the state dir's run directory"
        for f in pidfiles:
            cmd = Path(f"/proc/{int(f.read_text())}/cmdline").read_bytes().decode()
            assert "glusterfs" in cmd and str(glusterd.state / "run") in cmd
    finally:
        glusterd.delete_volume("scriptcheck")
