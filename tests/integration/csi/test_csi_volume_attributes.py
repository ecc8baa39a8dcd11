"""VolumeAttributesClasses end to end (SEMANTICS VAC2-VAC6): the control plane's controllers and a real CSI driver
process (csi_test_driver.py, which takes mutable parameters as the hostpath driver's
--accepted-mutable-parameter-names does): CreateVolume's mutable_parameters, ControllerModifyVolume on a class
change, Pending and Infeasible changes and their roll-back, and the class kept while a claim names it."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_cluster import Cluster, claim, cluster, tmp_base, wait_until  # noqa: E402,F401  (fixtures)
from csi_drivers import TEST_NAME, registered_test_driver  # noqa: E402
from storage.api.volume_attributes import VAC_PROTECTION  # noqa: E402
from storage.errors import NotFound  # noqa: E402
from support import run_kubectl  # noqa: E402

pytestmark = pytest.mark.root

PVCS, PVS, VACS = "persistentvolumeclaims", "persistentvolumes", "volumeattributesclasses"


@pytest.fixture
def driver(tmp_base: Path, request: pytest.FixtureRequest):
    with registered_test_driver(tmp_base, "--accepted-mutable-parameter-names", "iops,throughput",
                                *getattr(request, "param", ()), node=False) as (_drv, state):
        yield state


def _calls(state: Path, method: str) -> list[dict[str, Any]]:
    text = (state / "calls.log").read_text() if (state / "calls.log").exists() else ""
    return [c for c in map(json.loads, text.split("\n")[:-1]) if c["method"] == method]


def _mutable(state: Path, handle: str) -> dict[str, str]:
    volumes = json.loads((state / "state.json").read_text())["volumes"]
    return next(v["mutable"] for v in volumes.values() if v["id"] == handle)


def vac(name: str, driver: str = TEST_NAME, **parameters: str) -> dict[str, Any]:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttributesClass", "metadata": {"name": name},
            "driverName": driver, "parameters": parameters}


def csi_class(**parameters: str) -> dict[str, Any]:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "csi"},
            "provisioner": TEST_NAME, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
            "parameters": parameters}


def with_vac(obj: dict[str, Any], name: str) -> dict[str, Any]:
    obj["spec"]["volumeAttributesClassName"] = name
    return obj


def reasons(cluster: Cluster, name: str) -> list[str]:
    return [e["reason"] for e in cluster.events_for(name)]


def _claim(cluster: Cluster, name: str) -> dict[str, Any]:
    return cluster.client.get(PVCS, name, "default")


def _set_vac(cluster: Cluster, name: str, vac_name: str) -> None:
    # A merge patch, as `kubectl patch pvc` sends it: no resourceVersion to race the controllers' status writes.
    cluster.client.patch(PVCS, name, {"spec": {"volumeAttributesClassName": vac_name}}, "default")


def test_vac3_vac4_provisioned_with_the_class_then_modified_in_place(cluster: Cluster, driver: Path) -> None:
    cluster.start_controllers()
    cluster.apply(csi_class(), vac("gold", iops="3000"), vac("platinum", iops="9000", throughput="500"),
                  with_vac(claim("data", "32Mi", "csi"), "gold"))
    bound = wait_until(lambda: (c := _claim(cluster, "data"))["status"].get("phase") == "Bound" and c,
                       "claim Bound")
    # VAC3: CreateVolume got the class's parameters; the volume and the claim say which class applies.
    assert "'iops': '3000'" in _calls(driver, "CreateVolume")[0]["request"]["mutable_parameters"]
    pv = cluster.client.get(PVS, bound["spec"]["volumeName"])
    handle = pv["spec"]["csi"]["volumeHandle"]
    assert pv["spec"]["volumeAttributesClassName"] == "gold"
    assert _mutable(driver, handle) == {"iops": "3000"}
    assert bound["status"]["currentVolumeAttributesClassName"] == "gold"
    assert "modifyVolumeStatus" not in bound["status"]

    # VAC4: a new class on the bound claim is applied with ControllerModifyVolume.
    _set_vac(cluster, "data", "platinum")
    done = wait_until(lambda: (c := _claim(cluster, "data"))["status"].get(
        "currentVolumeAttributesClassName") == "platinum" and c, "class applied")
    assert _mutable(driver, handle) == {"iops": "9000", "throughput": "500"}
    assert cluster.client.get(PVS, pv["metadata"]["name"])["spec"]["volumeAttributesClassName"] == "platinum"
    assert "modifyVolumeStatus" not in done["status"]
    assert not [c for c in done["status"].get("conditions") or [] if c["type"] in ("ModifyingVolume",
                                                                                   "ModifyVolumeError")]
    wait_until(lambda: {"VolumeModify", "VolumeModifySuccessful"} <= set(reasons(cluster, "data")),
               "modify events")
    modify = _calls(driver, "ControllerModifyVolume")
    assert len(modify) == 1 and modify[0]["request"]["volume_id"] == handle


def test_vac5_pending_then_applied_and_infeasible_then_rolled_back(cluster: Cluster, driver: Path) -> None:
    cluster.start_controllers()
    cluster.apply(csi_class(), vac("gold", iops="3000"), with_vac(claim("data", "32Mi", "csi"), "gold"))
    wait_until(lambda: _claim(cluster, "data")["status"].get("phase") == "Bound", "claim Bound")

    # A class that does not exist yet: Pending, and applied once it is created.
    _set_vac(cluster, "data", "later")
    pending = wait_until(lambda: (c := _claim(cluster, "data"))["status"].get("modifyVolumeStatus") and c,
                         "modify status")
    assert pending["status"]["modifyVolumeStatus"] == {"status": "Pending", "targetVolumeAttributesClassName": "later"}
    assert pending["status"]["currentVolumeAttributesClassName"] == "gold"
    cluster.apply(vac("later", throughput="100"))
    wait_until(lambda: _claim(cluster, "data")["status"].get("currentVolumeAttributesClassName") == "later",
               "the late class applied")

    # A class the driver refuses (INVALID_ARGUMENT): Infeasible, with the driver's words, and no retry storm.
    cluster.apply(vac("bogus", bandwidth="1G"))
    _set_vac(cluster, "data", "bogus")
    infeasible = wait_until(lambda: (c := _claim(cluster, "data"))["status"].get("modifyVolumeStatus", {}).get(
        "status") == "Infeasible" and c, "Infeasible")
    assert infeasible["status"]["modifyVolumeStatus"]["targetVolumeAttributesClassName"] == "bogus"
    condition = next(c for c in infeasible["status"]["conditions"] if c["type"] == "ModifyingVolume")
    assert "unknown mutable parameters: bandwidth" in condition["message"]
    assert infeasible["status"]["currentVolumeAttributesClassName"] == "later"
    failed = [e for e in cluster.events_for("data") if e["reason"] == "VolumeModifyFailed"]
    assert failed and "INVALID_ARGUMENT" in failed[0]["message"]
    # The slow set: the controller's own status writes do not start another attempt. Before this held, the claim
    # flipped InProgress/Infeasible on every write it made itself (1,138 driver calls in 3 s). A
    # label, a change of the claim that asks for nothing new, is reconciled without calling the driver either.
    calls, version = len(_calls(driver, "ControllerModifyVolume")), _claim(cluster, "data")["metadata"]["resourceVersion"]
    time.sleep(1)
    assert len(_calls(driver, "ControllerModifyVolume")) == calls
    assert _claim(cluster, "data")["metadata"]["resourceVersion"] == version
    cluster.client.patch(PVCS, "data", {"metadata": {"labels": {"touched": "yes"}}}, "default")
    time.sleep(1)
    assert len(_calls(driver, "ControllerModifyVolume")) == calls
    # A class of another driver never reaches this one.
    cluster.apply(vac("elsewhere", driver="other.csi.example.com", iops="1"))
    _set_vac(cluster, "data", "elsewhere")
    wait_until(lambda: _claim(cluster, "data")["status"].get("modifyVolumeStatus", {}).get(
        "targetVolumeAttributesClassName") == "elsewhere", "infeasible other driver")
    assert _claim(cluster, "data")["status"]["modifyVolumeStatus"]["status"] == "Infeasible"
    calls = len(_calls(driver, "ControllerModifyVolume"))
    # Roll-back: asking again for the applied class drops the change and its conditions.
    _set_vac(cluster, "data", "later")
    rolled = wait_until(lambda: (c := _claim(cluster, "data"))["status"].get("modifyVolumeStatus") is None and c,
                        "roll-back")
    assert not [c for c in rolled["status"].get("conditions") or [] if c["type"] == "ModifyingVolume"]
    assert len(_calls(driver, "ControllerModifyVolume")) == calls


def test_vac3_refusals_wait_with_an_event(cluster: Cluster, driver: Path) -> None:
    cluster.start_controllers()
    local = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "nocsi"},
             "provisioner": "stowage.io/hostpath", "volumeBindingMode": "Immediate"}
    cluster.apply(csi_class(), local, vac("other", driver="other.csi.example.com", iops="1"),
                  vac("mine", driver="stowage.io/hostpath", iops="1"),
                  with_vac(claim("missing", "16Mi", "csi"), "absent"),
                  with_vac(claim("foreign", "16Mi", "csi"), "other"),
                  with_vac(claim("hostpath", "16Mi", "nocsi"), "mine"))

    def failed(name: str) -> str:
        found = [e["message"] for e in cluster.events_for(name) if e["reason"] == "ProvisioningFailed"]
        return found[0] if found else ""

    assert 'volumeattributesclass.storage.k8s.io "absent" not found' in wait_until(
        lambda: failed("missing"), "missing class event")
    assert ("VAC other referenced in PVC is for driver other.csi.example.com which does not match driver name "
            f"{TEST_NAME}") in wait_until(lambda: failed("foreign"), "foreign class event")
    assert "does not support VolumeAttributesClasses" in wait_until(lambda: failed("hostpath"), "hostpath event")
    assert not _calls(driver, "CreateVolume")
    for name in ("missing", "foreign", "hostpath"):
        assert _claim(cluster, name)["status"]["phase"] == "Pending"
    # The class's creation provisions the waiting claim.
    cluster.apply(vac("absent", iops="7"))
    wait_until(lambda: _claim(cluster, "missing")["status"].get("phase") == "Bound", "provisioned once created")
    assert _claim(cluster, "missing")["status"]["currentVolumeAttributesClassName"] == "absent"


def test_vac6_a_class_stays_while_a_claim_names_it(cluster: Cluster, driver: Path) -> None:
    cluster.start_controllers()
    cluster.apply(csi_class(), vac("gold", iops="3000"), vac("unused", iops="1"),
                  with_vac(claim("data", "16Mi", "csi"), "gold"))
    for name in ("gold", "unused"):
        wait_until(lambda n=name: VAC_PROTECTION in cluster.client.get(VACS, n)["metadata"].get("finalizers", []),
                   f"{name}: protection finalizer")
    bound = wait_until(lambda: (c := _claim(cluster, "data"))["status"].get("phase") == "Bound" and c, "Bound")
    cluster.client.delete(VACS, "unused")
    cluster.wait_gone(VACS, "unused", timeout=30)
    cluster.client.delete(VACS, "gold")
    held = cluster.client.get(VACS, "gold")
    assert held["metadata"].get("deletionTimestamp") and VAC_PROTECTION in held["metadata"]["finalizers"]
    cluster.client.delete(PVCS, "data", "default")
    cluster.wait_gone(PVCS, "data", "default", timeout=60)
    cluster.wait_gone(PVS, bound["spec"]["volumeName"], timeout=60)  # Delete policy: the volume named it too
    cluster.wait_gone(VACS, "gold", timeout=60)
    with pytest.raises(NotFound):
        cluster.client.get(VACS, "gold")


@pytest.mark.parametrize("driver", [("--require-secret", "token=s3cret")], indirect=True)
def test_vac4_vac5_the_expand_secret_goes_along_and_a_driver_error_is_retried_in_progress(
        cluster: Cluster, driver: Path) -> None:
    """ControllerModifyVolume gets the class's controller-expand secret (external-resizer's choice); without one this
    driver answers UNAUTHENTICATED: the change stays InProgress with a ModifyVolumeError condition and is retried."""
    cluster.start_controllers()
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": "default"},
              "stringData": {"token": "s3cret"}}
    refs = {"csi.storage.k8s.io/provisioner-secret-name": "creds",
            "csi.storage.k8s.io/provisioner-secret-namespace": "default"}
    with_expand = {**refs, "csi.storage.k8s.io/controller-expand-secret-name": "creds",
                   "csi.storage.k8s.io/controller-expand-secret-namespace": "default"}
    without = {**csi_class(**refs), "metadata": {"name": "csi-no-expand-secret"}}
    cluster.apply(secret, csi_class(**with_expand), without, vac("gold", iops="1"), vac("platinum", iops="2"),
                  with_vac(claim("good", "16Mi", "csi"), "gold"),
                  with_vac(claim("bad", "16Mi", "csi-no-expand-secret"), "gold"))
    for name in ("good", "bad"):
        wait_until(lambda n=name: _claim(cluster, n)["status"].get("phase") == "Bound", f"{name} Bound")
        _set_vac(cluster, name, "platinum")
    wait_until(lambda: _claim(cluster, "good")["status"].get("currentVolumeAttributesClassName") == "platinum",
               "applied with the expand secret")
    # The two claims' calls interleave in either order: each is told apart by its volume's handle.
    handles = {n: cluster.client.get(PVS, _claim(cluster, n)["spec"]["volumeName"])["spec"]["csi"]["volumeHandle"]
               for n in ("good", "bad")}

    def keys(name: str) -> list[list[str]]:
        return [c["secret_keys"] for c in _calls(driver, "ControllerModifyVolume")
                if c["request"].get("volume_id") == handles[name]]

    assert keys("good") and all(k == ["token"] for k in keys("good"))

    def errored() -> dict[str, Any] | None:
        c = _claim(cluster, "bad")
        found = [x for x in c["status"].get("conditions") or [] if x["type"] == "ModifyVolumeError"]
        return c if found else None

    bad = wait_until(errored, "ModifyVolumeError condition")
    assert keys("bad") and all(k == [] for k in keys("bad"))
    assert bad["status"]["modifyVolumeStatus"] == {"status": "InProgress", "targetVolumeAttributesClassName": "platinum"}
    assert bad["status"]["currentVolumeAttributesClassName"] == "gold"
    message = next(x for x in bad["status"]["conditions"] if x["type"] == "ModifyVolumeError")["message"]
    assert "UNAUTHENTICATED" in message and "s3cret" not in message
    # Retried with back-off: the driver sees the call again.
    wait_until(lambda: len([c for c in _calls(driver, "ControllerModifyVolume") if not c["secret_keys"]]) >= 2,
               "a retry")


def test_vac4_with_kubectl_patch_describe_and_jsonpath(cluster: Cluster, driver: Path) -> None:
    """The README's commands with the real kubectl 1.37: a class change with `kubectl patch pvc`, the applied class
    through `-o jsonpath`, the modify events in `kubectl describe pvc`, the class in `kubectl describe vac`."""
    cluster.start_controllers()
    assert cluster.server.kubeconfig is not None

    def kubectl(*args: str) -> str:
        done = run_kubectl("1.37", cluster.server.kubeconfig, cluster.base / "kubectl-cache", *args)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    cluster.apply(csi_class(), vac("fast", iops="3000"), vac("faster", iops="9000"),
                  with_vac(claim("data", "16Mi", "csi"), "fast"))
    wait_until(lambda: _claim(cluster, "data")["status"].get("phase") == "Bound", "Bound")
    applied = "{.status.currentVolumeAttributesClassName}"
    assert kubectl("get", "pvc", "data", "-o", f"jsonpath={applied}") == "fast"
    patched = kubectl("patch", "pvc", "data", "-p", '{"spec":{"volumeAttributesClassName":"faster"}}')
    assert patched.strip() == "persistentvolumeclaim/data patched"
    wait_until(lambda: kubectl("get", "pvc", "data", "-o", f"jsonpath={applied}") == "faster", "applied")
    wait_until(lambda: "VolumeModifySuccessful" in kubectl("describe", "pvc", "data"), "describe shows the event")
    described = kubectl("describe", "pvc", "data")
    assert "external resizer modified volume data with vac faster successfully" in described
    vac_text = kubectl("describe", "vac", "faster")
    assert "DriverName:" in vac_text and TEST_NAME in vac_text and "iops=9000" in vac_text
