"""Label and field selectors: SEMANTICS B4."""
from __future__ import annotations

import pytest

from storage.api.selectors import (
    LabelSelector,
    parse_field_selector,
    parse_label_selector,
    selector_from_dict,
    selector_matches,
)
from storage.errors import BadRequest


def test_b4_none_and_empty_selector_match_everything():
    assert selector_matches(None, {"a": "b"})
    assert selector_matches({}, {})
    assert selector_matches({"matchLabels": {}, "matchExpressions": []}, {"x": "y"})


def test_b4_match_labels_all_required():
    sel = {"matchLabels": {"app": "db", "tier": "gold"}}
    assert selector_matches(sel, {"app": "db", "tier": "gold", "extra": "1"})
    assert not selector_matches(sel, {"app": "db"})
    assert not selector_matches(sel, {"app": "db", "tier": "silver"})


@pytest.mark.parametrize(
    ("op", "values", "labels", "expected"),
    [
        ("In", ["a", "b"], {"k": "a"}, True),
        ("In", ["a", "b"], {"k": "c"}, False),
        ("In", ["a"], {}, False),
        ("NotIn", ["a"], {"k": "b"}, True),
        ("NotIn", ["a"], {"k": "a"}, False),
        ("NotIn", ["a"], {}, True),  # B4: NotIn matches volumes without the key
        ("Exists", [], {"k": ""}, True),
        ("Exists", [], {}, False),
        ("DoesNotExist", [], {}, True),  # B4: DoesNotExist matches volumes without the key
        ("DoesNotExist", [], {"k": "x"}, False),
        ("Bogus", [], {"k": "x"}, False),
    ],
)
def test_b4_match_expressions(op, values, labels, expected):
    sel = {"matchExpressions": [{"key": "k", "operator": op, "values": values}]}
    assert selector_matches(sel, labels) is expected
    if op != "Bogus":
        assert selector_from_dict(sel).matches(labels) is expected


def test_b4_match_labels_and_expressions_are_anded():
    sel = {"matchLabels": {"app": "db"}, "matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}
    assert selector_matches(sel, {"app": "db", "zone": "b"})
    assert not selector_matches(sel, {"app": "db", "zone": "a"})
    assert not selector_matches(sel, {"app": "web", "zone": "b"})


def test_label_selector_model_round_trip_and_matching():
    model = LabelSelector.model_validate({"matchLabels": {"a": "b"}, "matchExpressions": [{"key": "c", "operator": "Exists"}]})
    assert model.match_expressions and model.match_expressions[0].operator == "Exists"
    assert selector_matches(model, {"a": "b", "c": "1"})
    assert not selector_matches(model, {"a": "b"})


def test_string_selector_every_operator():
    sel = parse_label_selector("app=web,tier!=db,env in (a,b),!legacy,partition")
    good = {"app": "web", "env": "a", "partition": "0"}
    assert sel.matches(good)
    assert sel.matches({**good, "tier": "front"})
    assert not sel.matches({**good, "tier": "db"})
    assert not sel.matches({**good, "env": "c"})
    assert not sel.matches({**good, "legacy": "yes"})
    assert not sel.matches({k: v for k, v in good.items() if k != "partition"})
    assert not sel.matches({**good, "app": "api"})


def test_string_selector_notin_double_equals_and_spaces():
    sel = parse_label_selector(" env notin ( prod , staging ) , app==web ")
    assert sel.matches({"app": "web"})
    assert sel.matches({"app": "web", "env": "dev"})
    assert not sel.matches({"app": "web", "env": "prod"})


def test_string_selector_gt_lt_and_empty_value():
    sel = parse_label_selector("gen>2,size<10,flag=")
    assert sel.matches({"gen": "3", "size": "9", "flag": ""})
    assert not sel.matches({"gen": "2", "size": "9", "flag": ""})
    assert not sel.matches({"gen": "3", "size": "9", "flag": "x"})


def test_empty_string_selector_matches_everything():
    assert parse_label_selector("").matches({"a": "b"})
    assert parse_label_selector(None).empty()


def test_string_selector_str_round_trips():
    text = "app=web,tier!=db,env in (a,b),!legacy,partition"
    assert str(parse_label_selector(str(parse_label_selector(text)))) == str(parse_label_selector(text))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a in ()", "values set can't be empty"),
        ("a b", "found 'b'"),
        ("a,", "expected: identifier"),
        ("a in (x", "expected: ',' or ')'"),
        ("bad key!/x=1", "found"),
        ("-bad=1", 'invalid label key "-bad"'),
        ("a=-bad-", "invalid label value"),
        ("a>b", "must be an integer"),
        ("=x", "expected: identifier"),
    ],
)
def test_string_selector_errors_are_bad_requests(text, fragment):
    with pytest.raises(BadRequest) as exc:
        parse_label_selector(text)
    assert fragment in str(exc.value)


def test_field_selector_equal_and_not_equal():
    pred = parse_field_selector("metadata.name=x,spec.nodeName=n,status.phase!=Bound")
    obj = {"metadata": {"name": "x"}, "spec": {"nodeName": "n"}, "status": {"phase": "Pending"}}
    assert pred(obj)
    assert pred.matches({**obj, "status": {}})
    assert not pred({**obj, "status": {"phase": "Bound"}})
    assert not pred({**obj, "metadata": {"name": "y"}})


def test_field_selector_missing_field_is_empty_string_and_escapes():
    assert parse_field_selector("spec.nodeName=").matches({"spec": {}})
    assert not parse_field_selector("spec.nodeName=").matches({"spec": {"nodeName": "n1"}})
    assert parse_field_selector(r"metadata.name=a\,b").matches({"metadata": {"name": "a,b"}})
    assert parse_field_selector("spec.unschedulable==true").matches({"spec": {"unschedulable": True}})
    assert parse_field_selector("").matches({})


@pytest.mark.parametrize("text", ["metadata.name", "=x", "a..b=c", "metadata.name=a=b", r"x=a\q"])
def test_field_selector_errors_are_bad_requests(text):
    with pytest.raises(BadRequest):
        parse_field_selector(text)


def test_field_values_kubernetes_takes_from_elsewhere() -> None:
    """An event's source is its component (else its reporter), a job's status.successful its succeeded, spec.host a pod's node
    (Kubernetes' ToSelectableFields and its v1 pods' field label conversion)."""
    from storage.api.selectors import parse_field_selector

    event = {"source": {"component": "kubelet", "host": "n1"}}
    assert parse_field_selector("source=kubelet").matches(event)
    assert not parse_field_selector("source=n1").matches(event)
    assert parse_field_selector("source=example.com/c").matches({"reportingComponent": "example.com/c"})
    assert parse_field_selector("status.successful=3").matches({"status": {"succeeded": 3}})
    assert parse_field_selector("spec.host=n1").matches({"spec": {"nodeName": "n1"}})


def test_fs3_zero_values_and_a_pods_ips() -> None:
    """SEMANTICS FS3: a Go bool or int field left out compares as its zero value printed; a pod's status.podIP
    is its first podIPs entry, and status.podIPs is never a selectable field's value (always empty)."""
    from storage.api.selectors import parse_field_selector

    assert parse_field_selector("spec.hostNetwork=false").matches({"spec": {}})
    assert parse_field_selector("spec.unschedulable=false").matches({"metadata": {"name": "n"}})
    assert parse_field_selector("status.replicas=0").matches({"status": {}})
    assert parse_field_selector("status.successful=0").matches({})
    assert not parse_field_selector("spec.hostNetwork=false").matches({"spec": {"hostNetwork": True}})
    pod = {"status": {"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}}
    assert parse_field_selector("status.podIP=10.0.0.1").matches(pod)
    assert not parse_field_selector("status.podIP=fd00::1").matches(pod)
    assert parse_field_selector("status.podIP=10.0.0.2").matches({"status": {"podIP": "10.0.0.2"}})
    assert parse_field_selector("status.podIPs=").matches(pod)
    assert not parse_field_selector("status.podIPs=10.0.0.1").matches(pod)
