"""ReadWriteMany across nodes: two node agents (each under its own node credential, so the node
authorizer must let each read the volume's user Secret), one pod on each, one CephFS claim (CF11, CF2)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))

from agent_cluster import Cluster, claim, pod, wait_until  # noqa: E402
from cephfs_testutil import external_class_objects, force_unmount_under, sweep  # noqa: E402
from ceph_service import CephCluster  # noqa: E402
from support import host_tmp_dir, need_programs, need_root  # noqa: E402
from volume_plugins.cephfs import ceph_fuse_pids, mounts_at  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.timeout(600)]


@pytest.fixture
def nodes(ceph_cluster: CephCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    need_root("mounts, runc")
    need_programs("runc", "ceph-fuse")
    with host_tmp_dir("stowage-cephfs-nodes-") as base:
        monkeypatch.setenv("STOWAGE_CEPHFS_STATE_DIR", str(base / "cephfs-state"))
        cluster = Cluster(base)
        try:
            yield cluster
        finally:
            cluster.close()
            force_unmount_under(base)
            sweep(ceph_cluster)


def test_pods_on_two_nodes_share_one_read_write_many_claim(nodes: Cluster, ceph_cluster: CephCluster) -> None:
    """CF11: a pod on n1 and one on n2 mount the same subvolume (each node its own ceph-fuse, as the
    volume's user) and read each other's writes; deleting them unmounts on both nodes."""
    nodes.start_controllers()
    for name in ("n1", "n2"):
        nodes.add_agent(name)
    nodes.apply(
        *external_class_objects(ceph_cluster),
        claim("shared", "64Mi", "cephfs", modes=["ReadWriteMany"]))
    for me, other, node in (("a", "b", "n1"), ("b", "a", "n2")):
        # Each file is written aside and renamed into place, so a reader that sees it sees all of it
        # (a file `>` has just created is there, empty, before the write).
        nodes.apply(pod(f"pod-{me}", f"echo {me} > /data/.from-{me}; mv /data/.from-{me} /data/from-{me}; "
                                     f"until [ -f /data/from-{other} ]; do sleep 0.2; done; "
                                     f"cat /data/from-{other} > /data/.{me}-saw; mv /data/.{me}-saw /data/{me}-saw-{other}; "
                                     "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done",
                        claims={"shared": "/data"}, nodeSelector={"kubernetes.io/hostname": node}))
    targets = {}
    for me, other, node in (("a", "b", "n1"), ("b", "a", "n2")):
        running = nodes.wait_running(f"pod-{me}", timeout=120)
        assert running["spec"]["nodeName"] == node
        [target] = list((nodes.agent_dir(node) / "pods" / running["metadata"]["uid"]).glob("volumes/kubernetes.io~cephfs/*"))
        targets[me] = target
        assert [e.fstype for e in mounts_at(target)] == ["fuse.ceph-fuse"]
        wait_until(lambda: (target / f"{me}-saw-{other}").exists(), f"pod-{me} on {node} saw pod-{other}'s file")
        assert (target / f"{me}-saw-{other}").read_text() == f"{other}\n"
    for me in ("a", "b"):
        nodes.client.delete("pods", f"pod-{me}", "default")
    for me in ("a", "b"):
        nodes.wait_gone("pods", f"pod-{me}", "default")
    wait_until(lambda: not any(mounts_at(t) or ceph_fuse_pids(t) for t in targets.values()), "both nodes unmounted")
    pv_name = nodes.client.get("persistentvolumeclaims", "shared", "default")["spec"]["volumeName"]
    nodes.client.delete("persistentvolumeclaims", "shared", "default")
    nodes.wait_gone("persistentvolumes", pv_name)
    subs = json.loads(ceph_cluster.ceph("fs", "subvolume", "ls", "cephfs", "kubernetes", "--format", "json"))
    assert pv_name not in [s["name"] for s in subs]
