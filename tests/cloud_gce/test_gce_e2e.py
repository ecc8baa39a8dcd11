"""End to end on GCE PD (CG1-CG8, SEMANTICS A1-A3, A4): a pod on a claim of a ``kubernetes.io/gce-pd`` class
on an in-process agent. The provisioner and attacher talk to the Compute Engine fake through Google's
standard variables only; when the fake's VM has the disk, SimulatedDisks plays Compute Engine's part on the
node (a loop device behind ``by-id/google-<name>``), so format and mount are real. Data written, pod deleted
-> the disk is detached in the fake; a pod on a second node of the zone gets the disk there and reads the
data; claim deleted -> the disk is deleted in the fake."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from gce_fake import GceFake

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "agent"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent_cluster import Cluster, claim, cluster, condition, pod, tmp_base, wait_until  # noqa: E402,F401
from support import wait_for_text  # noqa: E402

from attach_harness import SimulatedDisks, gce_link  # noqa: E402

from provisioners import registry as provisioner_registry  # noqa: E402
from provisioners.gce_pd import GcePdProvisioner  # noqa: E402

pytestmark = pytest.mark.root
ZONE = "us-central1-b"


@pytest.fixture
def gce_cluster(cluster: Cluster, gce: GceFake, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    # Google's and gcloud's own variables, nothing Stowage-specific (CG9).
    monkeypatch.setenv("CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE", gce.base)
    monkeypatch.setenv("CLOUDSDK_CORE_PROJECT", gce.project)
    provisioner = GcePdProvisioner()
    provisioner_registry.register(provisioner)
    try:
        yield cluster
    finally:
        provisioner_registry.unregister(GcePdProvisioner.name)


def _gce_class(name: str = "pd") -> dict[str, Any]:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": "kubernetes.io/gce-pd", "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Delete", "parameters": {"type": "pd-ssd", "fsType": "ext4"}}


def _mount_point(device: str) -> str | None:
    return next((line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
                 if line.split()[0] == device), None)


def test_pod_on_a_gce_pd_claim_mounts_writes_detaches_moves_and_deletes(gce_cluster: Cluster, gce: GceFake) -> None:
    c = gce_cluster
    for node in ("n1", "n2"):
        gce.add_instance(ZONE, node)  # the VMs behind the nodes (GCE names nodes after their VMs)
    dev_disk = {node: c.base / f"dev-disk-{node}" for node in ("n1", "n2")}
    backing = c.base / "gce-disks"  # one image per disk, whichever node it is attached to
    c.start_controllers()
    for node in ("n1", "n2"):
        c.add_agent(node, zone=ZONE, dev_disk_dir=dev_disk[node])
        wait_until(lambda n=node: condition(c.client.get("nodes", n), "Ready") == "True", f"node {node} Ready")
    c.apply(_gce_class(), claim("data", "1Gi", "pd"))
    writer = "echo written-on-gce > /data/hello && sync && trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"
    reader = "cat /data/hello > /data/seen && sync && trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"
    with SimulatedDisks(c.client, node="n1", dev_disk=dev_disk["n1"], backing=backing, link_for=gce_link), \
            SimulatedDisks(c.client, node="n2", dev_disk=dev_disk["n2"], backing=backing, link_for=gce_link):
        c.apply(pod("writer", writer, claims={"data": "/data"}, nodeSelector={"kubernetes.io/hostname": "n1"}))
        c.wait_running("writer", timeout=120)
        pv_name = c.client.get("persistentvolumeclaims", "data", "default")["spec"]["volumeName"]
        pv = c.client.get("persistentvolumes", pv_name)
        # CG2/CG3/CG4: the disk is in the node's zone, named after the volume, whole GiB at the minimum.
        assert pv["spec"]["gcePersistentDisk"] == {"pdName": pv_name, "fsType": "ext4"}
        assert pv["spec"]["capacity"]["storage"] == "10Gi"
        expr = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
        assert (expr["key"], expr["values"]) == ("topology.kubernetes.io/zone", [ZONE])
        disk = gce.disk(pv_name)
        assert disk is not None and disk["zone"].endswith(f"/zones/{ZONE}") and disk["type"].endswith("/pd-ssd")
        assert [(d["deviceName"], d["mode"]) for d in gce.attached("n1")] == [(pv_name, "READ_WRITE")]
        # The data went through a real ext4 mount of the loop device behind by-id/google-<name>.
        device = str((dev_disk["n1"] / f"by-id/google-{pv_name}").resolve())
        probe = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", device], capture_output=True, text=True)
        assert probe.stdout.strip() == "ext4"
        mount_point = wait_until(lambda: _mount_point(device), "the node's mount of the disk")
        wait_for_text(Path(mount_point) / "hello", "written-on-gce\n", "the pod's file on the disk")

        # Pod deleted -> unmounted on the node -> detached in the fake (A3: after volumesInUse drops it).
        c.client.delete("pods", "writer", "default")
        c.wait_gone("pods", "writer", "default", timeout=120)
        wait_until(lambda: gce.attached("n1") == [] or None, "disk detached from VM n1", timeout=120)
        assert _mount_point(device) is None

        # The same disk on the other node (A1): attached there only now, with the data.
        c.apply(pod("reader", reader, claims={"data": "/data"}, nodeSelector={"kubernetes.io/hostname": "n2"}))
        c.wait_running("reader", timeout=120)
        assert [d["deviceName"] for d in gce.attached("n2")] == [pv_name] and gce.attached("n1") == []
        device2 = str((dev_disk["n2"] / f"by-id/google-{pv_name}").resolve())
        mount2 = wait_until(lambda: _mount_point(device2), "n2's mount of the disk")
        wait_for_text(Path(mount2) / "seen", "written-on-gce\n", "the reader's copy")
        c.client.delete("pods", "reader", "default")
        c.wait_gone("pods", "reader", "default", timeout=120)
        wait_until(lambda: gce.attached("n2") == [] or None, "disk detached from VM n2", timeout=120)

    # Claim deleted -> PV deleted (reclaim Delete) -> disk deleted in the fake.
    c.client.delete("persistentvolumeclaims", "data", "default")
    wait_until(lambda: gce.disk(pv_name) is None or None, "disk deleted in the fake", timeout=120)
    c.wait_gone("persistentvolumes", pv_name, timeout=60)
