"""``backup.stowage.io/v1alpha1`` BackupSchedule: VolumeSnapshots of claims on a cron schedule, with retention
(SEMANTICS BC12-BC24)."""
from __future__ import annotations

from storage.api.modelbase import WireModel
from storage.api.models.meta import ObjectReference, Resource
from storage.api.selectors import LabelSelector


class BackupRetention(WireModel):
    keep_last: int | None = None
    keep_within: str | None = None
    # A snapshot still not readyToUse this long after it was taken is given up on (BC20).
    pending_deadline: str | None = None


class BackupScheduleSpec(WireModel):
    schedule: str | None = None
    time_zone: str | None = None
    claim_name: str | None = None
    claim_selector: LabelSelector | None = None
    volume_snapshot_class_name: str | None = None
    retention: BackupRetention | None = None
    suspend: bool | None = None
    starting_deadline_seconds: int | None = None


class BackupScheduleStatus(WireModel):
    last_schedule_time: str | None = None
    last_successful_time: str | None = None
    active: list[ObjectReference] | None = None


class BackupSchedule(Resource):
    spec: BackupScheduleSpec | None = None
    status: BackupScheduleStatus | None = None


__all__ = ["BackupSchedule"]
