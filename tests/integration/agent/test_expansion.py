"""Growing a Bound local claim (SEMANTICS P4): PV, device, filesystem and claim status.

xfs grows online while the pod runs. ext4 grows offline: online resize2fs
needs CAP_SYS_RESOURCE, which this kind of host withholds, so a mounted ext4
volume keeps FileSystemResizePending until its pod is gone, then grows.
"""
from __future__ import annotations

import os

from agent_cluster import Cluster, claim, condition, local_class, pod, wait_until

MiB = 1 << 20


def _patch_request(cluster: Cluster, name: str, size: str) -> None:
    c = cluster.client.get("persistentvolumeclaims", name, "default")
    c["spec"]["resources"]["requests"]["storage"] = size
    cluster.client.update(c)


def _fs_bytes(path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def test_p4_expand_mounted_xfs_online(cluster: Cluster) -> None:
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.apply(local_class("grow-xfs", fs_type="xfs"), claim("data", "320Mi", "grow-xfs"),
                  pod("app", claims={"data": "/data"}))
    running = cluster.wait_running("app")
    mount = next((cluster.agent_dir("n1") / "pods" / running["metadata"]["uid"] / "volumes").glob("*/data"))
    before = _fs_bytes(mount)
    assert before <= 320 * MiB
    _patch_request(cluster, "data", "640Mi")

    def grown() -> dict | None:
        c = cluster.client.get("persistentvolumeclaims", "data", "default")
        done = (c.get("status") or {}).get("capacity", {}).get("storage") == "640Mi" \
            and condition(c, "FileSystemResizePending") is None
        return c if done else None

    wait_until(grown, "claim capacity 640Mi without FileSystemResizePending")
    pv = cluster.client.get("persistentvolumes", cluster.client.get("persistentvolumeclaims", "data", "default")["spec"]["volumeName"])
    assert pv["spec"]["capacity"]["storage"] == "640Mi"
    after = _fs_bytes(mount)
    assert after > before + 256 * MiB, (before, after)  # xfs keeps its log out of the count
    assert cluster.wait_running("app")["status"]["phase"] == "Running"


def test_p4_expand_ext4_offline_after_pod_stops(cluster: Cluster) -> None:
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.apply(local_class("grow-ext4"), claim("data", "64Mi", "grow-ext4"), pod("app", claims={"data": "/data"}))
    cluster.wait_running("app")
    _patch_request(cluster, "data", "128Mi")
    wait_until(lambda: condition(cluster.client.get("persistentvolumeclaims", "data", "default"),
                                 "FileSystemResizePending") == "True", "FileSystemResizePending")
    cluster.client.delete("pods", "app", "default")
    cluster.wait_gone("pods", "app", "default")
    wait_until(lambda: (lambda c: condition(c, "FileSystemResizePending") is None
                        and c["status"]["capacity"]["storage"] == "128Mi")(
        cluster.client.get("persistentvolumeclaims", "data", "default")), "the offline resize to finish")
    cluster.apply(pod("again", "df -k /data | tail -1 | awk '{print $2}' > /data/size; trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done",
                      claims={"data": "/data"}))
    again = cluster.wait_running("again")
    size_file = next((cluster.agent_dir("n1") / "pods" / again["metadata"]["uid"] / "volumes").glob("*/data")) / "size"
    wait_until(lambda: size_file.exists() and size_file.read_text().strip(), "the pod's df")
    assert int(size_file.read_text()) * 1024 > 100 * MiB


def test_p4_expansion_the_pool_cannot_hold_says_why_on_the_claim(cluster: Cluster) -> None:
    """A resize the node's pool has no room for is retried with back-off, and the claim carries a
    Warning VolumeResizeFailed naming the reason, as the external-resizer records it; the volume and
    the claim keep their size."""
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.apply(local_class("grow-full"), claim("data", "64Mi", "grow-full"), pod("app", claims={"data": "/data"}))
    cluster.wait_running("app")
    _patch_request(cluster, "data", "100Ti")

    def failed() -> dict | None:
        return next((e for e in cluster.events_for("data") if e.get("reason") == "VolumeResizeFailed"), None)

    event = wait_until(failed, "a VolumeResizeFailed event on the claim")
    assert event["type"] == "Warning" and "pool" in event["message"], event
    c = cluster.client.get("persistentvolumeclaims", "data", "default")
    assert c["status"]["capacity"]["storage"] == "64Mi"
    assert cluster.client.get("persistentvolumes", c["spec"]["volumeName"])["spec"]["capacity"]["storage"] == "64Mi"
