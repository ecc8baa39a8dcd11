"""examples/ceph as its README runs it: the cluster script's `objects` output plus the example's
class, claim and pod files, unchanged, applied by `stowage up -f`. The RBD pod writes, both CephFS
pods append to one ReadWriteMany claim, and deleting the claims removes the image and the
subvolume (RB1, RB7, CF1, CF6)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "e2e"))

from ceph_service import SCRIPT, CephCluster  # noqa: E402
from stowage_e2e import Stowage, poll, remove_data_dir  # noqa: E402
from support import need_programs, need_root  # noqa: E402

pytestmark = pytest.mark.root

EXAMPLE = SCRIPT.parent


@pytest.fixture
def stowage(tmp_path: Path, ceph_cluster: CephCluster) -> Iterator[Stowage]:
    need_root("pods run in runc containers")
    need_programs("runc", "losetup", "mkfs.ext4", "rbd-fuse", "ceph-fuse")
    objects = tmp_path / "ceph-objects.yaml"
    out = subprocess.run(["bash", str(SCRIPT), "objects", str(ceph_cluster.directory)], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    objects.write_text(out)
    files = [objects, *(EXAMPLE / f for f in ("rbd-storageclass.yaml", "rbd-claim-and-pod.yaml",
                                             "cephfs-storageclass.yaml", "cephfs-claim-and-pods.yaml"))]
    data_dir = tmp_path / "up"
    data_dir.mkdir()
    up = Stowage(data_dir, files)
    try:
        up.wait_started()
        yield up
    finally:
        problems = up.stop() + remove_data_dir(data_dir)
        assert not problems, problems


def _running(up: Stowage, name: str) -> dict[str, Any] | None:
    pod = up.client.get("pods", name, "default")
    return pod if (pod.get("status") or {}).get("phase") == "Running" else None


def _volume_file(up: Stowage, pod: str, name: str) -> str:
    uid = up.client.get("pods", pod, "default")["metadata"]["uid"]
    found = list((up.data_dir / "agent" / "pods" / uid / "volumes").glob(f"*/*/{name}"))
    return found[0].read_text() if found else ""


def test_ceph_example_runs_unchanged(stowage: Stowage, ceph_cluster: CephCluster) -> None:
    up = stowage
    for pod in ("rbd-writer", "cephfs-writer-a", "cephfs-writer-b"):
        poll(f"{pod} Running", lambda: _running(up, pod), 240, diagnose=up.describe)
    rbd_pv = up.client.get("persistentvolumes",
                           up.client.get("persistentvolumeclaims", "rbd-pvc", "default")["spec"]["volumeName"])
    cephfs_pv = up.client.get("persistentvolumes",
                              up.client.get("persistentvolumeclaims", "cephfs-pvc", "default")["spec"]["volumeName"])
    image = rbd_pv["spec"]["rbd"]["image"]
    assert image in ceph_cluster.rbd("ls", "rbd").split()
    assert rbd_pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == "rbd.csi.ceph.com"
    poll("the rbd pod's log line", lambda: _volume_file(up, "rbd-writer", "log").strip(), 60)
    # Each writer appends to its own file on the ReadWriteMany claim; each pod sees both files grow.
    for pod in ("cephfs-writer-a", "cephfs-writer-b"):
        poll(f"{pod} sees both writers' files",
             lambda: _volume_file(up, pod, "a.log").strip() and _volume_file(up, pod, "b.log").strip(), 60,
             diagnose=lambda: "volumes: " + repr(sorted(str(p) for p in (up.data_dir / "agent" / "pods").glob("*/volumes/*/*/*"))))
    subvolume = cephfs_pv["spec"]["cephfs"]["path"]
    for pod in ("rbd-writer", "cephfs-writer-a", "cephfs-writer-b"):
        up.client.delete("pods", pod, "default", grace_period_seconds=1)
    poll("pods gone", lambda: not up.client.list("pods", "default")[0], 120)
    for claim in ("rbd-pvc", "cephfs-pvc"):
        up.client.delete("persistentvolumeclaims", claim, "default")
    poll("the image deleted with its claim", lambda: image not in ceph_cluster.rbd("ls", "rbd").split(), 120)
    poll("the subvolume deleted with its claim",
         lambda: subvolume.split("/")[3] not in ceph_cluster.ceph("fs", "subvolume", "ls", "cephfs", "csi"), 120)
