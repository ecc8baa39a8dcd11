"""Kubernetes $(VAR) expansion and quantities, as the runtime applies them (pure functions)."""
from __future__ import annotations

import pytest

from storage.agent.runtime.envvars import EnvError, command_line, expand, parse_quantity


@pytest.mark.parametrize("text, expected", [
    ("$(A)", "a"),
    ("x$(A)y$(B)", "xaybb"),
    ("$$(A)", "$(A)"),
    ("$(MISSING)", "$(MISSING)"),
    ("$(A", "$(A"),
    ("$", "$"),
    ("$x", "$x"),
    ("$()", "$()"),
    ("$$$(A)", "$a"),
])
def test_expand_follows_kubernetes_rules(text, expected):
    assert expand(text, {"A": "a", "B": "bb"}.get) == expected


def test_command_without_command_runs_args_and_neither_is_an_error():
    assert command_line({"args": ["echo", "$(X)"]}, [("X", "1")]) == ["echo", "1"]
    assert command_line({"command": ["sh"], "args": ["-c", "true"]}, []) == ["sh", "-c", "true"]
    with pytest.raises(EnvError, match="neither command nor args"):
        command_line({"name": "c"}, [])


def test_quantities():
    assert parse_quantity("64Mi") == 64 * 2**20
    assert parse_quantity("500m") * 1000 == 500
    with pytest.raises(ValueError):
        parse_quantity("lots")
