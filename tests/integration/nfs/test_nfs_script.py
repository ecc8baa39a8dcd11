"""examples/nfs/start-ganesha.sh, the script users and the tests share: a second private server on a
chosen export, reachable only in its namespace, and a stop that leaves no process behind (NF1)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from support import wait_for

SCRIPT = Path(__file__).resolve().parents[3] / "examples" / "nfs" / "start-ganesha.sh"

pytestmark = pytest.mark.root


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_nf1_script_starts_a_private_server_and_stop_removes_it(ganesha, tmp_path: Path) -> None:
    # ``ganesha``: the session's server, so this runs (or skips) under the same requirements.
    run_ganesha_existed = os.path.exists("/run/ganesha")
    export = tmp_path / "data"
    export.mkdir()
    (export / "seen").write_text("x")
    base = tmp_path / "server"
    out = subprocess.run([str(SCRIPT), "start", str(base), "--export", str(export)], capture_output=True, text=True, timeout=60)
    try:
        assert out.returncode == 0, out.stderr
        env = dict(l.split("=", 1) for l in out.stdout.splitlines() if "=" in l and not l.startswith("#"))
        assert env["NFS_EXPORT"] == str(export)
        url = env["NFS_URL_V3"].strip("'")
        listing = subprocess.run(["nsenter", f"--net={env['NFS_NETNS']}", "nfs-ls", url], capture_output=True, text=True, timeout=30)
        assert listing.returncode == 0 and "seen" in listing.stdout, listing.stderr
        # NFSv4 through the pseudo path answers too.
        v4 = subprocess.run(["nsenter", f"--net={env['NFS_NETNS']}", "nfs-ls", env["NFS_URL_V4"].strip("'")],
                            capture_output=True, text=True, timeout=30)
        assert v4.returncode == 0 and "seen" in v4.stdout, v4.stderr
        # Nothing listens on the host's network: the host's rpcbind port stays untouched.
        outside = subprocess.run(["nfs-ls", url], capture_output=True, text=True, timeout=30)
        assert outside.returncode != 0
        pids = [int((base / f).read_text()) for f in ("holder.pid", "rpcbind.pid", "ganesha.pid")]
        assert all(_running(p) for p in pids)
    finally:
        stop = subprocess.run([str(SCRIPT), "stop", str(base)], capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr
    wait_for(lambda: not any(_running(p) for p in pids), "the script's processes gone", 10)
    assert (export / "seen").read_text() == "x"  # the exported data is the user's: left alone
    # ganesha makes /run/ganesha; its private /run keeps that off the host.
    assert os.path.exists("/run/ganesha") == run_ganesha_existed
