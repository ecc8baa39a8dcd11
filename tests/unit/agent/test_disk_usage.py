"""``disk_usage``: what an emptyDir takes on disk as du counts it (E17)."""
from __future__ import annotations

import os
from pathlib import Path

from storage.system.diskusage import disk_usage


def test_blocks_not_sizes_hard_links_once_and_symlinks_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "vol"
    (root / "a" / "b").mkdir(parents=True)
    empty = disk_usage(root)
    data = root / "a" / "b" / "data"
    data.write_bytes(os.urandom(3 * 1024 * 1024))
    fd = os.open(data, os.O_RDONLY)
    try:
        os.fsync(fd)  # blocks allocated now, not at writeback
    finally:
        os.close(fd)
    with open(root / "sparse", "wb") as f:
        f.truncate(512 * 1024 * 1024)  # holds nothing
    os.link(data, root / "again")  # the same blocks
    outside = tmp_path / "outside"
    outside.write_bytes(os.urandom(2 * 1024 * 1024))
    (root / "link").symlink_to(outside)
    used = disk_usage(root) - empty
    assert 3 * 1024 * 1024 <= used < 4 * 1024 * 1024, used


def test_a_missing_path_takes_nothing(tmp_path: Path) -> None:
    assert disk_usage(tmp_path / "gone") == 0
