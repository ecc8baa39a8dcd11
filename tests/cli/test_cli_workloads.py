"""``stowage scale`` and ``stowage rollout status|history|undo|restart`` through the real console script.

The API server runs without controllers, so each test plays the StatefulSet
controller's part itself (writing the set's status and ControllerRevisions
through the API) and every change the command sees is one the test made.
"""
from __future__ import annotations

import queue
import subprocess
import threading
from typing import IO, Any

import yaml

from cliutil import Cli
from support import stowage_executable
from statefulset.revision import new_revision

STS = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  replicas: 3
  serviceName: web
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: main, image: "debian:12", command: [sleep, 1d]}
"""

RS = """
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: front}
spec:
  replicas: 1
  selector: {matchLabels: {app: front}}
  template:
    metadata: {labels: {app: front}}
    spec:
      containers:
      - {name: main, image: "debian:12"}
"""


def _apply(cli: Cli, text: str) -> None:
    cli.ok("apply", "-f", "-", stdin=text)


def _set_status(cli: Cli, **status: Any) -> dict[str, Any]:
    """Write the set's status as the StatefulSet controller would, observing the current generation."""
    client = cli.client()
    sts = client.get("statefulsets", "web", "default")
    sts["status"] = {"observedGeneration": sts["metadata"].get("generation", 1), **status}
    return client.update_status(sts)


def _sts(cli: Cli) -> dict[str, Any]:
    return cli.client().get("statefulsets", "web", "default")


# --- scale -----------------------------------------------------------------

def test_scale_statefulset_sets_spec_replicas(cli: Cli) -> None:
    _apply(cli, STS)
    assert cli.ok("scale", "sts", "web", "--replicas", "5") == "statefulset.apps/web scaled\n"
    assert _sts(cli)["spec"]["replicas"] == 5
    assert cli.ok("scale", "statefulset/web", "--replicas=0") == "statefulset.apps/web scaled\n"
    assert _sts(cli)["spec"]["replicas"] == 0


def test_scale_current_replicas_precondition(cli: Cli) -> None:
    _apply(cli, STS)
    result = cli.run("scale", "sts", "web", "--replicas", "1", "--current-replicas", "2")
    assert result.code == 1
    assert result.err == "error: Expected replicas to be 2, was 3\n"
    assert _sts(cli)["spec"]["replicas"] == 3
    assert cli.ok("scale", "sts", "web", "--replicas", "1", "--current-replicas", "3") == "statefulset.apps/web scaled\n"
    assert _sts(cli)["spec"]["replicas"] == 1


def test_scale_rejects_negative_replicas_and_unscalable_kinds(cli: Cli) -> None:
    _apply(cli, STS)
    negative = cli.run("scale", "sts", "web", "--replicas", "-1")
    assert negative.code == 1
    assert "--replicas: Invalid value: -1: must be greater than or equal to 0" in negative.err
    wrong_kind = cli.run("scale", "pvc", "data", "--replicas", "1")
    assert wrong_kind.code == 1
    assert "scale is not supported for persistentvolumeclaims" in wrong_kind.err
    missing = cli.run("scale", "sts", "nope", "--replicas", "1")
    assert missing.code == 1
    assert 'statefulsets.apps "nope" not found' in missing.err or '"nope" not found' in missing.err


def test_scale_replicaset(cli: Cli) -> None:
    _apply(cli, RS)
    assert cli.ok("scale", "rs", "front", "--replicas", "4") == "replicaset.apps/front scaled\n"
    assert cli.client().get("replicasets", "front", "default")["spec"]["replicas"] == 4


# --- rollout status ----------------------------------------------------------

class _Lines:
    """A subprocess's stdout, line by line, with a bound on each wait (never a fixed sleep)."""

    def __init__(self, stream: IO[str]) -> None:
        self.queue: "queue.Queue[str | None]" = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.queue.put(line)
        self.queue.put(None)

    def next(self, timeout: float = 60) -> str | None:
        return self.queue.get(timeout=timeout)


def test_rollout_status_waits_until_the_set_is_rolled_out(cli: Cli) -> None:
    _apply(cli, STS)
    _set_status(cli, replicas=3, readyReplicas=1, currentReplicas=3, updatedReplicas=3,
                currentRevision="web-1", updateRevision="web-1")
    proc = subprocess.Popen(
        [stowage_executable(), "rollout", "status", "sts/web", "--timeout", "5m", "--kubeconfig", str(cli.kubeconfig)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli.env(),
    )
    try:
        assert proc.stdout is not None
        lines = _Lines(proc.stdout)
        assert lines.next() == "Waiting for 2 pods to be ready...\n"
        _set_status(cli, replicas=3, readyReplicas=2, currentReplicas=3, updatedReplicas=3,
                    currentRevision="web-1", updateRevision="web-1")
        assert lines.next() == "Waiting for 1 pods to be ready...\n"
        _set_status(cli, replicas=3, readyReplicas=3, currentReplicas=3, updatedReplicas=3,
                    currentRevision="web-1", updateRevision="web-1")
        assert lines.next() == "statefulset rolling update complete 3 pods at revision web-1...\n"
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_rollout_status_times_out(cli: Cli) -> None:
    _apply(cli, STS)
    _set_status(cli, replicas=3, readyReplicas=0)
    result = cli.run("rollout", "status", "sts", "web", "--timeout", "1s")
    assert result.code == 1
    assert result.out == "Waiting for 3 pods to be ready...\n"
    assert result.err == "error: timed out waiting for the condition\n"


def test_rollout_status_without_watch_prints_once(cli: Cli) -> None:
    _apply(cli, STS)
    result = cli.run("rollout", "status", "sts", "web", "--watch=false")
    assert result.code == 0
    assert result.out == "Waiting for statefulset spec update to be observed...\n"
    _set_status(cli, replicas=3, readyReplicas=3, currentReplicas=3, updatedReplicas=3,
                currentRevision="web-2", updateRevision="web-2")
    assert cli.ok("rollout", "status", "sts", "web") == "statefulset rolling update complete 3 pods at revision web-2...\n"


def test_rollout_status_partitioned(cli: Cli) -> None:
    """S4: members below the partition keep the old revision, and the rollout is complete without them."""
    _apply(cli, STS)
    cli.ok("patch", "sts", "web", "--type", "merge", "-p",
           '{"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}}')
    _set_status(cli, replicas=3, readyReplicas=3, updatedReplicas=1, currentRevision="a", updateRevision="b")
    assert cli.ok("rollout", "status", "sts", "web") == "partitioned roll out complete: 1 new pods have been updated...\n"


def test_rollout_status_on_delete_strategy_is_an_error(cli: Cli) -> None:
    _apply(cli, STS)
    cli.ok("patch", "sts", "web", "--type", "merge", "-p", '{"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": null}}}')
    result = cli.run("rollout", "status", "sts", "web")
    assert result.code == 1
    assert result.err == "error: rollout status is only available for RollingUpdate strategy type\n"


def test_rollout_bad_timeout_names_the_flag(cli: Cli) -> None:
    _apply(cli, STS)
    result = cli.run("rollout", "status", "sts", "web", "--timeout", "5 minutes")
    assert result.code == 1
    assert result.err.startswith('error: --timeout: invalid duration "5 minutes"')
    negative = cli.run("rollout", "status", "sts", "web", "--timeout", "-5s")
    assert negative.code == 1
    assert negative.err.startswith('error: --timeout: invalid duration "-5s": must not be negative')


# --- history and undo (S4: revisions are kept) --------------------------------

def _record_revisions(cli: Cli, images: list[str], causes: list[str | None]) -> None:
    """Create one ControllerRevision per image, as the controller does on each template change."""
    client = cli.client()
    for number, (image, cause) in enumerate(zip(images, causes), start=1):
        sts = _sts(cli)
        sts["spec"]["template"]["spec"]["containers"][0]["image"] = image
        sts = client.update(sts)
        revision = new_revision(sts, number)
        if cause:
            revision["metadata"].setdefault("annotations", {})["kubernetes.io/change-cause"] = cause
        client.create(revision)


def test_rollout_history_lists_revisions_with_change_cause(cli: Cli) -> None:
    _apply(cli, STS)
    _record_revisions(cli, ["debian:11", "debian:12"], ["stowage apply --filename=v1.yaml", None])
    out = cli.ok("rollout", "history", "sts", "web")
    assert out == (  # kubectl ends the table with a blank line; so do we
        "statefulset.apps/web\n"
        "REVISION  CHANGE-CAUSE\n"
        "1         stowage apply --filename=v1.yaml\n"
        "2         <none>\n"
        "\n"
    )
    one = cli.ok("rollout", "history", "sts/web", "--revision", "1")
    assert one.startswith("statefulset.apps/web with revision #1\nPod Template:\n")
    template = yaml.safe_load(one.split("Pod Template:\n", 1)[1])
    assert template["spec"]["containers"][0]["image"] == "debian:11"
    missing = cli.run("rollout", "history", "sts", "web", "--revision", "7")
    assert missing.code == 1
    assert missing.err == "error: unable to find the specified revision 7\n"


def test_rollout_history_ignores_other_sets_revisions(cli: Cli) -> None:
    _apply(cli, STS)
    _apply(cli, STS.replace("name: web}", "name: web2}"))
    other = cli.client().get("statefulsets", "web2", "default")
    cli.client().create(new_revision(other, 1))
    assert cli.ok("rollout", "history", "sts", "web") == 'No rollout history found in statefulset "web"\n'


def test_rollout_undo_goes_back_to_the_previous_revision(cli: Cli) -> None:
    _apply(cli, STS)
    _record_revisions(cli, ["debian:10", "debian:11", "debian:12"], [None, None, None])
    assert cli.ok("rollout", "undo", "sts", "web") == "statefulset.apps/web rolled back\n"
    assert _sts(cli)["spec"]["template"]["spec"]["containers"][0]["image"] == "debian:11"
    assert cli.ok("rollout", "undo", "sts/web", "--to-revision", "1") == "statefulset.apps/web rolled back\n"
    sts = _sts(cli)
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == "debian:10"
    assert sts["spec"]["template"]["metadata"]["labels"]["app"] == "web"
    again = cli.ok("rollout", "undo", "sts/web", "--to-revision", "1")
    assert again == "statefulset.apps/web skipped rollback (current template already matches revision 1)\n"


def test_rollout_undo_errors(cli: Cli) -> None:
    _apply(cli, STS)
    nothing = cli.run("rollout", "undo", "sts", "web")
    assert nothing.code == 1
    assert nothing.err == "error: no rollout history found for statefulset 'web'\n"
    _record_revisions(cli, ["debian:11", "debian:12"], [None, None])
    missing = cli.run("rollout", "undo", "sts", "web", "--to-revision", "9")
    assert missing.code == 1
    assert missing.err == "error: unable to find specified revision 9 in history\n"
    wrong_kind = cli.run("rollout", "undo", "pvc", "data")
    assert wrong_kind.code == 1
    assert "rollout undo is not supported for persistentvolumeclaims" in wrong_kind.err


def test_rollout_restart_stamps_the_template(cli: Cli) -> None:
    _apply(cli, STS)
    before = _sts(cli)
    assert cli.ok("rollout", "restart", "sts", "web") == "statefulset.apps/web restarted\n"
    after = _sts(cli)
    stamp = after["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
    assert stamp.endswith("Z") and "T" in stamp
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    assert after["spec"]["template"]["spec"] == before["spec"]["template"]["spec"]
