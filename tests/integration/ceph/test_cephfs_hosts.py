"""A network-attached claim follows its pod to another host (MH7), across real hosts: each host is a
network namespace with its own ``stowage agent`` (tests/integration/agent/mh_cluster.py), and each
mounts CephFS with its own ceph-fuse.

The test's Ceph daemons listen on the machine's 127.0.0.1 and hand out 127.0.0.1 addresses in their
maps, so each host reaches the same ports at its own 127.0.0.1 through a relay (netns_hosts'
``LoopbackServices``); cutting a host cuts its fabric link and that relay together."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))

from agent_cluster import condition, wait_until  # noqa: E402
from cephfs_testutil import external_class_objects, force_unmount_under, sweep  # noqa: E402
from ceph_service import CephCluster  # noqa: E402
from mh_cluster import Hosts, visits_statefulset  # noqa: E402
from support import host_tmp_dir, need_programs, need_root, wait_for_text  # noqa: E402
from volume_plugins.cephfs import ceph_fuse_pids, mounts_at  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.timeout(900)]
Obj = dict[str, Any]
PLUGIN_DIR = "kubernetes.io~cephfs"


@pytest.fixture
def ceph_hosts(ceph_cluster: CephCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hosts]:
    need_root("network namespaces, mounts, runc")
    need_programs("runc", "ceph-fuse", "ip", "nsenter", "unshare")
    with host_tmp_dir("stowage-cephfs-hosts-") as base:
        monkeypatch.setenv("STOWAGE_CEPHFS_STATE_DIR", str(base / "cephfs-state"))
        hosts = Hosts(base, 3)
        try:
            hosts.reach_loopback_services(ceph_cluster.loopback_ports())
            yield hosts
        finally:
            try:
                hosts.close()
            finally:
                force_unmount_under(base)
                sweep(ceph_cluster)
        assert not hosts.fabric.leftovers(), "network namespaces or links left behind"


def _sessions(ceph_cluster: CephCluster) -> list[Obj]:
    sessions: list[Obj] = json.loads(ceph_cluster.ceph("tell", "mds.a", "client", "ls", "--format", "json"))
    return sessions


def _fence(ceph_cluster: CephCluster, hostname: str) -> list[int]:
    """Evict (and so blocklist) every CephFS client of ``hostname``: the fencing an administrator does
    before declaring a node out of service."""
    ids = [s["id"] for s in _sessions(ceph_cluster) if (s.get("client_metadata") or {}).get("hostname") == hostname]
    for session_id in ids:
        ceph_cluster.ceph("tell", "mds.a", "client", "evict", f"id={session_id}")
    return ids


def test_mh7_a_cephfs_claim_follows_its_member_to_another_host_after_its_host_is_declared_lost(
        ceph_hosts: Hosts, ceph_cluster: CephCluster) -> None:
    """MH7: a member on a CephFS claim runs on one host; that host is cut off (link and storage network)
    and declared shut down (the out-of-service taint, L6). The member is recreated on another host with
    the same claim and volume, its host's ceph-fuse mounts the volume, and the data written on the lost
    host is there. Back on the network and untainted, the lost host unmounts the old member's volume."""
    hosts, cluster = ceph_hosts, ceph_hosts.cluster
    hosts.start()
    cluster.apply(*external_class_objects(ceph_cluster), *visits_statefulset("db", "cephfs", "64Mi"))
    first = cluster.wait_running("db-0", timeout=180)
    lost = hosts.fabric.host(first["spec"]["nodeName"])
    old_target = hosts.member_volume(first, PLUGIN_DIR)
    assert [e.fstype for e in mounts_at(old_target)] == ["fuse.ceph-fuse"]
    assert ceph_fuse_pids(old_target)
    wait_for_text(old_target / "visits", f"{lost.name}\n", f"the member's write on {lost.name}")
    volume = cluster.client.get("persistentvolumeclaims", "data-db-0", "default")["spec"]["volumeName"]

    hosts.cut(lost)
    try:
        wait_until(lambda: condition(hosts.node(lost.name), "Ready") == "Unknown", f"{lost.name} Ready=Unknown")
        # The administrator's part before the taint (as in Kubernetes, where the node must be shut down or
        # fenced first): the lost host's CephFS client still holds the file's capabilities, and the MDS
        # would make the new host wait for them until it evicts the silent client itself.
        assert _fence(ceph_cluster, lost.name), f"no CephFS session of {lost.name} to evict"
        hosts.declare_out_of_service(lost.name)
        moved = hosts.wait_member_moved(first, "data-db-0", volume)
        new_target = hosts.member_volume(moved, PLUGIN_DIR)
        assert [e.fstype for e in mounts_at(new_target)] == ["fuse.ceph-fuse"]
        wait_for_text(new_target / "visits", f"{lost.name}\n{moved['spec']['nodeName']}\n",
                      "the data written on the lost host, and the new host's write", timeout=120)
        # The lost host's mount is still there: nothing reaches that host to take it down.
        assert ceph_fuse_pids(old_target)
    finally:
        hosts.restore(lost)
    hosts.lift_out_of_service(lost.name)
    wait_until(lambda: condition(hosts.node(lost.name), "Ready") == "True", f"{lost.name} Ready again", timeout=90)
    wait_until(lambda: not mounts_at(old_target) and not ceph_fuse_pids(old_target),
               f"{lost.name} unmounted the old member's volume", timeout=120,
               diagnose=lambda: cluster.agent_log(lost.name))

    cluster.client.delete("statefulsets", "db", "default")
    cluster.wait_gone("pods", "db-0", "default", timeout=120)
    cluster.client.delete("persistentvolumeclaims", "data-db-0", "default")
    cluster.wait_gone("persistentvolumes", volume, timeout=120)
