"""Starting real CSI drivers for the tests (a unique module name; conftest.py imports the fixtures).

The driver: kubernetes-csi's ``mock-driver`` (csi-test v3.1.1, third-party Go code speaking the CSI
spec over gRPC; it keeps volumes in memory and does not mount), built by scripts/setup.sh into
.cache/go/bin. The Kubernetes hostpath driver cannot be built here: the Go module proxy answers
403 "This module version is not available" for github.com/kubernetes-csi/csi-driver-host-path
(every version) and github.com is not reachable directly.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[3]
MOCK_DRIVER = REPO / ".cache" / "go" / "bin" / "mock-driver"
MOCK_NAME = "io.kubernetes.storage.mock"


@dataclass
class RunningDriver:
    name: str
    endpoint: str
    socket: Path
    proc: subprocess.Popen[bytes]


def start_mock_driver(tmp: Path, *args: str, name: str = MOCK_NAME) -> RunningDriver:
    if not MOCK_DRIVER.exists():
        pytest.skip(f"{MOCK_DRIVER} missing: scripts/setup.sh builds it with Go (no `go` on this machine?)")
    sock = tmp / "csi.sock"
    env = dict(os.environ, CSI_ENDPOINT=f"unix://{sock}")
    proc = subprocess.Popen([str(MOCK_DRIVER), "--name", name, *args], env=env, cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 20
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_driver(proc)
            raise RuntimeError(f"mock-driver did not open {sock} (exit {proc.returncode})")
        time.sleep(0.02)
    return RunningDriver(name, f"unix://{sock}", sock, proc)


def stop_driver(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.fixture
def mock_driver() -> Iterator[RunningDriver]:
    """A fresh mock driver per test (its state is in memory, so tests never see each other's volumes)."""
    tmp = Path(tempfile.mkdtemp(prefix="stowage-csi-"))
    drv = start_mock_driver(tmp)
    try:
        yield drv
    finally:
        stop_driver(drv.proc)
        shutil.rmtree(tmp, ignore_errors=True)


TEST_DRIVER = Path(__file__).resolve().parent / "csi_test_driver.py"
TEST_NAME = "csi-test.stowage.io"


def start_test_driver(tmp: Path, nodeid: str, *args: str, name: str = TEST_NAME) -> RunningDriver:
    """The small CSI driver written for the tests (real bind mounts; see csi_test_driver.py)."""
    sock = tmp / "csi.sock"
    state = tmp / "state"
    state.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, str(TEST_DRIVER), "--endpoint", f"unix://{sock}", "--nodeid", nodeid,
                             "--drivername", name, "--statedir", str(state), *args],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "driver.err", "wb"), start_new_session=True)
    deadline = time.monotonic() + 30
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_driver(proc)
            raise RuntimeError(f"test CSI driver did not open {sock}: {(tmp / 'driver.err').read_text()[-2000:]}")
        time.sleep(0.02)
    return RunningDriver(name, f"unix://{sock}", sock, proc)


def unmount_under(path: Path) -> None:
    """Unmount whatever the driver left mounted beneath ``path`` (deepest first): tests leave no mounts."""
    from storage.system import mounts

    for entry in sorted((e for e in mounts.read_mountinfo() if str(e.mount_point).startswith(str(path) + "/")),
                        key=lambda e: -len(str(e.mount_point))):
        subprocess.run(["umount", "-l", str(entry.mount_point)], check=False)


@contextmanager
def registered_test_driver(tmp_base: Path, *args: str, node: bool = True) -> Iterator[tuple[RunningDriver, Path]]:
    """The test driver under ``tmp_base/driver`` for a control plane (and, with ``node``, a node agent) in this
    process: registered as the controller's driver and the node's; yields it and its state directory; at the end
    unregistered, stopped, and whatever it left mounted under ``tmp_base`` unmounted."""
    from provisioners import csi as csi_prov
    from volume_plugins import csi as csi_plugin

    base = tmp_base / "driver"
    base.mkdir()
    drv = start_test_driver(base, "n1", *args)
    if node:
        csi_plugin.register_node_driver(drv.name, drv.endpoint)
    csi_prov.register_driver(drv.name, drv.endpoint)
    try:
        yield drv, base / "state"
    finally:
        csi_prov.unregister_driver(drv.name)
        if node:
            csi_plugin.unregister_node_driver(drv.name)
        stop_driver(drv.proc)
        if node:
            unmount_under(tmp_base)
