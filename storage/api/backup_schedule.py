"""BackupSchedule helpers shared by validation, printing, the controller and the CLI: cron times, durations,
the labels that tie a schedule to its snapshots (SEMANTICS BC12-BC24)."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any

from storage.api.cron import cron_expression, zone
from storage.api.durations import duration_seconds

BACKUP_GROUP = "backup.stowage.io"
SCHEDULE_LABEL = "backup.stowage.io/schedule"
CLAIM_LABEL = "backup.stowage.io/claim"
SCHEDULED_AT_ANNOTATION = "backup.stowage.io/scheduled-at"
DEFAULT_PENDING_DEADLINE = timedelta(hours=24)


def parse_duration(text: str) -> timedelta:
    """Go's duration syntax (``720h``, ``1h30m``) plus days and weeks (``7d``, ``2w``); ValueError when not one."""
    try:
        seconds = duration_seconds(text.strip(), days=True)
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise ValueError("must be a duration such as 30m, 24h, 7d or 1h30m")
    return timedelta(seconds=seconds)


def snapshot_name(schedule: str, claim: str, at: datetime) -> str:
    """``<schedule>-<claim>-<yyyymmddhhmm>`` (BC15); a name over 253 bytes is cut and made unique by a hash."""
    stamp = at.astimezone(timezone.utc).strftime("%Y%m%d%H%M")
    name = f"{schedule}-{claim}-{stamp}"
    if len(name) <= 253:
        return name
    digest = hashlib.sha256(f"{schedule}/{claim}".encode()).hexdigest()[:10]
    return f"{name[: 253 - len(stamp) - 12]}-{digest}-{stamp}"


def check(obj: dict[str, Any]) -> list[tuple[str, str, Any, str]]:
    """Field errors of a BackupSchedule as (type, path, value, detail); type is required/invalid/forbidden."""
    errors: list[tuple[str, str, Any, str]] = []
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    schedule = spec.get("schedule")
    if not schedule:
        errors.append(("required", "spec.schedule", None, ""))
    else:
        try:
            cron_expression(str(schedule))
        except ValueError as exc:
            errors.append(("invalid", "spec.schedule", schedule, str(exc)))
    try:
        zone(spec.get("timeZone"))
    except ValueError as exc:
        errors.append(("invalid", "spec.timeZone", spec.get("timeZone"), str(exc)))
    has_name, has_selector = bool(spec.get("claimName")), spec.get("claimSelector") is not None
    if has_name and has_selector:
        errors.append(("forbidden", "spec.claimSelector", None, "may not be specified together with claimName"))
    elif not has_name and not has_selector:
        errors.append(("required", "spec.claimName", None, "one of claimName or claimSelector is required"))
    if not spec.get("volumeSnapshotClassName"):
        errors.append(("required", "spec.volumeSnapshotClassName", None, ""))
    deadline = spec.get("startingDeadlineSeconds")
    if isinstance(deadline, int) and deadline < 0:
        errors.append(("invalid", "spec.startingDeadlineSeconds", deadline, "must be greater than or equal to 0"))
    retention = spec.get("retention") if isinstance(spec.get("retention"), dict) else {}
    keep_last = retention.get("keepLast")
    if isinstance(keep_last, int) and keep_last < 1:
        errors.append(("invalid", "spec.retention.keepLast", keep_last, "must be greater than or equal to 1"))
    for key in ("keepWithin", "pendingDeadline"):
        value = retention.get(key)
        if value is not None:
            try:
                if parse_duration(str(value)) <= timedelta(0):
                    errors.append(("invalid", f"spec.retention.{key}", value, "must be longer than 0"))
            except ValueError as exc:
                errors.append(("invalid", f"spec.retention.{key}", value, str(exc)))
    return errors


def printed_row(obj: dict[str, Any], now: datetime) -> list[str]:
    """``kubectl get backupschedule``: NAME SCHEDULE SUSPEND ACTIVE LAST SCHEDULE AGE (CronJob's columns)."""
    from storage.api.age import human_duration, object_age, parse_timestamp

    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    when = parse_timestamp(status.get("lastScheduleTime"))
    last_text = human_duration((now - when).total_seconds()) if when is not None else "<none>"
    return [str(meta.get("name") or ""), str(spec.get("schedule") or ""), "True" if spec.get("suspend") else "False",
            str(len(status.get("active") or [])), last_text, object_age(obj, now)]
