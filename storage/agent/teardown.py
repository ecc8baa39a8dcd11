"""Stopping everything a node's agent left running: ``stowage down``.

The agent deliberately leaves containers, mounts and pool loop devices in
place when it stops, so a restart adopts them (SEMANTICS A5). ``down`` is the
explicit opposite: stop every pod's containers (SIGTERM, then SIGKILL),
unmount everything under the data directory and detach the loop devices of
its pools. Volume contents stay on disk; ``stowage up`` brings them back.
"""
from __future__ import annotations

from pathlib import Path

import structlog

from storage.agent.runtime import PodRuntime
from storage.system import loop, mounts

log = structlog.get_logger(__name__)


def stop_node(data_dir: Path, agent_dir: Path, grace_seconds: float = 10.0) -> dict[str, int]:
    """Stop pods under ``agent_dir``, then release every mount and loop device under ``data_dir``."""
    stopped = 0
    if (agent_dir / "runc").exists():
        runtime = PodRuntime(agent_dir, "down")
        try:
            for uid in sorted(runtime.running_pods()):
                runtime.kill_pod(uid, grace_seconds)
                stopped += 1
        finally:
            runtime.close()
    unmounted = len(mounts.mounts_under(data_dir))
    mounts.unmount_all_under(data_dir)
    loops = loop.loops_under(data_dir)
    for device in loops:
        loop.detach(device)
    log.info("node stopped", pods=stopped, mounts=unmounted, loop_devices=len(loops))
    return {"pods": stopped, "mounts": unmounted, "loop_devices": len(loops)}
