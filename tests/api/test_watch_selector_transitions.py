"""A watch with a label or field selector resumed from a resourceVersion, as ``kubectl get -w -l`` and
every filtered informer open it (list, then watch from the list's resourceVersion): an object that
stops matching comes as DELETED and one that starts matching as ADDED (docs/semantics.md W1), as the
Kubernetes API server sends them. Checked over HTTP and with the real kubectl."""
from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from pathlib import Path

import httpx

from storage.apiserver.server import RunningServer
from support import kubectl_binary

NS = "default"


def _config_map(http: httpx.Client, name: str, env: str) -> None:
    r = http.post(f"/api/v1/namespaces/{NS}/configmaps", json={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"env": env}}, "data": {"k": "v"}})
    assert r.status_code == 201, r.text


def _label(http: httpx.Client, name: str, env: str) -> None:
    r = http.patch(f"/api/v1/namespaces/{NS}/configmaps/{name}", content=json.dumps({"metadata": {"labels": {"env": env}}}),
                   headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text


def _touch(http: httpx.Client, name: str, value: str) -> None:
    r = http.patch(f"/api/v1/namespaces/{NS}/configmaps/{name}", content=json.dumps({"data": {"k": value}}),
                   headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text


def _changes(http: httpx.Client, selector: str) -> str:
    listed = http.get(f"/api/v1/namespaces/{NS}/configmaps", params={"labelSelector": selector})
    assert listed.status_code == 200
    assert sorted(i["metadata"]["name"] for i in listed.json()["items"]) == ["w1", "w2"]
    return str(listed.json()["metadata"]["resourceVersion"])


def _collect(http: httpx.Client, params: dict[str, str], got: "queue.Queue[tuple[str, str]]", opened: threading.Event) -> None:
    with http.stream("GET", f"/api/v1/namespaces/{NS}/configmaps", params={"watch": "1", "timeoutSeconds": "4", **params}) as r:
        opened.set()
        for raw in r.iter_lines():
            if raw:
                event = json.loads(raw)
                got.put((event["type"], event["object"]["metadata"].get("name", "")))


def _take(got: "queue.Queue[tuple[str, str]]", n: int) -> list[tuple[str, str]]:
    return [got.get(timeout=20) for _ in range(n)]


def test_w1_resumed_label_watch_sends_leaving_as_deleted_and_joining_as_added(http: httpx.Client) -> None:
    for name, env in (("w1", "sel"), ("w2", "sel"), ("w3", "other"), ("w4", "other")):
        _config_map(http, name, env)
    rv = _changes(http, "env=sel")
    got: queue.Queue[tuple[str, str]] = queue.Queue()
    opened = threading.Event()
    # Changes made before the watch opens are in its history: they must come out the same (W1).
    _label(http, "w1", "gone")       # leaves the selection
    collector = threading.Thread(target=_collect, args=(http, {"labelSelector": "env=sel", "resourceVersion": rv}, got, opened),
                                 daemon=True)
    collector.start()
    assert opened.wait(20)
    _label(http, "w3", "sel")        # joins it
    _touch(http, "w2", "changed")    # stays in it
    _touch(http, "w4", "changed")    # never in it: not sent
    _label(http, "w3", "gone")       # leaves again
    assert _take(got, 4) == [("DELETED", "w1"), ("ADDED", "w3"), ("MODIFIED", "w2"), ("DELETED", "w3")]
    collector.join(20)  # the stream's timeoutSeconds ends it: nothing else was sent
    assert got.empty(), list(got.queue)


def test_w1_kubectl_get_watch_with_a_selector_shows_the_transitions(http: httpx.Client, module_server: RunningServer) -> None:
    for name, env in (("k1", "kw"), ("k2", "no")):
        _config_map(http, name, env)
    cache = Path(str(module_server.kubeconfig)).parent / "kube-cache-w1"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    proc = subprocess.Popen([kubectl_binary(), "--kubeconfig", str(module_server.kubeconfig), "--cache-dir", str(cache),
                             "get", "configmaps", "-n", NS, "-l", "env=kw", "-w", "--output-watch-events",
                             "--no-headers", "--request-timeout=30s"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        first = lines.get(timeout=30).split()
        assert first[:2] == ["ADDED", "k1"], first  # kubectl prints the listed object, then watches from its version
        _label(http, "k1", "no")
        _label(http, "k2", "kw")
        seen = [lines.get(timeout=30).split()[:2] for _ in range(2)]
        assert seen == [["DELETED", "k1"], ["ADDED", "k2"]], seen
    finally:
        proc.kill()
        proc.wait(10)
