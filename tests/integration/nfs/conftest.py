"""One private nfs-ganesha (with rpcbind, in its own network namespace) for the whole session,
started and stopped by examples/nfs/start-ganesha.sh, the script users run too."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "examples" / "nfs" / "start-ganesha.sh"


@dataclass(frozen=True)
class Ganesha:
    base: Path
    export: str  # the exported directory, on this host's disk (NFSv3 mounts it by this path)
    netns: str  # /proc/PID/ns/net: the server is reachable only inside it
    server: str
    ready_seconds: float
    start_seconds: float

    def client(self):  # an NfsClient on the export (NFSv3, through the namespace)
        from storage.system.libnfs import NfsClient

        return NfsClient(self.server, self.export, netns=self.netns)


def _need_ganesha() -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root: the NFS server runs in its own network namespace")
    for program in ("ganesha.nfsd", "rpcbind", "unshare", "nsenter", "nfs-ls"):
        if shutil.which(program) is None:
            pytest.skip(f"host program {program!r} is not installed (Debian: nfs-ganesha nfs-ganesha-vfs libnfs-utils)")
    from storage.system import libnfs

    if not libnfs.available():
        pytest.skip("libnfs (Debian libnfs13) is not installed")


@pytest.fixture(scope="session")
def ganesha() -> Iterator[Ganesha]:
    _need_ganesha()
    run_dir = Path("/run/ganesha")
    run_dir_existed = run_dir.exists()
    base = Path(tempfile.mkdtemp(prefix="stowage-nfs-"))
    try:
        started = time.monotonic()
        out = subprocess.run([str(SCRIPT), "start", str(base)], capture_output=True, text=True, timeout=60)
        elapsed = time.monotonic() - started
        assert out.returncode == 0, f"start-ganesha.sh failed: {out.stderr}"
        env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line and not line.startswith("#"))
        yield Ganesha(base=base, export=env["NFS_EXPORT"], netns=env["NFS_NETNS"], server=env["NFS_SERVER"],
                      ready_seconds=float(env["NFS_READY_SECONDS"]), start_seconds=elapsed)
    finally:
        subprocess.run([str(SCRIPT), "stop", str(base)], capture_output=True, text=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
        # ganesha runs with a private /run; should one ever leak onto the host, remove only what it made.
        if not run_dir_existed and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
