"""Named crash points for fault-injection tests.

A test starts a process with ``STOWAGE_FAULT=<point>`` and the process kills
itself with SIGKILL when it reaches that point, the way a power cut or an
OOM kill would: no cleanup handlers, no flushed buffers.
"""
from __future__ import annotations

import os
import signal

ENV = "STOWAGE_FAULT"


def fault_point(name: str) -> None:
    wanted = os.environ.get(ENV, "")
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
