"""examples/iscsi/start-tgtd.sh: a second private tgtd beside the session one, stopped without touching it."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[3] / "examples" / "iscsi" / "start-tgtd.sh"


def test_second_tgtd_has_its_own_port_and_socket_and_stops_alone(tgt: Any, tmp_path: Path) -> None:
    """IS6 (test support): start prints where it listens; stop removes its targets, sockets and process only."""
    work = tmp_path / "tgt2"
    started = subprocess.run([str(SCRIPT), "start", str(work)], capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    values = dict(line.split("=", 1) for line in started.stdout.split())
    try:
        assert values["PORTAL"] != tgt.portal and int(values["CONTROL_PORT"]) != tgt.control_port
        again = subprocess.run([str(SCRIPT), "start", str(work)], capture_output=True, text=True, timeout=60)
        assert again.returncode != 0 and "already has a running tgtd" in again.stderr
        env = {"TGT_IPC_SOCKET": values["SOCKET"], "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        subprocess.run(["tgtadm", "-C", values["CONTROL_PORT"], "--lld", "iscsi", "--mode", "target", "--op", "new",
                        "--tid", "1", "--targetname", "iqn.2024-01.io.stowage:script-test"], env=env, check=True)
    finally:
        stopped = subprocess.run([str(SCRIPT), "stop", str(work)], capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert subprocess.run(["kill", "-0", values["PID"]], capture_output=True).returncode != 0
    assert not list(work.glob("tgtd.sock*")) and not (work / "pid").exists()
    assert tgt.tgtadm("--mode", "sys", "--op", "show").returncode == 0  # the session tgtd is untouched
