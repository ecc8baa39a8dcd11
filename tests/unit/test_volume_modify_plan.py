"""SEMANTICS VAC5: the modify controller's plan for a claim whose change the driver refused as infeasible
(external-resizer's slow set, read from the claim's own status)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from storage.api.timestamps import format_time
from storage.controllers.volume_attributes import INFEASIBLE_RETRY_SECONDS, _merge_condition, plan_modify

NOW = datetime(2026, 12, 5, 12, 0, 0, tzinfo=timezone.utc)
DRIVER = "csi.example.com"


def _claim(target: str, status: str | None = None, since: datetime | None = None) -> dict[str, Any]:
    claim: dict[str, Any] = {"metadata": {"name": "data", "namespace": "default", "uid": "u1"},
                             "spec": {"volumeAttributesClassName": target, "volumeName": "pv1"},
                             "status": {"phase": "Bound", "currentVolumeAttributesClassName": "gold"}}
    if status:
        claim["status"]["modifyVolumeStatus"] = {"status": status, "targetVolumeAttributesClassName": "bogus"}
        claim["status"]["conditions"] = [{"type": "ModifyingVolume", "status": "True", "message": "refused",
                                          "lastTransitionTime": format_time(since or NOW)}]
    return claim


VOLUME = {"metadata": {"name": "pv1"}, "spec": {"csi": {"driver": DRIVER}}}
BOGUS = {"metadata": {"name": "bogus"}, "driverName": DRIVER, "parameters": {"bandwidth": "1G"}}


def test_a_class_found_infeasible_waits_out_the_retry_period() -> None:
    refused = _claim("bogus", "Infeasible", since=NOW - timedelta(seconds=10))
    plan = plan_modify(refused, VOLUME, BOGUS, DRIVER, True, now=NOW)
    assert plan.action == "wait" and plan.target == "bogus"
    assert plan.retry_after == INFEASIBLE_RETRY_SECONDS - 10


def test_after_the_retry_period_the_driver_is_asked_again() -> None:
    refused = _claim("bogus", "Infeasible", since=NOW - timedelta(seconds=INFEASIBLE_RETRY_SECONDS + 1))
    plan = plan_modify(refused, VOLUME, BOGUS, DRIVER, True, now=NOW)
    assert plan.action == "modify" and plan.parameters == {"bandwidth": "1G"}


def test_another_class_is_tried_at_once_and_an_in_progress_one_is_not_held() -> None:
    other = {**BOGUS, "metadata": {"name": "platinum"}, "parameters": {"iops": "9000"}}
    assert plan_modify(_claim("platinum", "Infeasible"), VOLUME, other, DRIVER, True, now=NOW).action == "modify"
    assert plan_modify(_claim("bogus", "InProgress"), VOLUME, BOGUS, DRIVER, True, now=NOW).action == "modify"


def test_a_condition_said_again_keeps_its_time_and_a_new_one_replaces_it() -> None:
    old = [{"type": "ModifyingVolume", "status": "True", "message": "refused", "lastTransitionTime": "T0"},
           {"type": "Other", "status": "True"}]
    again = {"type": "ModifyingVolume", "status": "True", "message": "refused", "lastTransitionTime": "T1"}
    assert _merge_condition(old, again) == old
    changed = {**again, "message": "in progress"}
    assert _merge_condition(old, changed) == [old[1], changed]


def test_the_controllers_own_status_writes_are_no_news() -> None:
    from storage.controllers.volume_attributes import claim_news

    before = _claim("bogus", "InProgress")
    errored = {**before, "metadata": {**before["metadata"], "resourceVersion": "9"},
               "status": {**before["status"], "conditions": [{"type": "ModifyVolumeError", "status": "True",
                                                               "message": "request id 2"}]}}
    assert not claim_news(before, errored)
    asked = {**before, "spec": {**before["spec"], "volumeAttributesClassName": "gold"}}
    assert claim_news(before, asked)
    applied = {**before, "status": {**before["status"], "currentVolumeAttributesClassName": "bogus"}}
    assert claim_news(before, applied)
    assert claim_news(None, before) and claim_news(before, None) and claim_news(before, before)
