"""The client keeps an idle connection to the API server for a minute, not httpx's 5 s.

Node agents call in bursts; every reconnect is a TLS handshake that the API server does on its event
loop, and under load (50 agents, benchmarks/scale.py) handshakes outlasted the connect timeout and
failed pod syncs. The clock httpcore reads for idle expiry is moved on instead of sleeping.
"""
from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import httpcore._sync.http11 as http11
import pytest

from storage.client import Client


def _connections(client: Client) -> list[Any]:
    return list(client._http._transport._pool.connections)  # type: ignore[attr-defined]


@pytest.mark.parametrize("idle, reused", [(30.0, True), (75.0, False)])
def test_an_idle_connection_is_reused_for_a_minute(client: Client, monkeypatch: pytest.MonkeyPatch,
                                                   idle: float, reused: bool) -> None:
    client.list("namespaces")
    [first] = _connections(client)
    real = time.monotonic
    monkeypatch.setattr(http11, "time", SimpleNamespace(monotonic=lambda: real() + idle))  # httpcore's clock only
    client.list("namespaces")
    [now] = _connections(client)
    assert (now is first) == reused, f"after {idle:.0f} s idle the connection should {'' if reused else 'not '}be reused"
