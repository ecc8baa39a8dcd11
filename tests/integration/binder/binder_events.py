"""The events a controller recorded about an object, for the binder tests.

A module of its own, not conftest.py: ``from conftest import`` picks whichever
conftest comes first on sys.path when several suites run in one session.
"""
from __future__ import annotations

from storage.controllers.events import events_for
from support import wait_for


def event_reasons(store, obj) -> list[tuple[str, str, str]]:
    return [(e["type"], e["reason"], e["message"]) for e in events_for(store, obj)]


def wait_event(store, obj, reason: str, timeout: float = 30.0) -> dict:
    def find():
        for e in events_for(store, obj):
            if e["reason"] == reason:
                return e
        return None
    return wait_for(find, f"event {reason}", timeout)
