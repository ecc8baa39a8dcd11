"""The end of a pod's grace period, which a shorter deletion may move earlier (rule G3)."""
from __future__ import annotations

import threading
import time


class StopDeadline:
    """A monotonic deadline that can only move earlier; waiters wake when it does."""

    def __init__(self, seconds: float) -> None:
        self._cond = threading.Condition()
        self._at = time.monotonic() + max(0.0, seconds)

    def remaining(self) -> float:
        with self._cond:
            return max(0.0, self._at - time.monotonic())

    def shorten(self, seconds: float) -> bool:
        """End at most ``seconds`` from now; True when that moved the end earlier."""
        at = time.monotonic() + max(0.0, seconds)
        with self._cond:
            if at >= self._at:
                return False
            self._at = at
            self._cond.notify_all()
            return True

    def wake(self) -> None:
        """Wake the waiters without moving the end: something they wait for besides it has happened."""
        with self._cond:
            self._cond.notify_all()

    def wait(self, timeout: float) -> None:
        """Sleep up to ``timeout`` seconds, less if the deadline passes or moves earlier meanwhile."""
        with self._cond:
            left = self._at - time.monotonic()
            if left > 0:
                self._cond.wait(min(timeout, left))
