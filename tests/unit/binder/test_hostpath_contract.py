"""The hostPath reference provisioner passes the shared provisioner contract, and recycles."""
from __future__ import annotations

from pathlib import Path

import pytest

from provisioners.hostpath import HostPathProvisioner
from provisioners.testing import ProvisionerContract


class TestHostPathContract(ProvisionerContract):
    @pytest.fixture
    def provisioner(self, tmp_path: Path) -> HostPathProvisioner:
        return HostPathProvisioner(tmp_path / "root")

    @pytest.fixture
    def storage_class(self) -> dict:
        return {"metadata": {"name": "hp"}, "provisioner": HostPathProvisioner.name, "parameters": {}}

    @pytest.fixture
    def backend_count(self, provisioner: HostPathProvisioner):
        return lambda name: sum(1 for p in provisioner.root.iterdir() if p.name == name) if provisioner.root.exists() else 0


def test_root_parameter_and_recycle(tmp_path: Path) -> None:
    from provisioners.testing import make_claim, pv_from_result
    from provisioners.base import ProvisionRequest

    hp = HostPathProvisioner(tmp_path / "default-root")
    cls = {"metadata": {"name": "hp"}, "provisioner": hp.name, "parameters": {"root": str(tmp_path / "other")}}
    claim = make_claim("1Gi", class_name="hp")
    req = ProvisionRequest(volume_name="pvc-x", claim=claim, storage_class=cls)
    pv = pv_from_result(hp, req, hp.provision(req))
    path = Path(pv["spec"]["hostPath"]["path"])
    assert path == tmp_path / "other" / "pvc-x" and path.is_dir()
    (path / "d").mkdir()
    (path / "d" / "f").write_text("old data")
    assert hp.can_recycle(pv)
    hp.recycle(pv)
    assert path.is_dir() and not any(path.iterdir())
