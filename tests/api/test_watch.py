"""Watch streams over real HTTP: revisions, synthetic ADDED, selectors, timeouts, 410."""
from __future__ import annotations

import threading
from typing import Any

import httpx
import orjson
import pytest

from apiobjects import config_map, ensure_namespaces
from storage.client import Client
from storage.errors import Gone
from tcp_relay import TcpRelay


def collect(events, count: int) -> list[dict[str, Any]]:
    out = []
    for event in events:
        out.append(event)
        if len(out) == count:
            break
    return out


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"]["name"]) for e in events]


@pytest.mark.timeout(60)
def test_events_after_a_revision(client: Client) -> None:
    first = client.create(config_map("a"))
    rv = first["metadata"]["resourceVersion"]
    client.create(config_map("b"))
    cm = client.get("configmaps", "b", "default")
    client.update(dict(cm, data={"x": "1"}))
    client.delete("configmaps", "a", "default")
    events = collect(client.watch("configmaps", "default", resource_version=rv, timeout=30), 3)
    assert summary(events) == [("ADDED", "b"), ("MODIFIED", "b"), ("DELETED", "a")]
    assert all(e["object"]["kind"] == "ConfigMap" and e["object"]["apiVersion"] == "v1" for e in events)
    revisions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert revisions == sorted(revisions) and revisions[0] > int(rv)


@pytest.mark.timeout(60)
def test_without_revision_starts_with_synthetic_added_then_live_events(client: Client) -> None:
    client.create(config_map("existing"))
    stream = client.watch("configmaps", "default", timeout=30)
    first = next(stream)
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "existing")
    client.create(config_map("later"))
    second = next(stream)
    assert (second["type"], second["object"]["metadata"]["name"]) == ("ADDED", "later")
    stream.close()


@pytest.mark.timeout(60)
def test_watch_is_filtered_by_namespace_and_labels(client: Client) -> None:
    ensure_namespaces(client, "other")
    start = client.create(config_map("marker", "other"))["metadata"]["resourceVersion"]
    client.create(config_map("wrong-ns", "other", labels={"app": "db"}))
    client.create(config_map("wrong-label", "default", labels={"app": "web"}))
    client.create(config_map("right", "default", labels={"app": "db"}))
    right = client.get("configmaps", "right", "default")
    # Leaving the selector looks like a deletion to this watcher, as in Kubernetes.
    client.update(dict(right, metadata=dict(right["metadata"], labels={"app": "web"})))
    events = collect(client.watch("configmaps", "default", resource_version=start, label_selector="app=db", timeout=30), 2)
    assert summary(events) == [("ADDED", "right"), ("DELETED", "right")]


@pytest.mark.timeout(60)
def test_field_selector_on_watch(client: Client) -> None:
    client.create(config_map("a"))
    client.create(config_map("b"))
    events = collect(client.watch("configmaps", "default", field_selector="metadata.name=b", timeout=30), 1)
    assert summary(events) == [("ADDED", "b")]


@pytest.mark.timeout(60)
def test_timeout_seconds_ends_the_stream(client: Client) -> None:
    # The stream must end by itself; without timeoutSeconds honoured this test hits its own timeout.
    events = list(client.watch("configmaps", "default", timeout=1))
    assert events == []


@pytest.mark.timeout(60)
def test_too_old_revision_is_an_error_event_with_410(api_server, client: Client) -> None:
    first = client.create(config_map("a"))
    for i in range(5):
        client.create(config_map(f"n{i}"))
    api_server.store.compact(1)
    resp = httpx.get(
        f"{api_server.url}/api/v1/namespaces/default/configmaps",
        params={"watch": "true", "resourceVersion": first["metadata"]["resourceVersion"]},
        headers={"Authorization": f"Bearer {api_server.token}"}, timeout=30, verify=api_server.verify(),
    )
    assert resp.status_code == 200
    event = orjson.loads(resp.text.splitlines()[0])
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410 and event["object"]["kind"] == "Status"
    with pytest.raises(Gone):
        list(client.watch("configmaps", "default", resource_version=first["metadata"]["resourceVersion"], timeout=5))


@pytest.mark.timeout(60)
def test_legacy_watch_prefix_and_single_object(api_server, client: Client) -> None:
    client.create(config_map("a"))
    client.create(config_map("b"))
    headers = {"Authorization": f"Bearer {api_server.token}"}
    with httpx.stream("GET", f"{api_server.url}/api/v1/watch/namespaces/default/configmaps/b",
                      params={"timeoutSeconds": "30"}, headers=headers, timeout=30, verify=api_server.verify()) as resp:
        assert resp.status_code == 200
        first = orjson.loads(next(resp.iter_lines()))
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "b")


@pytest.mark.timeout(60)
def test_watch_list_ends_the_initial_events_with_a_bookmark(api_server, client: Client) -> None:
    """client-go's watch-list (kubectl wait, rollout status): the current objects, then the bookmark that says
    they are all there, then live events -- also when the client names a resourceVersion (NotOlderThan)."""
    rv = client.create(config_map("a"))["metadata"]["resourceVersion"]
    client.create(config_map("b"))
    headers = {"Authorization": f"Bearer {api_server.token}"}
    params = {"watch": "true", "sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan",
              "allowWatchBookmarks": "true", "resourceVersion": rv, "timeoutSeconds": "30"}
    with httpx.stream("GET", f"{api_server.url}/api/v1/namespaces/default/configmaps", params=params,
                      headers=headers, timeout=30, verify=api_server.verify()) as resp:
        lines = resp.iter_lines()
        events = [orjson.loads(next(lines)) for _ in range(3)]
        assert summary(events[:2]) == [("ADDED", "a"), ("ADDED", "b")]
        assert events[2]["type"] == "BOOKMARK"
        meta = events[2]["object"]["metadata"]
        assert meta["annotations"] == {"k8s.io/initial-events-end": "true"}
        assert int(meta["resourceVersion"]) >= int(events[1]["object"]["metadata"]["resourceVersion"])
        client.create(config_map("c"))
        live = orjson.loads(next(lines))
    assert (live["type"], live["object"]["metadata"]["name"]) == ("ADDED", "c")


@pytest.mark.timeout(60)
def test_stopping_the_server_ends_open_watches(tmp_path) -> None:
    from serverutil import running_server

    with running_server(tmp_path) as server:
        client = server.client()
        stream = client.watch("configmaps", "default", timeout=3600)
        opened = threading.Event()
        ended = threading.Event()

        def drain() -> None:
            for _ in stream:
                opened.set()
            ended.set()

        worker = threading.Thread(target=drain, daemon=True)
        worker.start()
        # The watch is lazy: until an event has come through, the request may not have reached the
        # server, and stopping first would test a refused connection instead of an open stream.
        client.create(config_map("first"))
        assert opened.wait(30), "the watch never delivered the ConfigMap created after it opened"
        server.stop()
        assert ended.wait(30), "the watch stream stayed open after the server stopped"


@pytest.mark.timeout(120)
def test_a_watch_whose_connection_goes_silent_is_reported_dead_while_bookmarks_keep_a_quiet_one(tmp_path) -> None:
    """L9: a host cut off from the network: the server's events are lost on the way and TCP tells a reader
    nothing, so a watch with ``idle_timeout`` (and bookmarks, which the server sends while nothing changes)
    raises TemporaryError instead of waiting for ever; the agent resumes from the last revision it had."""
    from serverutil import running_server
    from storage.client import Client
    from storage.errors import TemporaryError

    with running_server(tmp_path, bookmark_interval=0.5) as server:
        proxy = TcpRelay(server.port)
        try:
            with server.client() as direct:
                ensure_namespaces(direct, "default")
                scheme = server.url.split("://")[0]
                via_proxy = Client(f"{scheme}://127.0.0.1:{proxy.port}", server.token,
                                   ca_data=server.tls.trust_pem if server.tls else None)
                seen: list[str] = []
                outcome: list[BaseException | None] = []
                quiet_enough = threading.Event()

                def drain() -> None:
                    try:
                        for event in via_proxy.watch("configmaps", "default", timeout=600, idle_timeout=3):
                            seen.append(event["type"])
                            if seen.count("BOOKMARK") >= 10:
                                quiet_enough.set()  # 5 s with no change and no false alarm
                        outcome.append(None)
                    except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                        outcome.append(exc)

                worker = threading.Thread(target=drain, daemon=True)
                worker.start()
                assert quiet_enough.wait(60), f"the quiet watch ended or stayed silent: {seen} {outcome}"
                assert not outcome, f"a quiet watch with bookmarks was taken as dead: {outcome}"
                proxy.frozen.set()
                direct.create(config_map("lost-on-the-way"))
                worker.join(60)
                assert not worker.is_alive(), "the watch waited on a silent connection for over 60 s"
                assert len(outcome) == 1 and isinstance(outcome[0], TemporaryError), outcome
                assert "silent for 3 s" in str(outcome[0])
                assert "ADDED" not in seen
                via_proxy.close()
        finally:
            proxy.close()
