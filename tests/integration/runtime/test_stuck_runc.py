"""CF13: a runc command that cannot end does not hold the agent for good (SEMANTICS CF12, CF13).

A process in a frozen cgroup v1 freezer group does not die on SIGKILL until the group is thawed, as a
process asleep in the kernel on a hung mount does not: the same bind a stuck `runc state` or `runc exec`
would put the agent in. Each runc command here is the real runc, started by a wrapper that first moves
itself into such a frozen group.
"""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from storage.agent.runtime import runc as runc_module
from storage.agent.runtime.runc import Runc
from storage.system import executor as executor_module
from storage.system.executor import CommandTimeout
from support import need_root, wait_for

FREEZER = Path("/sys/fs/cgroup/freezer")


@pytest.fixture
def frozen_group() -> Iterator[Path]:
    need_root("the cgroup v1 freezer")
    if not (FREEZER / "cgroup.procs").exists():
        pytest.skip("no cgroup v1 freezer on this machine: nothing else here makes a process SIGKILL cannot end "
                    "without a hung network mount")
    group = FREEZER / f"stowage-test-{uuid.uuid4().hex[:12]}"
    group.mkdir()
    try:
        (group / "freezer.state").write_text("FROZEN\n")
        yield group
    finally:
        (group / "freezer.state").write_text("THAWED\n")
        # The commands were SIGKILLed while frozen: they die as soon as they are thawed.
        wait_for(lambda: not (group / "cgroup.procs").read_text().strip(), "the frozen commands to end", 30)
        group.rmdir()


def _frozen_runc(tmp_path: Path, group: Path) -> Runc:
    wrapper = tmp_path / "runc-frozen"
    wrapper.write_text(f'#!/bin/sh\necho $$ > {group}/cgroup.procs\nexec runc "$@"\n')
    wrapper.chmod(0o755)
    return Runc(tmp_path / "runc-root", binary=str(wrapper))


def _members(group: Path) -> list[int]:
    return [int(pid) for pid in (group / "cgroup.procs").read_text().split()]


def test_cf13_a_runc_command_stuck_in_the_kernel_times_out_within_a_bound(tmp_path, frozen_group, monkeypatch) -> None:
    """CF13: `runc state`, `runc kill`, `runc delete` and `runc list` raise CommandTimeout within their
    timeout plus the executor's kill wait, although the command itself lives on (frozen, SIGKILLed);
    `subprocess.run`'s timeout waited for it forever. A probe's `runc exec` answers "timed out" as bounded."""
    monkeypatch.setattr(runc_module, "RUNC_TIMEOUT", 0.5)
    monkeypatch.setattr(executor_module, "KILL_WAIT_SECONDS", 0.5)
    runc = _frozen_runc(tmp_path, frozen_group)
    (runc.root / "c1").mkdir()  # runc's state for it: a delete has something to delete (PF79)
    calls = {"state": lambda: runc.state("c1"), "kill": lambda: runc.kill("c1", "TERM"),
             "delete": lambda: runc.delete("c1"), "list": runc.list}
    for name, call in calls.items():
        started = time.monotonic()
        with pytest.raises(CommandTimeout):
            call()
        elapsed = time.monotonic() - started
        assert elapsed < 5, (name, elapsed)
    started = time.monotonic()
    assert runc.exec("c1", ["true"], 0.5) == (-1, b"command timed out")
    assert time.monotonic() - started < 5
    stuck = _members(frozen_group)
    assert len(stuck) == len(calls) + 1, stuck  # each command really was stuck, and still is
    for pid in stuck:
        assert Path(f"/proc/{pid}/status").read_text().count("State:\tD") == 1, pid


def test_cf13_runc_still_answers_when_it_is_not_stuck(tmp_path) -> None:
    """CF13: the bounded commands give the answers they gave before: no container is no state, no signal
    and an empty list; delete of a missing container is quiet."""
    need_root("runc")
    runc = Runc(tmp_path / "runc-root")
    assert runc.state("missing") is None
    assert runc.kill("missing", "TERM") is False
    runc.delete("missing")
    assert runc.list() == []
    assert os.listdir(runc.root) == []
