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
from mh_cluster import Hosts  # noqa: E402
from storage.api.taints import NO_EXECUTE, OUT_OF_SERVICE  # noqa: E402
from support import host_tmp_dir, need_programs, need_root, wait_for_text  # noqa: E402
from volume_plugins.cephfs import ceph_fuse_pids, mounts_at  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.timeout(900)]
Obj = dict[str, Any]


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


def _statefulset(name: str) -> list[Obj]:
    """One member writing the node it runs on to its claim, once per start."""
    labels = {"app": name}
    script = ('echo "$NODE_NAME" >> /data/visits; sync; '
              "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done")
    container = {"name": "main", "image": "debian:12", "command": ["/bin/sh", "-c", script],
                 "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
         "spec": {"clusterIP": "None", "selector": labels, "ports": [{"port": 7000}]}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "namespace": "default"},
         "spec": {"serviceName": name, "replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels},
                               # Kubernetes' default: each member's own user namespace would own its files by
                               # a host id range of its own, and ceph-fuse mounts cannot be idmapped, so a
                               # member recreated elsewhere could not append to its predecessor's file.
                               "spec": {"terminationGracePeriodSeconds": 5, "hostUsers": True,
                                        "containers": [container]}},
                  "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                      "accessModes": ["ReadWriteOnce"], "storageClassName": "cephfs",
                      "resources": {"requests": {"storage": "64Mi"}}}}]}}]


def _target(hosts: Hosts, member: Obj) -> Path:
    """Where the member's CephFS volume is mounted on its host (the mount namespace is the machine's)."""
    node, uid = member["spec"]["nodeName"], member["metadata"]["uid"]
    found = list((hosts.cluster.agent_dir(node) / "pods" / uid).glob("volumes/kubernetes.io~cephfs/*"))
    assert len(found) == 1, found
    return found[0]


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
    cluster.apply(*external_class_objects(ceph_cluster), *_statefulset("db"))
    first = cluster.wait_running("db-0", timeout=180)
    lost = hosts.fabric.host(first["spec"]["nodeName"])
    old_target = _target(hosts, first)
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
        node = hosts.node(lost.name)
        node["spec"].setdefault("taints", []).append(
            {"key": OUT_OF_SERVICE, "value": "nodeshutdown", "effect": NO_EXECUTE})
        cluster.client.update(node)
        moved = cluster.wait_pod("db-0", lambda p: p["metadata"]["uid"] != first["metadata"]["uid"]
                                 and (p.get("status") or {}).get("phase") == "Running",
                                 "db-0 recreated and running on another host", timeout=180)
        assert moved["spec"]["nodeName"] != lost.name
        # The same claim and volume: a network volume follows its member, it is not recreated (unlike LR).
        assert cluster.client.get("persistentvolumeclaims", "data-db-0", "default")["spec"]["volumeName"] == volume
        new_target = _target(hosts, moved)
        assert [e.fstype for e in mounts_at(new_target)] == ["fuse.ceph-fuse"]
        wait_for_text(new_target / "visits", f"{lost.name}\n{moved['spec']['nodeName']}\n",
                      "the data written on the lost host, and the new host's write", timeout=120)
        # The lost host's mount is still there: nothing reaches that host to take it down.
        assert ceph_fuse_pids(old_target)
    finally:
        hosts.restore(lost)
    node = hosts.node(lost.name)
    node["spec"]["taints"] = [t for t in node["spec"].get("taints") or [] if t["key"] != OUT_OF_SERVICE]
    cluster.client.update(node)
    wait_until(lambda: condition(hosts.node(lost.name), "Ready") == "True", f"{lost.name} Ready again", timeout=90)
    wait_until(lambda: not mounts_at(old_target) and not ceph_fuse_pids(old_target),
               f"{lost.name} unmounted the old member's volume", timeout=120,
               diagnose=lambda: cluster.agent_log(lost.name))

    cluster.client.delete("statefulsets", "db", "default")
    cluster.wait_gone("pods", "db-0", "default", timeout=120)
    cluster.client.delete("persistentvolumeclaims", "data-db-0", "default")
    cluster.wait_gone("persistentvolumes", volume, timeout=120)
