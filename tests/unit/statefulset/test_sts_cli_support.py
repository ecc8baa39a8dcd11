"""S4: what `rollout status|history|undo` and `scale sts` compute for the command line."""
from __future__ import annotations

import pytest

from statefulset import cli_support as cli
from sts_world import World, make_set


def test_rollout_status_lines_follow_kubectl():
    w = World(make_set(replicas=3, strategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}))
    w.step()
    assert cli.rollout_status(w.sts) == ("Waiting for 3 pods to be ready...\n", False)
    w.converge()
    w.set_image("nginx:2")
    assert cli.rollout_status(w.sts)[0] == "Waiting for statefulset spec update to be observed...\n"
    w.converge()
    assert cli.rollout_status(w.sts) == ("partitioned roll out complete: 2 new pods have been updated...\n", True)
    w2 = World(make_set(replicas=3))
    w2.converge()
    message, done = cli.rollout_status(w2.sts)
    assert done and message == f"statefulset rolling update complete 3 pods at revision {w2.sts['status']['currentRevision']}...\n"
    with pytest.raises(ValueError, match="RollingUpdate"):
        cli.rollout_status(make_set(strategy={"type": "OnDelete"}))


def test_history_table_and_undo_patch():
    w = World(make_set(replicas=1))
    w.converge()
    w.set_image("nginx:2")
    w.converge()
    revisions = list(w.revisions.values())
    revisions[0]["metadata"]["annotations"] = {cli.CHANGE_CAUSE: "kubectl apply"}
    table = cli.history_table(w.sts, revisions)
    assert table.splitlines()[1:] == ["REVISION  CHANGE-CAUSE", "1         kubectl apply", "2         <none>"]
    patch = cli.undo_patch_for(w.sts, revisions)
    assert patch["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1"


def test_scale_patch_rejects_negative():
    assert cli.scale_patch(4) == {"spec": {"replicas": 4}}
    with pytest.raises(ValueError, match="--replicas"):
        cli.scale_patch(-1)
