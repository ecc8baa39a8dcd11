"""End to end with `stowage up`: a claim of a kubernetes.io/glusterfs class is provisioned on the
session's glusterd, a pod writes through a real FUSE mount, a later pod reads it, two pods share it
at once, a pod whose FUSE daemon hangs is still deleted within its grace period, an unreachable
glusterd leaves its claim Pending with an event naming it, and deleting the claim removes the
volume, its bricks and its Service+Endpoints (GF2, GF4-GF9)."""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "e2e"))

from gluster_service import Glusterd  # noqa: E402
from stowage_e2e import Stowage, poll, remove_data_dir  # noqa: E402
from storage.errors import NotFound  # noqa: E402
from support import need_programs  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.slow]
Obj = dict[str, Any]
GRACE = 15


def _pod(name: str, script: str, probe: str, grace: int = 5) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"terminationGracePeriodSeconds": grace,
                     "containers": [{"name": "c", "image": "debian:12", "command": ["/bin/sh", "-c"],
                                     "args": [f"trap 'exit 0' TERM\n{script}\nwhile true; do sleep 1 & wait $!; done"],
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                                     "readinessProbe": {"exec": {"command": ["/bin/sh", "-c", probe]},
                                                        "periodSeconds": 1}}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "shared"}}]}}


@pytest.fixture
def stowage(glusterd: Glusterd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stowage]:
    need_programs("runc", "nsenter")
    manifests = tmp_path_factory.mktemp("gluster-manifests")
    dead = manifests / "nobody.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(dead))  # nobody listens: connection refused
    docs = [
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "glusterfs"},
         "provisioner": "kubernetes.io/glusterfs", "reclaimPolicy": "Delete",
         "parameters": {"glusterSocket": glusterd.socket, "brickRoot": glusterd.bricks, "volumetype": "replicate:3"}},
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "glusterfs-down"},
         "provisioner": "kubernetes.io/glusterfs",
         "parameters": {"glusterSocket": str(dead), "brickRoot": glusterd.bricks, "volumetype": "none"}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "shared", "namespace": "default"},
         "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "glusterfs",
                  "resources": {"requests": {"storage": "1Gi"}}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "stuck", "namespace": "default"},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "glusterfs-down",
                  "resources": {"requests": {"storage": "1Gi"}}}},
    ]
    path = manifests / "gluster.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    data_dir = tmp_path_factory.mktemp("stowage-gluster")
    up = Stowage(data_dir, [path])
    problems: list[str] = []
    try:
        up.wait_started()
        yield up
    finally:
        # FUSE first: a client left stopped by a failed test would hang `stowage down`.
        for pid in _fuse_pids(data_dir):
            os.kill(pid, signal.SIGCONT)
        problems = up.stop() + remove_data_dir(data_dir)
        for volume in glusterd.volumes():
            if volume.startswith("pvc-"):
                problems.append(f"gluster volume {volume} left")
                glusterd.delete_volume(volume)
    if problems:
        pytest.fail("leftovers:\n" + "\n".join(problems))


def _fuse_pids(root: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"glusterfs") and any(a.startswith(str(root).encode() + b"/") for a in argv):
                found.append(int(proc.name))
    return found


def _ready(up: Stowage, name: str, timeout: float = 120) -> Obj:
    def check() -> Obj | None:
        pod = up.client.get("pods", name, "default")
        conditions = (pod.get("status") or {}).get("conditions") or []
        return pod if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions) else None
    return poll(f"pod {name} Ready", check, timeout, diagnose=lambda: up.describe("pods", "pvc"))


def _gone(up: Stowage, resource: str, name: str, namespace: str = "default") -> bool:
    try:
        up.client.get(resource, name, namespace)
    except NotFound:
        return True
    return False


def test_pods_share_a_provisioned_glusterfs_claim(stowage: Stowage, glusterd: Glusterd) -> None:
    """GF2, GF4, GF6, GF8: write, delete, read back from a new pod, two pods at once (ReadWriteMany);
    GF7: a pod whose FUSE daemon is stopped is deleted within its grace period; GF9: the unreachable
    glusterd's claim stays Pending with an event naming the endpoint; deleting the claim removes the
    volume, its bricks and the Service+Endpoints."""
    up = stowage
    client = up.client
    claim = poll("claim shared Bound", lambda: (lambda c: c if (c.get("status") or {}).get("phase") == "Bound" else None)(
        client.get("persistentvolumeclaims", "shared", "default")), 120, diagnose=lambda: up.describe("pvc"))
    pv = client.get("persistentvolumes", claim["spec"]["volumeName"])
    volume = pv["spec"]["glusterfs"]["path"]
    assert pv["spec"]["glusterfs"] == {"endpoints": "glusterfs-dynamic-shared", "path": volume,
                                       "endpointsNamespace": "default"}
    assert pv["metadata"]["annotations"]["pv.beta.kubernetes.io/gid"].isdigit()
    assert volume in glusterd.volumes()
    endpoints = client.get("endpoints", "glusterfs-dynamic-shared", "default")
    assert endpoints["subsets"][0]["addresses"] == [{"ip": "127.0.0.1"}]
    client.get("services", "glusterfs-dynamic-shared", "default")

    client.create(_pod("writer", "echo hello-gluster > /data/msg", "test -s /data/msg"))
    _ready(up, "writer")
    bricks = sorted((glusterd.state / "bricks" / volume).glob("brick*/msg"))
    assert len(bricks) == 3 and all(b.read_text() == "hello-gluster\n" for b in bricks)  # replica 3
    client.delete("pods", "writer", "default")
    poll("writer gone", lambda: _gone(up, "pods", "writer"), 60)

    client.create(_pod("reader", "cat /data/msg > /data/seen", "grep -q hello-gluster /data/seen"))
    client.create(_pod("sharer", "echo second > /data/second", "test -s /data/second && test -s /data/msg",
                       grace=GRACE))
    _ready(up, "reader")
    _ready(up, "sharer")  # both at once on one claim: ReadWriteMany
    assert (glusterd.state / "bricks" / volume / "brick0" / "seen").read_text() == "hello-gluster\n"

    # GF7: stop the FUSE client of sharer's mount, then delete the pod: it goes within its grace period.
    sharer = client.get("pods", "sharer", "default")
    mine = [p for p in _fuse_pids(up.data_dir)
            if sharer["metadata"]["uid"].encode() in (Path(f"/proc/{p}/cmdline").read_bytes())]
    assert len(mine) == 1, mine
    os.kill(mine[0], signal.SIGSTOP)
    try:
        time.sleep(1.5)  # past the client's attribute cache: a stat of the mount point would now block
        started = time.monotonic()
        client.delete("pods", "sharer", "default")
        poll("sharer gone", lambda: _gone(up, "pods", "sharer"), GRACE + 30, diagnose=lambda: up.log_tail())
        took = time.monotonic() - started
        print(f"pod with a hung FUSE daemon deleted in {took:.1f}s (grace {GRACE}s)")
        assert took <= GRACE, took
    finally:
        try:
            os.kill(mine[0], signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert _ready(up, "reader")  # the other pod's mount is unaffected

    # GF9: the claim of the class whose glusterd is unreachable stays Pending with an event naming it.
    stuck = client.get("persistentvolumeclaims", "stuck", "default")
    assert (stuck.get("status") or {}).get("phase") == "Pending"
    dead = client.get("storageclasses", "glusterfs-down")["parameters"]["glusterSocket"]

    def event() -> Obj | None:
        items, _ = client.list("events", "default")
        return next((e for e in items if e["involvedObject"].get("name") == "stuck"
                     and e.get("reason") == "ProvisioningFailed" and f"unix:{dead}" in e.get("message", "")), None)
    found = poll("ProvisioningFailed event naming the glusterd endpoint", event, 60)
    assert "unreachable" in found["message"]

    client.delete("pods", "reader", "default")
    poll("reader gone", lambda: _gone(up, "pods", "reader"), 60)
    client.delete("persistentvolumeclaims", "shared", "default")
    client.delete("persistentvolumeclaims", "stuck", "default")
    poll("the PV deleted", lambda: _gone(up, "persistentvolumes", pv["metadata"]["name"], ""), 60)
    assert volume not in glusterd.volumes()
    assert not (glusterd.state / "bricks" / volume).exists()
    assert _gone(up, "endpoints", "glusterfs-dynamic-shared") and _gone(up, "services", "glusterfs-dynamic-shared")
