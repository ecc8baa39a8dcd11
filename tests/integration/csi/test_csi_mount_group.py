"""fsGroup delegated to a CSI driver with VOLUME_MOUNT_GROUP (SEMANTICS CS23), end to end with a real node agent,
a runc pod and the CSI driver written for the tests: the pod's fsGroup goes to NodeStageVolume and
NodePublishVolume as volume_mount_group, and the agent changes no file's group itself, as kubelet."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_cluster import Cluster, claim, cluster, pod, tmp_base, wait_until  # noqa: E402,F401  (fixtures)
from csi_drivers import TEST_NAME, registered_test_driver  # noqa: E402

pytestmark = pytest.mark.root


@pytest.fixture
def driver(tmp_base: Path):
    with registered_test_driver(tmp_base, "--volume-mount-group") as (_drv, state):
        yield state


def _calls(state: Path, method: str) -> list[dict]:
    text = (state / "calls.log").read_text() if (state / "calls.log").exists() else ""
    return [c for c in map(json.loads, text.split("\n")[:-1]) if c["method"] == method]


def test_cs23_the_driver_applies_the_pods_fs_group(cluster: Cluster, driver: Path) -> None:
    cluster.start_controllers()
    cluster.add_agent("n1")
    # fsGroupPolicy File: without the capability the agent would give every file the pod's group.
    cluster.apply({"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": TEST_NAME},
                   "spec": {"attachRequired": False, "fsGroupPolicy": "File"}},
                  {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "csi"},
                   "provisioner": TEST_NAME, "volumeBindingMode": "Immediate"},
                  claim("data", "16Mi", "csi"))
    bound = wait_until(lambda: (c := cluster.client.get("persistentvolumeclaims", "data", "default"))["status"].get(
        "phase") == "Bound" and c, "Bound")
    handle = cluster.client.get("persistentvolumes", bound["spec"]["volumeName"])["spec"]["csi"]["volumeHandle"]
    volume = driver / "volumes" / handle
    (volume / "existing").write_text("made before the pod\n")
    cluster.apply(pod("app", claims={"data": "/data"}, securityContext={"fsGroup": 2000}))
    cluster.wait_running("app", timeout=120)
    for method in ("NodeStageVolume", "NodePublishVolume"):
        assert 'volume_mount_group: "2000"' in _calls(driver, method)[-1]["request"]["volume_capability"], method
    assert os.stat(volume).st_gid == 2000  # the driver's doing
    assert os.stat(volume / "existing").st_gid == 0  # the agent left the files alone
