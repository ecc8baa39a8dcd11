"""CT1/CT2: how a container's end is reported, on real runc containers: an OOM kill is ``OOMKilled`` (read from
the container's memory group before it goes), a SIGKILL from outside stays ``Error``, no ``signal`` field (the
kubelet never fills it), and the termination message follows ``terminationMessagePolicy``."""
from __future__ import annotations

import os
import signal

import pytest

from storage.agent.runtime import memcg
from support import wait_for

from test_runtime import NO_SOURCES, SLEEP, cstatus, make_pod, terminated, uid_of

pytestmark = pytest.mark.root

HOG = ["python3", "-c", "x = bytearray(200 * 1024 * 1024)"]


def _need_memory_groups() -> None:
    if memcg.own_memory_group() is None:
        pytest.skip("no cgroup v1 memory hierarchy here (CT1 counts OOM kills in a v1 memory group)")


def test_ct1_an_oom_kill_is_oomkilled_with_exit_code_137_and_no_signal(harness):
    _need_memory_groups()
    rt = harness.runtime()
    pod = make_pod("oom", [{"name": "c", "command": HOG, "resources": {"limits": {"memory": "50Mi"}}}],
                   restartPolicy="Never")
    uid = uid_of(pod)
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    status = harness.wait(rt, uid, lambda s: s["phase"] == "Failed", "Failed")
    state = terminated(status, "c")
    assert state["reason"] == "OOMKilled" and state["exitCode"] == 137, state
    assert "signal" not in state
    # The run's memory group went with its teardown.
    assert not (memcg.group_of(f"stowage-{uid}-c")).exists()


def test_ct1_a_crash_looping_oom_killed_container_carries_oomkilled_in_its_last_state(harness):
    _need_memory_groups()
    rt = harness.runtime(backoff_base=0.3, backoff_max=1)
    pod = make_pod("oomloop", [{"name": "c", "command": HOG, "resources": {"limits": {"memory": "50Mi"}}}])
    uid = uid_of(pod)
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    status = harness.wait(rt, uid, lambda s: cstatus(s, "c")["restartCount"] >= 2
                          and cstatus(s, "c")["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff",
                          "a back-off after two restarts")
    last = cstatus(status, "c")["lastState"]["terminated"]
    assert last["reason"] == "OOMKilled" and last["exitCode"] == 137 and "signal" not in last, last
    # Every run's end was an OOM kill, never an Error.
    reasons = {((s and cstatus(s, "c")["lastState"].get("terminated")) or {}).get("reason")
               for u, s in harness.events if u == uid}
    assert reasons <= {None, "OOMKilled"}, reasons


def test_ct1_a_sigkill_from_outside_without_an_oom_stays_error(harness):
    _need_memory_groups()
    rt = harness.runtime()
    pod = make_pod("killed", [{"name": "c", "command": SLEEP, "resources": {"limits": {"memory": "50Mi"}}}],
                   restartPolicy="Never")
    uid = uid_of(pod)
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    harness.wait(rt, uid, lambda s: s["phase"] == "Running", "Running")
    pid = rt.settings.runc.state(f"stowage-{uid}-c")["pid"]
    # The container's processes are in the agent's memory group of the run, with the pod's limit.
    group = memcg.group_of(f"stowage-{uid}-c")
    assert str(pid) in (group / "cgroup.procs").read_text().split()
    assert int((group / "memory.limit_in_bytes").read_text()) == 50 * 1024 * 1024
    os.kill(pid, signal.SIGKILL)
    status = harness.wait(rt, uid, lambda s: s["phase"] == "Failed", "Failed")
    state = terminated(status, "c")
    assert state["reason"] == "Error" and state["exitCode"] == 137 and "signal" not in state, state
    wait_for(lambda: not group.exists(), timeout=10, what="the run's memory group removed")


# ---- CT2: the termination message ------------------------------------------------------------

def _ended(harness, rt, pod):
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    return harness.wait(rt, uid_of(pod), lambda s: s["phase"] in ("Succeeded", "Failed"), "a final phase")


def test_ct2_the_default_file_policy_never_takes_the_message_from_the_log(harness):
    rt = harness.runtime()
    pod = make_pod("file", [{"name": "c", "command": ["sh", "-c", "echo oops >&2; exit 3"]}], restartPolicy="Never")
    state = terminated(_ended(harness, rt, pod), "c")
    assert state["exitCode"] == 3 and state["reason"] == "Error" and "message" not in state, state


def test_ct2_the_message_is_what_the_container_wrote_at_its_termination_message_path(harness):
    rt = harness.runtime()
    pod = make_pod("written", [
        {"name": "a", "command": ["sh", "-c", "printf 'all done' > /dev/termination-log"]},
        # A user of its own may write the file too; the last 4 KiB of a longer one are kept.
        {"name": "b", "command": ["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' x > /tmp/m; echo -n END >> /tmp/m; "
                                              "cat /tmp/m > /var/run/msg; exit 1"],
         "terminationMessagePath": "/var/run/msg", "securityContext": {"runAsUser": 1000}},
        {"name": "c", "command": ["sh", "-c", "echo from-the-log; exit 2"], "terminationMessagePath": ""},
    ], restartPolicy="Never")
    status = _ended(harness, rt, pod)
    assert terminated(status, "a")["message"] == "all done"
    b = terminated(status, "b")["message"]
    assert len(b) == 4096 and b.endswith("xxEND"), len(b)
    assert "message" not in terminated(status, "c")  # no path: nothing, the policy being File


def test_ct2_fallback_to_logs_on_error_takes_the_logs_last_lines_only_when_the_file_is_empty_and_it_failed(harness):
    rt = harness.runtime()
    fallback = {"terminationMessagePolicy": "FallbackToLogsOnError"}
    pod = make_pod("fallback", [
        {"name": "failed", "command": ["sh", "-c", "seq 1 100 | sed 's/^/line /'; exit 1"], **fallback},
        {"name": "wrote", "command": ["sh", "-c", "echo noise; printf mine > /dev/termination-log; exit 1"], **fallback},
        {"name": "ok", "command": ["sh", "-c", "echo fine"], **fallback},
        {"name": "long", "command": ["sh", "-c", "for i in $(seq 1 80); do head -c 99 /dev/zero | tr '\\0' y; echo; done; exit 4"],
         **fallback},
    ], restartPolicy="Never")
    status = _ended(harness, rt, pod)
    failed = terminated(status, "failed")["message"]
    assert failed.splitlines() == [f"line {i}" for i in range(21, 101)], failed  # the last 80 lines
    assert terminated(status, "wrote")["message"] == "mine"
    assert "message" not in terminated(status, "ok")
    long = terminated(status, "long")["message"]
    assert len(long) == 2048 and long.startswith("y" * 99 + "\n"), len(long)  # the first 2 KiB of the 80 lines


def test_ct2_a_pods_termination_messages_share_12_kib(harness):
    rt = harness.runtime()
    write = "head -c 4000 /dev/zero | tr '\\0' z > /dev/termination-log"
    pod = make_pod("budget", [{"name": f"c{i}", "command": ["sh", "-c", write]} for i in range(4)],
                   restartPolicy="Never")
    status = _ended(harness, rt, pod)
    lengths = [len(terminated(status, f"c{i}").get("message", "")) for i in range(4)]
    assert lengths == [3072] * 4, (lengths, [terminated(status, f"c{i}") for i in range(4)])  # 12 KiB / 4 containers


def test_ct2_a_command_that_cannot_start_has_runcs_error_as_its_message_and_a_quick_runs_log_is_not_one(harness):
    rt = harness.runtime()
    pod = make_pod("cannot", [{"name": "nope", "command": ["/nope"]},
                              {"name": "quick", "command": ["sh", "-c", "echo hi; exit 3"]}], restartPolicy="Never")
    status = _ended(harness, rt, pod)
    nope = terminated(status, "nope")
    assert nope["reason"] == "Error" and 'exec: "/nope": stat /nope: no such file or directory' in nope["message"], nope
    assert "message" not in terminated(status, "quick")
