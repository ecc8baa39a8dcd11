"""User namespace ranges (SEC rules, PF5): unique per running pod on the machine, searched from just past
the range handed out last, and a freed range handed out again once the search comes round to it."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from storage.agent.runtime import userns
from storage.agent.runtime.userns import FIRST_BASE, RANGE_SIZE, UsernsAllocator


@pytest.fixture
def allocator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> UsernsAllocator:
    monkeypatch.setattr(userns, "RANGE_COUNT", 3)  # three ranges: the wrap-around is reached at once
    return UsernsAllocator(tmp_path / "pods", tmp_path / "claims")


def base(i: int) -> int:
    return FIRST_BASE + i * RANGE_SIZE


def test_pf5_ranges_are_distinct_and_a_freed_range_comes_round_again(allocator: UsernsAllocator) -> None:
    assert [allocator.allocate(uid) for uid in ("a", "b")] == [base(0), base(1)]
    allocator.release("a")
    assert not (allocator.claims_dir / str(base(0))).exists()
    assert allocator.allocate("c") == base(2), "the search goes on past the range handed out last"
    assert allocator.allocate("d") == base(0), "then wraps to the freed range"
    with pytest.raises(RuntimeError, match="no free user namespace range"):
        allocator.allocate("e")
    assert allocator.allocate("b") == base(1), "a pod keeps its own range"


def test_pf5_a_claim_whose_pod_directory_is_gone_is_stale(allocator: UsernsAllocator) -> None:
    for uid in ("a", "b", "c"):
        allocator.allocate(uid)
    shutil.rmtree(allocator.pods_dir / "b")  # the pod's data removed behind the allocator's back
    assert allocator.allocate("d") == base(1)


def test_pf5_two_allocators_on_one_machine_never_share_a_range(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Two agents on one machine share the claims directory: each one's own search start does not
    let it take a range the other holds."""
    monkeypatch.setattr(userns, "RANGE_COUNT", 4)
    one = UsernsAllocator(tmp_path / "pods1", tmp_path / "claims")
    two = UsernsAllocator(tmp_path / "pods2", tmp_path / "claims")
    got = [one.allocate("a"), two.allocate("a"), one.allocate("b"), two.allocate("b")]
    assert sorted(got) == [base(i) for i in range(4)]
    with pytest.raises(RuntimeError):
        one.allocate("c")


@pytest.mark.parametrize("damage", ["", "not a number"])
def test_a5_a_pod_whose_range_record_is_damaged_gets_its_own_range_back(allocator: UsernsAllocator, damage: str) -> None:
    """A pod's record emptied or garbled (a crash of the host before the write reached the disk): its
    running containers still use its range, which its claim still names. Asked again (the agent's
    restart), it gets that range back, and no other pod is given it."""
    assert [allocator.allocate(uid) for uid in ("a", "b")] == [base(0), base(1)]
    (allocator.pods_dir / "a" / userns.USERNS_FILE).write_text(damage)
    restarted = UsernsAllocator(allocator.pods_dir, allocator.claims_dir)
    assert restarted.allocate("c") == base(2)  # a new pod does not get a's range
    assert restarted.allocate("a") == base(0)
    assert restarted.get("a") == base(0)
