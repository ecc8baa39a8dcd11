"""Measured storage figures on nodes and the StorageClass performance parameters (SEMANTICS BP1-BP7, BP12, BP18)."""
from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.api.bench_figures import (
    ANNOTATION_PREFIX,
    FIGURE_KEYS,
    SCHEDULING_PARAMETERS,
    BenchParameterError,
    annotation_key,
    backend_parameters,
    check,
    label_node_annotations,
    node_figures,
    parse_duration_us,
    parse_requirements,
    score,
)
from storage.api.names import is_qualified_name

# A DNS-1123 subdomain, as a StorageClass name is (lower-case alphanumerics, '-' and '.', up to 253).
_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?", fullmatch=True)
class_names = st.lists(_label, min_size=1, max_size=8).map(".".join).filter(lambda s: len(s) <= 253)
figure_values = st.one_of(st.integers(0, 10**7), st.floats(0, 1e7, allow_nan=False, allow_infinity=False))
figure_sets = st.dictionaries(st.sampled_from(FIGURE_KEYS), figure_values, min_size=1)


def node_with(annotations: dict[str, str]) -> dict:
    return {"metadata": {"name": "n1", "annotations": annotations}}


@settings(max_examples=200, deadline=None)
@given(class_names)
def test_bp2_annotation_key_is_a_valid_qualified_name_and_stable(name: str) -> None:
    """BP2: any class name gives a valid key whose name part is at most 63 characters; the same every time."""
    key = annotation_key(name)
    assert key.startswith(ANNOTATION_PREFIX)
    assert is_qualified_name(key) == []
    assert len(key.split("/", 1)[1]) <= 63
    assert key == annotation_key(name)
    if len(name) <= 63:
        assert key == ANNOTATION_PREFIX + name


def test_bp2_long_names_that_share_a_prefix_get_distinct_keys() -> None:
    """BP2: cut to 52 characters plus a hash of the whole name, so two long names with one prefix differ."""
    a, b = "x" * 60 + "-fast-nvme", "x" * 60 + "-slow-hdd"
    assert annotation_key(a) != annotation_key(b)
    assert annotation_key(a) == ANNOTATION_PREFIX + "x" * 52 + "-" + annotation_key(a)[-10:]
    assert len(annotation_key(a)) - len(ANNOTATION_PREFIX) == 63


@settings(max_examples=200, deadline=None)
@given(class_names, figure_sets)
def test_bp1_bp3_bp4_figures_round_trip_through_the_annotation(name: str, figures: dict) -> None:
    """BP1, BP3, BP4: what the bench writes, the scheduler reads back (to the recorded precision), for this class only."""
    annotations = label_node_annotations(name, {**figures, "fioVersion": "fio-3.33", "measuredAt": "2026-11-30T10:00:00Z"})
    assert list(annotations) == [annotation_key(name)]
    raw = annotations[annotation_key(name)]
    assert " " not in raw.replace("fio-3.33", "")  # compact JSON
    read = node_figures(node_with(annotations), name)
    assert read is not None
    for key, value in figures.items():
        assert read[key] == pytest.approx(float(value), abs=1e-3)
    assert {k for k in read if k in FIGURE_KEYS} == set(figures)
    assert read["measuredAt"] == "2026-11-30T10:00:00Z" and read["fioVersion"] == "fio-3.33"
    assert node_figures(node_with(annotations), name + "x") is None


def test_bp3_measured_at_defaults_to_now_and_bad_figures_are_refused() -> None:
    body = json.loads(next(iter(label_node_annotations("fast", {"randWriteIOPS": 1000}).values())))
    assert body["measuredAt"].endswith("Z") and body["randWriteIOPS"] == 1000 and body["storageClass"] == "fast"
    with pytest.raises(ValueError, match="unknown figure.*randWriteIops"):
        label_node_annotations("fast", {"randWriteIops": 1000})
    with pytest.raises(ValueError, match="randWriteIOPS must be a finite number >= 0"):
        label_node_annotations("fast", {"randWriteIOPS": -1})
    with pytest.raises(ValueError, match="randWriteIOPS must be a finite number"):
        label_node_annotations("fast", {"randWriteIOPS": math.inf})
    with pytest.raises(ValueError, match="randWriteIOPS must be a number"):
        label_node_annotations("fast", {"randWriteIOPS": "fast"})
    with pytest.raises(ValueError, match="no figures to record"):
        label_node_annotations("fast", {"fioVersion": "fio-3.33"})


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '{"randWriteIOPS": "many"}', '{"randWriteIOPS": -5}',
                                 '{"measuredAt": "2026-11-30T10:00:00Z"}',
                                 '{"randWriteIOPS": 5, "storageClass": "other"}'])
def test_bp4_unreadable_or_foreign_records_are_no_figures(raw: str) -> None:
    assert node_figures(node_with({annotation_key("fast"): raw}), "fast") is None
    assert node_figures({"metadata": {"name": "n1"}}, "fast") is None


@pytest.mark.parametrize(("text", "micros"), [("2ms", 2000), ("500us", 500), ("500µs", 500), ("1.5s", 1_500_000),
                                              ("250ns", 0.25), (" 3 ms ", 3000)])
def test_bp18_durations_in_microseconds(text: str, micros: float) -> None:
    assert parse_duration_us(text) == pytest.approx(micros)


@pytest.mark.parametrize(("params", "parameter", "detail"), [
    ({"minRandomWriteIOPS": "fast"}, "minRandomWriteIOPS", "must be a non-negative number"),
    ({"minRandomWriteIOPS": "-5"}, "minRandomWriteIOPS", "must be a non-negative number"),
    ({"minSequentialReadMBps": "1Gi"}, "minSequentialReadMBps", "must be a non-negative number"),
    ({"maxWriteLatencyP99": "2"}, "maxWriteLatencyP99", "must be a duration with a unit"),
    ({"maxFsyncLatencyP99": "2 hours"}, "maxFsyncLatencyP99", "must be a duration with a unit"),
    ({"maxReadLatencyP99": "0ms"}, "maxReadLatencyP99", "must be greater than zero"),
    ({"minRandomWriteIOPS": "1", "benchPlacement": "required"}, "benchPlacement", "must be Required or Preferred"),
    ({"benchPlacement": "Preferred"}, "benchPlacement", "needs at least one of"),
    ({"minrandomwriteiops": "100"}, "minrandomwriteiops", "did you mean minRandomWriteIOPS"),
])
def test_bp5_bad_parameters_are_refused_naming_the_parameter(params: dict, parameter: str, detail: str) -> None:
    with pytest.raises(BenchParameterError) as info:
        parse_requirements("fast", params)
    assert info.value.parameter == parameter
    assert detail in str(info.value) and parameter in str(info.value)


def test_bp5_parameters_parse_with_required_by_default() -> None:
    req = parse_requirements("fast", {"minRandomWriteIOPS": "20000", "maxWriteLatencyP99": "2ms", "type": "gp3"})
    assert req is not None and req.placement == "Required" and req.storage_class == "fast"
    assert {(r.parameter, r.figure, r.kind, r.limit) for r in req.items} == {
        ("minRandomWriteIOPS", "randWriteIOPS", "min", 20000.0), ("maxWriteLatencyP99", "writeLatencyP99Us", "max", 2000.0)}
    assert parse_requirements("fast", {"type": "gp3"}) is None
    assert parse_requirements("fast", {"minRandomReadIOPS": "1", "benchPlacement": "Preferred"}).placement == "Preferred"


def test_bp6_backend_parameters_never_include_the_scheduling_ones() -> None:
    params = {"type": "gp3", **{p: "1" for p in SCHEDULING_PARAMETERS}}
    assert backend_parameters(params) == {"type": "gp3"}


def test_bp7_check_names_each_unmet_requirement() -> None:
    req = parse_requirements("fast", {"minRandomWriteIOPS": "20000", "maxWriteLatencyP99": "2ms",
                                      "minSequentialReadMBps": "500"})
    assert req is not None
    assert check(None, req) == [("no measured figures for storage class fast; "
                                 "run stowage bench --storage-class fast --label-nodes")]
    assert check({"randWriteIOPS": 20000, "writeLatencyP99Us": 2000, "seqReadMBps": 500}, req) == []  # inclusive
    assert check({"randWriteIOPS": 19999, "writeLatencyP99Us": 2001, "seqReadMBps": 900}, req) == [
        "random write IOPS below minRandomWriteIOPS=20000 of storage class fast",
        "write latency p99 above maxWriteLatencyP99=2ms of storage class fast"]
    assert check({"randWriteIOPS": 30000, "writeLatencyP99Us": 100}, req) == [
        ("no measured seqReadMBps for storage class fast (needed by minSequentialReadMBps); "
         "run stowage bench --storage-class fast --label-nodes")]


@settings(max_examples=300, deadline=None)
@given(st.floats(1, 1e6), st.floats(1, 1e6), st.floats(1, 1e6))
def test_bp7_check_agrees_with_the_limit(limit: float, value: float, latency: float) -> None:
    """BP7: a minimum is met exactly when the figure reaches it, a maximum exactly when the figure stays under it."""
    req = parse_requirements("c", {"minRandomReadIOPS": f"{limit:.3f}", "maxReadLatencyP99": f"{limit:.3f}us"})
    assert req is not None
    bound = float(f"{limit:.3f}")
    reasons = check({"randReadIOPS": value, "readLatencyP99Us": latency}, req)
    assert any("minRandomReadIOPS" in r for r in reasons) == (value < bound)
    assert any("maxReadLatencyP99" in r for r in reasons) == (latency > bound)


@settings(max_examples=300, deadline=None)
@given(st.floats(1, 1e6), st.floats(1, 1e6))
def test_bp12_score_prefers_better_figures_and_any_figures_over_none(a: float, b: float) -> None:
    req = parse_requirements("c", {"minRandomWriteIOPS": "1000", "maxWriteLatencyP99": "1ms",
                                   "benchPlacement": "Preferred"})
    assert req is not None
    faster = score({"randWriteIOPS": max(a, b), "writeLatencyP99Us": 500}, req)
    slower = score({"randWriteIOPS": min(a, b), "writeLatencyP99Us": 500}, req)
    assert faster >= slower
    assert score(None, req) < slower
