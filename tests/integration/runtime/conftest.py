"""Real runc containers for the pod runtime tests, cleaned up even when a test fails."""
from __future__ import annotations

import os
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from storage.agent.runtime import PodRuntime
from support import cleanup_tree

pytestmark = pytest.mark.root


def _require_runc() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts, namespaces)")
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")


class Harness:
    """Builds runtimes on one temp dir, each with its own loopback range, and waits on their events."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.runtimes: list[PodRuntime] = []
        self.changed = threading.Condition()
        self.events: list[tuple[str, dict[str, Any] | None]] = []
        # A random /24 keeps parallel test runs on this machine from colliding on addresses.
        self.ip_range = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24"

    def runtime(self, name: str = "agent", **kwargs: Any) -> PodRuntime:
        kwargs.setdefault("backoff_base", 0.3)
        kwargs.setdefault("backoff_max", 2.0)
        holder: list[PodRuntime] = []

        def on_change(uid: str) -> None:
            status = holder[0].pod_status(uid) if holder else None
            with self.changed:
                self.events.append((uid, status))
                self.changed.notify_all()

        rt = PodRuntime(self.base / name, "node-1", ip_range=self.ip_range, on_status_change=on_change, **kwargs)
        holder.append(rt)
        self.runtimes.append(rt)
        return rt

    def wait(self, rt: PodRuntime, uid: str, predicate: Callable[[dict[str, Any]], bool],
             what: str, timeout: float = 60) -> dict[str, Any]:
        """Wait (woken by on_status_change, re-checking at least every 0.5 s) until predicate(status)."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            status = rt.pod_status(uid)
            if status is not None and predicate(status):
                return status
            with self.changed:
                self.changed.wait(0.5)
        raise AssertionError(f"timed out waiting for {what}; last status: {status}")

    def cleanup(self) -> None:
        for rt in self.runtimes:
            for uid in list(rt.running_pods()):
                try:
                    rt.kill_pod(uid, 0)
                except Exception:
                    pass
            rt.close()
        # Anything left (a runtime that crashed, a test that closed one), only ours; and what the
        # pods left in the machine-wide run dir.
        cleanup_tree(self.base)


@pytest.fixture
def harness() -> Iterator[Harness]:
    _require_runc()
    base = Path(tempfile.mkdtemp(prefix="stowage-runtime-"))
    h = Harness(base)
    try:
        yield h
    finally:
        h.cleanup()
