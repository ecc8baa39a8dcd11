"""The one place that runs host commands.

Every host command in Stowage goes through an ``Executor`` so that backends
whose tools cannot run on a given machine (iSCSI, rbd map, cloud metadata)
can still be tested for the exact command lines they build, using
``RecordingExecutor``.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import structlog

from storage.errors import StowageError

log = structlog.get_logger(__name__)

DEFAULT_TIMEOUT = 120.0

_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


class CommandError(StowageError):
    """A host command failed; the message carries the command and its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = (stderr or stdout).strip() or "no output"
        super().__init__(f"{argv[0]} exited with status {returncode}: {detail}")


class CommandTimeout(StowageError):
    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        self.argv = list(argv)
        super().__init__(f"{argv[0]} did not finish within {timeout:g}s")


def _redact(argv: Sequence[str], secrets: Sequence[str]) -> list[str]:
    if not secrets:
        return list(argv)
    out = []
    for arg in argv:
        for secret in secrets:
            if secret:
                arg = arg.replace(secret, "***")
        out.append(arg)
    return out


# How long a killed command may take to end before it is left to a reaper thread.
KILL_WAIT_SECONDS = 2.0


def kill_bounded(child: subprocess.Popen[Any], shown: Sequence[str], *, group: bool = False) -> None:
    """SIGKILL a command that ran out of time (its whole process group with ``group``, for one started
    in a session of its own), and wait for it only so long: a process in an uninterruptible sleep
    (``umount`` of a FUSE mount whose daemon is stopped or hung, a frozen one) cannot die until the
    kernel lets it, and ``subprocess.run`` would wait for it forever. Such a one is reaped by a thread of
    its own whenever it ends, so the caller can go on to what unblocks it (``umount -f``, killing the
    daemon)."""
    if group:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:  # the group is gone: only the pipes may still be held
            pass
    else:
        child.kill()
    try:
        child.communicate(timeout=KILL_WAIT_SECONDS)
        return
    except subprocess.TimeoutExpired:
        pass
    log.warning("command.unkillable", argv=list(shown), pid=child.pid)
    threading.Thread(target=child.communicate, name=f"reap-{child.pid}", daemon=True).start()


class Executor:
    """Runs a command and returns its ``CompletedProcess`` (text mode).

    ``secrets`` lists substrings (keys, passwords) that must never reach the
    log even though they appear on the command line.
    """

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        secrets: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        shown = _redact(argv, secrets)
        started = time.monotonic()
        try:
            child = subprocess.Popen(
                list(argv), stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
        except FileNotFoundError as exc:
            raise CommandError(shown, 127, "", f"command not found: {argv[0]}") from exc
        try:
            stdout, stderr = child.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            log.warning("command.timeout", argv=shown, timeout=timeout)
            kill_bounded(child, shown)
            raise CommandTimeout(shown, timeout) from exc
        except BaseException:  # interrupted (KeyboardInterrupt, a thread's exit): the command goes too
            kill_bounded(child, shown)
            raise
        proc = subprocess.CompletedProcess(list(argv), child.returncode, stdout, stderr)
        log.debug("command.run", argv=shown, rc=proc.returncode, seconds=round(time.monotonic() - started, 3))
        if check and proc.returncode != 0:
            stderr = _redact([proc.stderr], secrets)[0]
            log.info("command.failed", argv=shown, rc=proc.returncode, stderr=stderr.strip()[:500])
            raise CommandError(shown, proc.returncode, proc.stdout, stderr)
        return proc

    def fsync(self, path: str) -> None:
        """``sync PATH`` (coreutils: open read-only, fsync), done in this process (PF3): the same
        flush to stable storage without a process of its own. Like ``sync`` run unchecked, a failure
        is logged, not raised."""
        started = time.monotonic()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("fsync.failed", path=path, error=str(exc))
            return
        try:
            os.fsync(fd)
        except OSError as exc:  # as `sync` run with check=False was: reported, not raised
            log.warning("fsync.failed", path=path, error=str(exc))
        finally:
            os.close(fd)
        log.debug("fsync", path=path, seconds=round(time.monotonic() - started, 3))

    def mount(self, source: str, target: str, fstype: str | None, flags: int, data: str | None,
              argv: Sequence[str], *, explain: bool = False) -> None:
        """mount(2) in this process (PF68) for a mount whose options the agent itself chose (a bind, a
        tmpfs): what ``argv`` (the equivalent `mount` command) would do, without a process of its own,
        which cost a pod start 3-5 ms each. Fails as that command would, with a ``CommandError``.
        ``explain`` (PF74): after a refusal ``argv`` itself runs, so the failure carries mount(8)'s own
        words (the FailedMount event quotes them), or the mount is made if mount(8) knew better."""
        started = time.monotonic()
        if _libc.mount(source.encode(), os.fsencode(target), fstype.encode() if fstype else None, flags,
                       data.encode() if data else None) != 0:
            err = ctypes.get_errno()
            if explain:
                self.run(argv)
                return
            raise CommandError(argv, 32, "", f"{argv[0]}: {target}: {os.strerror(err)}")
        log.debug("mount.syscall", argv=list(argv), seconds=round(time.monotonic() - started, 3))

    def umount(self, target: str, lazy: bool, argv: Sequence[str]) -> None:
        """umount2(2) in this process (PF68): ``umount [-l] target`` without a process of its own."""
        if _libc.umount2(os.fsencode(target), MNT_DETACH if lazy else 0) != 0:
            err = ctypes.get_errno()
            raise CommandError(argv, 32, "", f"{argv[0]}: {target}: {os.strerror(err)}")
        log.debug("umount.syscall", argv=list(argv))


@dataclass
class RecordingExecutor(Executor):
    """Records every command instead of running it (command-construction tests).

    ``responses`` maps a command prefix (tuple of leading arguments) to a
    result ``(returncode, stdout, stderr)`` or a callable building one; the
    longest matching prefix wins, the default is success with no output.
    """

    responses: dict[tuple[str, ...], tuple[int, str, str] | Callable[[list[str]], tuple[int, str, str]]] = field(
        default_factory=dict
    )
    calls: list[list[str]] = field(default_factory=list)
    inputs: list[str | None] = field(default_factory=list)

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        secrets: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        args = list(argv)
        self.calls.append(args)
        self.inputs.append(input)
        result: tuple[int, str, str] = (0, "", "")
        best = -1
        for prefix, response in self.responses.items():
            if tuple(args[: len(prefix)]) == prefix and len(prefix) > best:
                best = len(prefix)
                result = response(args) if callable(response) else response
        rc, out, err = result
        if check and rc != 0:
            raise CommandError(args, rc, out, err)
        return subprocess.CompletedProcess(args, rc, out, err)

    def fsync(self, path: str) -> None:
        """Recorded as the command it stands for."""
        self.run(["sync", path], check=False)

    def mount(self, source: str, target: str, fstype: str | None, flags: int, data: str | None,
              argv: Sequence[str], *, explain: bool = False) -> None:
        """Recorded as the command it stands for."""
        self.run(argv)

    def umount(self, target: str, lazy: bool, argv: Sequence[str]) -> None:
        """Recorded as the command it stands for."""
        self.run(argv)


_default = Executor()


def default_executor() -> Executor:
    return _default
