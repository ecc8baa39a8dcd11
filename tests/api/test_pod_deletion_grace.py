"""Graceful pod deletion through the API (rules G1-G3): ``gracePeriodSeconds`` from the query or the
DeleteOptions body, the deletion metadata Kubernetes sets, force deletion past the node agent's
finalizer, and shortening. No agent runs here: the pods carry its finalizer as an agent would add it."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from storage.api.names import NODE_AGENT_FINALIZER
from storage.api.timestamps import parse_time
from storage.client import Client
from storage.errors import NotFound

PODS = "/api/v1/namespaces/default/pods"


def raw(api_server, method: str, path: str, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {api_server.token}", **kw.pop("headers", {})}
    return httpx.request(method, api_server.url + path, headers=headers, timeout=30, verify=api_server.verify(), **kw)


def pod(name: str, *, node: str | None = "n1", grace: int | None = None, finalizers: tuple[str, ...] = (NODE_AGENT_FINALIZER,)) -> dict:
    spec: dict = {"containers": [{"name": "c", "image": "debian:12"}]}
    if node:
        spec["nodeName"] = node
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "finalizers": list(finalizers)}, "spec": spec}


def ends_in(obj: dict) -> float:
    """Seconds from now to the object's deletionTimestamp (whole seconds on the wire)."""
    end = parse_time(obj["metadata"]["deletionTimestamp"])
    assert end is not None
    return (end - datetime.now(timezone.utc)).total_seconds()


def test_g1_default_grace_is_the_pods_own_and_deletion_timestamp_is_when_it_ends(client: Client) -> None:
    client.create(pod("own"))  # terminationGracePeriodSeconds defaults to 30
    marked = client.delete("pods", "own", "default")
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 30
    assert 27 <= ends_in(marked) <= 31
    assert client.get("pods", "own", "default")["metadata"]["finalizers"] == [NODE_AGENT_FINALIZER]
    client.create(pod("short", grace=7))
    assert client.delete("pods", "short", "default")["metadata"]["deletionGracePeriodSeconds"] == 7


def test_g1_grace_from_query_or_body_negative_means_one_and_nonsense_is_400(api_server, client: Client) -> None:
    client.create(pod("q"))
    by_query = raw(api_server, "DELETE", f"{PODS}/q?gracePeriodSeconds=12")
    assert by_query.status_code == 200 and by_query.json()["metadata"]["deletionGracePeriodSeconds"] == 12
    client.create(pod("b"))
    by_body = raw(api_server, "DELETE", f"{PODS}/b?gracePeriodSeconds=40",
                  json={"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 9})
    assert by_body.json()["metadata"]["deletionGracePeriodSeconds"] == 9  # the body's field wins
    client.create(pod("neg"))
    assert raw(api_server, "DELETE", f"{PODS}/neg", json={"gracePeriodSeconds": -5}).json()["metadata"][
        "deletionGracePeriodSeconds"] == 1
    client.create(pod("bad"))
    bad = raw(api_server, "DELETE", f"{PODS}/bad?gracePeriodSeconds=soon")
    assert bad.status_code == 400 and "gracePeriodSeconds" in bad.json()["message"]
    assert "deletionTimestamp" not in client.get("pods", "bad", "default")["metadata"]
    dry = raw(api_server, "DELETE", f"{PODS}/bad?dryRun=All", json={"gracePeriodSeconds": 3})
    assert dry.status_code == 200 and dry.json()["metadata"]["deletionGracePeriodSeconds"] == 3
    assert "deletionTimestamp" not in client.get("pods", "bad", "default")["metadata"]


def test_g1_unscheduled_or_finished_pods_go_at_once(client: Client) -> None:
    client.create(pod("nowhere", node=None, finalizers=()))
    gone = client.delete("pods", "nowhere", "default")
    assert gone["metadata"]["deletionGracePeriodSeconds"] == 0
    with pytest.raises(NotFound):
        client.get("pods", "nowhere", "default")
    client.create(pod("done"))
    finished = client.get("pods", "done", "default")
    client.update_status({**finished, "status": {"phase": "Succeeded"}})
    last = client.delete("pods", "done", "default")
    assert last["metadata"]["deletionGracePeriodSeconds"] == 0 and not last["metadata"].get("finalizers")
    with pytest.raises(NotFound):
        client.get("pods", "done", "default")


def test_g2_force_delete_removes_at_once_past_the_agent_finalizer_but_not_others(api_server, client: Client) -> None:
    client.create(pod("forced"))
    with client.http.stream("GET", f"{PODS}?watch=true&fieldSelector=metadata.name%3Dforced&timeoutSeconds=5") as watch:
        resp = raw(api_server, "DELETE", f"{PODS}/forced",
                   json={"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0, "propagationPolicy": "Background"})
        assert resp.status_code == 200
        last = resp.json()
        assert last["metadata"]["deletionGracePeriodSeconds"] == 0 and last["metadata"].get("deletionTimestamp")
        with pytest.raises(NotFound):
            client.get("pods", "forced", "default")
        deleted = next(e for e in (json.loads(line) for line in watch.iter_lines() if line.strip())
                       if e["type"] == "DELETED")
    # The DELETED event carries the zero grace, so an agent stops what it runs at once.
    assert deleted["object"]["metadata"]["deletionGracePeriodSeconds"] == 0
    # Another finalizer still holds the object, as in Kubernetes; only the agent's is dropped.
    client.create(pod("held", finalizers=(NODE_AGENT_FINALIZER, "example.com/keep")))
    held = client.delete("pods", "held", "default", grace_period_seconds=0)
    assert held["metadata"]["finalizers"] == ["example.com/keep"]
    assert client.get("pods", "held", "default")["metadata"]["deletionGracePeriodSeconds"] == 0


def test_g3_a_terminating_pod_may_be_shortened_never_lengthened_then_forced(client: Client) -> None:
    client.create(pod("p", grace=600))
    first = client.delete("pods", "p", "default")
    assert first["metadata"]["deletionGracePeriodSeconds"] == 600
    end = parse_time(first["metadata"]["deletionTimestamp"])
    longer = client.delete("pods", "p", "default", grace_period_seconds=900)
    assert longer["metadata"]["deletionGracePeriodSeconds"] == 600
    assert longer["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]  # nothing written
    shorter = client.delete("pods", "p", "default", grace_period_seconds=20)
    assert shorter["metadata"]["deletionGracePeriodSeconds"] == 20
    # The end moves back by the difference, as Kubernetes computes it.
    assert parse_time(shorter["metadata"]["deletionTimestamp"]) == end - timedelta(seconds=580)
    assert client.get("pods", "p", "default")["metadata"]["finalizers"] == [NODE_AGENT_FINALIZER]
    client.delete("pods", "p", "default", grace_period_seconds=0)
    with pytest.raises(NotFound):
        client.get("pods", "p", "default")


def test_g1_delete_collection_passes_the_grace_to_each_pod(api_server, client: Client) -> None:
    for name in ("c1", "c2"):
        client.create(pod(name))
    resp = raw(api_server, "DELETE", PODS, json={"gracePeriodSeconds": 4})
    assert resp.status_code == 200
    assert sorted(p["metadata"]["deletionGracePeriodSeconds"] for p in resp.json()["items"]) == [4, 4]
    forced = raw(api_server, "DELETE", f"{PODS}?gracePeriodSeconds=0")
    assert forced.status_code == 200
    assert client.list("pods", "default")[0] == []
