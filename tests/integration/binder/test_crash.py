"""Crash safety of provisioning and binding (issue 3, P2): kill the controller process
with SIGKILL at each step, restart it, and check the world healed: exactly one PV,
exactly one backend volume, the claim Bound."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from storage.controllers.faults import ENV, POINTS
from storage.store import open_store

from support import wait_for

PV, PVC, SC = "persistentvolumes", "persistentvolumeclaims", "storageclasses"


def start(store_url: str, root: Path, kill_at: str | None) -> subprocess.Popen:
    env = dict(os.environ)
    env["STOWAGE_HOSTPATH_ROOT"] = str(root)  # the hostpath entry point's default root
    env.pop(ENV, None)
    if kill_at:
        env[ENV] = kill_at
    return subprocess.Popen([sys.executable, "-m", "storage.controllers.manager", store_url],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_crash_at_each_step_heals_on_restart(store_url: str, tmp_path: Path, point: str) -> None:
    root = tmp_path / "backend"
    store = open_store(store_url)
    procs: list[subprocess.Popen] = []
    try:
        store.create(SC, {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "hp"},
                          "provisioner": "stowage.io/hostpath", "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"})
        claim = store.create(PVC, {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                   "metadata": {"name": "db", "namespace": "default"},
                                   "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "hp",
                                            "resources": {"requests": {"storage": "1Gi"}}},
                                   "status": {"phase": "Pending"}})
        static = point == "bind:after-volume-write"  # a provisioned PV is saved already bound: use a static one
        if static:
            store.create(PV, {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "static"},
                              "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "hp",
                                       "hostPath": {"path": str(tmp_path / "static")}}, "status": {"phase": "Available"}})
        first = start(store_url, root, point)
        procs.append(first)
        assert first.wait(60) == -signal.SIGKILL, f"the controller did not reach {point}"

        second = start(store_url, root, None)
        procs.append(second)

        def healed() -> bool:
            c = store.get(PVC, "default", "db")
            return (c.get("status") or {}).get("phase") == "Bound"

        wait_for(healed, "claim Bound after restart", 60)
        pvs, _ = store.list(PV)
        expected = "static" if static else f"pvc-{claim['metadata']['uid']}"
        assert [p["metadata"]["name"] for p in pvs] == [expected]
        assert pvs[0]["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
        assert pvs[0]["status"]["phase"] == "Bound" or wait_for(
            lambda: store.get(PV, "", pvs[0]["metadata"]["name"])["status"]["phase"] == "Bound", "PV Bound", 30)
        backend = sorted(p.name for p in root.iterdir()) if root.exists() else []
        assert backend == ([] if static else [expected])
        assert store.get(PVC, "default", "db")["spec"]["volumeName"] == pvs[0]["metadata"]["name"]
    finally:
        for proc in procs:
            stop(proc)
        store.close()
