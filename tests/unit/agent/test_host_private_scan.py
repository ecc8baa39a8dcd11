"""The scan of the host's private files that pods' roots cover (README Security): deep files, a budget that
runs out on a huge tree, and the periodic scan while an agent runs (a file made private between two container
starts is covered in the next pod within ``max_age``, without a start having to ask first)."""
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


def test_the_periodic_scan_runs_while_held_and_stops_with_the_last_holder() -> None:
    scans: list[float] = []
    gate = threading.Event()

    def scan() -> list[str]:
        scans.append(time.monotonic())
        if len(scans) >= 3:
            gate.set()
        return [f"/private/{len(scans)}"]

    paths = HostPrivatePaths(max_age=0.2, scan=scan)
    paths.keep_fresh()
    paths.keep_fresh()  # a second agent in the same process: one timer
    assert gate.wait(10), scans
    assert paths.current()[0].startswith("/private/")
    assert len([t for t in threading.enumerate() if t.name == "stowage-private-scan-timer"]) >= 1
    paths.let_go()
    count = len(scans)
    time.sleep(0.5)
    assert len(scans) > count, "still held by the other agent: still scanning"
    paths.let_go()
    time.sleep(0.3)  # a scan under way when the last holder let go may still finish
    settled = len(scans)
    time.sleep(0.6)
    assert len(scans) == settled, "no scan once nobody holds it"
    gaps = [b - a for a, b in zip(scans, scans[1:])]
    assert all(g >= 0.15 for g in gaps), gaps  # about max_age apart, not a tight loop
