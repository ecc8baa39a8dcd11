"""Pod addresses (PF62): unique while a pod's directory holds its address, read from the pods' files
once per agent, handed out again after ``forget`` or, when the range looks exhausted, after a fresh read;
unique across the agents of one machine through claims in a directory they share."""
from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from storage.agent.runtime.ipam import CLAIMS_DIR, IP_FILE, LoopbackAllocator

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


def two_agents(tmp_path: Path) -> tuple[LoopbackAllocator, LoopbackAllocator, Path]:
    """Two agents' allocators on one machine: their own pod dirs, one claims directory."""
    claims = tmp_path / "run" / CLAIMS_DIR
    return (LoopbackAllocator(tmp_path / "a" / "pods", NETWORK, claims),
            LoopbackAllocator(tmp_path / "b" / "pods", NETWORK, claims), claims)


def test_two_agents_on_one_machine_never_hand_out_the_same_address(tmp_path: Path) -> None:
    # Nothing listens on the first agent's addresses yet (its pods' servers are starting): only the
    # claims keep the second agent off them.
    a, b, claims = two_agents(tmp_path)
    assert [a.allocate("a0"), b.allocate("b0"), a.allocate("a1"), b.allocate("b1")] == \
        ["127.93.17.1", "127.93.17.2", "127.93.17.3", "127.93.17.4"]
    assert (claims / "127.93.17.2").read_text().strip() == str((tmp_path / "b" / "pods" / "b0").resolve())
    assert b.allocate("b0") == "127.93.17.2"  # asked again: the same, still claimed by it


def test_a_removed_pods_address_is_unclaimed_and_goes_to_the_other_agent(tmp_path: Path) -> None:
    a, b, claims = two_agents(tmp_path)
    for i in range(3):
        a.allocate(f"a{i}")
    address = a.get("a1")
    shutil.rmtree(tmp_path / "a" / "pods" / "a1" / "runtime")  # the runtime's remove_pod, then forget
    a.forget("a1", address)
    assert not (claims / "127.93.17.2").exists()
    assert b.allocate("b0") == "127.93.17.2"


def test_a_claim_whose_pod_directory_is_gone_is_taken_over(tmp_path: Path) -> None:
    # The first agent was killed and its data dir deleted: its claims are stale.
    a, b, claims = two_agents(tmp_path)
    a.allocate("a0")
    shutil.rmtree(tmp_path / "a")
    assert (claims / "127.93.17.1").exists()
    assert b.allocate("b0") == "127.93.17.1"
    assert (claims / "127.93.17.1").read_text().strip() == str((tmp_path / "b" / "pods" / "b0").resolve())


def test_a_pod_whose_recorded_address_another_agent_claimed_gets_a_new_one(tmp_path: Path) -> None:
    # After a reboot the claims (a tmpfs) are gone; the other agent started first and took the address
    # this agent's pod still records. Two pods must not share it: the returning pod moves.
    a, b, claims = two_agents(tmp_path)
    assert a.allocate("a0") == "127.93.17.1"
    shutil.rmtree(claims)
    assert b.allocate("b0") == "127.93.17.1"
    restarted = LoopbackAllocator(tmp_path / "a" / "pods", NETWORK, claims)
    assert restarted.allocate("a0") == "127.93.17.2"
    assert restarted.get("a0") == "127.93.17.2"
    assert (claims / "127.93.17.1").read_text().strip() == str((tmp_path / "b" / "pods" / "b0").resolve())


def test_agents_allocating_at_once_get_distinct_addresses(tmp_path: Path) -> None:
    claims = tmp_path / "run" / CLAIMS_DIR
    agents = [LoopbackAllocator(tmp_path / f"agent{i}" / "pods", "127.93.16.0/24", claims) for i in range(4)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda n: agents[n % 4].allocate(f"pod-{n}"), range(40)))
    assert len(set(got)) == 40, sorted(got)


def test_pf90_a_listened_on_address_is_skipped_and_the_host_sockets_are_read_once_a_second(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PF90: one reading of the host's sockets serves the allocations of BUSY_FOR seconds; a socket bound
    before a reading keeps its address from every pod."""
    import socket
    import time

    from storage.agent.runtime import ipam

    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    readings = []
    real_busy = LoopbackAllocator._busy
    monkeypatch.setattr(LoopbackAllocator, "_busy", lambda self: readings.append(1) or real_busy(self))
    # A range of its own: its listeners would take addresses from the other tests of this file, which other
    # workers run at the same time.
    ips = LoopbackAllocator(tmp_path, "127.93.19.0/29")
    with socket.socket() as first, socket.socket() as later:
        first.bind(("127.93.19.1", 0))
        first.listen()
        assert ips.allocate("pod-0") == "127.93.19.2"  # .1 is listened on
        later.bind(("127.93.19.4", 0))
        later.listen()
        assert ips.allocate("pod-1") == "127.93.19.3"
        assert len(readings) == 1  # one reading for both
        clock[0] += ipam.BUSY_FOR
        assert ips.allocate("pod-2") == "127.93.19.5"  # read again: .4 is now seen as listened on
        assert len(readings) == 2


@pytest.mark.parametrize("damage", ["", "garbage"])
def test_a5_a_pod_whose_address_record_is_damaged_gets_its_own_address_back(tmp_path: Path, damage: str) -> None:
    """A pod's address record emptied or garbled (a crash of the host before the write reached the disk):
    its containers still listen on its address, which its machine-wide claim still names. Asked again
    (the agent's restart), it gets that address back, and no other pod is given it."""
    claims = tmp_path / "claims"
    ips = LoopbackAllocator(tmp_path / "pods", NETWORK, claims_dir=claims)
    assert [ips.allocate(uid) for uid in ("a", "b")] == ["127.93.17.1", "127.93.17.2"]
    (tmp_path / "pods" / "a" / IP_FILE).write_text(damage)
    restarted = LoopbackAllocator(tmp_path / "pods", NETWORK, claims_dir=claims)
    assert restarted.allocate("c") == "127.93.17.3"  # a new pod does not get a's address
    assert restarted.allocate("a") == "127.93.17.1"
    assert restarted.get("a") == "127.93.17.1"
