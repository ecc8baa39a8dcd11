"""Go's duration syntax (``1h30m``, ``90s``, ``500ms``, ``-1.5h``), which kubectl flags, Kubernetes fields and
robfig/cron's ``@every`` use: one parser, with Go's time.ParseDuration's error words."""
from __future__ import annotations

import re

_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
             "h": 3600.0}
# Stowage's own fields (a backup's retention) also take days and weeks, which Go has not.
_DAY_UNITS = {**_GO_UNITS, "d": 86400.0, "w": 604800.0}
# A part: a decimal number (with an optional fraction) and its unit, both possibly empty, so that each
# malformation gets Go's message rather than a generic one.
_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]*)")


def duration_seconds(text: str, *, days: bool = False) -> float:
    """Seconds in the Go duration ``text`` (signed; ``0`` needs no unit); ``days`` also allows ``d`` and ``w``.
    ValueError in Go's words: ``time: invalid duration "x"``, ``time: missing unit in duration "5"``,
    ``time: unknown unit "x" in duration "5x"``."""
    units = _DAY_UNITS if days else _GO_UNITS
    rest, sign = text, 1.0
    if rest[:1] in ("+", "-"):
        sign, rest = (-1.0 if rest[0] == "-" else 1.0), rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(f'time: invalid duration "{text}"')
    total = 0.0
    while rest:
        match = _PART.match(rest)
        assert match is not None  # every part of the pattern is optional
        number, unit = match.group(1), match.group(2)
        if number in ("", "."):
            raise ValueError(f'time: invalid duration "{text}"')
        if not unit:
            raise ValueError(f'time: missing unit in duration "{text}"')
        if unit not in units:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{text}"')
        total += float(number) * units[unit]
        rest = rest[match.end():]
    return sign * total


def go_duration(nanos: int) -> str:
    """Go's ``time.Duration.String``: "1h2m3.5s", "1.5ms", "0s"."""
    if nanos == 0:
        return "0s"
    sign, n = ("-", -nanos) if nanos < 0 else ("", nanos)
    if n < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if n >= size:
                return sign + _decimal(n, size) + unit
    hours, rest = divmod(n, 3600 * 1_000_000_000)
    minutes, rest = divmod(rest, 60 * 1_000_000_000)
    text = _decimal(rest, 1_000_000_000) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _decimal(n: int, unit: int) -> str:
    whole, frac = divmod(n, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}." + f"{frac:0{digits}d}".rstrip("0")
