"""The leader dies right after one of its controllers' writes; the next leader finishes the job exactly once
(issue 17 item 1, SEMANTICS HA5)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from ha_support import ReplicaSet, wait_until

pytestmark = pytest.mark.postgres

CLAIMS = "/api/v1/namespaces/default/persistentvolumeclaims"
PODS = "/api/v1/namespaces/default/pods"
PVS = "/api/v1/persistentvolumes"
WANTED_CLAIMS = {"data-web-0", "data-web-1", "data-web-2", "solo-0", "solo-1", "static-0"}
STATIC_PV = "static-pv"  # bound, not provisioned: the binder's volume-then-claim writes

# (id, environment of the first leader): the binder's and provisioner's named crash points, and a kill
# right after the Nth write a controller makes through the leader's store.
FAULTS = [
    ("provisioner-after-backend", {"STOWAGE_FAULT_KILL_AT": "provision:after-backend"}),
    ("provisioner-after-pv-save", {"STOWAGE_FAULT_KILL_AT": "provision:after-volume-save"}),
    ("binder-after-volume-write", {"STOWAGE_FAULT_KILL_AT": "bind:after-volume-write"}),
    ("binder-after-claim-write", {"STOWAGE_FAULT_KILL_AT": "bind:after-claim-write"}),
    ("provisioner-2nd-pv-create",
     {"STOWAGE_FAULT_KILL_AFTER_WRITE": "persistentvolume-binder-claims:persistentvolumes:create:2"}),
    ("statefulset-2nd-pod-create", {"STOWAGE_FAULT_KILL_AFTER_WRITE": "statefulset:pods:create:2"}),
]


def _post(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    response = http.post(path, json=body)
    assert response.status_code == 201, response.text


def _workload(http: httpx.Client) -> None:
    _post(http, "/apis/storage.k8s.io/v1/storageclasses", {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "hp"},
        "provisioner": "stowage.io/hostpath", "volumeBindingMode": "Immediate", "reclaimPolicy": "Delete"})
    _post(http, "/apis/apps/v1/namespaces/default/statefulsets", {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "serviceName": "web", "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox",
                                                       "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                           "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "hp",
                                                    "resources": {"requests": {"storage": "1Mi"}}}}]}})
    _post(http, PVS, {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": STATIC_PV},
                      "spec": {"capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteOnce"],
                               "storageClassName": "manual", "persistentVolumeReclaimPolicy": "Retain",
                               "hostPath": {"path": "/tmp/stowage-ha-static"}}})
    _post(http, CLAIMS, {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "static-0"},
                         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                                  "resources": {"requests": {"storage": "1Mi"}}}})
    for i in range(2):
        _post(http, CLAIMS, {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": f"solo-{i}"},
                             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "hp",
                                      "resources": {"requests": {"storage": "1Mi"}}}})


def _state(http: httpx.Client, hostpath: Path) -> dict[str, Any]:
    claims = http.get(CLAIMS).json()["items"]
    volumes = http.get(PVS).json()["items"]
    pods = http.get(PODS, params={"labelSelector": "app=web"}).json()["items"]
    return {
        "bound": {c["metadata"]["name"]: c["spec"].get("volumeName") for c in claims
                  if (c.get("status") or {}).get("phase") == "Bound"},
        "claim_uids": {c["metadata"]["name"]: c["metadata"]["uid"] for c in claims},
        "volumes": {v["metadata"]["name"]: (v["spec"].get("claimRef") or {}) for v in volumes},
        "pods": sorted(p["metadata"]["name"] for p in pods),
        "backend": sorted(d.name for d in hostpath.iterdir() if not d.name.startswith(".")),
    }


def _settled(http: httpx.Client, hostpath: Path) -> dict[str, Any] | None:
    state = _state(http, hostpath)
    return state if set(state["bound"]) == WANTED_CLAIMS and len(state["pods"]) == 3 else None


@pytest.mark.parametrize("fault", [env for _, env in FAULTS], ids=[name for name, _ in FAULTS])
def test_ha_leader_killed_after_a_controller_write(replica_set: ReplicaSet, tmp_path: Path,
                                                   fault: dict[str, str]) -> None:
    """HA5: the leader is SIGKILLed right after a binder, provisioner or statefulset write; the replica that
    takes over (HA2) finishes: every claim bound to exactly one volume, one backend volume per volume (no
    double provisioning, nothing leaked), exactly the StatefulSet's three pods (no duplicates)."""
    hostpath = tmp_path / "hostpath"
    doomed = replica_set.start("a", env=fault)
    assert replica_set.leader().name == "a"
    replica_set.start("b")
    with replica_set.replicas[1].http() as http:
        _workload(http)
        # The fault fires: the leader dies by its own SIGKILL at the chosen write.
        wait_until(lambda: doomed.up.proc.poll() is not None, 60, "the leader to hit the crash point")
        assert doomed.up.proc.returncode == -9, doomed.up.output(20)
        # How fast is benchmarks/failover.py's figure; here only that b does take over.
        wait_until(lambda: replica_set.holder() == "b", 30, "b to take over")
        state = wait_until(lambda: _settled(http, hostpath), 90, "every claim bound and three pods")
        time.sleep(2)  # anything done twice would show up now
        again = _state(http, hostpath)
    assert again == state
    assert state["pods"] == ["web-0", "web-1", "web-2"]
    # One volume per claim, each naming its claim, each claim naming its volume.
    assert len(state["volumes"]) == len(WANTED_CLAIMS)
    for name, volume in state["bound"].items():
        ref = state["volumes"][volume]
        assert (ref.get("name"), ref.get("uid")) == (name, state["claim_uids"][name])
    # The backend holds exactly the volumes the API knows: none made twice, none orphaned.
    assert state["backend"] == sorted(set(state["volumes"]) - {STATIC_PV})
