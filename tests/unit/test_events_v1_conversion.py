"""SEMANTICS EVT1: events.k8s.io/v1 and v1 Events are one object under two sets of names; converting
either way and back loses nothing, and the zero values Go writes for the newer form are not taken for
values set by a client."""
from __future__ import annotations

from storage.api.conversion import convert, to_version
from storage.api.events_v1 import V1, from_core, to_core

CORE = {
    "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default", "uid": "u"},
    "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"}, "reason": "Started",
    "message": "Started container c", "source": {"component": "kubelet", "host": "n1"},
    "firstTimestamp": "2026-12-07T04:00:00Z", "lastTimestamp": "2026-12-07T04:00:05Z", "count": 2,
    "type": "Normal", "reportingComponent": "kubelet", "reportingInstance": "n1",
}


def test_evt1_every_renamed_field_goes_across_and_back() -> None:
    newer = from_core(CORE)
    assert newer["apiVersion"] == V1
    assert newer["regarding"] == CORE["involvedObject"] and newer["note"] == CORE["message"]
    assert newer["reportingController"] == "kubelet" and newer["deprecatedSource"] == CORE["source"]
    assert (newer["deprecatedFirstTimestamp"], newer["deprecatedLastTimestamp"], newer["deprecatedCount"]) == (
        CORE["firstTimestamp"], CORE["lastTimestamp"], 2)
    assert not {"involvedObject", "message", "reportingComponent", "source", "firstTimestamp", "lastTimestamp",
                "count"} & set(newer)
    assert to_core(newer) == CORE
    assert convert(newer) == CORE and to_version(CORE, V1) == newer


def test_evt1_go_zero_values_are_written_and_read_back_as_absent() -> None:
    bare = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
            "reason": "R", "eventTime": "2026-12-07T04:00:00.000000Z"}
    newer = from_core(bare)
    assert {k: newer[k] for k in ("regarding", "deprecatedSource", "deprecatedFirstTimestamp",
                                  "deprecatedLastTimestamp")} == {
        "regarding": {}, "deprecatedSource": {}, "deprecatedFirstTimestamp": None, "deprecatedLastTimestamp": None}
    assert "deprecatedCount" not in newer and "series" not in newer
    assert to_core(newer) == bare
    assert list(newer)[:6] == ["apiVersion", "kind", "metadata", "eventTime", "reason", "regarding"]


def test_evt1_conversion_never_changes_its_input() -> None:
    snapshot = {**CORE}
    newer = from_core(CORE)
    frozen = {**newer}
    to_core(newer)
    assert CORE == snapshot and newer == frozen
