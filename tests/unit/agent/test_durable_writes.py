"""The agent's small state files (pool records, pod state, address and user-namespace claims) are replaced
whole: a reader sees the old content or the new, and a write that fails leaves the old file and no part."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from storage.system.durable import write_atomically, write_durably

Writer = Callable[[Path, str], None]


@pytest.mark.parametrize("write", [write_atomically, write_durably])
def test_a_write_replaces_the_whole_file(tmp_path: Path, write: Writer) -> None:
    target = tmp_path / "record.json"
    target.write_text("old and longer than the new content")
    write(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


@pytest.mark.parametrize("write", [write_atomically, write_durably])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path: Path, write: Writer) -> None:
    target = tmp_path / "record.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        write(target, 12345)  # type: ignore[arg-type]  (fails in the write, after the temporary file exists)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_the_temporary_file_is_hidden_from_the_claim_and_record_scans(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The orphan reaper skips dot files and the pool reads ``*.json``: a temporary file left by a crash
    between the write and the rename is neither a claim nor a record."""
    renamed: list[str] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        renamed.append(Path(src).name)
        real_replace(src, dst)
    monkeypatch.setattr(os, "replace", spy)
    write_atomically(tmp_path / "127.1.0.5", "/var/lib/stowage/pods/x")
    write_durably(tmp_path / "vol.json", "{}")
    assert len(renamed) == 2
    assert all(name.startswith(".") and not name.endswith(".json") for name in renamed), renamed
