"""``stowage up`` as a real foreground process: start, serve, apply -f, stop on SIGTERM, resume."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from cliutil import parse_table
from support import UpProcess, stowage_executable, thread_cpus

PV = """
apiVersion: v1
kind: PersistentVolume
metadata: {name: up-pv}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  hostPath: {path: /srv/up-pv}
"""


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[Any]:
    started: list[UpProcess] = []
    env = dict(os.environ)
    env.pop("KUBECONFIG", None)
    env["HOME"] = str(tmp_path / "home")  # the default data dir must not be the user's

    def start(*args: str, extra_env: dict[str, str] | None = None, command: str = "up") -> UpProcess:
        up = UpProcess(command, list(args), {**env, **(extra_env or {})})
        started.append(up)
        return up

    yield start
    for up in started:
        up.kill()


def _get_pv_names(kubeconfig: str) -> list[str]:
    proc = subprocess.run([stowage_executable(), "get", "pv", "--kubeconfig", kubeconfig],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    if not proc.stdout:
        return []
    headers = ["NAME", "CAPACITY", "ACCESS MODES", "RECLAIM POLICY", "STATUS", "CLAIM", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS",
               "REASON", "AGE"]
    return [row["NAME"] for row in parse_table(proc.stdout, headers)]


@pytest.mark.slow
def test_up_serves_applies_stops_and_resumes(start_up, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    manifest = tmp_path / "pv.yaml"
    manifest.write_text(PV)

    first = start_up("--data-dir", str(data_dir), "--listen", "127.0.0.1:0", "-f", str(manifest))
    ready = first.wait_for("stowage is ready")
    kubeconfig = ready["kubeconfig"]
    assert Path(kubeconfig) == data_dir / "kubeconfig"
    assert ready["server"].startswith("https://127.0.0.1:")
    assert f"export KUBECONFIG={kubeconfig}" in ready["hint"]
    assert (data_dir / "stowage.db").exists()
    assert (os.stat(kubeconfig).st_mode & 0o077) == 0  # it holds the admin token
    assert _get_pv_names(kubeconfig) == ["up-pv"]
    assert first.stop() == 0

    second = start_up("--data-dir", str(data_dir), "--listen", "127.0.0.1:0")
    ready_again = second.wait_for("stowage is ready")
    assert _get_pv_names(ready_again["kubeconfig"]) == ["up-pv"]
    assert second.stop() == 0


@pytest.mark.slow
def test_up_data_dir_from_environment(start_up, tmp_path: Path) -> None:
    up = start_up("--listen", "127.0.0.1:0", extra_env={"STOWAGE_DATA_DIR": str(tmp_path / "envdata")})
    ready = up.wait_for("stowage is ready")
    assert Path(ready["kubeconfig"]) == tmp_path / "envdata" / "kubeconfig"
    assert _get_pv_names(ready["kubeconfig"]) == []
    assert up.stop() == 0


@pytest.mark.slow
def test_serve_runs_the_control_plane_on_each_store(start_up, store_url: str, tmp_path: Path) -> None:
    """``serve`` takes --store (SQLite or PostgreSQL) and keeps objects across restarts on it."""
    manifest = tmp_path / "pv.yaml"
    manifest.write_text(PV)
    args = ["--data-dir", str(tmp_path / "serve"), "--listen", "127.0.0.1:0", "--store", store_url]
    first = start_up(*args, "-f", str(manifest), command="serve")
    ready = first.wait_for("stowage is ready")
    assert _get_pv_names(ready["kubeconfig"]) == ["up-pv"]
    assert first.stop() == 0
    second = start_up(*args, command="serve")
    assert _get_pv_names(second.wait_for("stowage is ready")["kubeconfig"]) == ["up-pv"]
    assert second.stop() == 0


def test_up_bad_listen_is_a_one_line_error(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["STOWAGE_DATA_DIR"] = str(tmp_path / "envdata")
    proc = subprocess.run([stowage_executable(), "up", "--listen", "nonsense"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr == 'error: --listen: expected HOST:PORT, got "nonsense"\n'
    assert not (tmp_path / "envdata").exists()


def test_down_never_signals_a_process_that_only_reuses_a_stale_pid(tmp_path: Path) -> None:
    """L16: an up that crashed leaves its pid file; the pid may since belong to another process. `stowage down`
    signals only the process that holds the data dir's lock: the bystander lives on, the file goes."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        (data_dir / "up.pid").write_text(f"{bystander.pid}\n")
        proc = subprocess.run([stowage_executable(), "down", "--data-dir", str(data_dir), "--grace", "1"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert bystander.poll() is None, "stowage down signalled a process that was not its up"
        assert not (data_dir / "up.pid").exists()
        # Its stdout is its summary alone; its log lines go to stderr, at INFO (they were printed on stdout,
        # DEBUG included, as no command but up, serve and agent set up logging).
        assert proc.stdout.splitlines() == [
            "stopped 0 pod(s) (0 container(s)), released 0 mount(s) and 0 loop device(s)"], proc.stdout
        assert "node stopped" in proc.stderr and "[debug" not in proc.stderr, proc.stderr
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.parametrize("command", ["up", "serve"])
def test_a_bad_api_server_cpu_is_refused_by_name_before_anything_is_made(tmp_path: Path, command: str) -> None:
    """PF92: --api-server-cpu takes auto, none or a CPU this process may use."""
    outside = max(os.sched_getaffinity(0)) + 1
    for value, reason in (("first", "invalid CPU 'first': want auto, none or a CPU number"),
                          (str(outside), f"CPU {outside} is not one this process may use: "
                                         f"{','.join(str(c) for c in sorted(os.sched_getaffinity(0)))}")):
        proc = subprocess.run([stowage_executable(), command, "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0",
                               "--api-server-cpu", value], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert f"Invalid value for '--api-server-cpu': {reason}" in proc.stderr
        assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_serve_keeps_the_api_server_threads_on_one_cpu_and_leaves_the_rest_free(start_up, tmp_path: Path) -> None:
    """PF92: the API server's threads (event loop, store threads, the authorizer's index) on the CPU
    asked for; the main thread and the controllers' threads keep every CPU; with none, nothing is pinned."""
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("pinning needs a process allowed two CPUs or more; this one has one")
    chosen = max(cpus)
    up = start_up("--data-dir", str(tmp_path / "pinned"), "--listen", "127.0.0.1:0", "--api-server-cpu", str(chosen),
                  command="serve")
    assert up.wait_for("api server threads pinned")["cpu"] == chosen
    kubeconfig = up.wait_for("stowage is ready")["kubeconfig"]
    assert _get_pv_names(kubeconfig) == []  # a request made the store threads
    threads = thread_cpus(up.proc.pid)
    pinned = [tid for tid, allowed in threads.items() if allowed == {chosen}]
    free = [tid for tid, allowed in threads.items() if allowed == cpus]
    assert len(pinned) >= 3, threads
    assert up.proc.pid in free and len(free) >= 2, threads  # the main thread and the controllers'
    assert len(pinned) + len(free) == len(threads), threads
    assert up.stop() == 0

    loose = start_up("--data-dir", str(tmp_path / "free"), "--listen", "127.0.0.1:0", "--api-server-cpu", "none",
                     command="serve")
    kubeconfig = loose.wait_for("stowage is ready")["kubeconfig"]
    assert _get_pv_names(kubeconfig) == []
    assert all(allowed == cpus for allowed in thread_cpus(loose.proc.pid).values())
    assert "api server threads pinned" not in loose.output()
    assert loose.stop() == 0
