"""Field ownership for server-side apply as pure functions (storage.api.managedfields); rules SSA1..SSA12."""
from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.api import managedfields as mf
from storage.api.models import MODELS
from storage.errors import ApplyConflict

DEPLOYMENT = MODELS["Deployment"]
CONFIG_MAP = MODELS["ConfigMap"]
POD = MODELS["Pod"]
KUBECTL = mf.Manager.applier("kubectl")
EDIT = mf.Manager.updater("kubectl-edit", "apps/v1")


def deployment(replicas: int = 2, labels: dict[str, str] | None = None, image: str = "nginx") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", **({"labels": labels} if labels else {})},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 80}]}]}},
        },
    }


def applied(config: dict[str, Any], live: dict[str, Any] | None = None, managed: mf.Managed | None = None,
            who: mf.Manager = KUBECTL, force: bool = False, now: str = "2026-01-01T00:00:00Z",
            scope: mf.Scope = "main", model: Any = DEPLOYMENT) -> tuple[dict[str, Any], mf.Managed]:
    return mf.apply(live or {}, config, model, managed or {}, who, config.get("apiVersion", "v1"), force=force,
                    now=now, scope=scope)


def test_ssa3_fields_v1_is_written_as_kubernetes_writes_it() -> None:
    fields = mf.field_set(deployment(labels={"app": "web"}), DEPLOYMENT, "main")
    tree = mf.to_fields_v1(fields)
    assert tree["f:metadata"] == {"f:labels": {"f:app": {}}}, "name and namespace are nobody's"
    spec = tree["f:spec"]
    assert spec["f:replicas"] == {} and spec["f:selector"] == {}, "a label selector is atomic: owned whole"
    container = spec["f:template"]["f:spec"]["f:containers"]['k:{"name":"app"}']
    assert list(container)[0] == ".", "a keyed element is itself owned, marked by '.' first"
    assert container["f:image"] == {} and container["f:name"] == {}
    # ports are keyed by (containerPort, protocol); the protocol the schema defaults completes the key
    assert container["f:ports"] == {'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}}
    assert mf.from_fields_v1(tree) == fields


def test_ssa3_sets_and_free_form_maps() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "finalizers": ["a/b"],
                                                            "annotations": {"x": "1"}},
           "spec": {"containers": [{"name": "c", "image": "i", "args": ["1", "2"]}]}}
    tree = mf.to_fields_v1(mf.field_set(pod, POD, "main"))
    assert tree["f:metadata"] == {"f:annotations": {"f:x": {}}, "f:finalizers": {'v:"a/b"': {}}}
    assert tree["f:spec"]["f:containers"]['k:{"name":"c"}']["f:args"] == {}, "a plain list is atomic"


def test_ssa3_managed_fields_round_trip_in_kubernetes_order() -> None:
    managed = {
        EDIT: mf.Owned(frozenset({("f:spec", "f:replicas")}), "apps/v1", "2026-01-02T00:00:00Z"),
        KUBECTL: mf.Owned(frozenset({("f:metadata", "f:labels", "f:app")}), "apps/v1", "2026-01-03T00:00:00Z"),
        mf.Manager.updater("kubectl", "apps/v1", "scale"):
            mf.Owned(frozenset({("f:spec", "f:paused")}), "apps/v1", "2026-01-01T00:00:00Z"),
    }
    entries = mf.encode_managed(managed)
    assert [(e["manager"], e["operation"]) for e in entries] == [
        ("kubectl", "Apply"), ("kubectl", "Update"), ("kubectl-edit", "Update")]
    assert entries[1]["subresource"] == "scale" and "subresource" not in entries[0]
    assert entries[2] == {"manager": "kubectl-edit", "operation": "Update", "apiVersion": "apps/v1",
                          "time": "2026-01-02T00:00:00Z", "fieldsType": "FieldsV1",
                          "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    assert mf.decode_managed(entries) == managed


@pytest.mark.parametrize("entries", [
    [{"manager": "m", "operation": "Patch", "fieldsType": "FieldsV1", "fieldsV1": {}}],
    [{"manager": "m", "operation": "Update", "fieldsType": "FieldsV2", "fieldsV1": {}}],
    [{"manager": "m", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"spec": {}}}],
    [{"manager": "m", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"k:notjson": {}}}],
    "not a list",
])
def test_ssa10_malformed_entries_do_not_decode(entries: Any) -> None:
    with pytest.raises(mf.FieldSetError):
        mf.decode_managed(entries)


def test_ssa10_which_managed_fields_a_write_starts_from() -> None:
    live = mf.encode_managed({EDIT: mf.Owned(frozenset({("f:spec", "f:replicas")}), "apps/v1", "t")})
    other = mf.encode_managed({KUBECTL: mf.Owned(frozenset({("f:spec", "f:paused")}), "apps/v1", "t")})
    assert mf.managed_for_write(live, None, trust_request=True) == mf.decode_managed(live)
    assert mf.managed_for_write(live, other, trust_request=True) == mf.decode_managed(other)
    assert mf.managed_for_write(live, other, trust_request=False) == mf.decode_managed(live), "subresources"
    assert mf.managed_for_write(live, [], trust_request=True) == {}
    assert mf.managed_for_write(live, [{}], trust_request=True) == {}
    assert mf.managed_for_write(live, [{"operation": "bogus"}], trust_request=True) == mf.decode_managed(live)


def test_ssa2_apply_to_nothing_creates_and_owns_exactly_the_configuration() -> None:
    config = deployment(labels={"app": "web"})
    new, managed = applied(config)
    assert new["spec"] == config["spec"] and new["metadata"]["labels"] == {"app": "web"}
    assert list(managed) == [KUBECTL]
    assert managed[KUBECTL].fields == mf.field_set(config, DEPLOYMENT, "main")
    assert managed[KUBECTL].api_version == "apps/v1" and managed[KUBECTL].time == "2026-01-01T00:00:00Z"


def test_ssa4_update_owns_what_it_changed_and_takes_it_from_the_owner() -> None:
    live, managed = applied(deployment())
    edited = copy.deepcopy(live)
    edited["spec"]["replicas"] = 5
    edited["metadata"]["labels"] = {"team": "a"}
    after = mf.record_update(managed, live, edited, DEPLOYMENT, EDIT, "later", "main")
    assert after[EDIT].fields == {("f:spec", "f:replicas"), ("f:metadata", "f:labels", "f:team")}
    assert after[EDIT].time == "later"
    assert ("f:spec", "f:replicas") not in after[KUBECTL].fields
    assert after[KUBECTL].time == managed[KUBECTL].time, "the loser's entry keeps its time"


def test_ssa4_a_write_that_changes_nothing_changes_no_entry() -> None:
    live, managed = applied(deployment())
    assert mf.record_update(managed, live, copy.deepcopy(live), DEPLOYMENT, EDIT, "later", "main") == managed


def test_ssa4_removing_a_field_takes_it_from_every_owner() -> None:
    live, managed = applied(deployment())
    edited = copy.deepcopy(live)
    del edited["spec"]["replicas"]
    after = mf.record_update(managed, live, edited, DEPLOYMENT, EDIT, "later", "main")
    assert EDIT not in after, "removing alone owns nothing"
    assert ("f:spec", "f:replicas") not in after[KUBECTL].fields


def test_ssa5_a_changed_value_owned_by_another_manager_conflicts() -> None:
    live, managed = applied(deployment())
    edited = copy.deepcopy(live)
    edited["spec"]["replicas"] = 5
    managed = mf.record_update(managed, live, edited, DEPLOYMENT, EDIT, "later", "main")
    with pytest.raises(ApplyConflict) as info:
        applied(deployment(replicas=3), edited, managed)
    status = info.value.to_status()
    assert status["code"] == 409 and status["reason"] == "Conflict"
    assert status["message"] == 'Apply failed with 1 conflict: conflict with "kubectl-edit" using apps/v1: .spec.replicas'
    assert status["details"] == {"causes": [{"reason": "FieldManagerConflict",
                                             "message": 'conflict with "kubectl-edit" using apps/v1',
                                             "field": ".spec.replicas"}]}


def test_ssa5_several_conflicts_are_listed_by_manager() -> None:
    live, managed = applied(deployment())
    edited = copy.deepcopy(live)
    edited["spec"]["replicas"] = 5
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "httpd"
    managed = mf.record_update(managed, live, edited, DEPLOYMENT, EDIT, "later", "main")
    with pytest.raises(ApplyConflict) as info:
        applied(deployment(replicas=3, image="redis"), edited, managed)
    assert str(info.value) == ('Apply failed with 2 conflicts: conflicts with "kubectl-edit" using apps/v1:\n'
                               '- .spec.replicas\n- .spec.template.spec.containers[name="app"].image')


def test_ssa5_a_subresource_manager_is_named_with_it() -> None:
    scaler = mf.Manager.updater("kubectl", "apps/v1", "scale")
    assert scaler.describe() == '"kubectl" with subresource "scale" using apps/v1'
    assert mf.Manager.applier("ctl", "status").describe() == '"ctl" with subresource "status"'


def test_ssa6_force_takes_ownership_and_same_value_shares_it() -> None:
    live, managed = applied(deployment())
    edited = copy.deepcopy(live)
    edited["spec"]["replicas"] = 5
    managed = mf.record_update(managed, live, edited, DEPLOYMENT, EDIT, "later", "main")

    same, shared = applied(deployment(replicas=5), edited, managed)
    assert same["spec"]["replicas"] == 5
    assert ("f:spec", "f:replicas") in shared[EDIT].fields and ("f:spec", "f:replicas") in shared[KUBECTL].fields

    forced, taken = applied(deployment(replicas=3), edited, managed, force=True)
    assert forced["spec"]["replicas"] == 3
    assert EDIT not in taken, "its only field was taken"
    assert ("f:spec", "f:replicas") in taken[KUBECTL].fields


def test_ssa7_fields_the_applier_stops_specifying_are_removed() -> None:
    live, managed = applied(deployment(labels={"app": "web", "tier": "front"}))
    after, managed = applied(deployment(labels={"app": "web"}), live, managed)
    assert after["metadata"]["labels"] == {"app": "web"}
    after, managed = applied(deployment(), after, managed)
    assert "labels" not in after["metadata"], "an emptied map goes, as Kubernetes omits it"
    assert ("f:metadata", "f:labels", "f:app") not in managed[KUBECTL].fields


def test_ssa7_unless_another_manager_owns_them_or_nobody_did() -> None:
    live, managed = applied(deployment(labels={"app": "web"}))
    other = mf.Manager.applier("other")
    live, managed = applied(deployment(labels={"app": "web"}), live, managed, who=other)
    live["metadata"]["labels"]["unowned"] = "x"  # written behind everyone's back: nobody's
    after, managed = applied(deployment(), live, managed)
    assert after["metadata"]["labels"] == {"app": "web", "unowned": "x"}
    assert ("f:metadata", "f:labels", "f:app") in managed[other].fields


def test_ssa7_a_keyed_element_dropped_from_the_configuration_goes() -> None:
    two = deployment()
    two["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "busybox"})
    live, managed = applied(two)
    after, managed = applied(deployment(), live, managed)
    assert [c["name"] for c in after["spec"]["template"]["spec"]["containers"]] == ["app"]


def test_ssa7_merge_keeps_elements_other_writers_added_in_their_place() -> None:
    live, managed = applied(deployment())
    live["spec"]["template"]["spec"]["containers"].insert(0, {"name": "first", "image": "a"})
    config = deployment(image="httpd")
    config["spec"]["template"]["spec"]["containers"].append({"name": "last", "image": "b"})
    after, _ = applied(config, live, managed)
    containers = after["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("first", "a"), ("app", "httpd"), ("last", "b")]
    assert live["spec"]["template"]["spec"]["containers"][1]["image"] == "nginx", "the live object is untouched"


def test_ssa8_status_scope_manages_status_only() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}},
           "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Running"}}
    assert mf.field_set(pod, POD, "status") == {("f:status", "f:phase")}
    assert all(p[0] != "f:status" for p in mf.field_set(pod, POD, "main"))
    config = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"nodeName": "x"},
              "status": {"phase": "Failed"}}
    new, managed = applied(config, pod, {}, scope="status", model=POD)
    assert new["status"] == {"phase": "Failed"} and "nodeName" not in new["spec"]
    assert managed[KUBECTL].fields == {("f:status", "f:phase")}


def test_ssa12_a_keyed_element_without_its_key_has_no_field_set() -> None:
    config = deployment()
    del config["spec"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(mf.FieldSetError, match='omits key field "name"'):
        applied(config)
    twice = deployment()
    twice["spec"]["template"]["spec"]["containers"].append({"name": "app", "image": "x"})
    with pytest.raises(mf.FieldSetError, match="duplicate entries"):
        applied(twice, deployment(), {})


def test_ssa11_update_managers_are_capped() -> None:
    managed: mf.Managed = {}
    live: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}
    for i in range(12):
        new = copy.deepcopy(live)
        new["data"][f"k{i}"] = "v"
        managed = mf.record_update(managed, live, new, CONFIG_MAP, mf.Manager.updater(f"m{i}", "v1"),
                                   f"2026-01-01T00:00:{i:02d}Z", "object")
        live = new
    names = sorted(m.name for m in managed)
    assert len(names) <= mf.MAX_UPDATE_MANAGERS + 1 and "ancient-changes" in names and "m11" in names
    assert "m0" not in names and "m1" not in names
    bucket = next(o for m, o in managed.items() if m.name == "ancient-changes")
    assert ("f:data", "f:k0") in bucket.fields and ("f:data", "f:k1") in bucket.fields


def test_ssa1_manager_names() -> None:
    assert mf.manager_from_user_agent("kubectl/v1.37.1 (linux/amd64) kubernetes/abc") == "kubectl"
    assert mf.manager_from_user_agent("OpenAPI-Generator/37.0.1/python") == "OpenAPI-Generator"
    assert mf.manager_from_user_agent("a\x00b" + "x" * 300) == "ab" + "x" * 126
    assert mf.manager_problems("kubectl") == []
    assert [p.field for p in mf.manager_problems("a\tb")] == ["fieldManager[1]"]
    assert mf.manager_problems("x" * 129)[0].message() == "fieldManager: Too long: may not be more than 128 bytes"


_keys = st.sampled_from(["a", "b", "c"])
_labels = st.dictionaries(_keys, st.sampled_from(["1", "2"]), max_size=3)
_containers = st.lists(st.tuples(_keys, st.sampled_from(["x", "y"])), max_size=3, unique_by=lambda t: t[0])


def _config(labels: dict[str, str], containers: list[tuple[str, str]], replicas: int) -> dict[str, Any]:
    config = deployment(replicas=replicas, labels=labels or None)
    config["spec"]["template"]["spec"]["containers"] = [{"name": n, "image": i} for n, i in containers]
    return config


@settings(max_examples=60, deadline=None)
@given(_labels, _containers, st.integers(0, 3), _labels, _containers, st.integers(0, 3))
def test_ssa2_ssa7_one_manager_applying_twice_ends_where_one_apply_ends(
        l1: dict[str, str], c1: list[tuple[str, str]], r1: int,
        l2: dict[str, str], c2: list[tuple[str, str]], r2: int) -> None:
    """Whatever a sole manager applied before, applying B leaves exactly what applying B to nothing leaves
    (keyed element order aside), and applying B again changes nothing."""
    first, managed = applied(_config(l1, c1, r1))
    second, managed2 = applied(_config(l2, c2, r2), first, managed)
    fresh, fresh_managed = applied(_config(l2, c2, r2))
    assert mf.field_set(second, DEPLOYMENT, "main") == mf.field_set(fresh, DEPLOYMENT, "main")
    assert managed2 == fresh_managed
    again, managed3 = applied(_config(l2, c2, r2), second, managed2)
    assert again == second and managed3 == managed2


@settings(max_examples=60, deadline=None)
@given(_labels, _containers, st.integers(0, 3))
def test_ssa3_fields_v1_round_trips(labels: dict[str, str], containers: list[tuple[str, str]], replicas: int) -> None:
    fields = mf.field_set(_config(labels, containers, replicas), DEPLOYMENT, "main")
    assert mf.from_fields_v1(mf.to_fields_v1(fields)) == fields


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from(["", "a", "b"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(_labels, _containers, st.integers(0, 3), _labels, _containers, st.integers(0, 3), _json, _json)
def test_ssa4_compare_skipping_equal_parts_agrees_with_its_definition(
        l1: dict[str, str], c1: list[tuple[str, str]], r1: int, l2: dict[str, str], c2: list[tuple[str, str]],
        r2: int, d1: Any, d2: Any) -> None:
    a, b = _config(l1, c1, r1), _config(l2, c2, r2)
    assert mf.compare(a, b, DEPLOYMENT, "main") == mf._slow_compare(a, b, DEPLOYMENT, "main")
    revision = MODELS["ControllerRevision"]
    ra = {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "r"}, "data": d1}
    rb = {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "r"}, "data": d2}
    assert mf.compare(ra, rb, revision) == mf._slow_compare(ra, rb, revision)
