"""BP6 against a real CSI driver (the tests' own driver, which logs every call): CreateVolume never carries the
performance placement parameters; the driver's own parameters still reach it."""
from __future__ import annotations

import json
from pathlib import Path

from csi_drivers import start_test_driver, stop_driver

from provisioners import csi as csi_prov
from provisioners import registry
from provisioners.base import ProvisionRequest
from storage.api.bench_figures import SCHEDULING_PARAMETERS

CLAIM = {"metadata": {"name": "data", "namespace": "default", "uid": "bp6"},
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Mi"}}}}


def test_bp6_create_volume_gets_only_the_drivers_parameters(tmp_path: Path) -> None:
    drv = start_test_driver(tmp_path, "n1", name="bench-csi.stowage.io")
    csi_prov.register_driver(drv.name, drv.endpoint)
    try:
        p = registry.get(drv.name)
        assert p is not None
        params = {"tier": "gold", "minRandomWriteIOPS": "50000", "maxWriteLatencyP99": "2ms",
                  "benchPlacement": "Preferred"}
        sc = {"metadata": {"name": "nvme"}, "provisioner": drv.name, "volumeBindingMode": "WaitForFirstConsumer",
              "parameters": params}
        p.check_parameters(params)
        result = p.provision(ProvisionRequest("pvc-bp6", CLAIM, sc))
        assert result.status == "finished", result.message
        calls = [json.loads(line) for line in (tmp_path / "state" / "calls.log").read_text().splitlines()]
        sent = [c["request"].get("parameters", "") for c in calls if c["method"] == "CreateVolume"]
        assert sent and all("tier" in s and "gold" in s for s in sent), sent
        assert not any(name in s for s in sent for name in SCHEDULING_PARAMETERS), sent
        p.delete({"metadata": {"name": "pvc-bp6", "annotations": {"pv.kubernetes.io/provisioned-by": drv.name,
                                                                  **result.annotations}},
                  "spec": {**result.source, "capacity": {"storage": result.capacity}, "accessModes": ["ReadWriteOnce"]}})
    finally:
        csi_prov.unregister_driver(drv.name)
        stop_driver(drv.proc)
