"""Pod addresses (PF62): unique while a pod's directory holds its address, read from the pods' files
once per agent, handed out again after ``forget`` or, when the range looks exhausted, after a fresh read."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from storage.agent.runtime.ipam import IP_FILE, LoopbackAllocator

# A /29 has six host addresses; one far from 127.0.0.1 and 127.1/16, where tests' servers listen.
NETWORK = "127.93.17.0/29"


def test_addresses_are_unique_and_survive_a_restart(tmp_path: Path) -> None:
    ips = LoopbackAllocator(tmp_path, NETWORK)
    got = [ips.allocate(f"pod-{i}") for i in range(6)]
    assert got == [f"127.93.17.{i}" for i in range(1, 7)]
    assert ips.allocate("pod-3") == "127.93.17.4"  # asked again: the same
    assert (tmp_path / "pod-3" / IP_FILE).read_text().strip() == "127.93.17.4"
    with pytest.raises(RuntimeError, match="no free pod address left in 127.93.17.0/29"):
        ips.allocate("pod-6")
    restarted = LoopbackAllocator(tmp_path, NETWORK)
    assert restarted.get("pod-5") == "127.93.17.6"
    with pytest.raises(RuntimeError, match="no free pod address left"):
        restarted.allocate("pod-7")  # the files say every address is taken


def test_files_are_read_once_and_forget_frees_the_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ips = LoopbackAllocator(tmp_path, NETWORK)
    scans = []
    real_scan = LoopbackAllocator._scan
    monkeypatch.setattr(LoopbackAllocator, "_scan", lambda self: scans.append(1) or real_scan(self))
    for i in range(4):
        ips.allocate(f"pod-{i}")
    assert len(scans) == 1
    shutil.rmtree(tmp_path / "pod-1" / "runtime")  # what the runtime's remove_pod does, then forget()
    ips.forget("pod-1")
    assert ips.allocate("new") == "127.93.17.2"
    assert len(scans) == 1


def test_a_pod_gone_without_forget_is_found_when_the_range_looks_full(tmp_path: Path) -> None:
    ips = LoopbackAllocator(tmp_path, NETWORK)
    for i in range(6):
        ips.allocate(f"pod-{i}")
    shutil.rmtree(tmp_path / "pod-2")  # removed behind the allocator's back
    assert ips.allocate("late") == "127.93.17.3"
    assert (tmp_path / "late" / IP_FILE).read_text().strip() == "127.93.17.3"
