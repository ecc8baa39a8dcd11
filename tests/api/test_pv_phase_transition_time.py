"""K3: a volume's ``status.lastPhaseTransitionTime``, stamped by the API server as Kubernetes 1.29+ does."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from apiobjects import pv

_RFC3339_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
_OLD = "2020-01-02T03:04:05Z"


def _recent(stamp: str) -> bool:
    moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return abs(datetime.now(timezone.utc) - moment) < timedelta(minutes=5)


def _put_status(http: httpx.Client, volume: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    r = http.put(f"/api/v1/persistentvolumes/{volume['metadata']['name']}/status", json={**volume, "status": status})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_k3_a_new_volume_is_pending_since_its_creation(http: httpx.Client) -> None:
    sent = pv("k3-new")
    sent["status"] = {"phase": "Bound", "lastPhaseTransitionTime": _OLD}  # the creator's status is not kept
    r = http.post("/api/v1/persistentvolumes", json=sent)
    assert r.status_code == 201, r.text
    status = r.json()["status"]
    assert status["phase"] == "Pending"
    stamp = status["lastPhaseTransitionTime"]
    assert _RFC3339_SECONDS.match(stamp) and _recent(stamp), stamp
    assert stamp >= r.json()["metadata"]["creationTimestamp"]


def test_k3_each_phase_change_is_stamped_and_a_same_phase_write_keeps_the_stamp(http: httpx.Client) -> None:
    volume = http.post("/api/v1/persistentvolumes", json=pv("k3-phases")).json()
    # A writer may set the time itself; with no phase change its value stands (as in Kubernetes).
    volume = _put_status(http, volume, {"phase": "Pending", "lastPhaseTransitionTime": _OLD})
    assert volume["status"]["lastPhaseTransitionTime"] == _OLD

    volume = _put_status(http, volume, {"phase": "Available"})
    stamp = volume["status"]["lastPhaseTransitionTime"]
    assert stamp != _OLD and _RFC3339_SECONDS.match(stamp) and _recent(stamp), stamp

    kept = _put_status(http, volume, {"phase": "Available", "message": "no phase change"})
    assert kept["status"]["lastPhaseTransitionTime"] == stamp
    volume = _put_status(http, kept, {"phase": "Available", "lastPhaseTransitionTime": _OLD})
    # The old stamp sent back unchanged with a new phase is no time of the writer's own: it is replaced.
    released = _put_status(http, volume, {"phase": "Released", "lastPhaseTransitionTime": _OLD})
    assert released["status"]["lastPhaseTransitionTime"] != _OLD and _recent(released["status"]["lastPhaseTransitionTime"])


def test_k3_a_phase_change_by_merge_patch_is_stamped_and_a_writers_own_time_is_kept(http: httpx.Client) -> None:
    volume = http.post("/api/v1/persistentvolumes", json=pv("k3-patch")).json()
    _put_status(http, volume, {"phase": "Pending", "lastPhaseTransitionTime": _OLD})
    r = http.patch("/api/v1/persistentvolumes/k3-patch/status", json={"status": {"phase": "Failed"}},
                   headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["status"]["phase"] == "Failed"
    assert r.json()["status"]["lastPhaseTransitionTime"] != _OLD and _recent(r.json()["status"]["lastPhaseTransitionTime"])

    own = "2021-05-06T07:08:09Z"
    r = http.patch("/api/v1/persistentvolumes/k3-patch/status",
                   json={"status": {"phase": "Available", "lastPhaseTransitionTime": own}},
                   headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["status"]["lastPhaseTransitionTime"] == own
    assert http.get("/api/v1/persistentvolumes/k3-patch").json()["status"]["lastPhaseTransitionTime"] == own


def test_k3_a_write_of_the_main_resource_keeps_the_phase_and_its_stamp(http: httpx.Client) -> None:
    volume = http.post("/api/v1/persistentvolumes", json=pv("k3-main")).json()
    stamp = volume["status"]["lastPhaseTransitionTime"]
    volume["metadata"]["labels"] = {"changed": "yes"}
    volume["status"] = {"phase": "Bound"}
    r = http.put("/api/v1/persistentvolumes/k3-main", json=volume)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == {"phase": "Pending", "lastPhaseTransitionTime": stamp}
