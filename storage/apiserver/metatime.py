"""Object metadata timestamps as Kubernetes' decoder reads them (``metav1.Time``).

A ``creationTimestamp`` or ``deletionTimestamp`` in a request body is JSON
null or an RFC 3339 string; anything else fails Kubernetes' decoding of the
whole body (K1), even where the server then ignores or replaces the value.
The messages are Go's ``time.Parse(time.RFC3339, ...)`` errors, as the
decoder passes them on.
"""
from __future__ import annotations

import calendar
from typing import Any

from storage.api.decoding import UndecodableObject

RFC3339 = "2006-01-02T15:04:05Z07:00"
TIMESTAMP_FIELDS = ("creationTimestamp", "deletionTimestamp")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _getnum(value: str, fixed: bool) -> tuple[int, str] | None:
    """Go's ``getnum``: one or two leading digits (exactly two when ``fixed``)."""
    if not value[:1].isdigit() or not value[:1].isascii():
        return None
    if len(value) < 2 or not (value[1].isdigit() and value[1].isascii()):
        return None if fixed else (int(value[0]), value[1:])
    return int(value[:2]), value[2:]


def rfc3339_error(text: str) -> str | None:
    """Go's ``time.Parse(time.RFC3339, text)`` error, or None when ``text`` parses."""

    def cannot(rest: str, element: str) -> str:
        return f"parsing time {_quote(text)} as {_quote(RFC3339)}: cannot parse {_quote(rest)} as {_quote(element)}"

    def out_of_range(what: str) -> str:
        return f"parsing time {_quote(text)}: {what} out of range"

    value = text
    if len(value) < 4 or not (value[:4].isdigit() and value[:4].isascii()):
        return cannot(value, "2006")
    year, value = int(value[:4]), value[4:]
    numbers: dict[str, int] = {}
    # (literal before it, layout element, fixed width, upper bound it must stay under, range error name)
    for prefix, element, fixed, limit, name in (("-", "01", True, 13, "month"), ("-", "02", True, 32, "day"),
                                                ("T", "15", False, 24, "hour"), (":", "04", True, 60, "minute"),
                                                (":", "05", True, 60, "second")):
        if not value.startswith(prefix):
            return cannot(value, prefix)
        value = value[len(prefix):]
        got = _getnum(value, fixed)
        if got is None:
            return cannot(value, element)
        number, value = got
        if number >= limit or (name in ("month", "day") and number < 1):
            return out_of_range(name)
        numbers[name] = number
    if len(value) >= 2 and value[0] in ".," and value[1].isdigit():  # fractional seconds, which Go always reads
        end = 1
        while end < len(value) and value[end].isdigit() and value[end].isascii():
            end += 1
        value = value[end:]
    if value.startswith("Z"):
        value = value[1:]
    else:
        zone_ok = (len(value) >= 6 and value[0] in "+-" and value[3] == ":"
                   and _getnum(value[1:3], True) is not None and _getnum(value[4:6], True) is not None)
        if not zone_ok:
            return cannot(value, "Z07:00")
        if int(value[1:3]) > 24:
            return out_of_range("time zone offset hour")
        if int(value[4:6]) > 60:
            return out_of_range("time zone offset minute")
        value = value[6:]
    if value:
        return f"parsing time {_quote(text)}: extra text: {_quote(value)}"
    if numbers["day"] > calendar.monthrange(year, numbers["month"])[1]:
        return out_of_range("day")
    return None


def check_metadata_times(meta: dict[str, Any], kind: str, api_version: str) -> None:
    """Refuse, as Kubernetes' decoder does (400; a patch's 422), a metadata timestamp that is not RFC 3339.

    Non-string values are left to the model's type check, which already names them the decoder's way.
    """
    for key in TIMESTAMP_FIELDS:
        value = meta.get(key)
        if isinstance(value, str):
            problem = rfc3339_error(value)
            if problem is not None:
                # Go's message alone names no field; the field is named too, for the reader's sake.
                raise UndecodableObject(kind, api_version, f"metadata.{key}: {problem}")
