"""The attach/detach controller's pure decisions (SEMANTICS A1-A3)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from storage.api.taints import NO_EXECUTE, NO_SCHEDULE, OUT_OF_SERVICE
from storage.controllers.attachdetach import (
    Snapshot, attachment_name, calculate_changes, multi_attach_message, pod_terminated,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
WAIT = 360.0
Obj = dict[str, Any]
ATTACHER = "disks.example.com"


def pv(modes: tuple[str, ...] = ("ReadWriteOnce",)) -> Obj:
    return {"metadata": {"name": "disk"}, "spec": {"accessModes": list(modes)}}


def node(name: str, ready: str = "True", in_use: bool = False, taints: list[Obj] | None = None) -> Obj:
    return {"metadata": {"name": name}, "spec": {"taints": taints or []},
            "status": {"conditions": [{"type": "Ready", "status": ready}],
                       "volumesInUse": ["kubernetes.io~local-volume/disk"] if in_use else []}}


def pod(name: str, node_name: str, *, phase: str = "Running", deleting: bool = False, running: bool = True,
        namespace: str = "default") -> Obj:
    meta: Obj = {"name": name, "namespace": namespace, "uid": f"uid-{name}"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    state = {"running": {}} if running else {"terminated": {"exitCode": 0}}
    return {"metadata": meta, "spec": {"nodeName": node_name},
            "status": {"phase": phase, "containerStatuses": [{"name": "c", "state": state}]}}


def va(node_name: str, attached: bool = True) -> Obj:
    return {"metadata": {"name": attachment_name("disk", ATTACHER, node_name)},
            "spec": {"attacher": ATTACHER, "nodeName": node_name, "source": {"persistentVolumeName": "disk"}},
            "status": {"attached": attached}}


def decide(pods: list[Obj], nodes: list[Obj], vas: list[Obj], now: datetime = T0, since: dict[str, datetime] | None = None,
           volume: Obj | None = None):
    snap = Snapshot("disk", volume or pv(), ATTACHER, pods, {n["metadata"]["name"]: n for n in nodes}, vas, since or {})
    return calculate_changes(snap, now, WAIT)


def test_a1_a_pod_placed_on_a_node_gets_its_volume_attached_there_and_finished_pods_release_it() -> None:
    out = decide([pod("p", "n1")], [node("n1")], [])
    assert [(a.node, a.name) for a in out.attaches] == [("n1", attachment_name("disk", ATTACHER, "n1"))]
    retry = decide([pod("p", "n1")], [node("n1")], [va("n1", attached=False)])
    assert [a.node for a in retry.attaches] == ["n1"]
    done = decide([pod("p", "n1", phase="Succeeded")], [node("n1")], [va("n1")])
    assert [d.reason for d in done.detaches] == ["unmounted"]
    assert pod_terminated(pod("q", "n1", deleting=True, running=False))
    assert not pod_terminated(pod("q", "n1", deleting=True, running=True))  # a dead node's pod keeps it


def test_a1_detach_runs_before_attach_so_a_moved_pod_gets_its_volume_in_one_pass() -> None:
    out = decide([pod("p", "n2")], [node("n1"), node("n2")], [va("n1")])
    assert [d.reason for d in out.detaches] == ["unmounted"] and [a.node for a in out.attaches] == ["n2"]


def test_a2_exclusive_volume_waits_for_the_first_node_with_kubernetes_message() -> None:
    holder, newcomer = pod("db-0", "n1"), pod("db-1", "n2")
    out = decide([holder, newcomer], [node("n1", in_use=True), node("n2")], [va("n1")])
    assert not out.attaches and not out.detaches
    assert [(e.pod["metadata"]["name"], e.message) for e in out.errors] == [
        ("db-1", 'Multi-Attach error for volume "disk" Volume is already used by pod(s) db-0')]
    shared = decide([holder, newcomer], [node("n1", in_use=True), node("n2")], [va("n1")],
                    volume=pv(("ReadWriteMany",)))
    assert [a.node for a in shared.attaches] == ["n2"] and not shared.errors
    other_ns = pod("x", "n1", namespace="other")
    assert multi_attach_message("disk", newcomer, [holder, other_ns]) == (
        'Multi-Attach error for volume "disk" Volume is already used by pod(s) db-0 and 1 pod(s) in different namespaces')
    assert multi_attach_message("disk", newcomer, []).endswith(
        "Volume is already exclusively attached to one node and can't be attached to another")


def test_a3_mounted_volume_on_a_healthy_node_is_never_detached() -> None:
    out = decide([], [node("n1", in_use=True)], [va("n1")], now=T0 + timedelta(days=1), since={va("n1")["metadata"]["name"]: T0})
    assert not out.detaches and out.next_check is None


def test_a3_not_ready_node_detach_is_forced_after_the_timeout_only() -> None:
    name = va("n1")["metadata"]["name"]
    down = [node("n1", "Unknown", in_use=True), node("n2")]
    early = decide([pod("p", "n2")], down, [va("n1")], now=T0 + timedelta(seconds=359), since={name: T0})
    assert not early.detaches and not early.attaches  # the new pod's attach waits too (A2)
    assert early.next_check == T0 + timedelta(seconds=360)
    assert early.waiting == {name: T0}
    late = decide([pod("p", "n2")], down, [va("n1")], now=T0 + timedelta(seconds=360), since={name: T0})
    assert [d.reason for d in late.detaches] == ["timeout"] and [a.node for a in late.attaches] == ["n2"]


def test_a3_out_of_service_node_detaches_at_once_but_only_with_the_noexecute_taint() -> None:
    oos = {"key": OUT_OF_SERVICE, "value": "nodeshutdown", "effect": NO_EXECUTE}
    down = [node("n1", "Unknown", in_use=True, taints=[oos]), node("n2")]
    out = decide([pod("p", "n2")], down, [va("n1")])
    assert [d.reason for d in out.detaches] == ["out-of-service"] and [a.node for a in out.attaches] == ["n2"]
    noschedule = [node("n1", "Unknown", in_use=True, taints=[{**oos, "effect": NO_SCHEDULE}]), node("n2")]
    assert not decide([pod("p", "n2")], noschedule, [va("n1")]).detaches


def test_a3_pod_on_a_dead_node_keeps_the_volume_until_it_is_gone() -> None:
    stuck = pod("p", "n1", deleting=True, running=True)
    out = decide([stuck], [node("n1", "Unknown", in_use=True, taints=[
        {"key": OUT_OF_SERVICE, "effect": NO_EXECUTE}])], [va("n1")])
    assert not out.detaches  # wanted while its pod still counts as running
    gone_node = decide([], [], [va("n1")])
    assert [d.reason for d in gone_node.detaches] == ["node-gone"]
