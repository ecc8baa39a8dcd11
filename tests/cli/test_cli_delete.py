"""``stowage delete`` with ``--grace-period``, ``--force``, ``--now`` and ``--wait`` (rules G1-G3, G5), as kubectl."""
from __future__ import annotations

import re

import pytest

from cliutil import Cli
from storage.api.names import NODE_AGENT_FINALIZER
from storage.cli.errors import CommandError
from storage.cli.write_commands import IMMEDIATE_DELETION_WARNING, delete_grace_period
from storage.errors import NotFound


def test_g5_flags_map_to_grace_as_kubectl_does() -> None:
    assert delete_grace_period(-1, False, False) is None
    assert delete_grace_period(0, False, False) == 1  # 0 without --force becomes 1
    assert delete_grace_period(0, True, False) == 0
    assert delete_grace_period(-1, True, False) == 0  # --force alone
    assert delete_grace_period(-1, False, True) == 1  # --now
    assert delete_grace_period(12, False, False) == 12
    with pytest.raises(CommandError, match="--now and --grace-period cannot be specified together"):
        delete_grace_period(5, False, True)
    with pytest.raises(CommandError, match="--force and --grace-period greater than 0 cannot be specified together"):
        delete_grace_period(5, True, False)


def test_g5_delete_marks_shortens_and_force_deletes_a_pod_the_agent_holds(cli: Cli) -> None:
    client = cli.client()
    client.create({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "p", "namespace": "default", "finalizers": [NODE_AGENT_FINALIZER]},
                   "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 600,
                            "containers": [{"name": "c", "image": "debian:12"}]}})
    assert cli.ok("delete", "pod", "p", "--wait=false") == 'pod "p" deleted\n'
    assert client.get("pods", "p", "default")["metadata"]["deletionGracePeriodSeconds"] == 600
    described = cli.ok("describe", "pod", "p")  # as kubectl: how long the grace still lasts, and the period
    assert re.search(r"^Status:\s+Terminating \(lasts (9m\d+s|10m)\)$", described, re.M), described
    assert re.search(r"^Termination Grace Period:\s+600s$", described, re.M), described
    cli.ok("delete", "pod", "p", "--grace-period", "30", "--wait=false")
    assert client.get("pods", "p", "default")["metadata"]["deletionGracePeriodSeconds"] == 30
    cli.ok("delete", "pod", "p", "--now", "--wait=false")
    assert client.get("pods", "p", "default")["metadata"]["deletionGracePeriodSeconds"] == 1
    # Waiting (the default) on a pod no agent lets go would never end: --timeout gives up, as kubectl's.
    waited = cli.run("delete", "pod", "p", "--timeout", "1s")
    assert waited.code == 1 and "timed out waiting for the condition on pods/p" in waited.err
    forced = cli.run("delete", "pod", "p", "--force")
    assert forced.code == 0, forced.err
    assert forced.out == 'pod "p" force deleted\n'
    assert IMMEDIATE_DELETION_WARNING in forced.err
    with pytest.raises(NotFound):
        client.get("pods", "p", "default")
    refused = cli.run("delete", "pod", "p", "--force", "--grace-period", "5")
    assert refused.code != 0 and "--force and --grace-period greater than 0" in refused.err
