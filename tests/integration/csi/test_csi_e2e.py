"""End to end: claims of a class whose provisioner is a CSI driver, served by a real CSI driver process
over its Unix socket, with the control plane, real node agents, runc pods and real bind mounts (CS1-CS11).

The driver is the small one written for the tests (csi_test_driver.py): the Kubernetes hostpath driver
cannot be built on this machine (the Go module proxy refuses github.com/kubernetes-csi/csi-driver-host-path).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_cluster import Cluster, cluster, claim, pod, tmp_base, wait_until  # noqa: E402,F401  (fixtures)
from csi_drivers import TEST_NAME, registered_test_driver  # noqa: E402
from storage.errors import NotFound  # noqa: E402
from support import wait_for_text  # noqa: E402
from storage.system import mounts  # noqa: E402
from volume_plugins import csi as csi_plugin  # noqa: E402

pytestmark = pytest.mark.root

SLEEP = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"


@pytest.fixture
def driver(tmp_base: Path, request: pytest.FixtureRequest):
    with registered_test_driver(tmp_base, *getattr(request, "param", ())) as running:
        yield running


def _calls(state: Path, method: str) -> list[dict]:
    text = (state / "calls.log").read_text() if (state / "calls.log").exists() else ""
    # A line the driver is still writing has no newline yet: it is read at the next look.
    lines = text.split("\n")[:-1]
    return [c for c in map(json.loads, lines) if c["method"] == method]


def _objects(secret: bool = True, attach_required: bool = False) -> list[dict]:
    params = {"tier": "gold"}
    objs: list[dict] = []
    if secret:
        params.update({"csi.storage.k8s.io/provisioner-secret-name": "csi-creds",
                       "csi.storage.k8s.io/provisioner-secret-namespace": "${pvc.namespace}",
                       "csi.storage.k8s.io/node-stage-secret-name": "csi-creds",
                       "csi.storage.k8s.io/node-stage-secret-namespace": "default"})
        objs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "csi-creds", "namespace": "default"},
                     "stringData": {"token": "s3cret-token"}})
    objs.append({"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": TEST_NAME},
                 "spec": {"podInfoOnMount": True, "attachRequired": attach_required}})
    objs.append({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "csi"},
                 "provisioner": TEST_NAME, "reclaimPolicy": "Delete", "allowVolumeExpansion": True,
                 "volumeBindingMode": "WaitForFirstConsumer", "parameters": params})
    return objs


def _pv_gone(cluster: Cluster, name: str) -> bool:
    try:
        cluster.client.get("persistentvolumes", name)
    except NotFound:
        return True
    return False


@pytest.mark.parametrize("driver", [("--require-secret", "token=s3cret-token", "--max-volumes", "7")], indirect=True)
def test_claim_pod_data_expand_delete(cluster: Cluster, driver) -> None:
    """CS4-CS6, CS9, CS11, CS12, CS14: the class names the driver; under WaitForFirstConsumer CreateVolume gets the
    node's topology and the class's Secret; the PV carries the csi source and node affinity; a pod writes
    through NodeStage+NodePublish bind mounts, a second pod reads after the first is gone; the claim
    grows through ControllerExpandVolume and NodeExpandVolume; deleting the claim deletes the volume."""
    drv, state = driver
    cluster.start_controllers()
    cluster.add_agent("n1")
    node = cluster.client.get("nodes", "n1")
    assert json.loads(node["metadata"]["annotations"]["csi.volume.kubernetes.io/nodeid"]) == {TEST_NAME: "n1"}
    assert node["metadata"]["labels"]["topology.csi-test.stowage.io/node"] == "n1"
    csinode = cluster.client.get("csinodes", "n1")
    assert csinode["spec"]["drivers"] == [{"name": TEST_NAME, "nodeID": "n1",
                                           "topologyKeys": ["topology.csi-test.stowage.io/node"],
                                           "allocatable": {"count": 7}}]
    assert csinode["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]

    cluster.apply(*_objects(), claim("data", "64Mi", "csi"))
    cluster.apply(pod("writer", f"echo hello-csi > /data/greeting && sync && {SLEEP}", claims={"data": "/data"}))
    writer = cluster.wait_running("writer", timeout=120)
    pvc = cluster.client.get("persistentvolumeclaims", "data", "default")
    pv = cluster.client.get("persistentvolumes", pvc["spec"]["volumeName"])
    src = pv["spec"]["csi"]
    assert src["driver"] == TEST_NAME and src["nodeStageSecretRef"] == {"name": "csi-creds", "namespace": "default"}
    assert src["volumeAttributes"]["origin"] == "csi-test"
    terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "topology.csi-test.stowage.io/node", "operator": "In",
                                            "values": ["n1"]}]}]
    create = _calls(state, "CreateVolume")[0]
    assert create["secret_keys"] == ["token"] and "csi.storage.k8s.io" not in create["request"]["parameters"]
    assert "topology.csi-test.stowage.io/node" in create["request"]["accessibility_requirements"]
    volume_dir = state / "volumes" / src["volumeHandle"]
    wait_for_text(volume_dir / "greeting", "hello-csi\n", "the pod's file in the driver's volume")
    published = json.loads((state / "published" / f"{src['volumeHandle']}.json").read_text())
    assert published["csi.storage.k8s.io/pod.name"] == "writer"
    assert published["csi.storage.k8s.io/pod.uid"] == writer["metadata"]["uid"]
    # CS14: NodeGetVolumeStats reported for the claim in the node's /stats/summary.
    from storage.agent import metrics

    pod_summary = next(p for p in metrics.summary(cluster.agents["n1"])["pods"] if p["podRef"]["name"] == "writer")
    vol_stats = next(v for v in pod_summary["volume"] if v["name"] == "data")
    assert vol_stats["pvcRef"] == {"name": "data", "namespace": "default"}
    assert vol_stats["capacityBytes"] == 64 << 20 and vol_stats["usedBytes"] == len("hello-csi\n")
    stage = csi_plugin.stage_path(cluster.agent_dir("n1"), TEST_NAME, src["volumeHandle"])
    assert any(Path(e.mount_point) == stage for e in mounts.read_mountinfo())

    cluster.client.delete("pods", "writer", "default")
    cluster.wait_gone("pods", "writer", "default")
    wait_until(lambda: not any(Path(e.mount_point) == stage for e in mounts.read_mountinfo()), "unstaged", 60)
    assert _calls(state, "NodeUnpublishVolume") and _calls(state, "NodeUnstageVolume")

    cluster.apply(pod("reader", f"grep -q hello-csi /data/greeting || exit 1; {SLEEP}", claims={"data": "/data"}))
    cluster.wait_running("reader", timeout=120)

    pvc = cluster.client.get("persistentvolumeclaims", "data", "default")
    pvc["spec"]["resources"]["requests"]["storage"] = "128Mi"
    cluster.client.update(pvc)

    def grown() -> bool:
        c = cluster.client.get("persistentvolumeclaims", "data", "default")
        return ((c.get("status") or {}).get("capacity") or {}).get("storage") == "128Mi"

    wait_until(grown, "the claim's capacity at 128Mi", 90)
    assert _calls(state, "ControllerExpandVolume") and _calls(state, "NodeExpandVolume")

    cluster.client.delete("pods", "reader", "default")
    cluster.wait_gone("pods", "reader", "default")
    cluster.client.delete("persistentvolumeclaims", "data", "default")
    wait_until(lambda: _pv_gone(cluster, pv["metadata"]["name"]), "the PV deleted", 60)
    assert not volume_dir.exists()
    assert _calls(state, "DeleteVolume")[0]["secret_keys"] == ["token"]


def test_a_node_resize_that_cannot_finish_yet_is_tried_again_without_another_event(cluster: Cluster, driver,
                                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """CS8: when the node's half of an expansion cannot run yet (here: its first try finds no published
    volume, as when the publish record was being rewritten), the agent tries again at its back-off; the
    claim must not wait for some unrelated change to wake the node (a CI run waited 90 s)."""
    _drv, state = driver
    cluster.start_controllers()
    agent = cluster.add_agent("n1")
    cluster.apply(*_objects(secret=False), claim("data", "64Mi", "csi"))
    cluster.apply(pod("user", SLEEP, claims={"data": "/data"}))
    cluster.wait_running("user", timeout=120)

    tries: list[bool | None] = []
    real = agent._finish_csi_resize

    def first_try_not_published(pv_name: str) -> bool | None:
        done = False if not tries else real(pv_name)
        tries.append(done)
        return done
    monkeypatch.setattr(agent, "_finish_csi_resize", first_try_not_published)

    pvc = cluster.client.get("persistentvolumeclaims", "data", "default")
    pvc["spec"]["resources"]["requests"]["storage"] = "128Mi"
    cluster.client.update(pvc)
    wait_until(lambda: ((cluster.client.get("persistentvolumeclaims", "data", "default").get("status") or {})
                        .get("capacity") or {}).get("storage") == "128Mi", "the claim's capacity at 128Mi", 60)
    assert tries[0] is False and tries[-1] is True
    assert _calls(state, "NodeExpandVolume")
    # The agent clears its back-off just after the claim's status write that the wait above sees.
    wait_until(lambda: agent.resize_backoff.attempts("default/data") == [], "the resize back-off cleared", 10)


@pytest.mark.parametrize("driver", [("--attach",)], indirect=True)
def test_attach_required_driver_goes_through_volume_attachments(cluster: Cluster, driver) -> None:
    """CS7: a driver with PUBLISH_UNPUBLISH_VOLUME gets a VolumeAttachment; ControllerPublish's context
    reaches NodeStage; the pod's end detaches (ControllerUnpublish)."""
    drv, state = driver
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.apply(*_objects(secret=False, attach_required=True), claim("data", "16Mi", "csi"))
    cluster.apply(pod("p", f"echo ok > /data/f && {SLEEP}", claims={"data": "/data"}))
    cluster.wait_running("p", timeout=120)
    vas, _ = cluster.client.list("volumeattachments")
    assert len(vas) == 1 and vas[0]["spec"]["attacher"] == TEST_NAME and vas[0]["status"]["attached"] is True
    assert vas[0]["status"].get("attachmentMetadata") == {"attached-by": "csi-test"}
    assert _calls(state, "ControllerPublishVolume")[0]["request"]["node_id"] == "n1"
    cluster.client.delete("pods", "p", "default")
    cluster.wait_gone("pods", "p", "default")
    wait_until(lambda: _calls(state, "ControllerUnpublishVolume"), "ControllerUnpublishVolume", 90)
    cluster.client.delete("persistentvolumeclaims", "data", "default")


@pytest.mark.parametrize("driver", [("--attach", "--attach-optional")], indirect=True)
def test_csidriver_attach_required_false_skips_attachment(cluster: Cluster, driver) -> None:
    """CS7, CS12: the driver offers PUBLISH_UNPUBLISH_VOLUME but its CSIDriver says attachRequired: false:
    no VolumeAttachment, no ControllerPublish, and the node does not wait for one."""
    drv, state = driver
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.apply(*_objects(secret=False, attach_required=False), claim("data", "16Mi", "csi"))
    cluster.apply(pod("p", f"echo ok > /data/f && {SLEEP}", claims={"data": "/data"}))
    cluster.wait_running("p", timeout=120)
    assert cluster.client.list("volumeattachments")[0] == []
    assert not _calls(state, "ControllerPublishVolume") and _calls(state, "NodeStageVolume")
    cluster.client.delete("pods", "p", "default")
    cluster.wait_gone("pods", "p", "default")
    cluster.client.delete("persistentvolumeclaims", "data", "default")


@pytest.mark.parametrize("policy,owned", [("File", True), ("None", False)])
def test_fs_group_policy(cluster: Cluster, driver, policy: str, owned: bool) -> None:
    """CS16: fsGroup is applied to a CSI volume by the CSIDriver's fsGroupPolicy (File: yes, None: no)."""
    drv, state = driver
    cluster.start_controllers()
    cluster.add_agent("n1")
    objs = _objects(secret=False)
    objs[0]["spec"]["fsGroupPolicy"] = policy
    cluster.apply(*objs, claim("data", "16Mi", "csi"))
    cluster.apply(pod("p", f"touch /data/x && {SLEEP}", claims={"data": "/data"}, securityContext={"fsGroup": 4321}))
    cluster.wait_running("p", timeout=120)
    pvc = cluster.client.get("persistentvolumeclaims", "data", "default")
    handle = cluster.client.get("persistentvolumes", pvc["spec"]["volumeName"])["spec"]["csi"]["volumeHandle"]
    assert ((state / "volumes" / handle).stat().st_gid == 4321) is owned
    cluster.client.delete("pods", "p", "default")
    cluster.wait_gone("pods", "p", "default")
    cluster.client.delete("persistentvolumeclaims", "data", "default")


def test_inline_ephemeral_csi_volume(cluster: Cluster, driver) -> None:
    """CS10: an inline csi volume is published for the pod with ephemeral=true and removed with it."""
    drv, state = driver
    cluster.start_controllers()
    cluster.add_agent("n1")
    vol = {"name": "scratch", "csi": {"driver": TEST_NAME, "volumeAttributes": {"size": "1Mi"}}}
    cluster.apply(pod("eph", f"echo tmp > /scratch/x && {SLEEP}", volumes=[vol],
                      mounts_=[{"name": "scratch", "mountPath": "/scratch"}]))
    cluster.wait_running("eph", timeout=120)
    publish = _calls(state, "NodePublishVolume")
    assert publish and "csi.storage.k8s.io/ephemeral" in publish[0]["request"]["volume_context"]
    # No CSIDriver object: no pod information (podInfoOnMount defaults to false, CS12).
    assert "csi.storage.k8s.io/pod.name" not in publish[0]["request"]["volume_context"]
    handle = publish[0]["request"]["volume_id"]
    wait_until(lambda: (state / "volumes" / handle / "x").exists(), "the pod's file in the ephemeral volume")
    cluster.client.delete("pods", "eph", "default")
    cluster.wait_gone("pods", "eph", "default")
    wait_until(lambda: not (state / "volumes" / handle).exists(), "the ephemeral volume removed", 60)
    assert not _calls(state, "NodeStageVolume")
