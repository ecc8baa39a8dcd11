"""The agent's streaming pod endpoints: logs with options, ``exec`` and ``attach`` over WebSocket.

``exec`` and ``attach`` speak Kubernetes' channel protocol (``v5.channel.k8s.io``,
``v4.channel.k8s.io``): every binary message starts with a channel byte, 0 stdin,
1 stdout, 2 stderr, 3 the final metav1.Status, 4 terminal resizes, and in v5 255
closes a stream (the client's end of stdin). The API server relays the messages
untouched, as kube-apiserver relays to the kubelet.

``exec`` runs ``runc exec``, which takes the container's own process spec (user,
env, working directory, capabilities, no-new-privileges, rlimits) and joins its
namespaces, cgroup and seccomp filter. With ``tty=true`` runc is given a pty of
ours: runc copies between it and the container's own pty, resizes follow ours.
A command that runc cannot start (not found, not executable) ends the session
with containerd's InternalError, as on a kubelet, not with runc's exit code 255:
runc writes its pid file only once the command runs, and until then what comes
on stderr may be runc's own error (CT6).

``attach`` follows the running instance's log from its end (containers run
detached with their output in the log file) and writes stdin into the FIFO the
shim holds open for containers with ``stdin: true``.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import secrets
import signal
import struct
import subprocess
import tempfile
import termios
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from tty import setraw
from typing import TYPE_CHECKING, Any, Iterator

import orjson
import structlog
from starlette.concurrency import iterate_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.websockets import WebSocket

from storage.agent.runtime.runc import ERROR_LINE, ERROR_LINE_START
from storage.api.timestamps import parse_time
from storage.errors import BadRequest, NotFound, StowageError

if TYPE_CHECKING:
    from storage.agent.agent import NodeAgent

log = structlog.get_logger(__name__)

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
V5, V4 = "v5.channel.k8s.io", "v4.channel.k8s.io"
CHANNEL_PROTOCOLS = (V5, V4)  # preferred first
READ_SIZE = 32 * 1024
DISCONNECT_GRACE = 5.0  # seconds an exec'd command has to end after its client went away


def offered_protocols(ws: WebSocket) -> list[str]:
    """The client's subprotocols, from the ASGI scope (some servers keep them out of the headers)."""
    offered = ws.scope.get("subprotocols") or (ws.headers.get("sec-websocket-protocol") or "").split(",")
    return [p.strip() for p in offered if p.strip()]


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _status_error(exc: StowageError) -> JSONResponse:
    return JSONResponse(exc.to_status(), status_code=exc.code)


def _pod(agent: "NodeAgent", namespace: str, name: str) -> tuple[str, dict[str, Any]]:
    try:
        uid = agent.pod_uid(namespace, name)
    except KeyError:
        raise NotFound(f'pods "{name}" not found') from None
    return uid, agent._pods.get(uid) or {}


def _container_name(pod: dict[str, Any], name: str, wanted: str) -> str:
    spec = pod.get("spec") or {}
    containers = [c.get("name", "") for c in spec.get("containers") or []]
    init = [c.get("name", "") for c in spec.get("initContainers") or []]
    ephemeral = [c.get("name", "") for c in spec.get("ephemeralContainers") or []]
    if not wanted:
        if len(containers) != 1:
            raise BadRequest(f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]")
        return containers[0]
    if wanted not in containers and wanted not in init and wanted not in ephemeral:
        raise BadRequest(f"container {wanted} is not valid for pod {name}")
    return wanted


# ---- logs ------------------------------------------------------------------------------------

def _since(query: Any) -> float | None:
    seconds = query.get("sinceSeconds")
    if seconds:
        return datetime.now(timezone.utc).timestamp() - int(seconds)
    when = parse_time(query.get("sinceTime"))
    return when.timestamp() if when is not None else None


def _limited(lines: Iterator[str], limit: int | None) -> Iterator[bytes]:
    """The wire bytes, cut after ``limit`` bytes (kubelet's limitBytes: a line may be cut in two)."""
    left = limit
    for line in lines:
        data = line.encode() + b"\n"
        if left is not None:
            if left <= 0:
                return
            data, left = data[:left], left - len(data)
        yield data
        if left is not None and left <= 0:
            return


async def log_response(agent: "NodeAgent", request: Request) -> Response:
    assert agent.runtime is not None
    query = request.query_params
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    uid, pod = _pod(agent, namespace, name)
    container = _container_name(pod, name, query.get("container") or "")
    previous = _truthy(query.get("previous"))
    tail = query.get("tailLines")
    limit = query.get("limitBytes")
    try:
        lines = agent.runtime.logs(uid, container, follow=_truthy(query.get("follow")),
                                   tail=int(tail) if tail else None, previous=previous, since=_since(query),
                                   timestamps=_truthy(query.get("timestamps")))
    except FileNotFoundError:
        if previous:
            raise BadRequest(f'previous terminated container "{container}" in pod "{name}" not found') from None
        raise BadRequest(f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating') from None
    return StreamingResponse(iterate_in_threadpool(_limited(lines, int(limit) if limit else None)),
                             media_type="text/plain")


# ---- the channel protocol --------------------------------------------------------------------

class ChannelSocket:
    """One accepted WebSocket speaking v4/v5 channels; sends are serialized."""

    def __init__(self, ws: WebSocket, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self._lock = asyncio.Lock()
        self.closed = False

    async def send(self, channel: int, data: bytes) -> None:
        if self.closed:
            return
        async with self._lock:
            try:
                await self.ws.send_bytes(bytes([channel]) + data)
            except Exception:  # the client went away: the reader side notices and ends the session
                self.closed = True

    async def finish(self, exit_code: int | None, message: str = "") -> None:
        await self.send(ERROR, orjson.dumps(exit_status(exit_code, message)))
        with contextlib.suppress(Exception):
            await self.ws.close(1000)
        self.closed = True


def exit_status(exit_code: int | None, message: str = "") -> dict[str, Any]:
    """The metav1.Status ending a v4/v5 session: Success, the exit code as client-go reads it, or (no exit
    code) apierrors.NewInternalError of ``message``, which kubectl prints as ``error: Internal error ...``."""
    if exit_code == 0:
        return {"metadata": {}, "status": "Success"}
    if exit_code is None:
        return {"metadata": {}, "status": "Failure", "message": f"Internal error occurred: {message}",
                "reason": "InternalError", "details": {"causes": [{"message": message}]}, "code": 500}
    return {
        "metadata": {}, "status": "Failure",
        "message": message or f"command terminated with non-zero exit code: exit status {exit_code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    }


def _resize(fd: int, payload: bytes) -> bool:
    try:
        size = json.loads(payload)
        width, height = int(size.get("Width") or 0), int(size.get("Height") or 0)
    except (ValueError, AttributeError, TypeError):
        return False
    if width <= 0 or height <= 0:
        return False
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
    return True


async def _accept(ws: WebSocket) -> ChannelSocket | None:
    protocol = next((p for p in CHANNEL_PROTOCOLS if p in offered_protocols(ws)), None)
    if protocol is None:
        error = BadRequest(f"none of the offered subprotocols is supported; this server speaks {', '.join(CHANNEL_PROTOCOLS)}")
        await ws.send_denial_response(_status_error(error))
        return None
    await ws.accept(subprotocol=protocol)
    return ChannelSocket(ws, protocol)


async def _deny(ws: WebSocket, exc: StowageError) -> None:
    await ws.send_denial_response(_status_error(exc))


# ---- exec ------------------------------------------------------------------------------------

def _running(agent: "NodeAgent", namespace: str, name: str, wanted: str) -> tuple[str, str, tuple[str, int, Path | None]]:
    """The pod's uid, the container's name and its running process; BadRequest unless it runs."""
    assert agent.runtime is not None
    uid, pod = _pod(agent, namespace, name)
    container = _container_name(pod, name, wanted)
    running = agent.runtime.container_process(uid, container)
    if running is None:
        raise BadRequest(f'container "{container}" in pod "{name}" is not running')
    return uid, container, running


async def exec_ws(agent: "NodeAgent", ws: WebSocket) -> None:
    assert agent.runtime is not None
    query = ws.query_params
    namespace, name = ws.path_params["namespace"], ws.path_params["name"]
    command = query.getlist("command")
    tty = _truthy(query.get("tty"))
    want_stdin, want_stdout, want_stderr = (_truthy(query.get(k)) for k in ("stdin", "stdout", "stderr"))
    try:
        if not command:
            raise BadRequest("command: Required value: you must specify the command to run")
        if not (want_stdin or want_stdout or want_stderr):
            raise BadRequest("you must specify at least 1 of stdin, stdout, stderr")
        uid, container, running = _running(agent, namespace, name, query.get("container") or "")
    except StowageError as exc:
        await _deny(ws, exc)
        return
    channels = await _accept(ws)
    if channels is None:
        return
    runc = agent.runtime.settings.runc
    log.info("exec", pod=f"{namespace}/{name}", container=container, tty=tty)
    # runc's pid file goes in the agent's own data directory: nothing of a session is left in the host's /tmp.
    with tempfile.TemporaryDirectory(prefix="exec-", dir=agent.runtime.data_dir) as scratch:
        start = ExecStart(Path(scratch) / "pid")
        argv = runc._cmd("exec", "--pid-file", str(start.pid_file), *(["--tty"] if tty else []), running[0], *command)
        if tty:
            await _exec_tty(channels, argv, want_stdin, start)
        else:
            await _exec_pipes(channels, argv, want_stdin, want_stdout, want_stderr, start)


class ExecStart:
    """CT6: tells runc's failure to start the command from the command's own output. runc writes its pid file
    once the command runs; until then, stderr that may still become runc's error line is held back."""

    def __init__(self, pid_file: Path) -> None:
        self.pid_file = pid_file
        self.held = bytearray()
        self.passing = False  # the command's own output: everything goes through

    def stderr(self, chunk: bytes) -> bytes:
        """What of the stderr read so far may go to the client now."""
        if self.passing:
            return chunk
        self.held += chunk
        head = bytes(self.held[:len(ERROR_LINE_START)])
        if self.pid_file.exists() or not ERROR_LINE_START.startswith(head):
            self.passing = True
            out = bytes(self.held)
            self.held.clear()
            return out
        return b""

    def failure(self) -> str | None:
        """Once runc has ended: containerd's words for a command that never started, else None."""
        if self.passing or self.pid_file.exists():
            return None
        found = ERROR_LINE.search(bytes(self.held))  # runc's "exec failed: ..."
        if found is None:
            return None
        try:
            error = json.loads(b'"' + found.group(1) + b'"')  # logrus quotes as Go does; JSON reads the usual escapes
        except ValueError:
            error = found.group(1).decode("utf-8", "replace")
        # containerd names its exec process by a random 64-hex id; the CRI server and the kubelet wrap its error.
        return (f"error executing command in container: failed to exec in container: failed to start exec "
                f'"{secrets.token_hex(32)}": OCI runtime exec failed: {error}: unknown')

    def rest(self) -> bytes:
        """Held stderr that turned out to be the command's (runc ended without an error line of its own)."""
        out = bytes(self.held)
        self.held.clear()
        return out


async def _exec_pipes(ch: ChannelSocket, argv: list[str], want_stdin: bool, want_stdout: bool,
                      want_stderr: bool, start: ExecStart) -> None:
    pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
    # stderr is read even when the client does not want it: runc's own error comes there (CT6).
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=pipe if want_stdin else devnull, stdout=pipe if want_stdout else devnull,
        stderr=pipe, start_new_session=True)

    async def pump(reader: asyncio.StreamReader | None, channel: int) -> None:
        if reader is None:
            return
        while chunk := await reader.read(READ_SIZE):
            if channel == STDERR:
                chunk = start.stderr(chunk)
                if not chunk or not want_stderr:
                    continue
            await ch.send(channel, chunk)

    async def close_stdin() -> None:
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
            with contextlib.suppress(Exception):
                await proc.stdin.wait_closed()

    async def on_input(channel: int, payload: bytes) -> None:
        if channel == STDIN and proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.write(payload)
            with contextlib.suppress(ConnectionError):
                await proc.stdin.drain()
        elif channel == CLOSE and payload[:1] == bytes([STDIN]):
            await close_stdin()

    await _run_session(ch, proc.pid, [pump(proc.stdout, STDOUT), pump(proc.stderr, STDERR)], on_input, proc.wait,
                       start=start, held_to=STDERR if want_stderr else None)


async def _exec_tty(ch: ChannelSocket, argv: list[str], want_stdin: bool, start: ExecStart) -> None:
    master, slave = pty.openpty()
    # CT4: our terminal only carries bytes between the client and runc, which copies them to the container's own
    # terminal: raw from the start, as containerd copies a stream straight to the container's console. Cooked (as a
    # new pty is) until runc made it raw, it echoed what came first (a byte arriving with the session showed twice,
    # once from each terminal) and turned \r into \n.
    setraw(slave, termios.TCSANOW)
    try:
        # runc's own stderr is not the command's (which comes through the container's terminal): a pipe of its own,
        # for its error when it cannot start the command (CT6).
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=subprocess.PIPE, start_new_session=True,
                                close_fds=True)
    finally:
        os.close(slave)
    assert proc.stderr is not None
    runc_stderr = proc.stderr
    loop = asyncio.get_running_loop()
    writer_lock = threading.Lock()

    def read_master() -> bytes:
        try:
            return os.read(master, READ_SIZE)
        except OSError:  # EIO once the last holder of the other end is gone
            return b""

    async def pump() -> None:
        while chunk := await loop.run_in_executor(None, read_master):
            await ch.send(STDOUT, chunk)

    def write_master(data: bytes) -> None:
        with writer_lock:
            with contextlib.suppress(OSError):
                os.write(master, data)

    async def on_input(channel: int, payload: bytes) -> None:
        if channel == STDIN and want_stdin:
            await loop.run_in_executor(None, write_master, payload)
        elif channel == RESIZE and _resize(master, payload):
            # runc copies the size of its own terminal (ours) to the container's on SIGWINCH.
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGWINCH)
        elif channel == CLOSE and payload[:1] == bytes([STDIN]):
            await loop.run_in_executor(None, write_master, b"\x04")  # end of input on a terminal

    async def runc_errors() -> None:
        while chunk := await loop.run_in_executor(None, runc_stderr.read1, READ_SIZE):
            start.held += chunk

    try:
        # What runc said beside a command that ran goes on the terminal, as it did before it had a pipe of its own.
        await _run_session(ch, proc.pid, [pump(), runc_errors()], on_input,
                           lambda: loop.run_in_executor(None, proc.wait), start=start, held_to=STDOUT)
    finally:
        os.close(master)
        runc_stderr.close()


async def _run_session(ch: ChannelSocket, pid: int, pumps: list[Any], on_input: Any, wait: Any, *,
                       start: ExecStart | None = None, held_to: int | None = None) -> None:
    """Feed client input to ``on_input`` while the output pumps run; when the process ends,
    send its status. A client that goes away ends the process. For an exec (``start``): runc's failure
    to start the command is the status; else the stderr ``start`` still holds goes out on ``held_to``
    (None: nowhere, the client did not ask for it)."""

    async def receive() -> None:
        while True:
            message = await ch.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            if data:
                await on_input(data[0], data[1:])

    receiver = asyncio.create_task(receive())
    output = asyncio.gather(*pumps)
    done, _ = await asyncio.wait({receiver, output}, return_when=asyncio.FIRST_COMPLETED)
    if receiver in done and output not in done:
        # The client is gone: nobody reads the output. runc passes SIGTERM on to the command;
        # one that ignores it is left to itself once runc is killed.
        ch.closed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        try:
            code = await asyncio.wait_for(asyncio.shield(asyncio.ensure_future(wait())), DISCONNECT_GRACE)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    code = await wait()
    with contextlib.suppress(Exception):
        await output
    receiver.cancel()
    with contextlib.suppress(BaseException):
        await receiver
    if start is not None:
        failure = start.failure()
        if failure is not None:
            log.info("exec could not start its command", exit_code=code)
            await ch.finish(None, failure)
            return
        if held_to is not None and (rest := start.rest()):
            await ch.send(held_to, rest)
    await ch.finish(code)


# ---- attach ----------------------------------------------------------------------------------

async def attach_ws(agent: "NodeAgent", ws: WebSocket) -> None:
    assert agent.runtime is not None
    runtime = agent.runtime
    query = ws.query_params
    namespace, name = ws.path_params["namespace"], ws.path_params["name"]
    want_stdin = _truthy(query.get("stdin"))
    try:
        uid, container, running = _running(agent, namespace, name, query.get("container") or "")
        if want_stdin and running[2] is None:
            raise BadRequest(f"container {container} does not have stdin enabled (spec.containers[].stdin)")
    except StowageError as exc:
        await _deny(ws, exc)
        return
    # Output from now on, by the lines' own timestamps: a follower that starts "at the end" would
    # miss what the container writes (and may exit with) before its thread first reads the log.
    attached_at = time.time()
    channels = await _accept(ws)
    if channels is None:
        return
    fifo = running[2] if want_stdin else None
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    lines = runtime.logs(uid, container, follow=True, since=attached_at, stop=stop)
    fifo_fd = os.open(fifo, os.O_WRONLY | os.O_CLOEXEC) if fifo is not None else -1

    async def pump() -> None:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()

        def follow() -> None:
            try:
                for line in lines:
                    loop.call_soon_threadsafe(queue.put_nowait, line.encode() + b"\n")
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        threading.Thread(target=follow, name=f"attach-{name}", daemon=True).start()
        while (chunk := await queue.get()) is not None:
            await ch_send(chunk)

    async def ch_send(chunk: bytes) -> None:
        await channels.send(STDOUT, chunk)

    def write_fifo(data: bytes) -> None:
        with contextlib.suppress(OSError):
            os.write(fifo_fd, data)

    async def on_input(channel: int, payload: bytes) -> None:
        if channel == STDIN and fifo_fd >= 0:
            await loop.run_in_executor(None, write_fifo, payload)

    async def receive() -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            if data:
                await on_input(data[0], data[1:])

    receiver = asyncio.create_task(receive())
    output = asyncio.create_task(pump())
    try:
        done, _ = await asyncio.wait({receiver, output}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.set()
        receiver.cancel()
        with contextlib.suppress(BaseException):
            await receiver
        if fifo_fd >= 0:
            os.close(fifo_fd)
    if output in done:
        await channels.finish(0)  # the container ended: the attached session ends with it
    else:
        output.cancel()
        with contextlib.suppress(BaseException):
            await output
