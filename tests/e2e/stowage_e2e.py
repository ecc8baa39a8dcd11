"""End-to-end harness: a real ``stowage up`` process, driven through its CLI and API.

Everything the run creates lives under one temp data dir. Teardown stops
``stowage up`` with SIGTERM and then checks -- also after a failed test --
that no pod process, no mount under the data dir and no loop device backed
by a file under it is left; whatever is left is cleaned up by force and the
test errors, so a leak is never silent.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Callable, TypeVar

import pytest

from storage.client import Client
from support import UpProcess, clean_host_under, cleanup_tree, stowage_executable, wait_for

T = TypeVar("T")
STARTUP_TIMEOUT = 180.0
STOP_TIMEOUT = 120.0


def poll(what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.5,
         diagnose: Callable[[], str] | None = None) -> T:
    """``check()``'s first truthy result; errors (API restarting, process gone) are retried until ``timeout``."""
    return wait_for(check, what, timeout, interval=interval, retry_on=(Exception,), diagnose=diagnose)


# ---- host state under a data dir --------------------------------------------------------

def _under(path: str, root: Path) -> bool:
    return path == str(root) or path.startswith(str(root) + "/")


def processes_under(root: Path) -> list[int]:
    """Host PIDs of the containers whose runc state lives under ``root``, with their descendants.

    A container's /proc/PID/root reads as "/" from the host after pivot_root, so
    containers are found through runc's own state instead.
    """
    inits: set[int] = set()
    for state_root in root.glob("**/runc"):
        listing = subprocess.run(["runc", "--root", str(state_root), "list", "--format", "json"],
                                 capture_output=True, text=True)
        for container in json.loads(listing.stdout or "null") or []:
            if container.get("pid"):
                inits.add(int(container["pid"]))
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = sorted(inits)
    while todo:
        pid = todo.pop()
        if pid in found or not Path(f"/proc/{pid}").exists():
            continue
        found.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(found)


def host_mount_of(device: str, root: Path) -> str | None:
    """Where the host has ``device`` mounted under ``root`` (the agent's mount of a volume)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            source = fields[fields.index("-") + 2]
            if source == device and _under(fields[4], root):
                return fields[4]
    return None


def container_mount(pid: int, mount_point: str) -> str | None:
    """The source device of ``mount_point`` as the process ``pid`` sees it."""
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == mount_point:
                return fields[fields.index("-") + 2]
    return None


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def cmdline(pid: int) -> list[str]:
    return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]


def find_pids(root: Path, match: Callable[[int], bool]) -> list[int]:
    found = []
    for pid in processes_under(root):
        try:
            if match(pid):
                found.append(pid)
        except OSError:
            continue
    return found


# ---- the stowage up process ---------------------------------------------------------------

class Stowage:
    """A running ``stowage up --data-dir DIR --listen 127.0.0.1:0 -f FILES``."""

    def __init__(self, data_dir: Path, files: list[Path], extra_env: dict[str, str] | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        env.update(extra_env or {})
        self.up = UpProcess("up", ["--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
                                   *[a for f in files for a in ("-f", str(f))], *extra_args],
                            env, timeout=STARTUP_TIMEOUT, new_session=True)
        self.kubeconfig = data_dir / "kubeconfig"
        self.api: Client | None = None

    def wait_started(self) -> None:
        ready = self.up.wait_for("stowage is ready")
        self.kubeconfig = Path(ready["kubeconfig"])
        self.api = Client.from_kubeconfig(self.kubeconfig)

    def log_tail(self, lines: int = 60) -> str:
        return self.up.output(lines)

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([stowage_executable(), *args, "--kubeconfig", str(self.kubeconfig)],
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            pytest.fail(f"stowage {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    # ---- API reads ----------------------------------------------------------------------
    @property
    def client(self) -> Client:
        assert self.api is not None, "stowage up has not started"
        return self.api

    def pods(self, selector: str) -> dict[str, dict[str, Any]]:
        items, _ = self.client.list("pods", "default", label_selector=selector)
        return {p["metadata"]["name"]: p for p in items}

    def describe(self, *what: str) -> str:
        out = []
        for kind in what or ("pods", "statefulsets", "pvc"):
            result = self.cli("describe", kind, check=False)
            out.append(result.stdout + result.stderr)
        return "\n".join(out) + "\n--- stowage up log (tail)\n" + self.log_tail()

    def wait_ready(self, selector: str, names: list[str], timeout: float = 300) -> dict[str, dict[str, Any]]:
        """The pods once exactly ``names`` exist, each Running and Ready with an IP."""
        def check() -> dict[str, dict[str, Any]] | None:
            pods = self.pods(selector)
            if sorted(pods) != sorted(names):
                return None
            return pods if all(is_ready(p) for p in pods.values()) else None
        return poll(f"pods {names} Ready", check, timeout, diagnose=self.describe)

    # ---- teardown -----------------------------------------------------------------------
    def stop(self) -> list[str]:
        """SIGTERM, wait, then force-clean and report whatever was left behind."""
        problems: list[str] = []
        if self.up.proc.poll() is None:
            try:
                code = self.up.stop(STOP_TIMEOUT)
                if code != 0:
                    problems.append(f"stowage up exited with {code} on SIGTERM")
            except subprocess.TimeoutExpired:
                problems.append(f"stowage up did not stop within {STOP_TIMEOUT:.0f}s of SIGTERM")
                self.up.kill()
        if self.api is not None:
            self.api.close()
        # `up` leaves pods, mounts and pool loop devices for the next `up` to adopt;
        # `stowage down` is the documented way to release them.
        down = subprocess.run([stowage_executable(), "down", "--data-dir", str(self.data_dir), "--grace", "5"],
                              capture_output=True, text=True, timeout=120)
        if down.returncode != 0:
            problems.append(f"stowage down failed: {down.stderr.strip()}")
        problems += force_clean(self.data_dir)
        return problems


def force_clean(root: Path) -> list[str]:
    return [f"{leftover} under the data dir after stop" for leftover in clean_host_under(root)]


def remove_data_dir(root: Path) -> list[str]:
    """A test's last word on a data dir: ``force_clean``, then the directory goes, and with it the
    user-namespace claims and container bundles its pods hold in the machine-wide run directory (kept
    across `stowage down`, for the next `up` to restart its pods with the same ids)."""
    problems = force_clean(root)
    cleanup_tree(root)
    return problems


def is_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if pod["metadata"].get("deletionTimestamp") or status.get("phase") != "Running" or not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
