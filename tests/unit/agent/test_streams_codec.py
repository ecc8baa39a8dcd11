"""The pure parts of the pod streams: SPDY framing, the channel protocol's final status (CT6), log lines."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

from storage.api import spdy
from storage.agent.runtime.logfile import split_line, stamp_of
from storage.agent.streams import ExecStart, _limited, exit_status


def _client_syn_stream(deflate: "zlib._Compress", stream_id: int, headers: dict[str, str], fin: bool = False) -> bytes:
    block = struct.pack(">I", len(headers)) + b"".join(
        struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode() for k, v in headers.items())
    compressed = deflate.compress(block) + deflate.flush(zlib.Z_SYNC_FLUSH)
    payload = struct.pack(">IIBB", stream_id, 0, 0, 0) + compressed
    return struct.pack(">HHI", 0x8003, spdy.SYN_STREAM, ((1 if fin else 0) << 24) | len(payload)) + payload


def test_syn_streams_split_anywhere_are_parsed_with_their_headers() -> None:
    deflate = zlib.compressobj(zdict=spdy.DICTIONARY)
    wire = (_client_syn_stream(deflate, 1, {"streamType": "error", "port": "80", "requestID": "0"})
            + _client_syn_stream(deflate, 3, {"streamType": "data", "port": "80", "requestID": "0"})
            + spdy.Codec.data(3, b"GET / HTTP/1.0\r\n\r\n", fin=True))
    codec = spdy.Codec()
    frames = []
    for i in range(0, len(wire), 7):  # a WebSocket message may end anywhere in a frame
        frames += codec.feed(wire[i:i + 7])
    assert [(f.control, f.kind, f.stream_id) for f in frames] == [(True, 1, 1), (True, 1, 3), (False, 0, 3)]
    assert frames[0].headers == {"streamtype": "error", "port": "80", "requestid": "0"}
    assert frames[1].headers == {"streamtype": "data", "port": "80", "requestid": "0"}
    assert frames[2].payload == b"GET / HTTP/1.0\r\n\r\n" and frames[2].flags & spdy.FLAG_FIN


def test_syn_reply_decodes_with_the_dictionary() -> None:
    reply = spdy.Codec().syn_reply(5, {"x": "y"})
    assert reply[:4] == struct.pack(">HH", 0x8003, spdy.SYN_REPLY)
    length = int.from_bytes(reply[5:8], "big")
    assert len(reply) == 8 + length and int.from_bytes(reply[8:12], "big") == 5
    block = zlib.decompressobj(zdict=spdy.DICTIONARY).decompress(reply[12:])
    assert block == struct.pack(">II", 1, 1) + b"x" + struct.pack(">I", 1) + b"y"


def test_exit_status_as_client_go_reads_it() -> None:
    assert exit_status(0) == {"metadata": {}, "status": "Success"}
    failed = exit_status(3)
    assert failed["status"] == "Failure" and failed["reason"] == "NonZeroExitCode"
    assert failed["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    # CT6: no exit code: apierrors.NewInternalError, whose message kubectl prints after "error: ".
    assert exit_status(None, "boom") == {"metadata": {}, "status": "Failure", "message": "Internal error occurred: boom",
                                         "reason": "InternalError", "details": {"causes": [{"message": "boom"}]},
                                         "code": 500}


def test_ct6_runc_s_own_error_is_told_from_the_commands_stderr(tmp_path: Path) -> None:
    line = b'time="2026-12-07T06:48:25Z" level=error msg="exec failed: unable to start container process: exec: ' \
           b'\\"nosuch\\": executable file not found in $PATH"\n'
    start = ExecStart(tmp_path / "pid")
    assert start.stderr(line[:10]) == b"" and start.stderr(line[10:]) == b""  # held: it may be runc's error
    failure = start.failure()
    assert failure is not None and failure.startswith(
        'error executing command in container: failed to exec in container: failed to start exec "')
    assert failure.endswith('": OCI runtime exec failed: exec failed: unable to start container process: exec: '
                            '"nosuch": executable file not found in $PATH: unknown')
    # The command's own stderr goes through at once when it cannot be runc's line, or once the pid file is there.
    other = ExecStart(tmp_path / "pid")
    assert other.stderr(b"oops\n") == b"oops\n" and other.stderr(b'time="') == b'time="' and other.failure() is None
    started = ExecStart(tmp_path / "pid")
    assert started.stderr(b'time="1"') == b""
    (tmp_path / "pid").write_text("42")
    assert started.stderr(b" more\n") == b'time="1" more\n' and started.failure() is None
    held = ExecStart(tmp_path / "none")
    assert held.stderr(b'time="1" level=info msg="x"\n') == b"" and held.failure() is None
    assert held.rest() == b'time="1" level=info msg="x"\n'


def test_log_lines_and_stamps() -> None:
    stamp = stamp_of(1_700_000_000.25)
    assert stamp == b"2023-11-14T22:13:20.250000000Z"
    assert split_line(stamp + b" hello world") == (stamp, b"hello world")
    assert split_line(stamp) == (stamp, b"")  # an empty line
    assert split_line(b"written before lines were stamped") == (None, b"written before lines were stamped")
    assert stamp_of(1_700_000_000.0) < stamp < stamp_of(1_700_000_001.0)  # stamps compare as times


def test_limit_bytes_cuts_the_stream() -> None:
    assert b"".join(_limited(iter(["one", "two"]), 6)) == b"one\ntw"
    assert b"".join(_limited(iter(["one", "two"]), None)) == b"one\ntwo\n"
    assert b"".join(_limited(iter(["one", "two"]), 4)) == b"one\n"


def test_terminal_sizes_split_anywhere_become_one_message_each() -> None:
    from storage.apiserver.spdy_upgrade import _complete_json_values

    buffer = bytearray()
    wire = b'{"Width":80,"Height":24}\n{"Width":100,"Height":40}\n'
    seen: list[bytes] = []
    for i in range(0, len(wire), 5):  # SPDY data frames may cut a size anywhere
        buffer.extend(wire[i:i + 5])
        seen += _complete_json_values(buffer)
    assert seen == [b'{"Width":80,"Height":24}', b'{"Width":100,"Height":40}'] and buffer.strip() == b""
