"""The README's first command: ``stowage up -f examples/quickstart/`` brings a pod to Running on a
real, mounted, loop-backed ext4 volume; SIGTERM stops it cleanly.

``UpRun`` (also used by the book demo) runs ``stowage up`` on a private data
dir and port 0, and cleans up on the way out even when a test fails: every
runc container under the data dir, every mount under it, every loop device
backed by a file under it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from storage.client import Client
from storage.errors import NotFound, StowageError
from storage.system import loop, mounts
from stowage_e2e import processes_under
from support import UpProcess, allowed_cpus, host_tmp_dir, need_programs, need_root, thread_cpus, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
Obj = dict[str, Any]


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
    """Objects not created yet and the API server restarting count as "not yet"."""
    return wait_for(predicate, what, timeout, interval=0.2, retry_on=(NotFound, OSError, StowageError))


def condition(obj: Obj, kind: str) -> str | None:
    return next((c.get("status") for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


class UpRun:
    """``stowage up`` on ``data_dir`` (port 0, run from the repository so relative manifests resolve), ready."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        self.up = UpProcess("up", ["--data-dir", str(data_dir), "--listen", "127.0.0.1:0", *args], env,
                            new_session=True, cwd=REPO)
        try:
            ready = self.up.wait_for("stowage is ready")
        except BaseException:
            self.kill()
            raise
        self.client = Client.from_kubeconfig(Path(ready["kubeconfig"]))

    def log(self) -> str:
        return self.up.output()[-4000:]

    def stop(self, timeout: float = 60.0) -> int:
        return self.up.stop(timeout)

    def kill(self) -> None:
        self.up.kill()


@pytest.fixture
def up_dir() -> Iterator[Path]:
    need_root("the agent runs pods in runc containers on loop-backed volumes")
    need_programs("runc", "losetup", "mkfs.ext4")
    with host_tmp_dir("stowage-e2e-") as base:
        yield base / "data"


def pod_volume(data_dir: Path, pod: Obj, volume: str) -> Path:
    return next((data_dir / "agent" / "pods" / pod["metadata"]["uid"] / "volumes").glob(f"*/{volume}"))


def _check_only_the_api_server_is_pinned(up: UpRun, data_dir: Path) -> None:
    """PF92: `up` keeps its API server's threads on one CPU by default; the pod's processes, the node's
    CPU capacity and the process's other threads keep every CPU."""
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        return  # one CPU: nothing is pinned, and nothing can be told apart
    threads = thread_cpus(up.up.proc.pid)
    assert sum(1 for allowed in threads.values() if len(allowed) == 1) >= 3, threads
    assert threads[up.up.proc.pid] == cpus
    containers = processes_under(data_dir)
    assert containers, "the pod's processes"
    assert all(allowed_cpus(pid) == cpus for pid in containers), {pid: allowed_cpus(pid) for pid in containers}
    node = up.client.list("nodes")[0][0]
    assert node["status"]["capacity"]["cpu"] == str(len(cpus))


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
        _check_only_the_api_server_is_pinned(up, up_dir)

        client.delete("pods", "writer", "default")
        client.delete("persistentvolumeclaims", "data", "default")
        wait_until(lambda: not client.list("persistentvolumes")[0], "the volume to be deleted with its claim")
        wait_until(lambda: not loop.loops_under(up_dir), "the volume's loop device to be detached")
        assert not mounts.mounts_under(up_dir / "agent" / "pods")
        assert up.stop() == 0
    finally:
        up.kill()
