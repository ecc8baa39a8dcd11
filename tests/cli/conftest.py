"""Fixtures: a real API server and the real ``stowage`` console script."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from cliutil import Cli


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    from serverutil import running_server

    with running_server(tmp_path) as server:
        assert server.kubeconfig is not None
        yield Cli(server.kubeconfig, server, tmp_path)
