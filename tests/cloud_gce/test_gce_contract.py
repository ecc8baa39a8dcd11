"""The shared provisioner contract (provisioners/testing.py) against the Compute Engine fake (CG1-CG4)."""
from __future__ import annotations

from typing import Any, Callable

import pytest
from gce_fake import GceFake

from provisioners.gce_pd import GcePdProvisioner
from provisioners.testing import ProvisionerContract


class TestGcePdContract(ProvisionerContract):
    @pytest.fixture
    def provisioner(self, gce_provisioner: GcePdProvisioner) -> GcePdProvisioner:
        return gce_provisioner

    @pytest.fixture
    def storage_class(self) -> dict[str, Any]:
        return {"metadata": {"name": "c"}, "provisioner": "kubernetes.io/gce-pd",
                "parameters": {"type": "pd-ssd", "zone": "us-central1-a"}}

    @pytest.fixture
    def backend_count(self, gce: GceFake) -> Callable[[str], int]:
        return lambda volume_name: gce.disk_names().count(volume_name)
