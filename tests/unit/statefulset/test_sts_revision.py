"""S4: ControllerRevisions, history limit and rollback."""
from __future__ import annotations

import copy

import pytest

from statefulset import revision as rv
from sts_world import World, make_set


def test_s4_revision_name_hash_label_and_patch_data():
    sts = make_set()
    r = rv.new_revision(sts, 1)
    digest = r["metadata"]["labels"]["controller-revision-hash"]
    assert r["metadata"]["name"] == f"web-{digest}"
    assert r["revision"] == 1
    assert r["data"]["spec"]["template"]["$patch"] == "replace"
    assert rv.template_of(r) == sts["spec"]["template"]
    assert r["metadata"]["ownerReferences"][0]["controller"] is True
    # Same template, same name; another template, another name; collisions perturb it.
    assert rv.new_revision(copy.deepcopy(sts), 7)["metadata"]["name"] == r["metadata"]["name"]
    other = make_set(image="nginx:2")
    assert rv.new_revision(other, 1)["metadata"]["name"] != r["metadata"]["name"]
    assert rv.revision_hash(r["data"], 1) != digest


def test_s4_plan_creates_then_reuses_the_update_revision():
    sts = make_set()
    plan = rv.plan_revisions(sts, [])
    assert plan.create is not None and plan.renumber is None
    again = rv.plan_revisions(sts, [plan.create])
    assert again.create is None and again.update_revision["metadata"]["name"] == plan.create["metadata"]["name"]


def test_s4_rollback_renumbers_the_old_revision():
    w = World(make_set(replicas=1))
    w.converge()
    first = w.sts["status"]["updateRevision"]
    w.set_image("nginx:2")
    w.converge()
    second = w.sts["status"]["updateRevision"]
    assert [w.revisions[n]["revision"] for n in (first, second)] == [1, 2]
    patch = rv.undo_patch(w.sts, list(w.revisions.values()))
    w.sts["spec"]["template"] = rv.template_of({"data": patch})
    w.converge()
    assert w.sts["status"]["updateRevision"] == first
    assert w.revisions[first]["revision"] == 3
    assert len(w.revisions) == 2


def test_s4_undo_to_revision_and_errors():
    w = World(make_set(replicas=1))
    for image in ("a", "b", "c"):
        w.set_image(image)
        w.converge()
    revs = list(w.revisions.values())
    patch = rv.undo_patch(w.sts, revs, to_revision=1)
    assert patch["spec"]["template"]["spec"]["containers"][0]["image"] == "a"
    with pytest.raises(ValueError, match="revision 9"):
        rv.undo_patch(w.sts, revs, to_revision=9)
    with pytest.raises(ValueError, match="no rollout history"):
        rv.undo_patch(w.sts, revs[:1])


def test_s4_history_limit_keeps_live_revisions():
    w = World(make_set(replicas=2, history=1))
    for image in ("a", "b", "c", "d"):
        w.set_image(image)
        w.converge()
    # current == update after convergence; one older revision kept.
    assert len(w.revisions) == 2
    names = sorted(w.revisions.values(), key=lambda r: r["revision"])
    assert rv.template_of(names[-1])["spec"]["containers"][0]["image"] == "d"
    assert rv.template_of(names[0])["spec"]["containers"][0]["image"] == "c"


def test_s4_history_never_deletes_revisions_pods_still_run():
    sts = make_set(history=0)
    revs = [rv.new_revision(make_set(image=str(n)), n) for n in range(1, 5)]
    pods = [{"metadata": {"name": "web-0", "labels": {"controller-revision-hash": revs[0]["metadata"]["name"]}}}]
    doomed = rv.revisions_to_delete(sts, pods, revs, revs[2]["metadata"]["name"], revs[3]["metadata"]["name"])
    assert [r["revision"] for r in doomed] == [2]
