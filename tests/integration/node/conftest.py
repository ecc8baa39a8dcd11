"""Fixtures for node data-path tests on real loop devices and mounts.

Every test gets its own temporary directory; on the way out (pass or fail)
everything mounted under it is unmounted and every loop device whose backing
file lies under it is detached. Nothing else on the machine is touched.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from storage.system import loop
from support import host_tmp_dir, need_root

pytestmark = pytest.mark.root


@pytest.fixture
def node_tmp() -> Iterator[Path]:
    need_root("loop devices and mounts")
    with host_tmp_dir("stowage-node-") as base:
        yield base


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

