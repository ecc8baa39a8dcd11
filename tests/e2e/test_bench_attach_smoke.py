"""The attach benchmark (benchmarks/attach.py) runs end to end with 3 EBS claims on moto and leaves nothing behind."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage.system import loop
from support import need_programs, need_root

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_attach_benchmark_smoke(tmp_path: Path) -> None:
    """P2, B6, B10, A1, A4: 3 claims on the Immediate EBS class become Bound and are deleted again; 3 claims
    + pods on the WaitForFirstConsumer class get one VolumeAttachment each and Run with a freshly formatted,
    mounted volume; the EC2 calls are counted at moto's side (the provisioner creates and attaches each
    volume exactly once, like the bare sequence), and after the run no volume is left in EC2, no loop
    device is attached, and the run's temp directory is gone."""
    need_root("loop devices, mounts and runc containers")
    need_programs("runc", "losetup", "mkfs.ext4")
    pytest.importorskip("moto.server")
    out = tmp_path / "attach.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "attach.py"), "--quick", "--claims", "3", "--timeout", "180",
         "--out", str(out)],
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=900)
    assert out.exists(), f"no results written:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    result = json.loads(out.read_text())
    assert proc.returncode == 0 and result["ok"] is True, (result.get("error"), proc.stderr[-5000:])

    assert result["claims"] == 3 and result["nodes"] == 1
    base = result["baseline"]
    assert base["calls_to_available"] == {"CreateVolume": 3, "DescribeVolumes": 1}
    assert base["calls_to_attached"] == {"CreateVolume": 3, "AttachVolume": 3, "DescribeVolumes": 2}
    assert 0 < base["seconds_all_available"] <= base["seconds_all_attached"]

    imm = result["immediate"]
    assert imm["seconds_all_bound"] > 0
    assert imm["calls_to_bound"].get("CreateVolume") == 3, imm["calls_to_bound"]
    assert imm["calls_cleanup"].get("DeleteVolume", 0) >= 3, imm["calls_cleanup"]

    wffc = result["wait_for_first_consumer"]
    assert 0 < wffc["seconds_all_bound"] <= wffc["seconds_all_running"]
    assert 0 < wffc["seconds_all_attached"] <= wffc["seconds_all_running"]
    assert wffc["attachments"] == 3 and sum(wffc["pods_per_node"].values()) == 3
    assert wffc["calls_to_running"].get("CreateVolume") == 3, wffc["calls_to_running"]
    assert wffc["calls_to_running"].get("AttachVolume") == 3, wffc["calls_to_running"]
    assert wffc["calls_cleanup"].get("DetachVolume", 0) >= 3 and wffc["calls_cleanup"].get("DeleteVolume", 0) >= 3

    for key in ("bound_vs_available", "attached_vs_attached", "running_vs_attached", "calls_bound_vs_available",
                "calls_running_vs_attached"):
        assert result["ratios"][key] > 0, key
    assert result["leaked_volumes"] == []
    assert result["cleanup_problems"] == []
    assert result["temp_dir_removed"] is True
    run_dir = Path(result["temp_dir"])
    assert not run_dir.exists() and not loop.loops_under(run_dir), "the run's loop devices or temp dir remain"
