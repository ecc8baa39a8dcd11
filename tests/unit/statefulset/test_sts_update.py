"""S2-S5, S7: the pure decision of the StatefulSet controller, stepped through an in-memory world."""
from __future__ import annotations

from statefulset import update as u
from sts_world import World, created_pods, deleted_pods, kinds, make_set


def image_of(w: World, name: str) -> str:
    return w.pods[name]["spec"]["containers"][0]["image"]


def test_s2_ordered_ready_creates_one_at_a_time_claims_first():
    w = World(make_set(replicas=3))
    actions = w.step()
    assert kinds(actions)[:3] == ["CreateRevision", "CreateClaim", "CreatePod"]
    assert created_pods(actions) == ["web-0"]
    assert created_pods(w.step()) == []  # web-0 not Running and Ready yet
    w.ready("web-0")
    assert created_pods(w.step()) == ["web-1"]
    w.unready("web-1")
    assert created_pods(w.step()) == []
    w.ready("web-1")
    assert created_pods(w.step()) == ["web-2"]
    w.ready("web-2")
    w.step()
    st = w.sts["status"]
    assert (st["replicas"], st["readyReplicas"], st["currentReplicas"], st["updatedReplicas"]) == (3, 3, 3, 3)
    assert st["currentRevision"] == st["updateRevision"] and st["observedGeneration"] == 1


def test_s2_min_ready_seconds_gates_the_next_member_and_requeues():
    w = World(make_set(replicas=2, min_ready=30))
    w.step()
    w.ready("web-0")
    actions = w.step()
    assert created_pods(actions) == []
    assert [a.seconds for a in actions if isinstance(a, u.RequeueAfter)] == [30]
    w.tick(30)
    assert created_pods(w.step()) == ["web-1"]


def test_s2_scale_down_highest_first_one_at_a_time():
    w = World(make_set(replicas=3))
    w.converge()
    w.set_spec(replicas=1)
    assert deleted_pods(w.step()) == ["web-2"]
    assert deleted_pods(w.step()) == ["web-1"]
    assert deleted_pods(w.step()) == []
    assert sorted(w.pods) == ["web-0"]


def test_s2_scale_down_waits_for_terminating_member_to_be_gone():
    w = World(make_set(replicas=3))
    w.converge()
    w.set_spec(replicas=1)
    w.pods["web-2"]["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert deleted_pods(w.changes()) == []


def test_s2_scale_down_waits_while_a_remaining_member_is_unhealthy():
    w = World(make_set(replicas=3))
    w.converge()
    w.set_spec(replicas=2)
    w.unready("web-0")
    actions = w.step()
    assert deleted_pods(actions) == []
    assert "web-0" in w.sts["status"]["conditions"][0]["message"]


def test_s2_failed_member_recreated_with_same_name_and_claims():
    w = World(make_set(replicas=2))
    w.converge()
    claims_before = {n: c["metadata"]["uid"] for n, c in w.claims.items()}
    w.fail("web-1")
    actions = w.step()
    assert [(a.name, a.reason) for a in actions if isinstance(a, u.DeletePod)] == [("web-1", "failed")]
    assert created_pods(w.step()) == ["web-1"]
    assert {n: c["metadata"]["uid"] for n, c in w.claims.items()} == claims_before
    assert w.pods["web-1"]["spec"]["volumes"][-1]["persistentVolumeClaim"]["claimName"] == "www-web-1"


def test_s2_succeeded_member_is_recreated_too():
    w = World(make_set(replicas=1))
    w.converge()
    w.set_phase("web-0", "Succeeded", False)
    assert [a.reason for a in w.step() if isinstance(a, u.DeletePod)] == ["succeeded"]


def test_s3_parallel_creates_and_deletes_all_at_once():
    w = World(make_set(replicas=3, policy="Parallel"))
    assert created_pods(w.step()) == ["web-0", "web-1", "web-2"]
    w.set_spec(replicas=0)
    assert deleted_pods(w.step()) == ["web-2", "web-1", "web-0"]


def test_s4_rolling_update_highest_ordinal_first_waiting_for_health():
    w = World(make_set(replicas=3))
    w.converge()
    old = w.sts["status"]["currentRevision"]
    w.set_image("nginx:2")
    assert deleted_pods(w.step()) == ["web-2"]
    assert created_pods(w.step()) == ["web-2"]
    assert image_of(w, "web-2") == "nginx:2"
    assert deleted_pods(w.step()) == []  # web-2 not Ready yet
    w.ready("web-2")
    assert deleted_pods(w.step()) == ["web-1"]
    st = w.sts["status"]
    assert st["currentRevision"] == old and st["updateRevision"] != old
    w.converge()
    assert [image_of(w, n) for n in ("web-0", "web-1", "web-2")] == ["nginx:2"] * 3
    assert w.sts["status"]["currentRevision"] == w.sts["status"]["updateRevision"]


def test_s4_partition_keeps_lower_ordinals_at_old_revision_even_when_recreated():
    w = World(make_set(replicas=3, strategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}))
    w.converge()
    w.set_image("nginx:2")
    w.converge()
    assert [image_of(w, n) for n in ("web-0", "web-1", "web-2")] == ["nginx:1", "nginx:1", "nginx:2"]
    w.fail("web-0")
    w.converge()
    assert image_of(w, "web-0") == "nginx:1"
    st = w.sts["status"]
    assert st["updatedReplicas"] == 1 and st["currentReplicas"] == 2


def test_s4_max_unavailable_rounds_down_min_one_and_rolls_in_parallel():
    sts = make_set(replicas=4, strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "60%"}})
    assert u.max_unavailable(sts) == 2
    sts["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] = "10%"
    assert u.max_unavailable(sts) == 1
    sts["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] = 2
    w = World(sts)
    w.converge()
    w.set_image("nginx:2")
    assert deleted_pods(w.step()) == ["web-3", "web-2"]


def test_s4_on_delete_updates_only_deleted_members():
    w = World(make_set(replicas=2, strategy={"type": "OnDelete"}))
    w.converge()
    w.set_image("nginx:2")
    w.converge()
    assert [image_of(w, n) for n in ("web-0", "web-1")] == ["nginx:1", "nginx:1"]
    del w.pods["web-0"]
    w.converge()
    assert [image_of(w, n) for n in ("web-0", "web-1")] == ["nginx:2", "nginx:1"]


def test_s5_retain_keeps_claims_on_scale_down():
    w = World(make_set(replicas=3))
    w.converge()
    w.set_spec(replicas=1)
    w.converge()
    assert sorted(w.claims) == ["www-web-0", "www-web-1", "www-web-2"]
    assert not [a for a in w.log if isinstance(a, u.DeleteClaim)]


def test_s5_when_scaled_delete_removes_claims_of_removed_members_after_pod_is_gone():
    w = World(make_set(replicas=3, retention={"whenScaled": "Delete", "whenDeleted": "Retain"}))
    w.converge()
    w.set_spec(replicas=2)
    actions = w.step()
    assert deleted_pods(actions) == ["web-2"]
    # the claim gets the pod as owner (so a garbage collector would remove it too) ...
    assert [a.claim["metadata"]["ownerReferences"][0]["name"] for a in actions if isinstance(a, u.UpdateClaim)] == ["web-2"]
    # ... and is deleted once the pod is gone
    assert [a.name for a in w.step() if isinstance(a, u.DeleteClaim)] == ["www-web-2"]
    assert sorted(w.claims) == ["www-web-0", "www-web-1"]


def test_s5_scale_up_reuses_existing_claims():
    w = World(make_set(replicas=2))
    w.converge()
    w.set_spec(replicas=1)
    w.converge()
    uid = w.claims["www-web-1"]["metadata"]["uid"]
    w.set_spec(replicas=2)
    w.converge()
    assert w.claims["www-web-1"]["metadata"]["uid"] == uid


def test_s5_waits_while_a_claim_of_the_member_is_being_deleted():
    w = World(make_set(replicas=1))
    w.step()
    w.pods.clear()
    w.claims["www-web-0"]["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert created_pods(w.changes()) == []


def test_s7_blocked_rollout_names_the_member_and_reason_then_recovers():
    w = World(make_set(replicas=3))
    w.step()
    w.ready("web-0")
    w.step()
    w.unready("web-1")
    w.step()
    (cond,) = w.sts["status"]["conditions"]
    assert cond["type"] == u.BLOCKED_CONDITION
    assert cond["message"] == "Waiting for pod web-1 to be Running and Ready: readiness probe failing"
    assert u.describe_blocker(w.sts, list(w.pods.values()), w.now) == cond["message"]
    w.ready("web-1")
    assert created_pods(w.step()) == ["web-2"]
    assert "conditions" not in w.sts["status"]


def test_s7_blocker_reports_unscheduled_pod():
    w = World(make_set(replicas=2))
    w.step()
    w.pods["web-0"]["status"] = {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "message": "0/1 nodes are available"}]}
    assert u.describe_blocker(w.sts, list(w.pods.values()), w.now) == (
        "Waiting for pod web-0 to be Running and Ready: pod is not scheduled: 0/1 nodes are available")


def test_s3_parallel_has_no_blocker():
    w = World(make_set(replicas=2, policy="Parallel"))
    w.step()
    assert u.describe_blocker(w.sts, list(w.pods.values()), w.now) is None


def test_s1_identity_repaired_when_labels_are_removed():
    w = World(make_set(replicas=1))
    w.converge()
    del w.pods["web-0"]["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"]
    actions = w.step()
    (fix,) = [a for a in actions if isinstance(a, u.UpdatePod)]
    assert fix.pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] == "web-0"


def test_s1_start_ordinal_is_honoured():
    w = World(make_set(replicas=2, start=3))
    w.converge()
    assert sorted(w.pods) == ["web-3", "web-4"]
    assert sorted(w.claims) == ["www-web-3", "www-web-4"]


def test_deleting_set_only_updates_status():
    w = World(make_set(replicas=2))
    w.step()
    w.sts["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert set(kinds(w.changes())) <= {"UpdateStatus", "RequeueAfter"}


def test_status_is_not_rewritten_when_unchanged():
    w = World(make_set(replicas=1))
    w.converge()
    assert w.changes() == []


def test_s8_parallel_rollout_replaces_unready_old_members_so_a_reverted_template_heals():
    """S8: under Parallel a member that is not Ready and runs an old revision is replaced at once
    (it is unavailable already); reverting a template that never became Ready heals the set."""
    w = World(make_set(replicas=3, policy="Parallel"))
    w.converge()
    w.set_image("broken:1")
    assert deleted_pods(w.step()) == ["web-2"]
    assert created_pods(w.step()) == ["web-2"]
    w.unready("web-2")  # the new image never becomes Ready: the rollout stops there (maxUnavailable 1)
    assert deleted_pods(w.step()) == []
    assert image_of(w, "web-2") == "broken:1"
    w.set_image("nginx:1")  # revert
    assert deleted_pods(w.step()) == ["web-2"]
    w.converge()
    assert [image_of(w, n) for n in ("web-0", "web-1", "web-2")] == ["nginx:1"] * 3
    st = w.sts["status"]
    assert st["currentRevision"] == st["updateRevision"] and st["readyReplicas"] == 3


def test_s8_parallel_replaces_every_unready_old_member_and_healthy_ones_within_the_budget():
    w = World(make_set(replicas=4, policy="Parallel"))
    w.converge()
    w.unready("web-1")
    w.unready("web-3")
    w.set_image("nginx:2")
    # Both unready old members go at once; no healthy one, since two are unavailable already.
    assert deleted_pods(w.step()) == ["web-3", "web-1"]


def test_s7_ordered_ready_still_waits_on_an_unready_old_member_after_a_revert():
    w = World(make_set(replicas=3))
    w.converge()
    w.set_image("broken:1")
    assert deleted_pods(w.step()) == ["web-2"]
    w.step()
    w.unready("web-2")
    w.set_image("nginx:1")
    assert deleted_pods(w.step()) == []
    assert w.sts["status"]["conditions"][0]["message"].startswith("Waiting for pod web-2 to be Running and Ready")
