"""A GlusterFS claim follows its pod to another host (MH7), across real hosts: each host is a network
namespace with its own ``stowage agent`` (tests/integration/agent/mh_cluster.py) and mounts the volume
with its own glusterfs FUSE client.

The session's glusterd and the volume's brick daemons listen on the machine's 127.0.0.1, and the
volume's files name 127.0.0.1 as the brick host, so each host reaches the same ports at its own
127.0.0.1 through a relay (netns_hosts' ``LoopbackServices``); cutting a host cuts its fabric link and
those relays together. Unlike CephFS (tests/integration/ceph/test_cephfs_hosts.py), GlusterFS (leases
off, its default) makes no client wait for another's, so no fencing step comes before the taint."""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))

from agent_cluster import condition, wait_until  # noqa: E402
from gluster_service import PORT, Glusterd  # noqa: E402
from mh_cluster import Hosts, visits_statefulset  # noqa: E402
from storage.system import mounts  # noqa: E402
from support import host_tmp_dir, need_programs, need_root, wait_for_text  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.timeout(900)]
Obj = dict[str, Any]
PLUGIN_DIR = "kubernetes.io~glusterfs"


@pytest.fixture
def gluster_hosts(glusterd: Glusterd) -> Iterator[Hosts]:
    need_root("network namespaces, mounts, runc")
    need_programs("runc", "mount.glusterfs", "ip", "nsenter", "unshare")
    with host_tmp_dir("stowage-gluster-hosts-") as base:
        hosts = Hosts(base, 3)
        try:
            hosts.reach_loopback_services([PORT])  # glusterd: volume files and the bricks' port map
            yield hosts
        finally:
            try:
                hosts.close()  # what is still mounted under base goes with host_tmp_dir
            finally:
                for volume in glusterd.volumes():
                    if volume.startswith("pvc-"):
                        glusterd.delete_volume(volume)
        assert not hosts.fabric.leftovers(), "network namespaces or links left behind"


def _objects(glusterd: Glusterd) -> list[Obj]:
    """The class, and the member's claim made ahead of its StatefulSet (which adopts it by name), so that the
    test can relay the volume's brick ports before any host mounts it."""
    return [
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "glusterfs"},
         "provisioner": "kubernetes.io/glusterfs", "reclaimPolicy": "Delete",
         "parameters": {"glusterSocket": glusterd.socket, "brickRoot": glusterd.bricks, "volumetype": "none"}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
         "metadata": {"name": "data-db-0", "namespace": "default", "labels": {"app": "db"}},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "glusterfs",
                  "resources": {"requests": {"storage": "1Gi"}}}},
    ]


def _brick_ports(glusterd: Glusterd, volume: str) -> list[int]:
    status = glusterd.cli("volume", "status", volume, "--xml").stdout
    ports = sorted({int(p) for p in re.findall(r"<port>(\d+)</port>", status) if p.isdigit() and int(p) > 0})
    assert ports, f"no brick port in the volume's status:\n{status}"
    return ports


def _fuse_types(target: Path) -> list[str]:
    return [e.fstype for e in mounts.mounts_at(target)]


def test_mh7_a_glusterfs_claim_follows_its_member_to_another_host_after_its_host_is_declared_lost(
        gluster_hosts: Hosts, glusterd: Glusterd) -> None:
    """MH7 with GlusterFS: a member on a GlusterFS claim runs on one host; that host is cut off (link and
    storage network) and declared shut down (the out-of-service taint, L6). The member is recreated on
    another host with the same claim and volume, its host's glusterfs client mounts the volume, and the
    data written on the lost host is there. Back on the network and untainted, the lost host unmounts
    the old member's volume."""
    hosts, cluster = gluster_hosts, gluster_hosts.cluster
    hosts.start()
    cluster.apply(*_objects(glusterd))
    claim = wait_until(lambda: (lambda c: c if (c.get("status") or {}).get("phase") == "Bound" else None)(
        cluster.client.get("persistentvolumeclaims", "data-db-0", "default")), "the member's claim Bound", 120)
    volume = claim["spec"]["volumeName"]
    gluster_volume = cluster.client.get("persistentvolumes", volume)["spec"]["glusterfs"]["path"]
    hosts.reach_loopback_services(_brick_ports(glusterd, gluster_volume))
    cluster.apply(*visits_statefulset("db", "glusterfs", "1Gi"))
    first = cluster.wait_running("db-0", timeout=180)
    lost = hosts.fabric.host(first["spec"]["nodeName"])
    old_target = hosts.member_volume(first, PLUGIN_DIR)
    assert _fuse_types(old_target) == ["fuse.glusterfs"]
    wait_for_text(old_target / "visits", f"{lost.name}\n", f"the member's write on {lost.name}")

    hosts.cut(lost)
    try:
        wait_until(lambda: condition(hosts.node(lost.name), "Ready") == "Unknown", f"{lost.name} Ready=Unknown")
        hosts.declare_out_of_service(lost.name)
        moved = hosts.wait_member_moved(first, "data-db-0", volume)
        new_target = hosts.member_volume(moved, PLUGIN_DIR)
        assert _fuse_types(new_target) == ["fuse.glusterfs"]
        wait_for_text(new_target / "visits", f"{lost.name}\n{moved['spec']['nodeName']}\n",
                      "the data written on the lost host, and the new host's write", timeout=120)
        # The lost host's mount is still there: nothing reaches that host to take it down.
        assert _fuse_types(old_target) == ["fuse.glusterfs"]
    finally:
        hosts.restore(lost)
    hosts.lift_out_of_service(lost.name)
    wait_until(lambda: condition(hosts.node(lost.name), "Ready") == "True", f"{lost.name} Ready again", timeout=90)
    wait_until(lambda: not mounts.mounts_at(old_target), f"{lost.name} unmounted the old member's volume",
               timeout=120, diagnose=lambda: cluster.agent_log(lost.name))

    cluster.client.delete("statefulsets", "db", "default")
    cluster.wait_gone("pods", "db-0", "default", timeout=120)
    cluster.client.delete("persistentvolumeclaims", "data-db-0", "default")
    cluster.wait_gone("persistentvolumes", volume, timeout=120)
    assert gluster_volume not in glusterd.volumes()
