"""The node lifecycle controller against real agents and real runc pods (rules L1-L7, SEMANTICS A2-A3).

Agent n1 runs as its own process, so it can be frozen (SIGSTOP) or killed
(SIGKILL); agent n2 runs in the test process and stays healthy, which keeps
the zone only partly disrupted (a zone with no Ready node evicts nothing, L4).
Grace periods are seconds long through ``ControllerOptions``; every check
waits for an outcome and compares recorded times, never the wall clock.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
from datetime import timedelta
from typing import Any

from agent_cluster import Cluster, condition, pod, wait_until
from provisioners import registry as provisioner_registry
from provisioners.base import ANN_PROVISIONED_BY, Attacher, ProvisionRequest, ProvisionResult, Provisioner
from storage.agent.teardown import stop_node
from storage.api.taints import NO_EXECUTE, NO_SCHEDULE, NOT_READY, OUT_OF_SERVICE, UNREACHABLE
from storage.api.timestamps import parse_time
from storage.controllers.attachdetach import attachment_name
from storage.controllers.base import ControllerOptions
from storage.errors import Conflict, NotFound, PermanentError
from storage.system import loop

Obj = dict[str, Any]
LOOPING = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"
FAST = ControllerOptions(node_monitor_grace_period=3.0, node_eviction_rate=10.0)
ON_N1 = {"nodeSelector": {"kubernetes.io/hostname": "n1"}}


def _toleration(key: str, seconds: int | None = None) -> Obj:
    out: Obj = {"key": key, "operator": "Exists", "effect": NO_EXECUTE}
    if seconds is not None:
        out["tolerationSeconds"] = seconds
    return out


def _node(cluster: Cluster, name: str) -> Obj:
    return cluster.client.get("nodes", name)


def _taints(cluster: Cluster, name: str) -> set[tuple[str, str]]:
    return {(t["key"], t["effect"]) for t in _node(cluster, name).get("spec", {}).get("taints") or []}


def _start_two_nodes(cluster: Cluster) -> subprocess.Popen[bytes]:
    cluster.start_controllers(FAST)
    proc = cluster.spawn_agent("n1")
    cluster.add_agent("n2")
    for name in ("n1", "n2"):
        wait_until(lambda n=name: condition(_node(cluster, n), "Ready") == "True", f"node {name} Ready")
    return proc


def _event(cluster: Cluster, name: str, reason: str, message: str) -> Obj | None:
    return next((e for e in cluster.events_for(name) if e["reason"] == reason and e["message"] == message), None)


def test_l1_l2_l3_l5_l7_frozen_agent_node_unknown_pods_not_ready_taint_evictions_then_recovery(cluster: Cluster) -> None:
    proc = _start_two_nodes(cluster)
    cluster.apply(pod("brief", tolerations=[_toleration(UNREACHABLE, 2)], **ON_N1),
                  pod("patient", tolerations=[_toleration(UNREACHABLE, 600)], **ON_N1),
                  pod("steady", tolerations=[_toleration(UNREACHABLE)], **ON_N1))
    for name in ("brief", "patient", "steady"):
        cluster.wait_running(name, ready=True)
    # L7: admission added only what was missing: the not-ready toleration with its default seconds.
    steady = cluster.pod("steady")["spec"]["tolerations"]
    assert steady == [_toleration(UNREACHABLE), _toleration(NOT_READY, 300)]

    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        # L1: silent for the grace period -> Unknown, with Kubernetes' reason and message.
        wait_until(lambda: condition(_node(cluster, "n1"), "Ready") == "Unknown", "n1 Ready=Unknown", timeout=60)
        ready = next(c for c in _node(cluster, "n1")["status"]["conditions"] if c["type"] == "Ready")
        assert (ready["reason"], ready["message"]) == ("NodeStatusUnknown", "Kubelet stopped posting node status.")
        assert any(e["reason"] == "NodeNotReady" for e in cluster.events_for("n1", namespace="default"))
        # L3/L4: both taints, stamped.
        wait_until(lambda: {(UNREACHABLE, NO_SCHEDULE), (UNREACHABLE, NO_EXECUTE)} <= _taints(cluster, "n1"),
                   "unreachable taints on n1")
        tainted = {t["effect"]: t for t in _node(cluster, "n1")["spec"]["taints"] if t["key"] == UNREACHABLE}
        added = parse_time(tainted[NO_EXECUTE]["timeAdded"])
        assert added is not None and parse_time(tainted[NO_SCHEDULE]["timeAdded"]) is not None
        # L2: every pod there is not ready at once, with Kubernetes' event.
        for name in ("brief", "patient", "steady"):
            cluster.wait_pod(name, lambda p: condition(p, "Ready") == "False" and condition(p, "ContainersReady") == "False",
                             "Ready=False")
            assert _event(cluster, name, "NodeNotReady", "Node is not ready") is not None
        # L5: tolerationSeconds 2 -> deleted two seconds after the taint (timestamps are whole seconds).
        brief = cluster.wait_pod("brief", lambda p: bool(p["metadata"].get("deletionTimestamp")), "evicted")
        assert parse_time(brief["metadata"]["deletionTimestamp"]) >= added + timedelta(seconds=1)
        target = next(c for c in brief["status"]["conditions"] if c["type"] == "DisruptionTarget")
        assert (target["status"], target["reason"]) == ("True", "DeletionByTaintManager")
        assert _event(cluster, "brief", "TaintManagerEviction", "Marking for deletion Pod default/brief") is not None
        # The one that tolerates forever, and the one with ten minutes left, are still there.
        for name in ("steady", "patient"):
            assert not cluster.pod(name)["metadata"].get("deletionTimestamp")
    finally:
        os.killpg(proc.pid, signal.SIGCONT)

    # Heartbeats again: Ready, the controller's taints go, the scheduled eviction is cancelled, the agent
    # finishes the one deletion it missed and says again that the others are ready.
    wait_until(lambda: condition(_node(cluster, "n1"), "Ready") == "True", "n1 Ready again", timeout=60)
    wait_until(lambda: not _taints(cluster, "n1"), "n1 untainted")
    cluster.wait_gone("pods", "brief", "default")
    try:
        for name in ("steady", "patient"):
            cluster.wait_running(name, ready=True)
    except AssertionError:
        log = (cluster.base / "agent-n1.log").read_text(errors="replace").splitlines()
        print("\n".join(log[-80:]), "\n", cluster.pod("steady")["status"])
        raise
    wait_until(lambda: _event(cluster, "patient", "TaintManagerEviction", "Cancelling deletion of Pod default/patient"),
               "the cancelled eviction's event")


class DiskAttacher(Provisioner, Attacher):
    """An attachable "disk" for the A3 test: the agents reach it as a local volume backed by one image
    file (both nodes see it: they share a host), and this stands for the backend's attach API, recording
    the calls in order. Nothing real attaches disks to nodes on one machine."""

    name = "disks.test.stowage.io"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        raise PermanentError("this test's disks are made by hand")

    def delete(self, pv: Obj) -> None:
        return None

    def attach(self, pv: Obj, node: Obj) -> dict[str, str]:
        with self._lock:
            if not self.calls or self.calls[-1] != ("attach", node["metadata"]["name"]):
                self.calls.append(("attach", node["metadata"]["name"]))
        return {"devicePath": pv["spec"]["local"]["path"]}

    def detach(self, pv: Obj, node_name: str) -> None:
        with self._lock:
            self.calls.append(("detach", node_name))


def _statefulset(claim_size: str) -> Obj:
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "default"},
        "spec": {
            "serviceName": "db", "replicas": 1, "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
                "terminationGracePeriodSeconds": 2,
                "containers": [{"name": "main", "image": "debian:12", "command": ["/bin/sh", "-c",
                                "echo started >> /data/starts; " + LOOPING],
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "storageClassName": "", "resources": {"requests": {"storage": claim_size}}}}],
        },
    }


def _shared_disk(path: str) -> Obj:
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "shared-disk", "annotations": {ANN_PROVISIONED_BY: DiskAttacher.name}},
        "spec": {"capacity": {"storage": "64Mi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "persistentVolumeReclaimPolicy": "Retain", "local": {"path": path, "fsType": "ext4"},
                 "claimRef": {"namespace": "default", "name": "data-db-0"},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                     {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1", "n2"]}]}]}}},
    }


def _set_unschedulable(cluster: Cluster, name: str, value: bool) -> None:
    # The node's agent and the lifecycle controller write the Node too: on a Conflict read it again,
    # as kubectl cordon does.
    for _attempt in range(20):
        node = _node(cluster, name)
        node.setdefault("spec", {})["unschedulable"] = value
        try:
            cluster.client.update(node)
            return
        except Conflict:
            continue
    raise AssertionError(f"node {name}: 20 conflicting updates in a row")


def _reports_in_use(cluster: Cluster, node: str) -> bool:
    return any(str(v).endswith("/shared-disk") for v in _node(cluster, node)["status"].get("volumesInUse") or [])


def _attachment(cluster: Cluster, node: str) -> Obj | None:
    try:
        return cluster.client.get("volumeattachments", attachment_name("shared-disk", DiskAttacher.name, node))
    except NotFound:
        return None


def test_l6_a3_out_of_service_node_force_deletes_detaches_at_once_and_the_statefulset_member_moves(
        cluster: Cluster) -> None:
    disks = DiskAttacher()
    provisioner_registry.register(disks)
    try:
        _out_of_service_scenario(cluster, disks)
    finally:
        provisioner_registry.unregister(DiskAttacher.name)
        for device in loop.loops_under(cluster.base / "disks"):
            loop.detach(device)


def _out_of_service_scenario(cluster: Cluster, disks: DiskAttacher) -> None:
    proc = _start_two_nodes(cluster)
    image = cluster.base / "disks" / "shared.img"
    image.parent.mkdir()
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    _set_unschedulable(cluster, "n2", True)  # the first member must start on n1
    cluster.apply(_shared_disk(str(image)), _statefulset("64Mi"))
    first = cluster.wait_running("db-0", timeout=120)
    assert first["spec"]["nodeName"] == "n1"
    # A1: attached to n1 before the pod there used it.
    wait_until(lambda: ((_attachment(cluster, "n1") or {}).get("status") or {}).get("attached"), "attached to n1")
    assert disks.calls == [("attach", "n1")]
    _set_unschedulable(cluster, "n2", False)
    wait_until(lambda: _reports_in_use(cluster, "n1"), "n1 to report the disk in use")

    # n1 goes down hard: its agent dies, and so do its containers, mounts and loop devices.
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    stop_node(cluster.agent_dir("n1"), cluster.agent_dir("n1"), grace_seconds=0)
    for device in loop.loops_under(image.parent):
        loop.detach(device)
    wait_until(lambda: {(UNREACHABLE, NO_SCHEDULE), (UNREACHABLE, NO_EXECUTE)} <= _taints(cluster, "n1"),
               "n1 unreachable and tainted", timeout=60)
    # Unreachable alone moves nothing yet: the member tolerates it for 300 s (its controller's default) and
    # n1 still reports the volume in use, so it stays attached (A3: no detach before the 6-minute timeout).
    wait_until(lambda: condition(cluster.pod("db-0"), "Ready") == "False", "db-0 marked not ready")
    assert cluster.pod("db-0")["metadata"]["uid"] == first["metadata"]["uid"]
    assert not cluster.pod("db-0")["metadata"].get("deletionTimestamp")
    assert _attachment(cluster, "n1") is not None and disks.calls == [("attach", "n1")]

    # L6: the administrator declares n1 shut down.
    node = _node(cluster, "n1")
    node["spec"].setdefault("taints", []).append({"key": OUT_OF_SERVICE, "value": "nodeshutdown", "effect": NO_EXECUTE})
    cluster.client.update(node)
    moved = cluster.wait_pod("db-0", lambda p: p["metadata"]["uid"] != first["metadata"]["uid"]
                             and (p.get("status") or {}).get("phase") == "Running", "recreated and running", timeout=120)
    assert moved["spec"]["nodeName"] == "n2"
    # The old member was force-deleted (its agent is dead: a graceful deletion would never end) after the
    # taint manager's event; the disk left n1 at once and only then came to n2 (A1-A3).
    assert _event(cluster, "db-0", "TaintManagerEviction", "Marking for deletion Pod default/db-0") is not None
    assert disks.calls == [("attach", "n1"), ("detach", "n1"), ("attach", "n2")]
    assert _attachment(cluster, "n1") is None
    # n1 (dead) still says it uses the disk: only its out-of-service taint allowed the detach (A3).
    assert _reports_in_use(cluster, "n1")
    assert (_attachment(cluster, "n2") or {}).get("status", {}).get("attached") is True
    starts = next((cluster.agent_dir("n2") / "pods" / moved["metadata"]["uid"] / "volumes").glob("*/data")) / "starts"
    wait_until(lambda: starts.exists() and len(starts.read_text().split()) == 2, "the data written on n1, and on n2")

    # L3: once the administrator lifts the out-of-service taint and n1's agent is back, n1 is clean again.
    node = _node(cluster, "n1")
    node["spec"]["taints"] = [t for t in node["spec"]["taints"] if t["key"] != OUT_OF_SERVICE]
    cluster.client.update(node)
    cluster.spawn_agent("n1")
    wait_until(lambda: condition(_node(cluster, "n1"), "Ready") == "True", "n1 Ready after its restart", timeout=60)
    wait_until(lambda: not _taints(cluster, "n1"), "n1 untainted")
