"""The tries of an optimistic-concurrency write: read, change, write under the read's resourceVersion, and on
a Conflict read again. Each loss means another writer's change went in, so the writers as a whole make
progress; after the first few losses a try waits a little (jittered, doubling) so that writers racing each
other do not spin in step.
"""
from __future__ import annotations

import random
import time
from typing import Iterator

WAIT_FIRST = 0.001  # the longest wait after the first try that waits at all
WAIT_MOST = 0.05  # a wait's ceiling: short against a request's time, long against one write


def attempts(*, free: int, limit: int | None = None, budget_seconds: float | None = None) -> Iterator[int]:
    """Number the tries of one read-modify-write; the first ``free`` go at once. Ends (the caller gives up)
    after ``limit`` tries or once ``budget_seconds`` have passed, whichever comes first."""
    deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
    attempt = 0
    while True:
        yield attempt
        attempt += 1
        if limit is not None and attempt >= limit:
            return
        if deadline is not None and time.monotonic() >= deadline:
            return
        if attempt >= free:
            time.sleep(random.uniform(0, min(WAIT_MOST, WAIT_FIRST * 2 ** (attempt - free))))
