"""One `stowage up`, `serve` or `agent` per data dir (issue 8, item 7).

Two `stowage up` on one data dir with different ports used to both start:
their agents fought over mounts and leaked containers and loop devices.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sec_store_util import Served, serve_env, start_serve, started  # noqa: F401 (started is a fixture)
from support import UpProcess, stowage_executable

from storage.system.dirlock import DirLock, DirLocked


def test_second_serve_on_the_same_data_dir_is_refused(started: list[UpProcess], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = serve_env(tmp_path)
    first = start_serve(started, data_dir, env)
    served = Served(first, first.wait_for("stowage is ready"))
    try:
        for command in ("serve", "up"):
            second = subprocess.run(
                [stowage_executable(), command, "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", "--log-format", "json"],
                capture_output=True, text=True, env=env, timeout=120)
            assert second.returncode == 1, second.stderr
            assert f"is in use by stowage serve (pid {first.proc.pid})" in second.stderr
            assert "one `stowage up`, `serve` or `agent` per data dir" in second.stderr
        assert served.http.get("/readyz").text == "ok"  # the first one is untouched
        assert served.create_configmap("still-mine").status_code == 201
    finally:
        served.close()
    assert first.stop() == 0
    # The lock dies with its holder: the data dir is free again.
    with DirLock(data_dir, "test"):
        pass


def test_agent_refuses_an_agent_dir_in_use(started: list[UpProcess], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = serve_env(tmp_path)
    up = start_serve(started, data_dir, env)
    served = Served(up, up.wait_for("stowage is ready"))
    agent_dir = tmp_path / "agent"
    try:
        with DirLock(agent_dir, "stowage agent"):  # this test process plays the running agent
            result = subprocess.run(
                [stowage_executable(), "agent", "--data-dir", str(agent_dir), "--kubeconfig", served.kubeconfig,
                 "--node", "n1"],
                capture_output=True, text=True, env=env, timeout=120)
            assert result.returncode == 1, result.stderr
            assert f"is in use by stowage agent (pid {os.getpid()})" in result.stderr
        assert served.http.get("/api/v1/nodes/n1").status_code == 404  # it registered nothing
    finally:
        served.close()
    assert up.stop() == 0


def test_lock_names_its_holder(tmp_path: Path) -> None:
    held = DirLock(tmp_path, "stowage up").acquire()
    try:
        with pytest.raises(DirLocked) as err:
            DirLock(tmp_path, "stowage serve").acquire()
        assert err.value.holder == f"stowage up (pid {os.getpid()})"
    finally:
        held.release()
    DirLock(tmp_path, "stowage serve").acquire().release()
