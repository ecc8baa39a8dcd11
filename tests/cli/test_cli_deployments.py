"""``stowage scale|rollout ... deploy/NAME`` through the console script, with the Deployment, ReplicaSet and
garbage-collector controllers running and a stand-in kubelet that marks every pod ready (SEMANTICS D1-D4)."""
from __future__ import annotations

import copy
import threading
from datetime import datetime, timezone
from typing import Any, Iterator

import pytest

from cliutil import Cli, parse_table
from storage.controllers.deployment import DeploymentReconciler
from storage.controllers.gc import GarbageCollector
from storage.controllers.workloads import ReplicaSetReconciler
from storage.errors import Conflict, NotFound
from support import running_controllers, wait_for

DEPLOY = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, annotations: {kubernetes.io/change-cause: first}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: main, image: "debian:12"}
"""


class ReadyKubelet:
    """Marks every pod Running and Ready as soon as it appears, from the store's watch."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.store.watch("pods", None, since=0) as watcher:
            while not self.stop.is_set():
                event = watcher.get(timeout=0.5)
                if event is None or event.type == "DELETED" or (event.object.get("status") or {}).get("phase") == "Running":
                    continue
                self._ready(event.object["metadata"]["namespace"], event.object["metadata"]["name"])

    def _ready(self, namespace: str, name: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        for _ in range(20):
            try:
                pod = copy.deepcopy(self.store.get("pods", namespace, name))
            except NotFound:
                return
            pod["spec"].setdefault("nodeName", "node-1")
            pod["status"] = {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": stamp}]}
            try:
                self.store.update("pods", pod)
                return
            except Conflict:
                continue
            except NotFound:
                return


@pytest.fixture
def cluster(cli: Cli) -> Iterator[Cli]:
    kubelet = ReadyKubelet(cli.server.store)
    kubelet.thread.start()
    try:
        with running_controllers(cli.server.store, [DeploymentReconciler, ReplicaSetReconciler, GarbageCollector]):
            yield cli
    finally:
        kubelet.stop.set()
        kubelet.thread.join(10)


def image(cli: Cli) -> str:
    return cli.client().get("deployments", "web", "default")["spec"]["template"]["spec"]["containers"][0]["image"]


def pod_images(cli: Cli) -> list[str]:
    pods = cli.client().list("pods", "default")[0]
    return sorted(p["spec"]["containers"][0]["image"] for p in pods if not p["metadata"].get("deletionTimestamp"))


def test_rollout_status_history_undo_and_restart(cluster: Cli) -> None:
    cli = cluster
    cli.ok("apply", "-f", "-", stdin=DEPLOY)
    assert cli.ok("rollout", "status", "deploy/web", "--timeout", "2m") .endswith(
        'deployment "web" successfully rolled out\n')
    cli.ok("patch", "deploy", "web", "-p",
           '{"metadata":{"annotations":{"kubernetes.io/change-cause":"second"}},'
           '"spec":{"template":{"spec":{"containers":[{"name":"main","image":"debian:13"}]}}}}')
    assert cli.ok("rollout", "status", "deployment", "web", "--timeout", "2m").endswith(
        'deployment "web" successfully rolled out\n')
    assert pod_images(cli) == ["debian:13", "debian:13"]
    assert cli.ok("rollout", "history", "deploy/web") == (
        "deployment.apps/web\nREVISION  CHANGE-CAUSE\n1         first\n2         second\n")
    shown = cli.ok("rollout", "history", "deploy/web", "--revision", "1")
    assert shown.startswith("deployment.apps/web with revision #1\nPod Template:\n") and "debian:12" in shown
    assert "pod-template-hash" not in shown

    assert cli.ok("rollout", "undo", "deploy/web") == "deployment.apps/web rolled back\n"
    assert image(cli) == "debian:12"
    deploy = cli.client().get("deployments", "web", "default")
    assert deploy["metadata"]["annotations"]["kubernetes.io/change-cause"] == "first"
    cli.ok("rollout", "status", "deploy/web", "--timeout", "2m")
    wait_for(lambda: pod_images(cli) == ["debian:12", "debian:12"], "the rolled back pods")
    # The old set came back as revision 3; revision 1 is gone from the history.
    assert cli.ok("rollout", "history", "deploy/web") == (
        "deployment.apps/web\nREVISION  CHANGE-CAUSE\n2         second\n3         first\n")
    assert cli.ok("rollout", "undo", "deploy/web", "--to-revision", "3") == (
        "deployment.apps/web skipped rollback (current template already matches revision 3)\n")
    missing = cli.run("rollout", "undo", "deploy/web", "--to-revision", "9")
    assert missing.code == 1 and missing.err == "error: unable to find specified revision 9 in history\n"

    before = {p["metadata"]["name"] for p in cli.client().list("pods", "default")[0]}
    assert cli.ok("rollout", "restart", "deploy/web") == "deployment.apps/web restarted\n"
    template = cli.client().get("deployments", "web", "default")["spec"]["template"]
    assert "kubectl.kubernetes.io/restartedAt" in template["metadata"]["annotations"]
    cli.ok("rollout", "status", "deploy/web", "--timeout", "2m")
    wait_for(lambda: not before & {p["metadata"]["name"] for p in cli.client().list("pods", "default")[0]},
             "every pod to be replaced")


def test_pause_holds_a_template_change_until_resume(cluster: Cli) -> None:
    cli = cluster
    cli.ok("apply", "-f", "-", stdin=DEPLOY)
    cli.ok("rollout", "status", "deploy/web", "--timeout", "2m")
    assert cli.ok("rollout", "pause", "deploy/web") == "deployment.apps/web paused\n"
    again = cli.run("rollout", "pause", "deploy/web")
    assert again.code == 1 and again.err == 'error: deployments.apps "web" is already paused\n'
    cli.ok("patch", "deploy", "web", "-p", '{"spec":{"template":{"spec":{"containers":[{"name":"main","image":"debian:13"}]}}}}')
    assert cli.ok("scale", "deploy/web", "--replicas", "3") == "deployment.apps/web scaled\n"
    wait_for(lambda: pod_images(cli) == ["debian:12"] * 3, "a paused deployment to follow replicas only")
    deploy = cli.client().get("deployments", "web", "default")
    progressing = next(c for c in deploy["status"]["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "DeploymentPaused"
    restart = cli.run("rollout", "restart", "deploy/web")
    assert restart.code == 1 and "can't restart paused deployment" in restart.err
    assert cli.ok("rollout", "resume", "deploy/web") == "deployment.apps/web resumed\n"
    cli.ok("rollout", "status", "deploy/web", "--timeout", "2m")
    wait_for(lambda: pod_images(cli) == ["debian:13"] * 3, "the held rollout after resume")
    not_paused = cli.run("rollout", "resume", "deploy/web")
    assert not_paused.code == 1 and not_paused.err == 'error: deployments.apps "web" is not paused\n'


def test_get_deployments_shows_kubectl_columns(cluster: Cli) -> None:
    cli = cluster
    cli.ok("apply", "-f", "-", stdin=DEPLOY)
    cli.ok("rollout", "status", "deploy/web", "--timeout", "2m")
    rows = parse_table(cli.ok("get", "deploy"), ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"])
    assert [(r["NAME"], r["READY"], r["UP-TO-DATE"], r["AVAILABLE"]) for r in rows] == [("web", "2/2", "2", "2")]
