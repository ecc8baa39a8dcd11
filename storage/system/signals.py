"""SIGINT/SIGTERM for the long-running commands (`stowage up|serve|agent`)."""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

# How long the main thread blocks at most between looks at pending signals.
_SIGNAL_CHECK_SECONDS = 0.5


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT or SIGTERM while the block runs; the previous handlers come back after it."""

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        # Setting an Event takes a lock; a second signal arriving inside that
        # would deadlock the main thread, so the handler only starts a thread.
        threading.Thread(target=stop.set, name="stop", daemon=True).start()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def wait_until_set(stop: threading.Event) -> None:
    """Block the main thread until ``stop`` is set, running Python's signal handlers meanwhile.

    A process-directed signal may be taken by any thread that does not block it. The C-level
    handler then only flags it, and a main thread blocked in an untimed lock acquire is never
    woken to run the Python handler: SIGTERM was seen to be lost that way under load. A timed
    wait returns to the interpreter, which runs pending handlers, at least this often.
    """
    while not stop.wait(_SIGNAL_CHECK_SECONDS):
        pass
