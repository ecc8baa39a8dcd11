"""The scan of the host's private files that pods' roots cover (README Security): deep files, a budget that
runs out on a huge tree, and a stale reading renewed in the background (the agent's housekeeping asks every
10 s, so a file made private between two container starts is covered in the next pod within about a minute)."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from storage.agent.runtime.runc import HostPrivatePaths, host_private_paths


def test_a_root_only_file_twelve_levels_down_is_found(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*[f"d{i}" for i in range(12)])
    deep.mkdir(parents=True)
    secret = deep / "key.pem"
    secret.write_text("k")
    secret.chmod(0o600)
    (deep / "public").write_text("p")
    (tmp_path / "closed").mkdir(mode=0o700)
    (tmp_path / "closed" / "inside").write_text("x")
    os.chmod(tmp_path, 0o755)
    found = host_private_paths((str(tmp_path),))
    assert sorted(found) == sorted([str(secret), str(tmp_path / "closed")])  # a closed directory is covered whole


def test_a_budget_that_runs_out_leaves_deep_levels_unscanned_never_a_shallow_one(tmp_path: Path) -> None:
    secrets = []
    for tree in ("x1", "x2"):
        for i in range(40):
            (tmp_path / tree / f"sub{i}").mkdir(parents=True)
            (tmp_path / tree / f"sub{i}" / "f").write_text("x")
        secret = tmp_path / tree / "shallow.key"
        secret.write_text("k")
        secret.chmod(0o600)
        secrets.append(str(secret))
    # 2 + 41 + 41 entries down to level 1: exactly the budget. A depth-first walk spent it below the
    # first tree's subdirectories and never saw the second tree's key.
    assert sorted(host_private_paths((str(tmp_path),), budget=84)) == secrets


def test_a_stale_reading_is_renewed_in_the_background_when_asked() -> None:
    """The agent's housekeeping asks every 10 s: a reading older than ``max_age`` is answered as it is (no
    caller waits for a scan) while one scan renews it; the next answer is the new reading."""
    scans: list[int] = []
    release = threading.Event()

    def scan() -> list[str]:
        scans.append(len(scans))
        if len(scans) > 1:
            release.wait(10)
        return [f"/private/{len(scans)}"]

    paths = HostPrivatePaths(max_age=0.2, scan=scan)
    assert paths.current() == ["/private/1"]  # the first reading is made by the caller
    assert paths.current() == ["/private/1"] and len(scans) == 1  # fresh: no scan
    time.sleep(0.3)
    assert paths.current() == ["/private/1"]  # stale: answered at once, renewed meanwhile
    assert paths.current() == ["/private/1"]
    release.set()
    deadline = time.monotonic() + 10
    while paths.current() != ["/private/2"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert paths.current() == ["/private/2"] and len(scans) == 2, scans  # one renewal, however often asked
