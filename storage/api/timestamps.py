"""Timestamps as Kubernetes writes them in objects: RFC 3339, UTC, whole seconds (``2026-11-25T20:31:07Z``)."""
from __future__ import annotations

from datetime import datetime, timezone

_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(_FORMAT)


def now() -> str:
    return format_time(datetime.now(timezone.utc))


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
