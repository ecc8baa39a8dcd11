"""Backup engine tests: the object-store servers and ``object_store_target`` come from tests/conftest.py."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import host_tmp_dir  # noqa: E402


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A temp dir whose mounts and loop devices are removed with it, pass or fail."""
    with host_tmp_dir("stowage-bk-") as base:
        yield base
