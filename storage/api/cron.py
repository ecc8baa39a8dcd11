"""Cron schedules as CronJob reads them, shared by CronJobs (SEMANTICS CJ2) and BackupSchedules (BC13)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

__all__ = ["cron_expression", "latest_run_at_or_before", "next_run_after", "zone"]

# The macros CronJob accepts besides five fields.
_MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}


def cron_expression(text: str) -> str:
    """Five fields (or a macro) as croniter reads them; ValueError saying what is wrong (BC13)."""
    expr = _MACROS.get(text.strip(), text.strip())
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"must have 5 fields (minute hour day-of-month month day-of-week), not {len(fields)}")
    if not croniter.is_valid(expr):
        raise ValueError("is not a valid cron expression")
    return expr


def zone(name: str | None) -> Any:
    if not name:
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def latest_run_at_or_before(expr: str, moment: datetime, tz: Any = timezone.utc) -> datetime:
    """The newest scheduled minute <= ``moment`` (seconds ignored), in UTC."""
    local = moment.astimezone(tz).replace(second=0, microsecond=0)
    if croniter.match(expr, local):
        return local.astimezone(timezone.utc)
    prev: datetime = croniter(expr, local).get_prev(datetime)
    return prev.astimezone(timezone.utc)


def next_run_after(expr: str, moment: datetime, tz: Any = timezone.utc) -> datetime:
    nxt: datetime = croniter(expr, moment.astimezone(tz)).get_next(datetime)
    return nxt.astimezone(timezone.utc)
