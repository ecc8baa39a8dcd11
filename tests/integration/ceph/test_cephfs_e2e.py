"""End to end with ``stowage up`` and the session's Ceph: a ceph-csi-style class (clusterID through the
ceph-csi ConfigMap, a provisioner Secret), pods on one ReadWriteMany claim, ceph-fuse on the node
(CF1-CF3, CF5, CF7, CF10, CF11, P5, SV9)."""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "e2e"))

from cephfs_testutil import auth_users, force_unmount_under, subvolumes, sweep  # noqa: E402
from ceph_service import CephCluster  # noqa: E402
from stowage_e2e import Stowage, poll, remove_data_dir  # noqa: E402
from storage.errors import NotFound  # noqa: E402
from support import need_programs, need_root, wait_for_text  # noqa: E402
from volume_plugins.cephfs import ceph_fuse_pids, mounts_at  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.timeout(900)]

LOOP = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"


@pytest.fixture(scope="module")
def stowage(ceph_cluster: CephCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stowage]:
    need_root("pods run in runc containers")
    need_programs("runc", "ceph-fuse")
    data_dir = tmp_path_factory.mktemp("stowage-cephfs")
    saved = os.environ.get("STOWAGE_CEPHFS_STATE_DIR")
    os.environ["STOWAGE_CEPHFS_STATE_DIR"] = str(data_dir / "cephfs-state")  # ceph-fuse logs, admin sockets
    up = Stowage(data_dir, [])
    problems: list[str] = []
    try:
        up.wait_started()
        yield up
    finally:
        problems += up.stop()
        force_unmount_under(data_dir)
        problems += remove_data_dir(data_dir)
        sweep(ceph_cluster)
        if saved is None:
            os.environ.pop("STOWAGE_CEPHFS_STATE_DIR", None)
        else:
            os.environ["STOWAGE_CEPHFS_STATE_DIR"] = saved
    if problems:
        pytest.fail("teardown found leftovers:\n" + "\n".join(problems))


def _dead_monitor() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens there


@pytest.fixture(scope="module")
def cephfs_class(stowage: Stowage, ceph_cluster: CephCluster) -> str:
    dead = _dead_monitor()
    config = [{"clusterID": "live", "monitors": [ceph_cluster.monitors], "cephFS": {"subvolumeGroup": "csi"}},
              {"clusterID": "dead", "monitors": [dead]}]
    secret_params = {f"csi.storage.k8s.io/{kind}-secret-{part}": value
                     for kind in ("provisioner", "node-stage", "controller-expand")
                     for part, value in (("name", "csi-cephfs-secret"), ("namespace", "kube-system"))}
    objects = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "csi-cephfs-secret", "namespace": "kube-system"},
         "stringData": {"adminID": "admin", "adminKey": ceph_cluster.admin_key}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ceph-csi-config", "namespace": "kube-system"},
         "data": {"config.json": json.dumps(config)}},
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "cephfs"},
         "provisioner": "cephfs.csi.ceph.com", "reclaimPolicy": "Delete", "allowVolumeExpansion": True,
         "parameters": {"clusterID": "live", "fsName": "cephfs", **secret_params}},
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "cephfs-dead"},
         "provisioner": "cephfs.csi.ceph.com", "reclaimPolicy": "Delete",
         "parameters": {"clusterID": "dead", "fsName": "cephfs", **secret_params}},
    ]
    for obj in objects:
        stowage.client.create(obj)
    stowage.dead_monitor = dead  # type: ignore[attr-defined]
    return "cephfs"


def _claim(name: str, storage_class: str, size: str = "64Mi") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": storage_class,
                     "resources": {"requests": {"storage": size}}}}


def _pod(name: str, claim: str, script: str, grace: int = 5) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"terminationGracePeriodSeconds": grace, "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
                "containers": [{"name": "main", "image": "debian:12", "command": ["/bin/sh", "-c", script],
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}}


def _get(stowage: Stowage, resource: str, name: str, namespace: str = "default") -> dict[str, Any] | None:
    try:
        return stowage.client.get(resource, name, namespace)
    except NotFound:
        return None


def _running(stowage: Stowage, name: str, timeout: float = 120) -> dict[str, Any]:
    return poll(f"pod {name} Running", lambda: (lambda p: p if p and (p.get("status") or {}).get("phase") == "Running"
                                                else None)(_get(stowage, "pods", name)), timeout,
                diagnose=stowage.describe)


def _gone(stowage: Stowage, resource: str, name: str, namespace: str = "default", timeout: float = 120) -> None:
    poll(f"{resource} {name} gone", lambda: _get(stowage, resource, name, namespace) is None, timeout,
         diagnose=stowage.describe)


def _volume_dir(stowage: Stowage, pod: dict[str, Any]) -> Path:
    [found] = list(stowage.data_dir.glob(f"**/pods/{pod['metadata']['uid']}/volumes/kubernetes.io~cephfs/data"))
    return found


def test_two_pods_share_a_read_write_many_claim_and_the_data_outlives_them(
        stowage: Stowage, cephfs_class: str, ceph_cluster: CephCluster) -> None:
    """CF11, CF1, CF2, P5, SV9: two pods at once on one RWX claim see each other's writes (each through its
    own ceph-fuse mount as the volume's own user); deleting them unmounts and stops ceph-fuse; a new pod
    reads the data; deleting the claim removes the subvolume, the user and its Secret."""
    stowage.client.create(_claim("shared", cephfs_class))
    for me, other in (("a", "b"), ("b", "a")):
        stowage.client.create(_pod(f"pod-{me}", "shared",
                                   # Written aside, renamed into place: a file `>` has created is
                                   # there, empty, before the write.
                                   f"echo {me} > /data/.from-{me}; mv /data/.from-{me} /data/from-{me}; "
                                   f"until [ -f /data/from-{other} ]; do sleep 0.2; done; "
                                   f"cat /data/from-{other} > /data/.{me}-saw; mv /data/.{me}-saw /data/{me}-saw-{other}; "
                                   f"{LOOP}"))
    pods = {n: _running(stowage, n) for n in ("pod-a", "pod-b")}
    claim = _get(stowage, "persistentvolumeclaims", "shared")
    assert claim is not None and claim["status"]["phase"] == "Bound"
    pv_name = claim["spec"]["volumeName"]
    pv = _get(stowage, "persistentvolumes", pv_name, "")
    assert pv is not None
    source = pv["spec"]["cephfs"]
    assert source["user"] == pv_name and source["path"].startswith(f"/volumes/csi/{pv_name}/")
    secret = _get(stowage, "secrets", source["secretRef"]["name"], "default")
    assert secret is not None and secret["metadata"]["labels"]["stowage.io/provisioned-for"] == pv_name
    assert base64.b64decode(secret["data"]["key"]).decode() == \
        ceph_cluster.ceph("auth", "get-key", f"client.{pv_name}").strip()
    dirs = {n: _volume_dir(stowage, p) for n, p in pods.items()}
    wait_for_text(dirs["pod-a"] / "a-saw-b", "b\n", "pod-a saw pod-b's file")
    wait_for_text(dirs["pod-b"] / "b-saw-a", "a\n", "pod-b saw pod-a's file")
    assert all([e.fstype for e in mounts_at(d)] == ["fuse.ceph-fuse"] for d in dirs.values())
    # A ceph-fuse mount cannot be idmapped into a pod's user namespace: each pod is told so, once.
    for n, p in pods.items():
        said = poll(f"{n}'s VolumeNotIdmapped event", lambda: [
            e for e in stowage.client.list("events", "default")[0]
            if e["involvedObject"].get("uid") == p["metadata"]["uid"] and e["reason"] == "VolumeNotIdmapped"], 30,
            diagnose=stowage.describe)
        assert len(said) == 1 and said[0]["type"] == "Warning" and '"data"' in said[0]["message"], said
        assert "hostUsers: true" in said[0]["message"]
    for n in pods:
        stowage.client.delete("pods", n, "default")
    for n in pods:
        _gone(stowage, "pods", n)
    assert not any(mounts_at(d) or ceph_fuse_pids(d) for d in dirs.values())

    stowage.client.create(_pod("pod-c", "shared", f"cat /data/from-a /data/from-b > /data/c-read; {LOOP}"))
    later = _volume_dir(stowage, _running(stowage, "pod-c"))
    poll("pod-c read the earlier pods' data", lambda: (later / "c-read").exists()
         and (later / "c-read").read_text() == "a\nb\n", 60, diagnose=stowage.describe)
    stowage.client.delete("pods", "pod-c", "default")
    _gone(stowage, "pods", "pod-c")

    stowage.client.delete("persistentvolumeclaims", "shared", "default")
    _gone(stowage, "persistentvolumes", pv_name, "")
    assert pv_name not in subvolumes(ceph_cluster, "csi")
    assert f"client.{pv_name}" not in auth_users(ceph_cluster)
    assert _get(stowage, "secrets", source["secretRef"]["name"], "default") is None


def test_a_pod_whose_ceph_fuse_hangs_is_still_torn_down(stowage: Stowage, cephfs_class: str) -> None:
    """CF10: the pod's ceph-fuse is stopped (SIGSTOP); deleting the pod still ends within a bound: the
    daemon is killed, the mount removed."""
    stowage.client.create(_claim("hung", cephfs_class))
    stowage.client.create(_pod("pod-hung", "hung", LOOP, grace=5))
    pod = _running(stowage, "pod-hung")
    target = _volume_dir(stowage, pod)
    [pid] = ceph_fuse_pids(target)
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        stowage.client.delete("pods", "pod-hung", "default")
        _gone(stowage, "pods", "pod-hung", timeout=60)
        elapsed = time.monotonic() - started
        print(f"\npod with a hung ceph-fuse deleted in {elapsed:.1f} s")
        assert elapsed < 45
        assert not mounts_at(target) and not ceph_fuse_pids(target)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    stowage.client.delete("persistentvolumeclaims", "hung", "default")
    _gone(stowage, "persistentvolumeclaims", "hung")


def test_unreachable_monitor_keeps_the_claim_pending_with_an_event(stowage: Stowage, cephfs_class: str,
                                                                    ceph_cluster: CephCluster) -> None:
    """CF5: a class whose cluster's monitor does not answer: the claim stays Pending, a
    ProvisioningFailed event names the monitor endpoint, and no subvolume is made."""
    dead = stowage.dead_monitor  # type: ignore[attr-defined]
    stowage.client.create(_claim("nowhere", "cephfs-dead"))

    def event() -> dict[str, Any] | None:
        items, _ = stowage.client.list("events", "default")
        return next((e for e in items if (e.get("involvedObject") or {}).get("name") == "nowhere"
                     and e.get("reason") == "ProvisioningFailed" and dead in e.get("message", "")), None)

    found = poll("a ProvisioningFailed event naming the monitor", event, 90, diagnose=stowage.describe)
    assert "cannot reach Ceph monitors" in found["message"] and ceph_cluster.admin_key not in found["message"]
    claim = _get(stowage, "persistentvolumeclaims", "nowhere")
    assert claim is not None and (claim.get("status") or {}).get("phase", "Pending") == "Pending"
    uid = claim["metadata"]["uid"]
    assert f"pvc-{uid}" not in subvolumes(ceph_cluster, "csi")
    stowage.client.delete("persistentvolumeclaims", "nowhere", "default")
