"""G4 (docs/semantics.md): the agent's SIGTERM-to-SIGKILL window."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from storage.api.deletion import MINIMUM_KILL_WINDOW_SECONDS, stop_window
from storage.api.timestamps import format_time

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def marked(grace: int | None, ends_in: float) -> dict:
    meta = {"name": "p", "deletionTimestamp": format_time(NOW + timedelta(seconds=ends_in))}
    if grace is not None:
        meta["deletionGracePeriodSeconds"] = grace
    return {"metadata": meta, "spec": {"terminationGracePeriodSeconds": 45}}


def test_g4_window_is_what_is_left_of_the_grace_period() -> None:
    assert stop_window(marked(30, 30), NOW) == 30.0
    assert stop_window(marked(30, 10), NOW) == 11.0  # the stored end is truncated: a second added back
    assert stop_window(marked(None, 100), NOW) == 45.0  # the pod's own period when the deletion gave none
    assert stop_window({"metadata": {"name": "p"}}, NOW) is None


def test_g4_never_under_the_kubelets_two_second_minimum_even_when_forced_or_overdue() -> None:
    assert MINIMUM_KILL_WINDOW_SECONDS == 2.0
    assert stop_window(marked(0, 0), NOW) == 2.0  # a force deletion
    assert stop_window(marked(1, 1), NOW) == 2.0
    assert stop_window(marked(30, -600), NOW) == 2.0  # an agent back long after the deadline
