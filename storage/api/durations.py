"""Go's duration syntax (``1h30m``, ``90s``, ``500ms``), which kubectl flags and Kubernetes fields use."""
from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
                 "d": 86400.0, "w": 604800.0}


def duration_seconds(text: str, *, days: bool = False) -> float:
    """Seconds in ``text``: one or more number-unit parts; ``days`` also allows ``d`` and ``w`` (Go has
    neither). ValueError when ``text`` is not such a duration."""
    text = text.strip()
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos or (match.group(2) in ("d", "w") and not days):
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"invalid duration {text!r}")
    return total
