"""A container's start without a runc process per look (SEMANTICS PF4, PF5), against real runc."""
from __future__ import annotations

import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from storage.agent.runtime import StaticEnvSources
from support import wait_for

NO_SOURCES = StaticEnvSources({}, {})


def _pod(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4()), "labels": {}, "annotations": {}},
            "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "image": "debian:12", "command": command}], **spec}}


def _running(harness: Any, rt: Any, name: str, command: list[str]) -> str:
    """Start a one-container pod on ``rt`` and wait until it is Running; its uid."""
    pod = _pod(name, command)
    uid = pod["metadata"]["uid"]
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    harness.wait(rt, uid, lambda s: s["phase"] == "Running", "the pod Running", timeout=60)
    return str(uid)


def _wait_for_term_trap(rt: Any, uid: str) -> None:
    """The shell is the container's PID 1, which drops a SIGTERM it has no handler for: stop it only once its
    trap is installed (SIGTERM in the process's caught signals), or a loaded host makes it end on SIGKILL."""
    pid = rt.settings.runc.state(f"stowage-{uid}-c")["pid"]

    def trap_installed() -> bool:
        caught = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if line.startswith("SigCgt:"))
        return bool(int(caught.split()[1], 16) & (1 << (15 - 1)))

    wait_for(trap_installed, "the container's SIGTERM trap", 30)


def _stop_a_container_that_ends_on_sigterm(harness: Any, name: str) -> tuple[Any, list[tuple[str, ...]]]:
    """Start a pod whose container exits 0 on SIGTERM and stop it, recording every runc command (the
    real ones still run); the runtime and the commands."""
    rt = harness.runtime()
    runc = rt.settings.runc
    commands: list[tuple[str, ...]] = []
    real_cmd = runc._cmd

    def recorded(*args: str) -> list[str]:
        commands.append(args)
        return real_cmd(*args)

    runc._cmd = recorded  # type: ignore[method-assign]
    uid = _running(harness, rt, name, ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.05; done"])
    _wait_for_term_trap(rt, uid)
    final = rt.kill_pod(uid, 60)
    assert final["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0, "it ended on SIGTERM, not SIGKILL"
    return rt, commands


def _count_runc_calls(rt: Any) -> list[tuple[str, str]]:
    """Count `runc state` and `runc delete` runs (the real ones still run)."""
    runc = rt.settings.runc
    calls: list[tuple[str, str]] = []
    state, delete = runc.state, runc.delete

    def counted_state(cid: str) -> Any:
        calls.append(("state", cid))
        return state(cid)

    def counted_delete(cid: str) -> None:
        calls.append(("delete", cid))
        delete(cid)

    runc.state, runc.delete = counted_state, counted_delete
    return calls


def test_pf4_a_new_container_is_started_without_runc_state_or_delete(harness) -> None:
    """PF4: a first start runs no `runc delete` (no state dir) and no `runc state` (state.json
    without exec.fifo says started); the container is then running and exec works at once."""
    rt = harness.runtime()
    calls = _count_runc_calls(rt)
    pod = _pod("pf4", ["sleep", "1000"])
    uid = pod["metadata"]["uid"]
    cid = f"stowage-{uid}-c"
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    harness.wait(rt, uid, lambda s: s["phase"] == "Running", "the pod Running")
    assert [c for c in calls if c[1] == cid] == [], calls
    runc = rt.settings.runc
    state_dir = runc.root / cid
    assert (state_dir / "state.json").exists() and not (state_dir / "exec.fifo").exists()
    code, out = runc.exec(cid, ["true"], 10)
    assert code == 0, out


def test_pf4_a_restart_deletes_what_the_last_run_left(harness) -> None:
    """PF4: an ended instance leaves its runc state dir, so a restart deletes it first, as before;
    no start looks with `runc state`. The container keeps restarting (restartPolicy Always)."""
    rt = harness.runtime()
    calls = _count_runc_calls(rt)
    pod = _pod("pf4r", ["true"])
    uid = pod["metadata"]["uid"]
    cid = f"stowage-{uid}-c"
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    status = harness.wait(rt, uid, lambda s: s["containerStatuses"][0]["restartCount"] >= 2, "two restarts")
    assert status["phase"] == "Running"
    mine = [kind for kind, c in calls if c == cid]
    assert mine and set(mine) == {"delete"}, calls


def test_pf5_the_range_search_moves_on_past_the_last_range_handed_out(harness) -> None:
    """PF5: each pod gets its own id range; a range given back is not the next one handed out (the
    search starts after the last range), and it is found again once the search wraps around."""
    rt = harness.runtime()
    allocator = rt.userns
    if allocator is None:
        pytest.skip("user namespaces are off in this runtime")
    a_uid, b_uid, c_uid = (f"pf5-{uuid.uuid4()}" for _ in range(3))
    a = allocator.allocate(a_uid)
    b = allocator.allocate(b_uid)
    try:
        assert a != b and allocator.get(a_uid) == a and allocator.get(b_uid) == b
        allocator.release(a_uid)
        c = allocator.allocate(c_uid)
        assert c not in (a, b) and allocator.get(c_uid) == c
        assert allocator.allocate(b_uid) == b, "a pod's own range is kept"
    finally:
        for uid in (a_uid, b_uid, c_uid):
            allocator.release(uid)


def test_pf75_a_start_is_seen_through_the_change_not_a_later_look(harness, monkeypatch) -> None:
    """PF75: with the looks' backstop set far beyond the test's wait, the pod still gets to Running:
    runc's own changes (its state directory, state.json, exec.fifo gone) woke the start's wait."""
    from storage.agent.runtime import pod as pod_module

    monkeypatch.setattr(pod_module, "START_LOOK_BACKSTOP", 600.0)
    rt = harness.runtime()
    uid = _running(harness, rt, "pf75s", ["sleep", "1000"])
    state_dir = rt.settings.runc.root / f"stowage-{uid}-c"
    assert (state_dir / "state.json").exists() and not (state_dir / "exec.fifo").exists()


def test_pf75_a_stop_is_seen_when_the_exit_file_appears_not_at_the_next_look(harness, monkeypatch) -> None:
    """PF75: with the stop's looks set 600 s apart and a 300 s grace period, a container that ends on
    SIGTERM is stopped at once (exit 0, no SIGKILL): the shim's exit file woke the wait."""
    from storage.agent.runtime import pod as pod_module

    monkeypatch.setattr(pod_module, "STOP_LOOK_INTERVAL", 600.0)
    rt = harness.runtime()
    uid = _running(harness, rt, "pf75t", ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.05; done"])
    result: list[Any] = []
    stopper = threading.Thread(target=lambda: result.append(rt.kill_pod(uid, 300)), daemon=True)
    stopper.start()
    stopper.join(60)
    assert not stopper.is_alive(), "the stop waited for a later look, not for the exit file"
    final = result[0]
    assert final["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


def test_pf76_a_stop_signals_the_init_process_itself_without_a_runc_process(harness) -> None:
    """PF76: SIGTERM reaches the container's init from the agent (the pid and start time runc recorded);
    no `runc kill` runs, and the container ends on it by itself (exit 0, no SIGKILL)."""
    _, commands = _stop_a_container_that_ends_on_sigterm(harness, "pf76")
    assert [c for c in commands if c[0] == "kill"] == [], commands


def test_pf76_a_process_whose_start_time_is_not_the_recorded_one_is_never_signalled(tmp_path) -> None:
    """PF76: a pid that no longer belongs to the container (reused by another process) is left alone;
    the caller then asks runc, whose answer is authoritative. The right start time is signalled."""
    import subprocess

    from storage.agent.runtime.runc import Runc, _start_time

    victim = subprocess.Popen(["sleep", "600"])
    try:
        runc = Runc(tmp_path / "runc")
        state_dir = runc.root / "c1"
        state_dir.mkdir()
        started = _start_time(victim.pid)
        assert started is not None
        (state_dir / "state.json").write_text(
            f'{{"id": "c1", "init_process_pid": {victim.pid}, "init_process_start": {started + 1}}}')
        assert runc._signal_init("c1", "TERM") is False
        assert victim.poll() is None, "a process that is not the recorded init was signalled"
        assert runc._signal_init("missing", "TERM") is False
        assert runc._signal_init("c1", "NOSUCHSIGNAL") is False
        (state_dir / "state.json").write_text(
            f'{{"id": "c1", "init_process_pid": {victim.pid}, "init_process_start": {started}}}')
        assert runc._signal_init("c1", "TERM") is True
        assert victim.wait(30) == -15
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()


def test_pf77_a_container_that_ends_wakes_its_pod_at_once(harness) -> None:
    """PF77: with the pod worker's looks set 600 s apart, an init container's end still starts the main
    container, and a container that exits on its own still ends its pod (restartPolicy Never): the
    shim's exit file woke the worker, not a later look."""
    rt = harness.runtime()
    rt.settings.poll_interval = 600.0
    with_init = _pod("pf77i", ["sleep", "1000"], initContainers=[{"name": "init", "image": "debian:12", "command": ["sleep", "0.3"]}])
    rt.sync_pod(with_init, {}, NO_SOURCES, [])
    harness.wait(rt, with_init["metadata"]["uid"], lambda s: s["phase"] == "Running", "the main container started", timeout=60)
    failing = _pod("pf77f", ["sh", "-c", "sleep 0.3; exit 3"], restartPolicy="Never")
    rt.sync_pod(failing, {}, NO_SOURCES, [])
    status = harness.wait(rt, failing["metadata"]["uid"], lambda s: s["phase"] == "Failed", "the pod Failed", timeout=60)
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3


def test_pf78_a_log_follower_is_woken_by_the_containers_write(harness, monkeypatch) -> None:
    """PF78: `logs -f` gets a new line when the container writes it, not at its next look: with the
    follower's backstop set to 600 s, a line written a second after the first still arrives within
    seconds of being written."""
    import time

    from storage.agent.runtime import runtime as runtime_module

    monkeypatch.setattr(runtime_module, "LOG_FOLLOW_BACKSTOP", 600.0)
    rt = harness.runtime()
    uid = _running(harness, rt, "pf78", ["sh", "-c", "echo first; sleep 1; echo second; sleep 1000"])
    lines = rt.logs(uid, "c", follow=True)
    arrived: dict[str, float] = {}

    def follow() -> None:
        for line in lines:
            arrived[line] = time.monotonic()
            if line == "second":
                return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    reader.join(30)
    assert not reader.is_alive(), f"the second line never reached the follower: {arrived}"
    assert list(arrived) == ["first", "second"]
    assert arrived["second"] - arrived["first"] < 5, arrived
    lines.close()
    rt.kill_pod(uid, 0)


def test_pf79_a_container_that_ended_is_not_deleted_again(harness) -> None:
    """PF79: `runc run` removes its container's state when the container ends, so stopping a pod whose
    container ended on SIGTERM runs no `runc delete` (it ran two, 4-5 ms each, on every deletion's path).
    A container whose state runc still holds (its `runc run` was killed) is still deleted."""
    rt, commands = _stop_a_container_that_ends_on_sigterm(harness, "pf79")
    assert [c for c in commands if c[0] == "delete"] == [], commands
    runc = rt.settings.runc

    uid = _running(harness, rt, "pf79k", ["sleep", "1000"])
    cid = f"stowage-{uid}-c"
    state = runc.state(cid)
    assert state is not None and state["status"] == "running"
    import psutil

    runs = [p for p in psutil.process_iter(["cmdline"])
            if (p.info["cmdline"] or [])[:1] == ["runc"] and "run" in p.info["cmdline"] and cid in p.info["cmdline"]]
    assert len(runs) == 1, "the container's `runc run` process"
    runs[0].kill()  # runc dies, its container lives on: runc's state stays
    rt.kill_pod(uid, 0)
    assert ("delete", "--force", cid) in commands, commands
    assert not (runc.root / cid).exists()


def test_pf82_a_started_containers_host_copies_go_without_reading_the_mount_table(harness, monkeypatch, tmp_path) -> None:
    """PF82: once runc started the container, the agent's copies of its root, of what is hidden in it and
    of its staged volume (and hosts file) are gone from the host, detached at the paths the start mounted
    them, with no reading of the node's mount table on the whole first start; the container still sees its
    root and its volume (its own mount namespace holds them)."""
    from storage.system import mounts

    rt = harness.runtime()
    if rt.userns is None:
        pytest.skip("user namespaces are off in this runtime: nothing is staged")
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello").write_text("from the host\n")
    reads: list[int] = []
    real_read = mounts.MountTable.read

    def counted() -> mounts.MountTable:
        reads.append(1)
        return real_read()

    monkeypatch.setattr(mounts.MountTable, "read", staticmethod(counted))
    pod = _pod("pf82", ["sleep", "1000"])
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    pod["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    uid = pod["metadata"]["uid"]
    rt.sync_pod(pod, {"data": str(data)}, NO_SOURCES, [])
    harness.wait(rt, uid, lambda s: s["phase"] == "Running", "the pod Running", timeout=60)
    assert reads == [], "a first start reads no mount table"
    monkeypatch.undo()
    config = json.loads(next(harness.base.rglob("config.json")).read_text())
    bundle = Path(config["root"]["path"]).parent
    staged = [m for m in config["mounts"] if m["source"].startswith(str(bundle))]
    assert staged, "the volume and the hosts file were staged under the bundle"
    assert mounts.mounts_under(bundle) == [], "the agent's copies are gone from the host"
    assert [e for e in mounts.read_mountinfo() if uid in e.mount_point and "/volumes/" not in e.mount_point] == []
    code, out = rt.settings.runc.exec(f"stowage-{uid}-c", ["cat", "/data/hello"], 10)
    assert (code, out.strip()) == (0, b"from the host")


def _looks_within(worker: Any, seconds: float) -> int:
    """How many times the pod worker looked at its pod (ran a step) in the next ``seconds``."""
    looks: list[None] = []
    real_step = worker._step

    def counted() -> None:
        looks.append(None)
        real_step()

    worker._step = counted
    try:
        threading.Event().wait(seconds)  # a window to count in, not a wait for a condition
    finally:
        del worker._step
    return len(looks)


def test_pf84_a_pod_whose_exits_are_watched_is_not_looked_at_quickly_after_a_change(harness) -> None:
    """PF84: right after its start (a change, which used to mean a look every 0.1 s for 5 s) a pod whose
    container's exit file is watched is looked at about once a second; with the watch missing (no inotify
    to spare) the quick looks come back, as they are then what sees the container end."""
    rt = harness.runtime()
    assert rt.settings.poll_interval == 0.1
    uid = _running(harness, rt, "pf84", ["sleep", "1000"])
    worker = rt._pods[uid]
    instance = worker.containers["c"].instance
    assert instance.exit_watched, "the container's exit file is watched"
    watched = _looks_within(worker, 1.0)
    assert watched <= 3, f"{watched} looks in 1 s"

    instance.exit_watched = False  # as when the watch could not be added
    worker.wake.set()
    unwatched = _looks_within(worker, 1.0)  # still within 5 s of the start
    assert unwatched >= 5, f"{unwatched} looks in 1 s without the watch"


def _open_fds() -> set[str]:
    return {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{fd}")}


def test_pf93_a_waiting_pods_user_namespace_is_made_before_its_start_and_used_by_it(harness, monkeypatch) -> None:
    """PF93: while a pod waits for its volumes, the runtime makes its user namespace (the one its idmapped
    mounts are made with); the start uses that one (no second helper process), and the container's
    processes run mapped to the same range."""
    rt = harness.runtime()
    if rt.userns is None:
        pytest.skip("user namespaces are off in this runtime")
    from storage.agent.runtime import pod as pod_module
    from storage.agent.runtime import runtime as runtime_module

    made: list[int] = []
    real_open = runtime_module.open_userns

    def counted(base: int, *args: Any) -> int:
        made.append(base)
        return real_open(base, *args)

    monkeypatch.setattr(runtime_module, "open_userns", counted)
    monkeypatch.setattr(pod_module, "open_userns", counted)
    pod = _pod("pf93", ["sleep", "1000"])
    uid = pod["metadata"]["uid"]
    rt.prepare(pod)
    rt.prepare(pod)  # a second look while it still waits makes nothing more
    base = rt.userns.get(uid)
    assert base is not None and made == [base]
    assert os.readlink(f"/proc/self/fd/{rt._prepared[uid][1]}").startswith("user:[")
    rt.sync_pod(pod, {}, NO_SOURCES, [])
    harness.wait(rt, uid, lambda s: s["phase"] == "Running", "the pod Running", timeout=60)
    assert made == [base], "the start used the prepared namespace"
    pid = rt.settings.runc.state(f"stowage-{uid}-c")["pid"]
    assert Path(f"/proc/{pid}/uid_map").read_text().split()[:2] == ["0", str(base)]
    rt.kill_pod(uid, 5)
    rt.remove_pod(uid)
    assert rt.userns.get(uid) is None


def test_pf93_a_pod_removed_while_it_waited_gives_its_range_and_namespace_back(harness) -> None:
    rt = harness.runtime()
    if rt.userns is None:
        pytest.skip("user namespaces are off in this runtime")
    before = _open_fds()
    pod = _pod("pf93-gone", ["sleep", "1000"])
    uid = pod["metadata"]["uid"]
    rt.prepare(pod)
    base = rt.userns.get(uid)
    assert base is not None and _open_fds() - before, "a namespace is held for it"
    assert rt.kill_pod(uid) is None  # nothing ran
    rt.remove_pod(uid)
    # The claims are machine-wide: another runtime (a test beside this one) may take the freed range at once,
    # so the claim must no longer name this pod, whether or not its file is there.
    try:
        owner = (rt.userns.claims_dir / str(base)).read_text().strip()
    except FileNotFoundError:
        owner = ""
    assert rt.userns.get(uid) is None and owner != str((rt.pods_dir / uid).resolve())
    assert not (_open_fds() - before), "its namespace's descriptor is closed"
    host_users = _pod("pf93-host", ["sleep", "1000"], hostUsers=True)
    rt.prepare(host_users)
    assert rt.userns.get(host_users["metadata"]["uid"]) is None, "a pod on the host's users gets no range"


def test_a_prestop_hook_runs_before_sigterm_and_a_container_without_one_gets_no_hook(harness, monkeypatch) -> None:
    """G1: a container's preStop exec hook runs inside it before its SIGTERM (the container's trap sees what
    the hook left: exit code 7); a container without a hook is stopped with no hook run at all (before, a
    thread per container ran a no-op hook, and the stop waited on it up to 50 ms)."""
    rt = harness.runtime()
    hooked = _pod("hooked", ["sh", "-c", "trap 'test -f /tmp/hooked && exit 7; exit 0' TERM; "
                             "while true; do sleep 60 & wait $!; done"])
    hooked["spec"]["containers"][0]["lifecycle"] = {"preStop": {"exec": {"command": ["touch", "/tmp/hooked"]}}}
    plain = _pod("plain", ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 60 & wait $!; done"])
    from storage.agent.runtime.pod import PodWorker

    ran: list[str] = []
    real = PodWorker.pre_stop

    def counted(self: Any, cs: Any, timeout: float) -> None:
        ran.append(self.pod["metadata"]["name"])
        real(self, cs, timeout)

    monkeypatch.setattr(PodWorker, "pre_stop", counted)
    for pod in (hooked, plain):
        uid = pod["metadata"]["uid"]
        rt.sync_pod(pod, {}, NO_SOURCES, [])
        harness.wait(rt, uid, lambda s: s["phase"] == "Running", "the pod Running", timeout=60)
        _wait_for_term_trap(rt, uid)
    final = rt.kill_pod(hooked["metadata"]["uid"], 30)
    assert final["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 7, "the hook ran before SIGTERM"
    final = rt.kill_pod(plain["metadata"]["uid"], 30)
    assert final["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert ran == ["hooked"]
    for pod in (hooked, plain):
        rt.remove_pod(pod["metadata"]["uid"])
