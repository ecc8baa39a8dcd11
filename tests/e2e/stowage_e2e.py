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
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, TypeVar

import pytest

from storage.client import Client

T = TypeVar("T")
STARTUP_TIMEOUT = 180.0
STOP_TIMEOUT = 120.0


def stowage_executable() -> str:
    beside = Path(sys.executable).parent / "stowage"
    if beside.exists():
        return str(beside)
    found = shutil.which("stowage")
    if not found:
        pytest.fail("the stowage console script is not installed (pip install -e .)")
    return found


def need_host_program(*programs: str) -> None:
    for program in programs:
        if shutil.which(program) is None:
            pytest.skip(f"host program {program!r} is not installed")


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: pods run in runc containers on loop-backed volumes")


def poll(what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.5,
         diagnose: Callable[[], str] | None = None) -> T:
    """``check()``'s first truthy result; fails naming ``what`` when ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except AssertionError:
            raise
        except Exception as exc:  # transient (API restarting, process gone): retried until the deadline
            last_error = exc
        if time.monotonic() > deadline:
            detail = diagnose() if diagnose else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}"
                        f"{f' (last error: {last_error!r})' if last_error else ''}\n{detail}")
        time.sleep(interval)


# ---- host state under a data dir --------------------------------------------------------

def _under(path: str, root: Path) -> bool:
    return path == str(root) or path.startswith(str(root) + "/")


def mounts_under(root: Path) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mount_point = line.split()[4].replace("\\040", " ")
            if _under(mount_point, root):
                out.append(mount_point)
    return out


def loop_devices_under(root: Path) -> list[str]:
    out = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            target = backing.read_text().strip().removesuffix(" (deleted)")
        except OSError:
            continue
        if _under(target, root):
            out.append("/dev/" + backing.parts[3])
    return out


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

    def __init__(self, data_dir: Path, files: list[Path]) -> None:
        self.data_dir = data_dir
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        self.proc = subprocess.Popen(
            [stowage_executable(), "up", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
             "--log-format", "json", *[a for f in files for a in ("-f", str(f))]],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
        )
        self.log: list[str] = []
        self._lines: "queue.Queue[str | None]" = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()
        self.kubeconfig = data_dir / "kubeconfig"
        self.api: Client | None = None

    def wait_started(self) -> None:
        ready = self._wait_for_event("stowage is ready")
        self.kubeconfig = Path(ready["kubeconfig"])
        self.api = Client.from_kubeconfig(self.kubeconfig)

    def _pump(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def _wait_for_event(self, event: str) -> dict[str, Any]:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"stowage up: no {event!r} within {STARTUP_TIMEOUT:.0f}s:\n{self.log_tail()}")
            if line is None:
                pytest.fail(f"stowage up exited ({self.proc.wait()}) before {event!r}:\n{self.log_tail()}")
            self.log.append(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                return record

    def log_tail(self, lines: int = 60) -> str:
        while True:  # drain what the pump thread collected since the last look
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.log.append(line)
        return "".join(self.log[-lines:])

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
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=STOP_TIMEOUT)
                if code != 0:
                    problems.append(f"stowage up exited with {code} on SIGTERM")
            except subprocess.TimeoutExpired:
                problems.append(f"stowage up did not stop within {STOP_TIMEOUT:.0f}s of SIGTERM")
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
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
    problems = []
    pids = processes_under(root)
    if pids:
        problems.append(f"pod processes still running after stop: {pids}")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    # Deepest first, so a volume bound into a pod directory goes before the mount it comes from.
    left = sorted(mounts_under(root), key=len, reverse=True)
    if left:
        problems.append(f"mounts still present under the data dir after stop: {left}")
        for mount_point in left:
            if subprocess.run(["umount", mount_point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", mount_point], capture_output=True)
    loops = loop_devices_under(root)
    if loops:
        problems.append(f"loop devices still attached after stop: {loops}")
        for device in loops:
            subprocess.run(["losetup", "-d", device], capture_output=True)
    return problems


def is_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if pod["metadata"].get("deletionTimestamp") or status.get("phase") != "Running" or not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
