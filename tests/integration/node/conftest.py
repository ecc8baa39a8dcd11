"""Fixtures for node data-path tests on real loop devices and mounts.

Every test gets its own temporary directory; on the way out (pass or fail)
everything mounted under it is unmounted and every loop device whose backing
file lies under it is detached. Nothing else on the machine is touched.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from storage.system import loop, mounts

pytestmark = pytest.mark.root


def _cleanup(base: Path) -> None:
    for _ in range(100):
        found = mounts.mounts_under(base)
        if not found:
            break
        target = found[0].mount_point
        if subprocess.run(["umount", target], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", target], capture_output=True)
    for dev in loop.loops_under(base):
        subprocess.run(["losetup", "--detach", dev], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def node_tmp() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root for loop devices and mounts")
    base = Path(tempfile.mkdtemp(prefix="stowage-node-"))
    try:
        yield base
    finally:
        _cleanup(base)
        assert not mounts.mounts_under(base), "mounts left behind"
        assert not loop.loops_under(base), "loop devices left behind"


@pytest.fixture
def make_disk(node_tmp: Path):
    """Attach a sparse file of ``size`` bytes as a loop device; detached by node_tmp's cleanup."""
    counter = iter(range(1000))

    def make(size: int = 64 * 2**20, name: str | None = None) -> str:
        path = node_tmp / "disks" / (name or f"disk{next(counter)}.img")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(size)
        return loop.attach(path)

    return make

