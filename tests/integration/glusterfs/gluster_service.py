"""The test session's one glusterd, started and stopped by examples/glusterfs/start-glusterd.sh (the
same script users run), so the tests exercise it too."""
from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from support import need_programs, need_root

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "examples" / "glusterfs" / "start-glusterd.sh"
PORT = 24007


def port_in_use(port: int = PORT) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Glusterd:
    state: Path
    start_seconds: float

    @property
    def socket(self) -> str:
        return str(self.state / "glusterd.sock")

    @property
    def bricks(self) -> str:
        return str(self.state / "bricks")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["gluster", "--mode=script", "--log-file=/dev/null", f"--glusterd-sock={self.socket}",
                               *args], capture_output=True, text=True, timeout=60, check=check)

    def volumes(self) -> list[str]:
        out = self.cli("volume", "list").stdout
        return [line.strip() for line in out.splitlines() if line.strip() and not line.startswith("No volumes")]

    def create_volume(self, name: str) -> None:
        (self.state / "bricks" / name).mkdir(parents=True, exist_ok=True)
        self.cli("volume", "create", name, f"127.1:{self.bricks}/{name}/brick0", "force")
        self.cli("volume", "start", name)

    def delete_volume(self, name: str) -> None:
        self.cli("volume", "stop", name, "force", check=False)
        self.cli("volume", "delete", name, check=False)
        subprocess.run(["rm", "-rf", f"{self.bricks}/{name}"], check=False)


@pytest.fixture(scope="session")
def glusterd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Glusterd]:
    need_root("glusterd, brick processes and FUSE mounts")
    need_programs("glusterd", "gluster", "mount.glusterfs", "ss")
    if port_in_use():
        pytest.skip(f"port {PORT} on this host is already in use (another glusterd?); glusterd's port cannot be"
                    " moved, so the GlusterFS tests need it free")
    state = tmp_path_factory.mktemp("glusterd")
    started = time.monotonic()
    try:
        result = subprocess.run([str(SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            pytest.fail(f"start-glusterd.sh failed ({result.returncode}): {result.stdout}{result.stderr}")
        yield Glusterd(state, time.monotonic() - started)
    finally:
        stop = subprocess.run([str(SCRIPT), "stop", str(state)], capture_output=True, text=True, timeout=120)
        if stop.returncode != 0:
            print(f"start-glusterd.sh stop failed: {stop.stdout}{stop.stderr}")
