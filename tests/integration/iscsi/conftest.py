"""One private tgtd for the whole iSCSI test session (examples/iscsi/start-tgtd.sh)."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "examples" / "iscsi" / "start-tgtd.sh"


@dataclass(frozen=True)
class TgtService:
    dir: Path
    portal: str  # 127.0.0.1:PORT
    socket: str
    control_port: int
    start_seconds: float

    def tgtadm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tgtadm", "-C", str(self.control_port), "--lld", "iscsi", *args],
                              env={"TGT_IPC_SOCKET": self.socket, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                              capture_output=True, text=True, check=check)

    def class_parameters(self, backing_dir: Path, **extra: str) -> dict[str, str]:
        return {"targetPortal": self.portal, "tgtSocket": self.socket, "controlPort": str(self.control_port),
                "backingDir": str(backing_dir), **extra}


@pytest.fixture(scope="session")
def tgt() -> Iterator[TgtService]:
    for tool in ("tgtd", "tgtadm", "iscsi-ls", "iscsi-inq", "qemu-io"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing (Debian: tgt libiscsi-bin qemu-utils qemu-block-extra)")
    workdir = Path(tempfile.mkdtemp(prefix="stowage-tgt-"))
    started = time.monotonic()
    proc = subprocess.run([str(SCRIPT), "start", str(workdir)], capture_output=True, text=True)
    seconds = time.monotonic() - started
    try:
        assert proc.returncode == 0, proc.stderr
        values = dict(line.split("=", 1) for line in proc.stdout.split())
        yield TgtService(workdir, values["PORTAL"], values["SOCKET"], int(values["CONTROL_PORT"]), seconds)
    finally:
        subprocess.run([str(SCRIPT), "stop", str(workdir)], capture_output=True, text=True)
        shutil.rmtree(workdir, ignore_errors=True)
