"""Cron schedules as CronJob reads them, shared by CronJobs (SEMANTICS CJ2) and BackupSchedules (BC13)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from storage.api.durations import duration_seconds

__all__ = ["cron_expression", "every_seconds", "latest_run_at_or_before", "most_recent_run",
           "next_run_after", "zone"]

# The macros CronJob accepts besides five fields.
_MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}


EVERY = "@every "


def every_seconds(expr: str) -> int | None:
    """CJ2: the whole seconds between runs of an ``@every <duration>`` schedule (robfig/cron's Every: whole
    seconds, at least one), or None for a cron expression."""
    if not expr.startswith(EVERY):
        return None
    return max(1, int(duration_seconds(expr[len(EVERY):])))


def cron_expression(text: str, *, every: bool = False) -> str:
    """Five fields (or a macro) as croniter reads them; ValueError saying what is wrong (BC13). With
    ``every`` (a CronJob's schedule, CJ2), also ``@every <duration>``, as Kubernetes' cron parser reads it."""
    if every and text.startswith(EVERY):
        try:
            every_seconds(text)
        except ValueError as exc:
            raise ValueError(f"failed to parse duration {text}: {exc}") from None
        return text
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
    """The first scheduled time after ``moment``, in UTC; an ``@every`` schedule counts from ``moment`` itself
    (its whole second), as robfig/cron's ConstantDelaySchedule does."""
    every = every_seconds(expr)
    if every is not None:
        return (moment.replace(microsecond=0) + timedelta(seconds=every)).astimezone(timezone.utc)
    nxt: datetime = croniter(expr, moment.astimezone(tz)).get_next(datetime)
    return nxt.astimezone(timezone.utc)


def most_recent_run(expr: str, earliest: datetime, now: datetime, tz: Any = timezone.utc) -> tuple[datetime | None, int]:
    """Kubernetes' mostRecentScheduleTime (CJ4): the newest scheduled time after ``earliest`` and at most
    ``now`` (None if none) and about how many were missed since ``earliest``. An ``@every`` schedule's times
    count from ``earliest`` (the last run, or the creation). ValueError for a schedule whose runs are less
    than a second apart."""
    first = next_run_after(expr, earliest, tz)
    if now < first:
        return None, 0
    second = next_run_after(expr, first, tz)
    if now < second:
        return first, 1
    gap = round((second - first).total_seconds())
    if gap < 1:
        raise ValueError("time difference between two schedules is less than 1 second")
    missed = int((now - first).total_seconds()) // gap + 1
    # From one gap before the estimate, so irregular schedules (30 6-16/4 * * 1-5) are walked exactly.
    moment = next_run_after(expr, first + timedelta(seconds=(missed - 2) * gap), tz)
    recent: datetime | None = None
    while moment <= now:
        recent, moment = moment, next_run_after(expr, moment, tz)
    return recent, missed
