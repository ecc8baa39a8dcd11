"""A control plane killed between "disk created at Compute Engine" and "PV saved" (P-rules of crash-safe
provisioning, CG3): ``stowage serve`` runs with ``STOWAGE_FAULT_KILL_AT=provision:after-backend`` and SIGKILLs
itself right after the provisioner returned; the restarted control plane finds the same disk by name and
labels, binds the claim to it, and deleting the claim deletes that one disk. No second disk, no leak."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest
from gce_fake import GceFake

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support import UpProcess, wait_for  # noqa: E402

from storage.client import Client  # noqa: E402
from storage.errors import NotFound  # noqa: E402

MANIFEST = """
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: pd}
provisioner: pd.csi.storage.gke.io
parameters: {type: pd-balanced, zones: "us-central1-a,us-central1-c"}
reclaimPolicy: Delete
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: pd
  resources: {requests: {storage: 20Gi}}
"""


@pytest.fixture
def serve(tmp_path: Path, gce: GceFake) -> Iterator:
    started: list[UpProcess] = []
    env = dict(os.environ)
    env.pop("KUBECONFIG", None)
    env.update({"HOME": str(tmp_path / "home"), "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE": gce.base,
                "CLOUDSDK_CORE_PROJECT": gce.project})

    def start(*args: str, fault: str = "") -> UpProcess:
        extra = {"STOWAGE_FAULT_KILL_AT": fault} if fault else {}
        up = UpProcess("serve", ["--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0", *args],
                       {**env, **extra})
        started.append(up)
        return up

    yield start
    for up in started:
        up.kill()


def test_kill_between_disk_insert_and_pv_save_leaks_nothing(serve, tmp_path: Path, gce: GceFake) -> None:
    manifest = tmp_path / "claim.yaml"
    manifest.write_text(MANIFEST)
    first = serve("-f", str(manifest), fault="provision:after-backend")
    assert first.proc.wait(timeout=60) == -9, first.output()
    assert len(gce.disk_names()) == 1  # created at Compute Engine, never saved as a PV
    (name,) = gce.disk_names()

    second = serve()
    ready = second.wait_for("stowage is ready")
    client = Client.from_kubeconfig(ready["kubeconfig"])
    try:
        claim = wait_for(lambda: (lambda c: c if c.get("status", {}).get("phase") == "Bound" else None)(
            client.get("persistentvolumeclaims", "data", "default")), "claim Bound after the restart", 60)
        assert claim["spec"]["volumeName"] == name
        pv = client.get("persistentvolumes", name)
        assert pv["spec"]["gcePersistentDisk"]["pdName"] == name
        assert pv["spec"]["capacity"]["storage"] == "20Gi"
        assert gce.disk_names() == [name]
        inserts = [r for r in gce.requests if r[0] == "POST" and r[1].endswith("/disks")]
        # The restarted controller inserted again and got 409 alreadyExists (the fake, like Compute Engine,
        # never makes a second disk of a name), then adopted the disk: still exactly one disk above. Under
        # load the killed process may have sent its insert twice (a retried request), hence "at least".
        assert len(inserts) >= 2

        client.delete("persistentvolumeclaims", "data", "default")
        wait_for(lambda: gce.disk_names() == [] or None, "disk deleted at Compute Engine", 60)

        def pv_gone() -> bool:
            try:
                client.get("persistentvolumes", name)
            except NotFound:
                return True
            return False
        wait_for(pv_gone, "PV deleted", 60)
    finally:
        client.close()
    assert second.stop() == 0
