"""SEMANTICS EVT1, EVT2: events.k8s.io/v1 Events, the same objects as v1 Events seen through the newer
group, through the real API server and the real kubectl: discovery, kubectl create of an events.k8s.io/v1
manifest, reads, lists and watches in each group's names, the group's stricter rules on create and update
(in Kubernetes' words), protobuf bodies, field validation in the group's own fields, and explain."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from k8s_protobuf_writer import Writer
from storage.apiserver.server import RunningServer
from support import kubectl_binary

V1_PATH = "/apis/events.k8s.io/v1/namespaces/default/events"
CORE_PATH = "/api/v1/namespaces/default/events"

Kubectl = Callable[..., subprocess.CompletedProcess[str]]

# What client-go's events.k8s.io recorder (tools/events) writes.
MANIFEST = """apiVersion: events.k8s.io/v1
kind: Event
metadata:
  name: {name}
  namespace: default
eventTime: "2026-12-07T04:10:00.123456Z"
reportingController: example.com/reconciler
reportingInstance: reconciler-7d9f
action: Reconcile
reason: Synced
type: Normal
note: the claim is bound
regarding:
  apiVersion: v1
  kind: PersistentVolumeClaim
  name: data-0
  namespace: default
"""


@pytest.fixture
def kubectl(module_server: RunningServer, kubectl_version: str, tmp_path: Path) -> Kubectl:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env["HOME"] = str(tmp_path)

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl_binary(kubectl_version), "--kubeconfig", str(module_server.kubeconfig),
                               "--cache-dir", str(tmp_path / "cache"), *args],
                              capture_output=True, text=True, timeout=120, env=env, input=stdin)

    return run


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _core_event(name: str, **extra: Any) -> dict[str, Any]:
    """A v1 Event as the old recorder (and Stowage's own) writes it."""
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": "default"},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "web", "namespace": "default"},
            "reason": "Started", "message": "Started container c", "type": "Normal",
            "source": {"component": "kubelet", "host": "n1"}, "firstTimestamp": "2026-12-07T04:00:00Z",
            "lastTimestamp": "2026-12-07T04:00:05Z", "count": 2, **extra}


def test_evt1_discovery_serves_the_group_beside_v1(http: httpx.Client, kubectl: Kubectl) -> None:
    group = http.get("/apis/events.k8s.io").json()
    assert [v["version"] for v in group["versions"]] == ["v1"]
    resources = http.get("/apis/events.k8s.io/v1").json()["resources"]
    assert [(r["name"], r["kind"], r["namespaced"], r.get("shortNames")) for r in resources] == [
        ("events", "Event", True, ["ev"])]
    listed = kubectl("api-resources", "--api-group=events.k8s.io", "--no-headers")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["events", "ev", "events.k8s.io/v1", "true", "Event"]
    # The core group comes first, as in Kubernetes: a bare "events" is still v1's.
    core = kubectl("get", "events", "-o", "json")
    assert _json(core)["items"] == [] or all(i["apiVersion"] == "v1" for i in _json(core)["items"])


def test_evt1_kubectl_creates_a_newer_event_and_each_group_shows_its_names(http: httpx.Client,
                                                                        kubectl: Kubectl) -> None:
    name = "recorded"
    created = kubectl("create", "-f", "-", stdin=MANIFEST.format(name=name))
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == f"event.events.k8s.io/{name} created"
    try:
        core = http.get(f"{CORE_PATH}/{name}").json()
        assert core["apiVersion"] == "v1"
        assert core["involvedObject"] == {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": "data-0",
                                          "namespace": "default"}
        assert core["message"] == "the claim is bound" and core["reportingComponent"] == "example.com/reconciler"
        assert "note" not in core and "regarding" not in core

        newer = _json(kubectl("get", f"events.v1.events.k8s.io/{name}", "-o", "json"))
        assert newer["apiVersion"] == "events.k8s.io/v1"
        assert newer["note"] == "the claim is bound" and newer["regarding"]["name"] == "data-0"
        assert newer["reportingController"] == "example.com/reconciler" and newer["action"] == "Reconcile"
        assert newer["eventTime"] == "2026-12-07T04:10:00.123456Z"
        assert "message" not in newer and "involvedObject" not in newer and "reportingComponent" not in newer

        table = kubectl("get", "events.events.k8s.io", "--field-selector", f"metadata.name={name}")
        assert table.returncode == 0, table.stderr
        assert table.stdout.split("\n")[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
        assert "persistentvolumeclaim/data-0" in table.stdout and "the claim is bound" in table.stdout
    finally:
        kubectl("delete", f"events.events.k8s.io/{name}")
    assert http.get(f"{CORE_PATH}/{name}").status_code == 404


def test_evt1_an_old_recorders_event_reads_lists_and_watches_in_the_newer_names(http: httpx.Client) -> None:
    name = "old-recorder"
    assert http.post(CORE_PATH, json=_core_event(name)).status_code == 201
    try:
        got = http.get(f"{V1_PATH}/{name}").json()
        # Go writes the struct fields that are never left out, and null for a zero time.
        assert {k: got[k] for k in ("eventTime", "deprecatedSource", "deprecatedFirstTimestamp",
                                    "deprecatedLastTimestamp", "deprecatedCount", "regarding", "note")} == {
            "eventTime": None, "deprecatedSource": {"component": "kubelet", "host": "n1"},
            "deprecatedFirstTimestamp": "2026-12-07T04:00:00Z", "deprecatedLastTimestamp": "2026-12-07T04:00:05Z",
            "deprecatedCount": 2, "regarding": _core_event(name)["involvedObject"], "note": "Started container c"}
        assert list(got)[:4] == ["apiVersion", "kind", "metadata", "eventTime"]

        listed = http.get(V1_PATH).json()
        assert listed["kind"] == "EventList" and listed["apiVersion"] == "events.k8s.io/v1"
        item = next(i for i in listed["items"] if i["metadata"]["name"] == name)
        assert item["apiVersion"] == "events.k8s.io/v1" and item["note"] == "Started container c"

        # A merge patch of the newer form's series (what the newer recorder does on a repeat) is stored.
        rv = listed["metadata"]["resourceVersion"]
        patched = http.patch(f"{V1_PATH}/{name}", content=json.dumps({"series": {
            "count": 3, "lastObservedTime": "2026-12-07T04:01:00.000000Z"}}),
            headers={"Content-Type": "application/merge-patch+json"})
        assert patched.status_code == 200, patched.text
        assert http.get(f"{CORE_PATH}/{name}").json()["series"] == {"count": 3,
                                                                    "lastObservedTime": "2026-12-07T04:01:00.000000Z"}
        with http.stream("GET", V1_PATH, params={"watch": "1", "resourceVersion": rv, "timeoutSeconds": "2",
                                                 "fieldSelector": f"metadata.name={name}"}) as watch:
            events = [json.loads(line) for line in watch.iter_lines() if line]
        assert [e["type"] for e in events] == ["MODIFIED"]
        assert events[0]["object"]["apiVersion"] == "events.k8s.io/v1" and events[0]["object"]["series"]["count"] == 3
    finally:
        http.delete(f"{CORE_PATH}/{name}")


def test_evt2_the_newer_groups_rules_on_create_in_kubernetes_words(http: httpx.Client, kubectl: Kubectl) -> None:
    bad = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "bad", "namespace": "default"},
           "type": "Info", "deprecatedCount": 3, "note": "x"}
    refused = http.post(V1_PATH, json=bad)
    assert refused.status_code == 422, refused.text
    assert refused.json()["message"] == ('Event "bad" is invalid: [eventTime: Required value, type: Invalid value: '
                                         '"": has invalid value: Info, deprecatedCount: Invalid value: "": needs to '
                                         'be unset]')
    # With an eventTime it is one of the new recorder's: its reporter, instance, action and reason are due. An
    # event about a cluster-scoped object (no regarding.namespace) lives in default or kube-system only.
    newer = {**bad, "metadata": {"name": "bad", "namespace": "kube-public"}, "eventTime": "2026-12-07T04:10:00.000000Z",
             "type": "Normal", "deprecatedCount": None, "series": {"count": 1}}
    refused = http.post(V1_PATH.replace("/default/", "/kube-public/"), json=newer)
    assert refused.status_code == 422, refused.text
    causes = refused.json()["details"]["causes"]
    assert list(dict.fromkeys(c["field"] for c in causes)) == [
        "involvedObject.namespace", "reportingController", "reportingInstance", "action", "reason", "series.count",
        "series.lastObservedTime"]
    assert {"reason": "FieldValueRequired", "message": "Required value", "field": "reportingController"} in causes
    assert {"reason": "FieldValueInvalid", "message": 'Invalid value: "": should be at least 2',
            "field": "series.count"} in causes
    assert http.get(f"{CORE_PATH}/bad").status_code == 404

    # The same event through v1 is the old recorder's: none of that applies, only v1's own rules.
    old_style = _core_event("old-style")
    assert http.post(CORE_PATH, json=old_style).status_code == 201
    http.delete(f"{CORE_PATH}/old-style")
    # A v1 event with an eventTime names its reporter by v1's field.
    refused = http.post(CORE_PATH, json={**_core_event("half-new"), "eventTime": "2026-12-07T04:10:00.000000Z",
                                         "reportingInstance": "i", "action": "A"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["message"] == ('Event "half-new" is invalid: [reportingComponent: Required value, '
                                         'reportingComponent: Invalid value: "": name part must be non-empty]')

    manifest = MANIFEST.format(name="long").replace("reason: Synced", "reason: " + "r" * 129)
    created = kubectl("create", "-f", "-", stdin=manifest)
    assert created.returncode == 1
    assert 'The Event "long" is invalid: reason: Invalid value: "": can have at most 128 characters' in created.stderr


def test_evt2_through_the_newer_group_only_the_series_changes(http: httpx.Client, kubectl: Kubectl) -> None:
    name = "immutable"
    created = kubectl("create", "-f", "-", stdin=MANIFEST.format(name=name))
    assert created.returncode == 0, created.stderr
    try:
        changed = kubectl("patch", f"events.events.k8s.io/{name}", "--type=merge", "-p", '{"note":"changed"}')
        assert changed.returncode == 1
        assert ('The Event "immutable" is invalid: message: Invalid value: "changed": field is immutable'
                in changed.stderr), changed.stderr
        short = kubectl("patch", f"events.events.k8s.io/{name}", "--type=merge", "-p", '{"series":{"count":1}}')
        assert short.returncode == 1
        assert 'series.count: Invalid value: "": should be at least 2' in short.stderr, short.stderr
        series = {"count": 2, "lastObservedTime": "2026-12-07T04:11:00.000000Z"}
        grown = kubectl("patch", f"events.events.k8s.io/{name}", "--type=merge", "-p", json.dumps({"series": series}))
        assert grown.returncode == 0, grown.stderr
        assert http.get(f"{V1_PATH}/{name}").json()["series"] == series
        # Through v1 the old recorder's updates (its count and last time) stay allowed, as in Kubernetes.
        core = http.get(f"{CORE_PATH}/{name}").json()
        core["message"] = "changed through v1"
        assert http.put(f"{CORE_PATH}/{name}", json=core).status_code == 200
        assert http.get(f"{V1_PATH}/{name}").json()["note"] == "changed through v1"
    finally:
        http.delete(f"{V1_PATH}/{name}")


def test_evt1_protobuf_bodies_and_field_validation_in_the_groups_fields(http: httpx.Client) -> None:
    name = "protobuf"
    body = Writer().object({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                            "metadata": {"name": name, "namespace": "default"},
                            "eventTime": "2026-12-07T04:10:00.000001Z", "reportingController": "example.com/c",
                            "reportingInstance": "c-1", "action": "Bind", "reason": "Bound", "type": "Warning",
                            "note": "from protobuf",
                            "regarding": {"kind": "Pod", "name": "web", "namespace": "default"}})
    created = http.post(V1_PATH, content=body, headers={"Content-Type": "application/vnd.kubernetes.protobuf"})
    assert created.status_code == 201, created.text
    try:
        assert created.json()["note"] == "from protobuf" and created.json()["type"] == "Warning"
        assert http.get(f"{CORE_PATH}/{name}").json()["message"] == "from protobuf"
        # v1's names are unknown fields of the newer group, and the reverse.
        strict = http.patch(f"{V1_PATH}/{name}", params={"fieldValidation": "Strict"},
                            content=json.dumps({"message": "x"}),
                            headers={"Content-Type": "application/merge-patch+json"})
        assert strict.status_code == 400, strict.text
        assert strict.json()["message"] == ('Event in version "v1" cannot be handled as a Event: strict decoding '
                                            'error: unknown field "message"')
        strict = http.patch(f"{CORE_PATH}/{name}", params={"fieldValidation": "Strict"},
                            content=json.dumps({"note": "x"}), headers={"Content-Type": "application/merge-patch+json"})
        assert strict.status_code == 400, strict.text
        assert strict.json()["message"].endswith('unknown field "note"')
    finally:
        http.delete(f"{CORE_PATH}/{name}")


def test_evt1_explain_describes_the_newer_group(kubectl: Kubectl) -> None:
    explained = kubectl("explain", "events", "--api-version=events.k8s.io/v1")
    assert explained.returncode == 0, explained.stderr
    for field in ("regarding", "note", "reportingController", "deprecatedCount", "series"):
        assert f"  {field}\t" in explained.stdout, explained.stdout
    assert "  involvedObject\t" not in explained.stdout and "  message\t" not in explained.stdout
