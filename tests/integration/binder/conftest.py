"""Fixtures: controllers running in a thread on the real ``store``, and a registered hostPath provisioner."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from provisioners import registry
from provisioners.hostpath import HostPathProvisioner
from storage.controllers.events import events_for
from storage.controllers.manager import ControllerManager, run_controllers
from storage.errors import NotFound


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def get_or_none(store, resource: str, namespace: str, name: str):
    try:
        return store.get(resource, namespace, name)
    except NotFound:
        return None


def event_reasons(store, obj) -> list[tuple[str, str, str]]:
    return [(e["type"], e["reason"], e["message"]) for e in events_for(store, obj)]


def wait_event(store, obj, reason: str, timeout: float = 30.0) -> dict:
    def find():
        for e in events_for(store, obj):
            if e["reason"] == reason:
                return e
        return None
    return wait_for(find, timeout, f"event {reason}")


@pytest.fixture
def controllers(store) -> Iterator[ControllerManager]:
    stop = threading.Event()
    ready = threading.Event()
    out: list[ControllerManager] = []
    thread = threading.Thread(target=run_controllers, args=(store, stop), kwargs={"ready": ready, "manager_out": out}, daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "controllers did not start"
        yield out[0]
    finally:
        stop.set()
        thread.join(30)


@pytest.fixture
def hostpath(tmp_path: Path) -> Iterator[HostPathProvisioner]:
    provisioner = HostPathProvisioner(tmp_path / "hostpath-root")
    registry.register(provisioner)
    try:
        yield provisioner
    finally:
        registry.unregister(provisioner.name)
