"""The container log file's line format: ``<RFC 3339 UTC time with nanoseconds> <text>``.

The shim stamps each line as the container writes it (see runc.py). Lines written
before stamping existed (a container adopted from an older agent) have no stamp and
are shown as they are.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

STAMP_LENGTH = len("2006-01-02T15:04:05.000000000Z")
_STAMP = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z")


def split_line(line: bytes) -> tuple[bytes | None, bytes]:
    """(stamp, text) of one stored line; stamp None for an unstamped line."""
    if len(line) > STAMP_LENGTH and line[STAMP_LENGTH] == 0x20 and _STAMP.fullmatch(line, 0, STAMP_LENGTH):
        return line[:STAMP_LENGTH], line[STAMP_LENGTH + 1:]
    if len(line) == STAMP_LENGTH and _STAMP.fullmatch(line):
        return line, b""  # an empty line the container wrote
    return None, line


def stamp_of(epoch: float) -> bytes:
    """The stored form of a time: fixed width, so stamps compare as strings."""
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return (moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond:06d}000Z").encode()
