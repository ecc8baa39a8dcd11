"""N8: a CPU rate is measured over at least MIN_WINDOW_SECONDS between two requests' readings, or over a
fresh WINDOW_SECONDS window when no earlier reading is old enough: `kubectl top node` run twice in a row
reports the node's load, not the work of the two kubectl runs between them."""
from __future__ import annotations

import pytest

from storage.agent import metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_n8_rates_use_an_old_enough_reading_or_measure_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(metrics.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(metrics.time, "sleep", clock.sleep)
    monkeypatch.setattr(metrics, "_history", {})
    cpu = {"ns": 0}

    def busy(ns_per_second: float) -> None:
        """Advance the clock one second with the node using this many CPU nanoseconds a second."""
        cpu["ns"] += int(ns_per_second)
        clock.now += 1.0

    def reader() -> tuple[int, int]:
        return cpu["ns"], 1024

    # No earlier reading: measured now, over WINDOW_SECONDS (an idle node: the sleep adds nothing).
    rates, window = metrics._rates({"node": reader})
    assert clock.slept == [metrics.WINDOW_SECONDS] and window == metrics.WINDOW_SECONDS
    assert rates["node"] == (0, 1024)

    # Two seconds later, after a burst of kubectl's own work: too close to the last reading, so a fresh
    # window is measured again rather than reporting the burst as the node's load.
    busy(2e9)
    busy(2e9)
    rates, window = metrics._rates({"node": reader})
    assert clock.slept[-1] == metrics.WINDOW_SECONDS and rates["node"][0] == 0

    # Twelve seconds of steady half-core load later, the first reading is old enough: no sleep, and the
    # rate is over the whole window.
    for _ in range(12):
        busy(0.5e9)
    slept = len(clock.slept)
    rates, window = metrics._rates({"node": reader})
    assert len(clock.slept) == slept
    assert window == 12.0  # from the reading taken at the end of the second request's fresh window
    assert rates["node"] == (500_000_000, 1024)

    # Readings of a container that stopped are forgotten once stale.
    monkeypatch.setitem(metrics._history, "gone/c", [(clock.now - 100.0, 1)])
    metrics._rates({"node": reader})
    assert "gone/c" not in metrics._history
    assert len(metrics._history["node"]) <= metrics.STALE_SECONDS / (metrics.MIN_WINDOW_SECONDS / 4) + 1
