"""Fixtures for the Ceph tests; the helpers live in ceph_service.py (a unique module name)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ceph_service  # noqa: E402
from ceph_service import CephCluster  # noqa: E402


@pytest.fixture(scope="session")
def ceph_cluster() -> Iterator[CephCluster]:
    missing = ceph_service.missing_tools()
    if missing:
        pytest.skip(f"Ceph tools missing ({', '.join(missing)}): run scripts/setup.sh")
    cluster = ceph_service.start()
    try:
        yield cluster
    finally:
        ceph_service.stop(cluster)
