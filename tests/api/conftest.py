from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from storage.apiserver.server import RunningServer
from storage.client import Client
from serverutil import running_server


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path) as server:
        yield server


@pytest.fixture
def client(api_server: RunningServer) -> Iterator[Client]:
    with api_server.client() as c:
        yield c
