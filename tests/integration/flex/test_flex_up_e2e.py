"""FlexVolume under `stowage up` (control plane and node agent in one process), drivers from
$STOWAGE_VOLUME_PLUGIN_DIR (the `--volume-plugin-dir` option's variable): an attachable driver's PV used by a
pod, and a driver installed while `up` runs used at once (FV1, FV2, FV4, FV5, FV6)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "e2e"))

from flex_support import FlexEnv  # noqa: E402
from stowage_e2e import Stowage, poll  # noqa: E402
from storage.errors import NotFound  # noqa: E402
from storage.system import loop  # noqa: E402
from support import need_programs  # noqa: E402

pytestmark = pytest.mark.root
Obj = dict[str, Any]
KEEP_RUNNING = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"


@pytest.fixture
def stowage(flex_env: FlexEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stowage]:
    need_programs("runc", "losetup", "mkfs.ext4", "nsenter")
    flex_env.install("stowage~loop")
    monkeypatch.setenv("STOWAGE_VOLUME_PLUGIN_DIR", str(flex_env.plugin_dir))
    up = Stowage(flex_env.base / "data", [])
    try:
        up.wait_started()
        yield up
    finally:
        problems = up.stop()
        assert not problems, problems


def pod(name: str, volume: Obj, script: str = KEEP_RUNNING) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"terminationGracePeriodSeconds": 2, "volumes": [{"name": "data", **volume}],
                     "containers": [{"name": "main", "image": "debian:12", "command": ["/bin/sh", "-c", script],
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}}


def running(up: Stowage, name: str) -> Obj:
    def check() -> Obj | None:
        p = up.client.get("pods", name, "default")
        return p if (p.get("status") or {}).get("phase") == "Running" else None
    return poll(f"pod {name} Running", check, 120, diagnose=lambda: up.describe("pods"))


def gone(up: Stowage, resource: str, name: str, namespace: str = "") -> None:
    def check() -> bool | None:
        try:
            up.client.get(resource, name, namespace)
        except NotFound:
            return True
        return None
    poll(f"{resource} {name} gone", check, 120, diagnose=lambda: up.describe("pods"))


def test_fv5_fv6_fv2_fv4_flex_pv_and_a_driver_installed_while_up_runs(flex_env: FlexEnv, stowage: Stowage) -> None:
    """FV5/FV6 a static flexVolume PV of the attachable loop driver: attached by up's controller, mounted
    by its agent, written by the pod, detached after the pod is deleted; FV2/FV4 the non-attachable tmpfs
    driver copied in while up runs serves an inline volume without a restart."""
    api = stowage.client
    api.create({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-up"},
                "spec": {"capacity": {"storage": "64Mi"}, "accessModes": ["ReadWriteOnce"],
                         "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                         "flexVolume": {"driver": "stowage/loop", "fsType": "ext4",
                                        "options": {"backingDir": str(flex_env.backing)}}}})
    api.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "default"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": "pv-up",
                         "resources": {"requests": {"storage": "64Mi"}}}})
    api.create(pod("writer", {"persistentVolumeClaim": {"claimName": "data"}},
                   "echo up > /data/f; " + KEEP_RUNNING))
    running(stowage, "writer")
    backing = flex_env.backing / "pv-up.img"
    assert loop.find_by_backing_file(backing) is not None
    global_path = next((flex_env.base / "data").glob("**/plugins/kubernetes.io/flexvolume/stowage/loop/mounts/pv-up"))
    poll("the pod's file", lambda: (global_path / "f").exists() or None, 30)

    flex_env.install("stowage~tmpfs")  # while up runs
    api.create(pod("scratch", {"flexVolume": {"driver": "stowage/tmpfs"}}))
    running(stowage, "scratch")
    assert any(c.startswith("tmpfs mount ") for c in flex_env.calls())

    for name in ("writer", "scratch"):
        api.delete("pods", name, "default")
        gone(stowage, "pods", name, "default")
    poll("the loop device detached", lambda: loop.find_by_backing_file(backing) is None or None, 60)
    assert "loop detach pv-up" in flex_env.calls()
    assert any(c.startswith("tmpfs unmount ") for c in flex_env.calls())
