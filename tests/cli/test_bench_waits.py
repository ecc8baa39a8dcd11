"""BN35: the bench command's waits follow watches, against a real API server (SEMANTICS BN2, BN35)."""
from __future__ import annotations

import threading
import time
from typing import Any

from cliutil import Cli

from storage.cli.bench.runner import RUN_LABEL, _gone, cleanup_run


class _CountingClient:
    """The real client, with its lists counted."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.lists = 0

    def list(self, *args: Any, **kwargs: Any) -> Any:
        self.lists += 1
        return self._client.list(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _config_map(name: str, run: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "labels": {RUN_LABEL: run}}}


def test_bn34_a_wait_for_objects_to_go_looks_when_they_change_not_every_half_second(cli: Cli) -> None:
    """BN35: while nothing changes for 2 s the wait does not list again (a poll every 0.5 s listed four
    times); the deletion ends it at once, well before its 600 s deadline."""
    client = cli.client()
    client.create(_config_map("bn34-a", "bn34"))
    counting = _CountingClient(client)
    result: dict[str, Any] = {}

    def wait() -> None:
        result["gone"] = _gone(counting, "configmaps", "default", time.monotonic() + 600,
                               label_selector=f"{RUN_LABEL}=bn34")
        result["at"] = time.monotonic()

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    time.sleep(2.0)  # the quiet stretch the test is about: nothing changes
    quiet_lists = counting.lists
    deleted_at = time.monotonic()
    client.delete("configmaps", "bn34-a", "default")
    waiter.join(60)
    assert not waiter.is_alive(), "the wait did not end when its object went"
    assert result["gone"] is True
    assert result["at"] - deleted_at < 10
    assert quiet_lists <= 3, f"{quiet_lists} lists while nothing changed"


def test_bn34_a_wait_that_runs_out_says_so(cli: Cli) -> None:
    """BN35: an object that stays is reported after the deadline, not waited for further."""
    client = cli.client()
    client.create(_config_map("bn34-b", "bn34b"))
    started = time.monotonic()
    assert _gone(client, "configmaps", "default", time.monotonic() + 1.0, label_selector=f"{RUN_LABEL}=bn34b") is False
    assert time.monotonic() - started < 10
    client.delete("configmaps", "bn34-b", "default")


def test_bn2_cleanup_removes_exactly_the_runs_objects(cli: Cli) -> None:
    """BN2: the run's ConfigMap goes, another run's stays; nothing is reported left."""
    client = cli.client()
    client.create(_config_map("bn2-mine", "mine"))
    client.create(_config_map("bn2-other", "other"))
    assert cleanup_run(client, "mine", "default", timeout=60) == []
    names = {c["metadata"]["name"] for c in client.list("configmaps", "default")[0]}
    assert "bn2-mine" not in names and "bn2-other" in names
