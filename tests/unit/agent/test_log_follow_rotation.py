"""SV12: a log follower across the shim's rotations, with the files moved by hand, so a follower that fell a
whole file behind is made on purpose (the runtime test shows the shim's own rotations)."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from storage.agent.runtime.runtime import PodRuntime


class _Running:
    def is_running(self, container: str, restart: int) -> bool:
        return True


class _Runtime:
    """What ``PodRuntime._read`` looks at besides the files: the pod's worker."""

    def __init__(self, uid: str) -> None:
        self._pods: dict[str, Any] = {uid: _Running()}


def _rotate(log: Path, lines: list[str]) -> None:
    """What the shim does past its limit: the file to <log>.1 (replacing it), then a new one."""
    os.replace(log, log.with_name(log.name + ".1"))
    log.write_text("".join(f"{line}\n" for line in lines))


def test_a_follower_one_file_behind_reads_the_file_it_missed_from_log_1(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_text("a1\na2\n")
    stop = threading.Event()
    lines = PodRuntime._read(_Runtime("u"), "u", "c", log, True, None, stop=stop)  # type: ignore[arg-type]
    assert [next(lines), next(lines)] == [b"a1", b"a2"]
    with open(log, "a") as f:
        f.write("a3\n")  # the last line of the first file, written just before its rotation
    _rotate(log, ["b1", "b2"])
    _rotate(log, ["c1"])  # the second file is now <log>.1 and the first one is gone
    assert [next(lines) for _ in range(4)] == [b"a3", b"b1", b"b2", b"c1"]
    with open(log, "a") as f:
        f.write("c2\n")
    assert next(lines) == b"c2"
    lines.close()


def test_a_follower_reads_on_after_one_rotation_without_reading_anything_twice(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_text("a1\n")
    lines = PodRuntime._read(_Runtime("u"), "u", "c", log, True, None, stop=threading.Event())  # type: ignore[arg-type]
    assert next(lines) == b"a1"
    _rotate(log, ["b1"])
    assert next(lines) == b"b1"
    _rotate(log, ["c1"])
    assert next(lines) == b"c1"
    lines.close()
