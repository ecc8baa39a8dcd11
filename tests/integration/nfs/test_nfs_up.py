"""`stowage up` with a pod on an nfs PersistentVolume on a node whose kernel has no NFS client: the pod
waits in ContainerCreating with a FailedMount event that names the missing kernel client (NF6)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "e2e"))

from stowage_e2e import Stowage, force_clean, poll  # noqa: E402
from support import need_programs, need_root  # noqa: E402
from volume_plugins.nfs import NO_CLIENT, nfs_supported  # noqa: E402

pytestmark = pytest.mark.root

MANIFEST = """\
apiVersion: v1
kind: PersistentVolume
metadata: {name: nfs-pv}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  mountOptions: [nfsvers=4.1, hard]
  nfs: {server: fs-0123abcd.efs.eu-west-1.amazonaws.com, path: /}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: shared, namespace: default}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: ""
  volumeName: nfs-pv
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: reader, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: reader
      image: debian:12
      command: ["sleep", "infinity"]
      volumeMounts: [{name: data, mountPath: /data}]
  volumes:
    - name: data
      persistentVolumeClaim: {claimName: shared}
"""


@pytest.fixture
def stowage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stowage]:
    need_root("stowage up runs a node agent")
    need_programs("runc", "losetup", "mkfs.ext4", "nsenter")
    data_dir = tmp_path_factory.mktemp("stowage-nfs-up")
    manifest = data_dir / "nfs.yaml"
    manifest.write_text(MANIFEST)
    up = Stowage(data_dir, [manifest])
    problems: list[str] = []
    try:
        up.wait_started()
        yield up
    finally:
        problems += up.stop()
        problems += force_clean(data_dir)
        if problems:
            pytest.fail("teardown found leftovers (cleaned up by force):\n" + "\n".join(problems))


@pytest.mark.skipif(nfs_supported(), reason="this kernel has an NFS client: the mount would be tried for real")
def test_nf6_pod_on_nfs_volume_gets_failed_mount_naming_the_missing_kernel_client(stowage: Stowage) -> None:
    """NF6: the claim binds to the static EFS-style nfs PV (NF4); the pod's FailedMount event says the
    node's kernel has no NFS client and names the export; the pod is not started."""
    def failed_mount() -> dict | None:
        events, _ = stowage.client.list("events", "default")
        return next((e for e in events if e.get("reason") == "FailedMount"
                     and (e.get("involvedObject") or {}).get("name") == "reader"), None)

    event = poll("FailedMount event of pod reader", failed_mount, 120, diagnose=stowage.describe)
    assert NO_CLIENT in event["message"]
    assert "fs-0123abcd.efs.eu-west-1.amazonaws.com:/" in event["message"]
    assert 'MountVolume.SetUp failed for volume "data"' in event["message"]
    pod = stowage.client.get("pods", "reader", "default")
    waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "ContainerCreating" and NO_CLIENT in waiting["message"]
    assert NO_CLIENT in stowage.describe("pods")
