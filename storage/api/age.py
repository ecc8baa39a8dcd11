"""Ages and timestamps printed the way kubectl prints them (``5s``, ``3m12s``, ``2d3h``)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from storage.api.timestamps import parse_time


parse_timestamp = parse_time  # an RFC 3339 timestamp as the API writes it, or None when absent or unreadable


def human_duration(seconds: float) -> str:
    """kubectl's ``duration.HumanDuration``: more precision for short ages, less for long ones."""
    total = int(seconds)
    if total < -1:
        return "<invalid>"
    if total < 0:
        return "0s"
    if total < 120:
        return f"{total}s"
    minutes = total // 60
    if minutes < 10:
        rest = total % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = total // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(timestamp: str | None, now: datetime | None = None) -> str:
    """Age since ``timestamp``; ``<unknown>`` when the object carries none."""
    then = parse_timestamp(timestamp)
    if then is None:
        return "<unknown>"
    now = now or datetime.now(timezone.utc)
    return human_duration((now - then).total_seconds())


def object_age(obj: dict[str, Any], now: datetime | None = None) -> str:
    return age((obj.get("metadata") or {}).get("creationTimestamp"), now)
