"""The per-pod back-off and the event correlator (client-go's rules), on a fake clock."""
from __future__ import annotations

import random

from storage.agent.backoff import Backoff
from storage.api.event_correlator import COMBINED_PREFIX, EventCorrelator, write_event
from storage.errors import NotFound


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets_on_success() -> None:
    clock = Clock()
    b = Backoff(initial=0.5, maximum=120.0, jitter=0.2, clock=clock, rng=random.Random(1))
    delays = [b.failure("pod")[0] for _ in range(12)]
    for i, d in enumerate(delays):
        base = min(120.0, 0.5 * 2 ** i)
        assert base <= d <= min(120.0, base * 1.2)
    assert delays[-1] == 120.0
    assert b.waiting("pod") == 120.0
    clock.now += 60
    assert b.waiting("pod") == 60.0
    assert b.waiting("pod", fingerprint="changed") == 0.0, "changed inputs retry at once"
    assert b.backing_off() == {"pod"}
    b.expedite("pod")
    assert b.waiting("pod") == 0.0
    assert b.failure("pod")[1] == 13, "expediting keeps the step"
    b.success("pod")
    assert b.waiting("pod") == 0.0 and b.attempts("pod") == []
    assert b.failure("pod")[0] <= 0.6


def event(message: str, reason: str = "FailedMount", name: str = "p") -> dict:
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"namespace": "ns"},
            "involvedObject": {"kind": "Pod", "name": name, "namespace": "ns", "uid": f"uid-{name}"},
            "reason": reason, "message": message, "type": "Warning", "count": 1,
            "firstTimestamp": "t0", "lastTimestamp": "t1", "source": {"component": "agent", "host": "n1"}}


class FakeEvents:
    def __init__(self) -> None:
        self.items: dict[str, dict] = {}

    def create(self, e: dict) -> dict:
        assert e["metadata"]["name"] not in self.items
        self.items[e["metadata"]["name"]] = dict(e)
        return e

    def get(self, namespace: str, name: str) -> dict:
        if name not in self.items:
            raise NotFound(name)
        return dict(self.items[name])

    def update(self, e: dict) -> dict:
        self.items[e["metadata"]["name"]] = dict(e)
        return e

    def write(self, c: EventCorrelator, e: dict) -> dict | None:
        return write_event(c, e, create=self.create, get=self.get, update=self.update)


def test_repeats_update_one_event_and_a_deleted_one_is_written_anew() -> None:
    c, sink = EventCorrelator(clock=Clock()), FakeEvents()
    for i in range(5):
        sink.write(c, {**event("mount failed"), "lastTimestamp": f"t{i}"})
    assert len(sink.items) == 1
    (only,) = sink.items.values()
    assert only["count"] == 5 and only["lastTimestamp"] == "t4" and only["firstTimestamp"] == "t0"
    sink.items.clear()
    sink.write(c, event("mount failed"))
    assert [e["count"] for e in sink.items.values()] == [1]


def test_the_same_words_about_two_containers_are_two_events() -> None:
    """client-go's event key has the involved object's fieldPath: the kubelet's ``Pulled`` for an init
    container and for the main one read the same, and each is an event of its own, not a repeat."""
    c, sink = EventCorrelator(clock=Clock()), FakeEvents()
    for path in ("spec.initContainers{prep}", "spec.containers{main}", "spec.containers{main}"):
        e = event('Container image "debian:12" already present on machine', reason="Pulled")
        sink.write(c, {**e, "involvedObject": {**e["involvedObject"], "fieldPath": path}})
    assert sorted((e["involvedObject"]["fieldPath"], e["count"]) for e in sink.items.values()) == [
        ("spec.containers{main}", 2), ("spec.initContainers{prep}", 1)]


def test_similar_events_are_combined_after_ten_messages() -> None:
    c, sink = EventCorrelator(clock=Clock()), FakeEvents()
    for i in range(15):
        sink.write(c, event(f"mount failed: attempt {i}"))
    combined = [e for e in sink.items.values() if e["message"].startswith(COMBINED_PREFIX)]
    assert len(sink.items) == 10, "nine distinct events, then one combined one"
    assert len(combined) == 1 and combined[0]["count"] == 6
    assert combined[0]["message"] == COMBINED_PREFIX + "mount failed: attempt 14"
    # Another object, or another reason, is not combined with these.
    sink.write(c, event("mount failed: attempt 0", name="q"))
    sink.write(c, event("other", reason="Failed"))
    assert len(sink.items) == 12


def test_spam_filter_bounds_events_per_object() -> None:
    clock = Clock()
    c, sink = EventCorrelator(clock=clock), FakeEvents()
    written = [sink.write(c, event("same")) for _ in range(40)]
    assert sum(1 for w in written if w is not None) == 25
    assert next(iter(sink.items.values()))["count"] == 25
    assert sink.write(c, event("same", name="other")) is not None, "the filter is per object"
    clock.now += 300  # one token back every five minutes
    assert sink.write(c, event("same")) is not None
    assert sink.write(c, event("same")) is None
