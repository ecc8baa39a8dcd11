"""Timestamps as Kubernetes writes them in objects: RFC 3339, UTC, whole seconds (``2026-11-25T20:31:07Z``)."""
from __future__ import annotations

from datetime import datetime, timezone

_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(_FORMAT)


# (whole second, its text): a write stamps one or two timestamps, and strftime costs more than the rest
# of a small write's bookkeeping; the text only changes once a second.
_last: tuple[int, str] = (-1, "")


def now() -> str:
    moment = datetime.now(timezone.utc)
    second = int(moment.timestamp())
    cached = _last
    if cached[0] == second:
        return cached[1]
    text = format_time(moment)
    globals()["_last"] = (second, text)
    return text


def from_epoch(seconds: float) -> str:
    return format_time(datetime.fromtimestamp(seconds, timezone.utc))


def parse_time(value: str | None) -> datetime | None:
    """An object's timestamp as an aware datetime; None when missing or not a timestamp."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
