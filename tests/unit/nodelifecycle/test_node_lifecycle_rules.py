"""The node lifecycle controller's pure decisions (rules L1-L7; the text is in node_lifecycle.py's docstring)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from storage.api.taints import (
    NO_EXECUTE, NO_SCHEDULE, NOT_READY, OUT_OF_SERVICE, UNREACHABLE, UNSCHEDULABLE, tolerates, tolerates_all,
    with_daemon_tolerations, with_default_toleration_seconds,
)
from storage.api.timestamps import format_time
from storage.controllers.node_lifecycle import (
    FULL_DISRUPTION, NORMAL, PARTIAL_DISRUPTION, LifecycleConfig, Snapshot, calculate_changes, eviction_due,
    eviction_rate, orphan_changes, zone_state,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
CONFIG = LifecycleConfig(grace_seconds=40, eviction_rate=0.1, secondary_eviction_rate=0.01,
                         unhealthy_zone_threshold=0.55, large_cluster_threshold=50)
Obj = dict[str, Any]


def node(name: str, ready: str = "True", *, zone: str = "", taints: list[Obj] | None = None,
         since: datetime = T0, **spec: Any) -> Obj:
    labels = {"topology.kubernetes.io/zone": zone} if zone else {}
    return {"metadata": {"name": name, "labels": labels, "resourceVersion": "1"},
            "spec": {**({"taints": taints} if taints is not None else {}), **spec},
            "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady",
                                       "lastHeartbeatTime": format_time(since),
                                       "lastTransitionTime": format_time(since)}]}}


def pod(name: str, node_name: str, *, tolerations: list[Obj] | None = None, ready: str = "True",
        deleting: bool = False) -> Obj:
    meta: Obj = {"name": name, "namespace": "default", "uid": f"uid-{name}"}
    if deleting:
        meta["deletionTimestamp"] = format_time(T0)
    return {"metadata": meta, "spec": {"nodeName": node_name, "tolerations": tolerations or []},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": ready},
                                                          {"type": "ContainersReady", "status": ready}]}}


def taint(key: str, effect: str = NO_EXECUTE, added: datetime = T0, value: str | None = None) -> Obj:
    out = {"key": key, "effect": effect, "timeAdded": format_time(added)}
    if value is not None:
        out["value"] = value
    return out


def seen(*names: str, at: datetime = T0) -> dict[str, datetime]:
    return {n: at for n in names}


def changes_for(nodes: list[Obj], pods: list[Obj], now: datetime, last_seen: dict[str, datetime] | None = None,
                config: LifecycleConfig = CONFIG, act_on: frozenset[str] | None = None):
    names = [n["metadata"]["name"] for n in nodes]
    return calculate_changes(Snapshot(nodes, pods, last_seen if last_seen is not None else seen(*names, at=now),
                                      act_on=act_on), now, config)


def by_node(changes) -> dict[str, Any]:
    return {c.name: c for c in changes.nodes}


def keys(taints: list[Obj] | None) -> set[tuple[str, str]]:
    return {(t["key"], t["effect"]) for t in taints or []}


# ---- L1 ---------------------------------------------------------------------------------------

def test_l1_silent_node_goes_unknown_after_the_grace_period_and_not_before() -> None:
    nodes = [node("n1"), node("n2")]
    early = changes_for(nodes, [], T0 + timedelta(seconds=39), seen("n1", "n2"))
    assert "n1" not in {c.name for c in early.nodes if c.conditions}
    assert early.next_check == T0 + timedelta(seconds=40)
    late = changes_for(nodes, [], T0 + timedelta(seconds=40), {"n1": T0, "n2": T0 + timedelta(seconds=39)})
    change = by_node(late)["n1"]
    ready = next(c for c in change.conditions if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")
    assert ready["lastTransitionTime"] == format_time(T0 + timedelta(seconds=40))
    assert ready["lastHeartbeatTime"] == format_time(T0)  # untouched: the agent's last word
    assert change.went_unknown and "n2" not in by_node(late)


def test_l1_an_agent_reporting_not_ready_is_a_live_agent_and_a_node_never_heard_from_gets_never_updated() -> None:
    reported_false = changes_for([node("n1", "False")], [], T0 + timedelta(seconds=10), seen("n1"))
    assert not any(c.conditions for c in reported_false.nodes)
    bare = {"metadata": {"name": "n2"}, "spec": {}, "status": {}}
    change = by_node(changes_for([bare, node("n1")], [], T0 + timedelta(seconds=41), seen("n1", "n2")))["n2"]
    ready = next(c for c in change.conditions if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("Unknown", "NodeStatusNeverUpdated")


# ---- L3 / L4: taints ----------------------------------------------------------------------------

def test_l3_l4_unknown_node_gets_unreachable_noschedule_and_noexecute_false_gets_not_ready() -> None:
    now = T0 + timedelta(seconds=5)
    out = by_node(changes_for([node("n1", "Unknown"), node("n2", "False"), node("n3")], [], now))
    assert keys(out["n1"].taints) == {(UNREACHABLE, NO_SCHEDULE), (UNREACHABLE, NO_EXECUTE)}
    assert keys(out["n2"].taints) == {(NOT_READY, NO_SCHEDULE), (NOT_READY, NO_EXECUTE)} or \
        keys(out["n2"].taints) == {(NOT_READY, NO_SCHEDULE)}  # the zone's one slot may have gone to n1
    assert all(t["timeAdded"] == format_time(now) for t in out["n1"].taints)
    assert "n3" not in out


def test_l3_taints_go_when_the_node_is_ready_again_and_user_taints_stay() -> None:
    mine = {"key": "dedicated", "value": "db", "effect": NO_SCHEDULE}
    back = node("n1", taints=[taint(UNREACHABLE, NO_SCHEDULE), taint(UNREACHABLE), mine])
    out = by_node(changes_for([back, node("n2")], [], T0 + timedelta(seconds=60)))
    assert out["n1"].taints == [mine]


def test_l3_unschedulable_node_gets_the_unschedulable_taint() -> None:
    out = by_node(changes_for([node("n1", unschedulable=True)], [], T0))
    assert keys(out["n1"].taints) == {(UNSCHEDULABLE, NO_SCHEDULE)}


def test_l4_swapping_not_ready_for_unreachable_is_immediate_and_keeps_no_stale_twin() -> None:
    was_false = node("n1", "Unknown", taints=[taint(NOT_READY, NO_SCHEDULE), taint(NOT_READY)])
    other_recent = node("n2", "Unknown", taints=[taint(UNREACHABLE, added=T0 + timedelta(seconds=9))])
    out = by_node(changes_for([was_false, other_recent, node("n3"), node("n4")], [], T0 + timedelta(seconds=10),
                              act_on=frozenset({"n1"})))
    assert keys(out["n1"].taints) == {(UNREACHABLE, NO_SCHEDULE), (UNREACHABLE, NO_EXECUTE)}


def test_l4_zone_rate_limit_one_node_per_period_from_the_newest_time_added() -> None:
    tainted = node("n1", "Unknown", zone="a", taints=[taint(UNREACHABLE, NO_SCHEDULE), taint(UNREACHABLE)])
    waiting = node("n2", "Unknown", zone="a", since=T0 + timedelta(seconds=1))
    healthy = [node(f"h{i}", zone="a") for i in range(3)]
    soon = changes_for([tainted, waiting, *healthy], [], T0 + timedelta(seconds=5), act_on=frozenset({"n2"}))
    assert keys(by_node(soon)["n2"].taints) == {(UNREACHABLE, NO_SCHEDULE)}
    assert soon.next_check == T0 + timedelta(seconds=10)
    later = changes_for([tainted, waiting, *healthy], [], T0 + timedelta(seconds=10), act_on=frozenset({"n2"}))
    assert (UNREACHABLE, NO_EXECUTE) in keys(by_node(later)["n2"].taints)
    # Another zone has its own limiter.
    elsewhere = node("n3", "Unknown", zone="b")
    other = changes_for([tainted, waiting, *healthy, elsewhere, node("h9", zone="b")], [], T0 + timedelta(seconds=5),
                        act_on=frozenset({"n3"}))
    assert (UNREACHABLE, NO_EXECUTE) in keys(by_node(other)["n3"].taints)


def test_l4_zone_states_and_rates_follow_kubernetes() -> None:
    assert zone_state(0, 1, 0.55) == FULL_DISRUPTION
    assert zone_state(1, 2, 0.55) == NORMAL  # two not Ready never make a disruption
    assert zone_state(2, 3, 0.55) == PARTIAL_DISRUPTION
    assert zone_state(3, 3, 0.55) == NORMAL  # 50% < 55%
    assert eviction_rate(NORMAL, 5, False, CONFIG) == 0.1
    assert eviction_rate(PARTIAL_DISRUPTION, 50, False, CONFIG) == 0.0  # small zones stop
    assert eviction_rate(PARTIAL_DISRUPTION, 51, False, CONFIG) == 0.01
    assert eviction_rate(FULL_DISRUPTION, 3, False, CONFIG) == 0.1  # other zones are healthy
    assert eviction_rate(FULL_DISRUPTION, 3, True, CONFIG) == 0.0


def test_l4_every_zone_fully_disrupted_means_no_noexecute_taint_and_existing_ones_go() -> None:
    lone = node("n1", "Unknown", taints=[taint(UNREACHABLE, NO_SCHEDULE), taint(UNREACHABLE)])
    out = changes_for([lone, node("n2", "Unknown")], [pod("p", "n1")], T0 + timedelta(seconds=1000))
    assert out.all_disrupted
    assert keys(by_node(out)["n1"].taints) == {(UNREACHABLE, NO_SCHEDULE)}
    assert keys(by_node(out)["n2"].taints) == {(UNREACHABLE, NO_SCHEDULE)}
    assert [a.kind for a in out.pods] == ["mark-not-ready"]  # readiness still follows the node; no eviction


def test_l4_partially_disrupted_small_zone_stops_tainting() -> None:
    nodes = [node(f"d{i}", "Unknown", zone="a") for i in range(3)] + [node("h0", zone="a"), node("h1", zone="a")]
    out = changes_for(nodes, [], T0 + timedelta(seconds=5))
    assert all((UNREACHABLE, NO_EXECUTE) not in keys(c.taints) for c in out.nodes)


# ---- L2 ------------------------------------------------------------------------------------------

def test_l2_pods_on_a_not_ready_node_are_marked_once_per_episode() -> None:
    nodes = [node("n1", "Unknown", since=T0), node("n2")]
    pods = [pod("a", "n1"), pod("b", "n1", ready="False"), pod("c", "n2")]
    out = changes_for(nodes, pods, T0)
    marks = [a for a in out.pods if a.kind == "mark-not-ready"]
    assert [(a.name, a.episode) for a in marks] == [("a", format_time(T0))]
    again = calculate_changes(Snapshot(nodes, pods, seen("n1", "n2", at=T0), marked=frozenset({("uid-a", format_time(T0))})),
                              T0, CONFIG)
    assert not [a for a in again.pods if a.kind == "mark-not-ready"]


# ---- L5 ------------------------------------------------------------------------------------------

def test_l5_untolerated_noexecute_evicts_now_seconds_wait_forever_stays() -> None:
    t = T0 + timedelta(seconds=1)
    tainted = node("n1", "Unknown", taints=[taint(UNREACHABLE, NO_SCHEDULE), taint(UNREACHABLE, added=T0)])
    pods = [
        pod("bare", "n1"),
        pod("two", "n1", tolerations=[{"key": UNREACHABLE, "operator": "Exists", "effect": NO_EXECUTE, "tolerationSeconds": 2}]),
        pod("ever", "n1", tolerations=[{"key": UNREACHABLE, "operator": "Exists", "effect": NO_EXECUTE}]),
        pod("all", "n1", tolerations=[{"operator": "Exists"}]),
    ]
    out = changes_for([tainted, node("n2")], pods, t)
    assert {a.name for a in out.pods if a.kind == "evict"} == {"bare"}
    assert out.pending == {"uid-two": ("default", "two", T0 + timedelta(seconds=2))}
    assert out.next_check == T0 + timedelta(seconds=2)
    due = changes_for([tainted, node("n2")], pods, T0 + timedelta(seconds=2))
    assert {a.name for a in due.pods if a.kind == "evict"} == {"bare", "two"}


def test_l5_first_matching_toleration_decides_and_the_smallest_seconds_win() -> None:
    taints = [taint(UNREACHABLE, added=T0), taint("custom", added=T0 + timedelta(seconds=10))]
    forever_first = pod("p", "n1", tolerations=[{"operator": "Exists"},
                                                {"key": UNREACHABLE, "operator": "Exists", "tolerationSeconds": 1}])
    assert eviction_due(forever_first, taints, T0) is None
    two = pod("q", "n1", tolerations=[{"key": UNREACHABLE, "operator": "Exists", "tolerationSeconds": 30},
                                      {"key": "custom", "operator": "Exists", "tolerationSeconds": 5}])
    assert eviction_due(two, taints, T0) == T0 + timedelta(seconds=15)
    negative = pod("r", "n1", tolerations=[{"operator": "Exists", "tolerationSeconds": -5}])
    assert eviction_due(negative, taints, T0 + timedelta(seconds=3)) == T0


def test_l5_taint_without_time_added_is_stamped_and_counted_from_now() -> None:
    user = {"key": "maintenance", "effect": NO_EXECUTE}
    now = T0 + timedelta(seconds=7)
    out = by_node(changes_for([node("n1", taints=[user])], [], now))
    assert out["n1"].taints == [{**user, "timeAdded": format_time(now)}]


# ---- L6 ------------------------------------------------------------------------------------------

def test_l6_out_of_service_not_ready_node_force_deletes_what_it_evicts_and_what_is_terminating() -> None:
    oos = taint(OUT_OF_SERVICE, added=T0, value="nodeshutdown")
    down = node("n1", "Unknown", taints=[oos])
    pods = [pod("run", "n1"), pod("gone", "n1", deleting=True),
            pod("tol", "n1", tolerations=[{"key": OUT_OF_SERVICE, "operator": "Exists", "effect": NO_EXECUTE},
                                          {"key": UNREACHABLE, "operator": "Exists", "effect": NO_EXECUTE}])]
    out = changes_for([down, node("n2")], pods, T0 + timedelta(seconds=1))
    actions = {(a.kind, a.name, a.force) for a in out.pods if a.kind != "mark-not-ready"}
    assert actions == {("evict", "run", True), ("force-delete", "gone", False)}
    # On a Ready node the taint only evicts, gracefully: its agent stops the pods.
    up = changes_for([node("n1", taints=[oos]), node("n2")], pods, T0 + timedelta(seconds=1))
    assert {(a.kind, a.name, a.force) for a in up.pods} == {("evict", "run", False)}


# ---- L7 and the shared toleration rules ---------------------------------------------------------

def test_l7_default_toleration_seconds_added_unless_already_tolerated() -> None:
    spec = with_default_toleration_seconds({"containers": []}, 300, 120)
    assert spec["tolerations"] == [
        {"key": NOT_READY, "operator": "Exists", "effect": NO_EXECUTE, "tolerationSeconds": 300},
        {"key": UNREACHABLE, "operator": "Exists", "effect": NO_EXECUTE, "tolerationSeconds": 120},
    ]
    everything = {"tolerations": [{"operator": "Exists"}]}
    assert with_default_toleration_seconds(everything) is everything
    only_unreachable = {"tolerations": [{"key": UNREACHABLE, "operator": "Exists"}]}
    assert [t["key"] for t in with_default_toleration_seconds(only_unreachable)["tolerations"]] == [UNREACHABLE, NOT_READY]
    noschedule = {"tolerations": [{"key": NOT_READY, "operator": "Exists", "effect": NO_SCHEDULE}]}
    assert len(with_default_toleration_seconds(noschedule)["tolerations"]) == 3  # NoSchedule is not NoExecute


def test_daemon_pods_tolerate_node_problems_forever() -> None:
    spec = with_daemon_tolerations({"tolerations": [{"key": NOT_READY, "operator": "Exists", "effect": NO_EXECUTE,
                                                     "tolerationSeconds": 300}]})
    assert {"key": NOT_READY, "operator": "Exists", "effect": NO_EXECUTE} in spec["tolerations"]
    assert not any(t.get("tolerationSeconds") for t in spec["tolerations"])
    assert tolerates_all(spec["tolerations"], [taint(UNREACHABLE), taint(UNSCHEDULABLE, NO_SCHEDULE)])


def test_toleration_matching_is_kubernetes_tolerates_taint() -> None:
    t = {"key": "k", "value": "v", "effect": NO_SCHEDULE}
    assert tolerates({"key": "k", "operator": "Equal", "value": "v"}, t)
    assert tolerates({"key": "k", "value": "v"}, t)  # Equal is the default operator
    assert not tolerates({"key": "k", "value": "w"}, t)
    assert tolerates({"key": "k", "operator": "Exists", "effect": NO_SCHEDULE}, t)
    assert not tolerates({"key": "k", "operator": "Exists", "effect": NO_EXECUTE}, t)
    assert tolerates({"operator": "Exists"}, t)
    assert not tolerates({"key": "other", "operator": "Exists"}, t)
    # PreferNoSchedule never keeps a pod off a node.
    assert tolerates_all([], [{"key": "soft", "effect": "PreferNoSchedule"}])


# ---- properties ----------------------------------------------------------------------------------

_statuses = st.sampled_from(["True", "False", "Unknown"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_statuses, st.sampled_from(["", "a", "b"]), st.booleans()), min_size=1, max_size=8),
       st.integers(min_value=0, max_value=120))
def test_l3_l4_properties_converge_and_are_idempotent(specs: list[tuple[str, str, bool]], offset: int) -> None:
    """Applying the changes and deciding again changes nothing more at the same moment (safe to run twice),
    a Ready node never keeps a controller taint, and every not-Ready node has its NoSchedule taint."""
    now = T0 + timedelta(seconds=offset)
    nodes = [node(f"n{i}", status, zone=zone, unschedulable=cordoned) for i, (status, zone, cordoned) in enumerate(specs)]
    last_seen = seen(*[n["metadata"]["name"] for n in nodes], at=now)
    for _round in range(2):
        out = calculate_changes(Snapshot(nodes, [], last_seen), now, CONFIG)
        for change in out.nodes:
            target = next(n for n in nodes if n["metadata"]["name"] == change.name)
            if change.taints is not None:
                target["spec"]["taints"] = change.taints
    assert not calculate_changes(Snapshot(nodes, [], last_seen), now, CONFIG).nodes
    for n in nodes:
        ready = n["status"]["conditions"][0]["status"]
        have = keys(n["spec"].get("taints"))
        if ready == "True":
            assert not have & {(NOT_READY, NO_EXECUTE), (UNREACHABLE, NO_EXECUTE), (NOT_READY, NO_SCHEDULE),
                               (UNREACHABLE, NO_SCHEDULE)}
        else:
            assert ({"False": NOT_READY, "Unknown": UNREACHABLE}[ready], NO_SCHEDULE) in have
        assert ((UNSCHEDULABLE, NO_SCHEDULE) in have) == bool(n["spec"].get("unschedulable"))
    # At most one NoExecute taint per zone was added at this one moment (rate 0.1/s, burst 1).
    for zone in {z for _, z, _ in specs}:
        fresh = [n for n in nodes if n["metadata"]["labels"].get("topology.kubernetes.io/zone", "") == zone
                 and any(t["effect"] == NO_EXECUTE for t in n["spec"].get("taints") or [])]
        assert len(fresh) <= 1


def test_l4_node_still_registering_gets_no_taint_and_excluded_nodes_only_leave_the_zone_counts() -> None:
    bare = {"metadata": {"name": "new"}, "spec": {}, "status": {}}
    out = changes_for([bare, node("n1")], [], T0)
    assert "new" not in by_node(out)
    # Two Ready nodes excluded from disruption checks: the zone is one down node, fully disrupted, and so
    # is every zone, so the down node gets no NoExecute taint; the excluded down node neither.
    excluded = [node(f"x{i}") for i in range(2)] + [node("xd", "Unknown")]
    for n in excluded:
        n["metadata"]["labels"]["node.kubernetes.io/exclude-disruption"] = ""
    out = changes_for([*excluded, node("d", "Unknown")], [], T0 + timedelta(seconds=1))
    assert out.all_disrupted and (UNREACHABLE, NO_EXECUTE) not in keys(by_node(out)["d"].taints)
    # With a Ready node counted, the excluded down node is tainted like any other.
    out = changes_for([*excluded, node("h")], [], T0 + timedelta(seconds=1))
    assert (UNREACHABLE, NO_EXECUTE) in keys(by_node(out)["xd"].taints)


def test_l8_pods_of_a_deleted_node_are_collected_after_the_quarantine_and_not_before() -> None:
    quarantine = timedelta(seconds=40)
    pods = [pod("a", "gone"), pod("b", "gone"), pod("elsewhere", "n2"), pod("never-started", "gone")]
    for taken in pods[:3]:
        taken["metadata"]["finalizers"] = ["stowage.io/node-agent"]
    early = orphan_changes("gone", pods, T0, T0 + timedelta(seconds=39), quarantine)
    assert early.pods == [] and early.next_check == T0 + quarantine
    due = orphan_changes("gone", pods, T0, T0 + quarantine, quarantine)
    assert [(a.kind, a.name, a.node) for a in due.pods] == [("orphan", "a", "gone"), ("orphan", "b", "gone")]
    assert due.next_check is None
    nothing = orphan_changes("gone", [pods[2], pods[3]], T0, T0 + quarantine, quarantine)
    assert nothing.pods == [] and nothing.next_check is None  # no agent took it: no timer either
