from __future__ import annotations

from pathlib import Path
from typing import Iterator

import httpx
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


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One API server for a module's tests (each uses names of its own)."""
    with running_server(tmp_path_factory.mktemp("api")) as server:
        yield server


@pytest.fixture
def http(module_server: RunningServer) -> Iterator[httpx.Client]:
    """Raw HTTPS as the admin, against ``module_server``."""
    with httpx.Client(base_url=module_server.url, headers={"Authorization": f"Bearer {module_server.token}"},
                      timeout=60, verify=module_server.verify()) as c:
        yield c
