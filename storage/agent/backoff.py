"""Per-key exponential back-off with jitter, like the kubelet's (``flowcontrol.Backoff`` and the
volume manager's ``exponentialbackoff``: 0.5 s doubling up to about 2 minutes)."""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

INITIAL_SECONDS = 0.5
MAX_SECONDS = 122.0  # the kubelet's volume operations: 2 min 2 s
JITTER = 0.2  # each delay is stretched by up to this fraction, so failing pods do not retry in step
HISTORY = 32  # attempts remembered per key (for status and tests)


@dataclass
class Attempt:
    at: float  # clock time of the failure
    delay: float  # the back-off chosen after it


@dataclass
class _Entry:
    step: int = 0
    due: float = 0.0
    fingerprint: str = ""
    attempts: list[Attempt] = field(default_factory=list)


class Backoff:
    def __init__(self, initial: float = INITIAL_SECONDS, maximum: float = MAX_SECONDS, jitter: float = JITTER,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self.clock = clock
        self.rng = rng or random.Random()
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def failure(self, key: str, fingerprint: str = "") -> tuple[float, int]:
        """Record a failed attempt; returns (seconds until the next one, attempt number from 1).
        ``fingerprint`` names the inputs that failed: a change of them retries at once."""
        with self._lock:
            entry = self._entries.setdefault(key, _Entry())
            base = min(self.maximum, self.initial * (2 ** entry.step))
            delay = min(self.maximum, base * (1.0 + self.rng.uniform(0.0, self.jitter)))
            now = self.clock()
            entry.step += 1
            entry.due = now + delay
            entry.fingerprint = fingerprint
            entry.attempts.append(Attempt(now, delay))
            del entry.attempts[:-HISTORY]
            return delay, entry.step

    def success(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    forget = success

    def waiting(self, key: str, fingerprint: str = "") -> float:
        """Seconds left before ``key`` may be tried again (0: now). Inputs that changed since
        the failure (another fingerprint) may be tried at once."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or (fingerprint and fingerprint != entry.fingerprint):
                return 0.0
            return max(0.0, entry.due - self.clock())

    def attempts(self, key: str) -> list[Attempt]:
        with self._lock:
            entry = self._entries.get(key)
            return list(entry.attempts) if entry else []

    def expedite(self, key: str) -> None:
        """What ``key`` waits for changed: the next try may run now (the step is kept)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.due = self.clock()

    def backing_off(self) -> set[str]:
        """Keys whose next try is still to come."""
        now = self.clock()
        with self._lock:
            return {key for key, entry in self._entries.items() if entry.due > now}
