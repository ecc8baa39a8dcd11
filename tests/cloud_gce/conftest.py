"""One Compute Engine fake per test session (127.0.0.1, a free port), emptied before each test."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gce_fake import GceFake  # noqa: E402
from gce_support import ZONE  # noqa: E402

from provisioners.gce_pd import GcePdProvisioner  # noqa: E402


@pytest.fixture(scope="session")
def gce_server() -> Iterator[GceFake]:
    fake = GceFake().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def gce(gce_server: GceFake) -> Iterator[GceFake]:
    gce_server.reset()
    for zone, name in ((ZONE, "node-a1"), (ZONE, "node-a2"), ("us-central1-b", "node-b1"),
                       ("us-central1-c", "node-c1")):
        gce_server.add_instance(zone, name)
    yield gce_server
    gce_server.reset()


@pytest.fixture
def gce_provisioner(gce: GceFake) -> GcePdProvisioner:
    # Short deadlines: the tests that hold operations RUNNING must not wait long.
    return GcePdProvisioner(project=gce.project, endpoint=gce.endpoint, zone=ZONE, cluster_id="test-cluster",
                            operation_timeout=2.0, api_retry_timeout=1.5)

