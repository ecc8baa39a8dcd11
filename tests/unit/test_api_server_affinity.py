"""PF92: the API server's threads on one CPU. What is pinned is the calling thread and the threads it
starts; the rest of the process, and what the process reports as its CPUs, stay as they were."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

import pytest

from storage.system import affinity
from storage.system.host_resources import usable_cpus

STAT = """cpu  900 0 300 5000 20 0 10 0 0 0
cpu0 500 0 200 2000 10 0 5 0 400 0
cpu1 100 0 50 2900 10 0 3 0 0 0
cpu2 300 0 50 100 0 0 2 0 0 0
intr 123 4 5
ctxt 999
"""


def test_parse_cpu_choice_takes_auto_none_or_a_number_and_names_anything_else() -> None:
    assert affinity.parse_cpu_choice("auto") == -1
    assert affinity.parse_cpu_choice("AUTO ") == -1
    assert affinity.parse_cpu_choice("none") is None
    assert affinity.parse_cpu_choice("3") == 3
    for bad in ("-1", "1.5", "first", "0x1"):
        with pytest.raises(ValueError, match=f"invalid CPU '{bad}': want auto, none or a CPU number"):
            affinity.parse_cpu_choice(bad)


def test_least_busy_cpu_counts_busy_time_among_the_allowed_cpus_only(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(STAT)
    # busy = user+nice+system+irq+softirq+steal, guest (already in user) not counted twice:
    # cpu0 705, cpu1 153, cpu2 352
    assert affinity.least_busy_cpu(frozenset({0, 1, 2}), stat) == 1
    assert affinity.least_busy_cpu(frozenset({0, 2}), stat) == 2
    # A CPU the file does not list (or no file at all) falls back to the highest allowed one.
    assert affinity.least_busy_cpu(frozenset({5, 7}), stat) == 7
    assert affinity.least_busy_cpu(frozenset({0, 1}), tmp_path / "missing") == 1


def test_least_busy_cpu_breaks_ties_towards_the_highest_number(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu0 10 0 10 50 0 0 0 0\ncpu1 10 0 10 90 0 0 0 0\ncpu2 5 0 5 10 0 0 0 0\n")
    assert affinity.least_busy_cpu(frozenset({0, 1}), stat) == 1


def _in_thread(target: Callable[[], object]) -> object:
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(target()))
    thread.start()
    thread.join(10)
    assert out, "the thread did not finish"
    return out[0]


def test_a_pinned_thread_and_the_threads_it_starts_run_on_that_cpu_only_and_the_process_keeps_its_cpus() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("pinning needs a process allowed two CPUs or more; this one has one")
    before = os.sched_getaffinity(0)
    chosen = cpus[-1]

    def pinned() -> tuple[int | None, set[int], set[int]]:
        cpu = affinity.pin_current_thread(chosen)
        child = _in_thread(lambda: os.sched_getaffinity(0))
        return cpu, os.sched_getaffinity(0), child  # type: ignore[return-value]

    cpu, mine, child = _in_thread(pinned)  # type: ignore[misc]
    assert (cpu, mine, child) == (chosen, {chosen}, {chosen})
    assert os.sched_getaffinity(0) == before  # the calling thread was not touched
    assert affinity.process_cpus() == frozenset(before)
    assert usable_cpus() == len(before)  # the node's CPU capacity is the process's, not the pinned thread's


def test_auto_picks_an_allowed_cpu_and_none_leaves_the_thread_free() -> None:
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("pinning needs a process allowed two CPUs or more; this one has one")

    def auto() -> tuple[int | None, set[int]]:
        return affinity.pin_current_thread(-1), os.sched_getaffinity(0)

    cpu, mine = _in_thread(auto)  # type: ignore[misc]
    assert cpu in cpus and mine == {cpu}
    assert _in_thread(lambda: (affinity.pin_current_thread(None), os.sched_getaffinity(0))) == (None, cpus)


def test_a_cpu_the_process_may_not_use_is_refused_and_nothing_is_pinned() -> None:
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("pinning needs a process allowed two CPUs or more; this one has one")
    outside = max(affinity.process_cpus()) + 1

    def attempt() -> tuple[str, set[int]]:
        try:
            affinity.pin_current_thread(outside)
        except ValueError as exc:
            return str(exc), os.sched_getaffinity(0)
        return "", os.sched_getaffinity(0)

    message, mine = _in_thread(attempt)  # type: ignore[misc]
    assert message.startswith(f"CPU {outside} is not one this process may use")
    assert mine == cpus


def test_replicas_take_the_cpus_in_turn_with_auto_and_pass_an_explicit_choice_through() -> None:
    from storage.cli.replicas import _child_args, _replica_cpu

    cpus = sorted(affinity.process_cpus())
    assert [_replica_cpu(-1, i) for i in range(len(cpus) + 1)] == [str(c) for c in cpus] + [str(cpus[0])]
    assert _replica_cpu(None, 3) == "none"
    assert _replica_cpu(1, 0) == _replica_cpu(1, 5) == "1"
    # The supervisor sets each replica's CPU itself: the user's flag is not passed on as well.
    assert _child_args(["--api-server-cpu", "3", "--store", "x"]) == ["--store", "x"]
    assert _child_args(["--api-server-cpu=none", "--store", "x"]) == ["--store", "x"]


def test_a_cpu_the_kernel_refuses_leaves_the_threads_free_and_the_server_serving(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A cpuset that shrank after the process started: sched_setaffinity fails with EINVAL (injected
    here, as no test can shrink this process's cpuset); the pin is a speed-up, so nothing fails."""
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("pinning needs a process allowed two CPUs or more; this one has one")
    def refuse(pid: int, mask: object) -> None:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    assert _in_thread(lambda: (affinity.pin_current_thread(max(cpus)), os.sched_getaffinity(0))) == (None, cpus)
