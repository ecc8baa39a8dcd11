"""Failed authentications rate-limited per client address: a token bucket per address.

Only failures draw from the bucket, and a request whose credentials are good
is never held back, so a client sharing an address with a guesser (every
local process shares 127.0.0.1) keeps working; the guesser gets 429 with
``Retry-After`` once its burst is spent.
"""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from typing import Callable

# A client that mistypes a token a few times is never slowed; a guesser gets one try a second.
DEFAULT_BURST = 20
DEFAULT_PER_SECOND = 1.0
MAX_TRACKED = 10_000  # addresses remembered; the least recently failing are forgotten first


class FailureLimiter:
    def __init__(self, burst: int = DEFAULT_BURST, per_second: float = DEFAULT_PER_SECOND,
                 clock: Callable[[], float] | None = None) -> None:
        self.burst = burst
        self.per_second = per_second
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (tokens, at)

    def _tokens(self, address: str, now: float) -> float:
        tokens, at = self._buckets.get(address, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.per_second)

    def retry_after(self, address: str) -> int:
        """Seconds until ``address`` may fail again; 0 when it may now."""
        with self._lock:
            if address not in self._buckets:
                return 0
            tokens = self._tokens(address, self._clock())
        return 0 if tokens >= 1.0 else max(1, math.ceil((1.0 - tokens) / self.per_second))

    def failed(self, address: str) -> int:
        """Count one failure; returns the seconds to wait (0 while within the burst)."""
        with self._lock:
            now = self._clock()
            tokens = self._tokens(address, now)
            if tokens >= 1.0:
                tokens -= 1.0
                wait = 0
            else:
                wait = max(1, math.ceil((1.0 - tokens) / self.per_second))
            self._buckets[address] = (tokens, now)
            self._buckets.move_to_end(address)
            while len(self._buckets) > MAX_TRACKED:
                self._buckets.popitem(last=False)
            return wait
