"""Storage capacity tracking end to end (SEMANTICS SCAP1-SCAP4): a real CSI driver process with GET_CAPACITY (the
driver written for the tests), a real node agent that registers it, the capacity controller's CSIStorageCapacity
objects, and the scheduler keeping a pod off a node whose reported capacity is too small, with the real kubectl."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_cluster import Cluster, claim, cluster, pod, tmp_base, wait_until  # noqa: E402,F401  (fixtures)
from csi_drivers import TEST_NAME, registered_test_driver  # noqa: E402
from storage.api.quantity import parse_quantity  # noqa: E402
from support import run_kubectl  # noqa: E402

pytestmark = pytest.mark.root

CAPACITIES = "csistoragecapacities"
MiB = 1 << 20
SEGMENT = {"topology.csi-test.stowage.io/node": "n1"}


@pytest.fixture
def driver(tmp_base: Path):
    with registered_test_driver(tmp_base, "--capacity", str(100 * MiB)) as (drv, _state):
        yield drv


def objects(storage_capacity: bool = True) -> list[dict[str, Any]]:
    return [{"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": TEST_NAME},
             "spec": {"attachRequired": False, "storageCapacity": storage_capacity}},
            {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "csi"},
             "provisioner": TEST_NAME, "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete"}]


def ours(cluster: Cluster) -> list[dict[str, Any]]:
    items, _ = cluster.client.list(CAPACITIES, "kube-system")
    return [c for c in items if c.get("storageClassName") == "csi"]


def capacity_is(cluster: Cluster, value: int) -> list[dict[str, Any]] | None:
    found = ours(cluster)
    if len(found) == 1 and int(parse_quantity(found[0]["capacity"])) == value:
        return found
    return None


def test_scap_capacity_objects_follow_the_driver_and_steer_the_scheduler(cluster: Cluster, driver) -> None:
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.apply(*objects())
    # SCAP2: one object for the class in the driver's one segment, with GetCapacity's answer.
    found = wait_until(lambda: capacity_is(cluster, 100 * MiB), "the capacity object")
    obj = found[0]
    assert obj["metadata"]["name"].startswith("csisc-")
    assert obj["nodeTopology"] == {"matchLabels": SEGMENT}
    assert obj["metadata"]["labels"] == {"csi.storage.k8s.io/drivername": TEST_NAME,
                                         "csi.storage.k8s.io/managed-by": "external-provisioner"}

    # SCAP3: a claim larger than what is free keeps its pod off the node, in Kubernetes' words.
    cluster.apply(claim("big", "200Mi", "csi"), pod("wants-big", claims={"big": "/data"}))
    waiting = cluster.wait_pod("wants-big", lambda p: any(
        c.get("reason") == "Unschedulable" for c in (p.get("status") or {}).get("conditions") or []), "unschedulable")
    condition = next(c for c in waiting["status"]["conditions"] if c["type"] == "PodScheduled")
    assert condition["message"].startswith("0/1 nodes are available: 1 node(s) did not have enough free storage.")
    # One that fits is placed, provisioned, runs; the object then shows what is left.
    cluster.apply(claim("small", "64Mi", "csi"), pod("wants-small", claims={"small": "/data"}))
    cluster.wait_running("wants-small", timeout=120)
    wait_until(lambda: capacity_is(cluster, 36 * MiB), "capacity after the volume", timeout=30)
    assert not (cluster.pod("wants-big").get("spec") or {}).get("nodeName")

    # kubectl 1.37's columns for the kind.
    assert cluster.server.kubeconfig is not None
    done = run_kubectl("1.37", cluster.server.kubeconfig, cluster.base / "kubectl-cache",
                       "get", "csistoragecapacities", "-n", "kube-system")
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert rows[0] == ["NAME", "STORAGECLASSNAME", "CAPACITY"]
    assert [r[1:] for r in rows[1:]] == [["csi", "36Mi"]]
    described = run_kubectl("1.37", cluster.server.kubeconfig, cluster.base / "kubectl-cache",
                            "describe", "pod", "wants-big")
    assert described.returncode == 0, described.stderr
    assert "node(s) did not have enough free storage" in described.stdout

    # SCAP4: a driver that does not ask for capacity scheduling (storageCapacity false) is not held back.
    cluster.client.delete("pods", "wants-small", "default")
    cluster.wait_gone("pods", "wants-small", "default")
    driver_obj = cluster.client.get("csidrivers", TEST_NAME)
    cluster.client.delete("csidrivers", TEST_NAME)
    cluster.wait_gone("csidrivers", TEST_NAME)
    recreated = {k: v for k, v in driver_obj.items() if k != "metadata"}
    recreated["metadata"] = {"name": TEST_NAME}
    recreated["spec"]["storageCapacity"] = False
    cluster.apply(recreated)
    wait_until(lambda: (cluster.pod("wants-big").get("spec") or {}).get("nodeName") == "n1",
               "placed once capacity is not consulted")

    # The class gone, its objects go too.
    cluster.client.delete("storageclasses", "csi")
    wait_until(lambda: not ours(cluster), "capacity objects removed with the class")

