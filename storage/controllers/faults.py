"""Named crash points for fault-injection tests.

When the environment variable ``STOWAGE_FAULT_KILL_AT`` names a point, the
process kills itself with SIGKILL on reaching it: the harshest crash there is,
with no cleanup, which is what crash-safety must survive.
"""
from __future__ import annotations

import os
import signal

ENV = "STOWAGE_FAULT_KILL_AT"

# The provisioning and binding steps a crash can fall between.
POINTS = (
    "provision:before-backend",
    "provision:after-backend",
    "provision:after-volume-save",
    "bind:after-volume-write",
    "bind:after-claim-write",
)


def fault_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
