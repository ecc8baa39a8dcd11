"""`stowage up --csi-driver NAME=unix:///path`: a CSI driver on the host serves a class, a claim and a pod
through the whole product (CLI process, API, controllers, agent, runc) (CS4, CS9, CS11)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from csi_drivers import TEST_NAME, start_test_driver, stop_driver, unmount_under  # noqa: E402
from storage.client import Client  # noqa: E402
from storage.errors import NotFound  # noqa: E402
from support import UpProcess, host_tmp_dir, need_programs, need_root, wait_for, wait_for_text  # noqa: E402

pytestmark = pytest.mark.root

SLEEP = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"


def _pod(name: str, script: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"terminationGracePeriodSeconds": 2,
                     "containers": [{"name": "main", "image": "debian:12", "command": ["/bin/sh", "-c", script],
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}}


def test_stowage_up_with_a_csi_driver() -> None:
    need_root("the CSI driver bind-mounts and pods run in runc")
    need_programs("runc")
    with host_tmp_dir("stowage-csi-up-") as base:
        drv = start_test_driver(base / "driver", "host-a")
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        up = UpProcess("up", ["--data-dir", str(base / "data"), "--listen", "127.0.0.1:0",
                              "--csi-driver", f"{drv.name}={drv.endpoint}"], env, timeout=180, new_session=True)
        client: Client | None = None
        try:
            ready = up.wait_for("stowage is ready")
            client = Client.from_kubeconfig(Path(ready["kubeconfig"]))
            state = base / "driver" / "state"
            client.create({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "csi"},
                           "provisioner": TEST_NAME, "reclaimPolicy": "Delete",
                           "volumeBindingMode": "WaitForFirstConsumer"})
            client.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "metadata": {"name": "data", "namespace": "default"},
                           "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "csi",
                                    "resources": {"requests": {"storage": "32Mi"}}}})
            client.create(_pod("writer", f"echo via-up > /data/f && {SLEEP}"))

            def running() -> bool:
                return (client.get("pods", "writer", "default").get("status") or {}).get("phase") == "Running"

            wait_for(running, "the writer Running", 120, diagnose=lambda: up.output(40))
            pvc = client.get("persistentvolumeclaims", "data", "default")
            pv = client.get("persistentvolumes", pvc["spec"]["volumeName"])
            handle = pv["spec"]["csi"]["volumeHandle"]
            wait_for_text(state / "volumes" / handle / "f", "via-up\n", "the pod's file", 30)
            node = client.list("nodes")[0][0]
            assert json.loads(node["metadata"]["annotations"]["csi.volume.kubernetes.io/nodeid"]) == {TEST_NAME: "host-a"}
            assert client.get("csinodes", node["metadata"]["name"])["spec"]["drivers"][0]["nodeID"] == "host-a"

            client.delete("pods", "writer", "default")

            def pod_gone() -> bool:
                try:
                    client.get("pods", "writer", "default")
                except NotFound:
                    return True
                return False

            wait_for(pod_gone, "the writer gone", 60)
            client.delete("persistentvolumeclaims", "data", "default")
            wait_for(lambda: not (state / "volumes" / handle).exists(), "DeleteVolume", 60,
                     diagnose=lambda: up.output(40))
        finally:
            if client is not None:
                client.close()
            if up.proc.poll() is None:
                try:
                    up.stop(60)
                except Exception:
                    up.kill()
            stop_driver(drv.proc)
            unmount_under(base)
