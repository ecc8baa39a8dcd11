"""Property tests: random readiness, failures, deletions, scaling and template changes never break S2/S5."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from statefulset import health, identity
from statefulset import update as u
from sts_world import World, make_set

OPS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["ready", "unready", "fail", "delete", "terminate"]), st.integers(0, 5)),
        st.tuples(st.just("scale"), st.integers(0, 5)),
        st.tuples(st.just("image"), st.integers(0, 2)),
        st.tuples(st.just("tick"), st.integers(0, 20)),
        st.tuples(st.just("step"), st.just(0)),
    ),
    max_size=60,
)


def _check_step(w: World, actions: list[u.Action], monotonic: bool, when_scaled: str) -> None:
    before = dict(w.pods)
    created = [a for a in actions if isinstance(a, u.CreatePod)]
    names = [a.pod["metadata"]["name"] for a in created]
    assert len(names) == len(set(names)), "two pods for one ordinal in one pass"
    deleted_now = {a.name for a in actions if isinstance(a, u.DeletePod)}
    for name in names:
        assert name not in before or name in deleted_now, f"{name} created while it exists"
    wanted = identity.ordinal_range(w.sts)
    for a in actions:
        if isinstance(a, u.DeleteClaim):
            assert when_scaled == "Delete", "claim deleted under Retain"
            ordinal = int(a.name.rsplit("-", 1)[1])
            assert ordinal not in wanted, "claim of a wanted member deleted"
            assert f"web-{ordinal}" not in before, "claim deleted while its pod exists"
    if not monotonic:
        return
    min_ready = health.min_ready_seconds(w.sts)
    assert len(created) <= 1
    for a in created:
        for lower in range(wanted.start, a.ordinal):
            pod = before.get(f"web-{lower}")
            assert pod is not None, f"web-{a.ordinal} created before web-{lower}"
            assert health.is_running_and_available(pod, min_ready, w.now) and not health.is_terminating(pod)
    scale_downs = [a for a in actions if isinstance(a, u.DeletePod) and a.reason == "scale-down"]
    assert len(scale_downs) <= 1
    for a in scale_downs:
        ordinal = identity.ordinal_of({"metadata": {"name": a.name}})
        assert all(identity.ordinal_of(p) <= ordinal for p in before.values()), "not the highest ordinal"
        assert all(health.is_healthy(before[f"web-{o}"]) for o in wanted if f"web-{o}" in before)


def _run(ops: list[tuple[str, int]], sts: dict) -> None:
    w = World(sts)
    monotonic = sts["spec"]["podManagementPolicy"] != "Parallel"
    when_scaled = identity.retention_policy(sts)[1]
    for op, n in ops + [("step", 0)] * 3:
        name = f"web-{n}"
        if op == "step":
            actions = w.changes()
            _check_step(w, actions, monotonic, when_scaled)
            w.apply(actions)
        elif op == "scale":
            w.set_spec(replicas=n)
        elif op == "image":
            w.set_image(f"nginx:{n}")
        elif op == "tick":
            w.tick(n)
        elif name in w.pods:
            if op == "ready":
                w.ready(name)
            elif op == "unready":
                w.unready(name)
            elif op == "fail":
                w.fail(name)
            elif op == "delete":
                del w.pods[name]
            elif op == "terminate":
                w.pods[name]["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"


@settings(max_examples=150, deadline=None)
@given(ops=OPS, min_ready=st.sampled_from([0, 10]), when_scaled=st.sampled_from(["Retain", "Delete"]))
def test_s2_s5_ordered_ready_invariants_hold_under_random_events(ops, min_ready, when_scaled):
    _run(ops, make_set(replicas=3, min_ready=min_ready, retention={"whenScaled": when_scaled}))


@settings(max_examples=100, deadline=None)
@given(ops=OPS, partition=st.integers(0, 3))
def test_s3_s4_parallel_never_doubles_a_member_nor_deletes_retained_claims(ops, partition):
    _run(ops, make_set(replicas=3, policy="Parallel",
                       strategy={"type": "RollingUpdate", "rollingUpdate": {"partition": partition, "maxUnavailable": 2}}))


@settings(max_examples=100, deadline=None)
@given(ops=OPS)
def test_s4_on_delete_invariants(ops):
    _run(ops, make_set(replicas=2, strategy={"type": "OnDelete"}))
