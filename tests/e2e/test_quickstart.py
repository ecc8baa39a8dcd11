"""The README's first command: ``stowage up -f examples/quickstart/`` brings a pod to Running on a
real, mounted, loop-backed ext4 volume; SIGTERM stops it cleanly.

``UpRun`` (also used by the book demo) runs ``stowage up`` on a private data
dir and port 0, and cleans up on the way out even when a test fails: every
runc container under the data dir, every mount under it, every loop device
backed by a file under it.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from storage.client import Client
from storage.errors import NotFound, StowageError
from storage.system import loop, mounts

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
Obj = dict[str, Any]


def stowage_executable() -> str:
    beside = Path(sys.executable).parent / "stowage"
    return str(beside) if beside.exists() else (shutil.which("stowage") or "stowage")


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (NotFound, OSError, StowageError):
            last = None
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def condition(obj: Obj, kind: str) -> str | None:
    return next((c.get("status") for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def cleanup_tree(base: Path) -> None:
    for root in base.glob("**/runc"):
        listing = subprocess.run(["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True)
        for cid in listing.stdout.split():
            subprocess.run(["runc", "--root", str(root), "kill", cid, "KILL"], capture_output=True)
            subprocess.run(["runc", "--root", str(root), "delete", "--force", cid], capture_output=True)
    for _ in range(500):
        found = mounts.mounts_under(base)
        if not found:
            break
        if subprocess.run(["umount", found[0].mount_point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", found[0].mount_point], capture_output=True)
    for dev in loop.loops_under(base):
        subprocess.run(["losetup", "--detach", dev], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


class UpRun:
    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}-up.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [stowage_executable(), "up", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
                 "--log-format", "json", *args],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=str(REPO), start_new_session=True)
        kubeconfig = data_dir / "kubeconfig"
        wait_until(lambda: self.proc.poll() is None and kubeconfig.exists() and b"stowage is ready" in self.log_path.read_bytes(),
                   f"stowage up to be ready (log: {self.log_path})")
        self.client = Client.from_kubeconfig(kubeconfig)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture
def up_dir() -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("runc") is None:
        pytest.skip("needs root and runc")
    base = Path(tempfile.mkdtemp(prefix="stowage-e2e-"))
    try:
        yield base / "data"
    finally:
        cleanup_tree(base)
        assert not mounts.mounts_under(base) and not loop.loops_under(base), "left mounts or loop devices behind"


def pod_volume(data_dir: Path, pod: Obj, volume: str) -> Path:
    return next((data_dir / "agent" / "pods" / pod["metadata"]["uid"] / "volumes").glob(f"*/{volume}"))


def test_quickstart_pod_runs_on_a_real_loop_backed_ext4_volume(up_dir: Path) -> None:
    up = UpRun(up_dir, "-f", "examples/quickstart/")
    try:
        client = up.client
        pod = wait_until(lambda: (lambda p: p if p["status"].get("phase") == "Running" and condition(p, "Ready") == "True" else None)(
            client.get("pods", "writer", "default")), f"the quickstart pod Running and Ready; log:\n{up.log()}")
        data = pod_volume(up_dir, pod, "data")
        entry = mounts.top_mount(data)
        assert entry is not None and entry.fstype == "ext4"
        assert entry.source.startswith("/dev/loop")
        backing = loop.loops_under(up_dir / "pools")
        assert entry.source in backing, (entry.source, backing)
        assert Path(f"/sys/block/{os.path.basename(entry.source)}/loop/dio").read_text().strip() == "1"
        assert (data / "log.txt").read_text().startswith("started on writer at ")

        client.delete("pods", "writer", "default")
        client.delete("persistentvolumeclaims", "data", "default")
        wait_until(lambda: not client.list("persistentvolumes")[0], "the volume to be deleted with its claim")
        wait_until(lambda: not loop.loops_under(up_dir), "the volume's loop device to be detached")
        assert not mounts.mounts_under(up_dir / "agent" / "pods")
        assert up.stop() == 0
    finally:
        up.kill()
