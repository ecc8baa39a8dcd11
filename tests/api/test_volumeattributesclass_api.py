"""storage.k8s.io/v1 VolumeAttributesClasses and the claim and volume fields that name them (SEMANTICS VAC1, VAC2,
VAC4's update rule): Kubernetes' validation in its words, through the API server and with the real kubectl."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from apiobjects import causes
from storage.apiserver.server import RunningServer
from support import KUBECTL_VERSIONS, run_kubectl

VACS = "/apis/storage.k8s.io/v1/volumeattributesclasses"
PVS = "/api/v1/persistentvolumes"
PVCS = "/api/v1/namespaces/default/persistentvolumeclaims"


def a_class(name: str, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttributesClass", "metadata": {"name": name},
            **fields}


def a_volume(name: str, vac: str | None, csi: bool = True) -> dict[str, Any]:
    source = ({"csi": {"driver": "csi.example.com", "volumeHandle": name}} if csi
              else {"hostPath": {"path": f"/tmp/{name}"}})
    spec: dict[str, Any] = {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], **source}
    if vac is not None:
        spec["volumeAttributesClassName"] = vac
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name}, "spec": spec}


def a_claim(name: str, vac: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                            "storageClassName": ""}
    if vac is not None:
        spec["volumeAttributesClassName"] = vac
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": spec}


@pytest.mark.parametrize("body, wanted", [
    ({}, ["driverName: Required value",
          "parameters: Required value: must contain at least one key/value pair"]),
    ({"driverName": "not a driver!", "parameters": {"iops": "1"}},
     ["driverName: Invalid value: \"not a driver!\": name part must consist of"]),
    ({"driverName": "csi.example.com", "parameters": {"": "1"}},
     ["parameters: Invalid value: \"\": field can not be empty."]),
])
def test_vac1_invalid_classes_are_refused_in_kubernetes_words(http: httpx.Client, body: dict[str, Any],
                                                              wanted: list[str]) -> None:
    got = causes(http.post(VACS, json=a_class("bad", **body)))
    assert len(got) == len(wanted), got
    for prefix, cause in zip(wanted, got):
        assert cause.startswith(prefix), (cause, prefix)


def test_vac1_driver_and_parameters_cannot_change(http: httpx.Client) -> None:
    made = http.post(VACS, json=a_class("gold-iops", driverName="csi.example.com", parameters={"iops": "3000"}))
    assert made.status_code == 201, made.text
    assert "generation" not in made.json()["metadata"]  # no generation, as Kubernetes' strategy
    changed = {**made.json(), "driverName": "other.example.com", "parameters": {"iops": "6000"}}
    response = http.put(f"{VACS}/gold-iops", json=changed)
    assert response.status_code == 422
    assert causes(response) == [
        "driverName: Forbidden: updates to driverName are forbidden.",
        "parameters: Forbidden: updates to parameters are forbidden."]
    labelled = {**made.json(), "metadata": {**made.json()["metadata"], "labels": {"tier": "gold"}}}
    assert http.put(f"{VACS}/gold-iops", json=labelled).status_code == 200
    assert http.delete(f"{VACS}/gold-iops").status_code == 200


def test_vac2_a_volume_names_a_class_only_as_a_csi_volume_and_keeps_one(http: httpx.Client) -> None:
    response = http.post(PVS, json=a_volume("vac-hostpath", "gold", csi=False))
    assert response.status_code == 422
    assert causes(response) == [
        "spec.csi: Required value: has to be specified when using volumeAttributesClassName"]
    response = http.post(PVS, json=a_volume("vac-empty", ""))
    assert causes(response) == [
        "spec.volumeAttributesClassName: Required value: an empty string is disallowed"]
    made = http.post(PVS, json=a_volume("vac-csi", "gold"))
    assert made.status_code == 201, made.text
    body = made.json()
    body["spec"]["volumeAttributesClassName"] = "silver"
    changed = http.put(f"{PVS}/vac-csi", json=body)
    assert changed.status_code == 200, changed.text
    dropped = changed.json()
    dropped["spec"].pop("volumeAttributesClassName")
    response = http.put(f"{PVS}/vac-csi", json=dropped)
    assert causes(response) == [
        "spec.volumeAttributesClassName: Forbidden: update from non-nil value to nil is forbidden"]
    assert http.delete(f"{PVS}/vac-csi").status_code == 200


def test_vac2_vac4_a_claim_changes_class_only_when_bound_and_never_drops_an_applied_one(http: httpx.Client) -> None:
    response = http.post(PVCS, json=a_claim("vac-bad", "Not_A_Name"))
    assert response.status_code == 422
    assert causes(response)[0].startswith("spec.volumeAttributesClassName: Invalid value: \"Not_A_Name\"")
    made = http.post(PVCS, json=a_claim("vac-claim", "gold"))
    assert made.status_code == 201, made.text
    pending = made.json()
    pending["spec"]["volumeAttributesClassName"] = "silver"
    response = http.put(f"{PVCS}/vac-claim", json=pending)
    assert response.status_code == 422
    assert causes(response)[0].startswith(
        "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName "
        "for bound claims")
    # Bound, with the class applied (what the binder writes).
    status = {**made.json(), "status": {"phase": "Bound", "currentVolumeAttributesClassName": "gold"}}
    bound = http.put(f"{PVCS}/vac-claim/status", json=status)
    assert bound.status_code == 200, bound.text
    changed = bound.json()
    changed["spec"]["volumeAttributesClassName"] = "silver"
    changed = http.put(f"{PVCS}/vac-claim", json=changed)
    assert changed.status_code == 200, changed.text
    for value, words in ((None, "update to nil"), ("", "update to empty string")):
        body = changed.json()
        if value is None:
            body["spec"].pop("volumeAttributesClassName")
        else:
            body["spec"]["volumeAttributesClassName"] = value
        response = http.put(f"{PVCS}/vac-claim", json=body)
        assert causes(response) == [
            f"spec.volumeAttributesClassName: Forbidden: {words} is forbidden when "
            "status.currentVolumeAttributesClassName is not nil"]
    assert http.delete(f"{PVCS}/vac-claim").status_code == 200


MANIFEST = """\
apiVersion: storage.k8s.io/v1
kind: VolumeAttributesClass
metadata:
  name: {name}
driverName: pd.csi.storage.gke.io
parameters:
  provisioned-iops: "3000"
  provisioned-throughput: "50"
"""


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_vac1_kubectl_applies_lists_and_shows_the_classes_columns(module_server: RunningServer, tmp_path: Path,
                                                                  version: str) -> None:
    """The Kubernetes documentation's VolumeAttributesClass manifest, unchanged; kubectl 1.37's columns for the
    class and for claims and volumes (VOLUMEATTRIBUTESCLASS, ``<unset>`` without one)."""
    name = f"silver-{version.replace('.', '')}"

    def kubectl(*args: str, stdin: str | None = None) -> str:
        done = run_kubectl(version, module_server.kubeconfig, tmp_path / "cache", *args, stdin=stdin)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    applied = kubectl("apply", "-f", "-", stdin=MANIFEST.format(name=name))
    assert applied.strip() == f"volumeattributesclass.storage.k8s.io/{name} created"
    lines = kubectl("get", "vac", name).splitlines()
    assert lines[0].split() == ["NAME", "DRIVERNAME", "AGE"]
    assert lines[1].split()[:2] == [name, "pd.csi.storage.gke.io"]
    assert kubectl("diff", "-f", "-", stdin=MANIFEST.format(name=name)) == ""
    claim = f"claim-{version.replace('.', '')}"
    kubectl("apply", "-f", "-", stdin=(
        f"apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {claim}\nspec:\n"
        f"  accessModes: [ReadWriteOnce]\n  storageClassName: none\n  volumeAttributesClassName: {name}\n"
        "  resources:\n    requests:\n      storage: 1Gi\n"))
    plain = f"plain-{version.replace('.', '')}"
    kubectl("create", "-f", "-", stdin=(
        f"apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {plain}\nspec:\n"
        "  accessModes: [ReadWriteOnce]\n  storageClassName: none\n  resources:\n    requests:\n      storage: 1Gi\n"))
    rows = [line.split() for line in kubectl("get", "pvc", claim, plain).splitlines()]
    assert rows[0] == ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS", "MODES", "STORAGECLASS",
                       "VOLUMEATTRIBUTESCLASS", "AGE"]
    assert [(r[0], r[1], r[-2]) for r in rows[1:]] == [(claim, "Pending", name), (plain, "Pending", "<unset>")]
    kubectl("delete", "pvc", claim, plain, "--wait=false")
    assert kubectl("delete", "vac", name).strip() == f'volumeattributesclass.storage.k8s.io "{name}" deleted'
