"""Fixtures: controllers running in a thread on the real ``store``, and a registered hostPath provisioner."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from provisioners import registry
from provisioners.hostpath import HostPathProvisioner
from storage.controllers.manager import ControllerManager
from support import running_controllers


@pytest.fixture
def controllers(store) -> Iterator[ControllerManager]:
    with running_controllers(store) as manager:
        yield manager


@pytest.fixture
def hostpath(tmp_path: Path) -> Iterator[HostPathProvisioner]:
    provisioner = HostPathProvisioner(tmp_path / "hostpath-root")
    registry.register(provisioner)
    try:
        yield provisioner
    finally:
        registry.unregister(provisioner.name)
