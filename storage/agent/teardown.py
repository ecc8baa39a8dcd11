"""Stopping everything a node's agent left running: ``stowage down``.

The agent deliberately leaves containers, mounts and pool loop devices in
place when it stops, so a restart adopts them (SEMANTICS A5). ``down`` is the
explicit opposite: stop every pod's containers (SIGTERM, then SIGKILL),
unmount everything under the data directory and detach the loop devices of
its pools. Volume contents stay on disk; ``stowage up`` brings them back.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from storage.agent.runtime import PodRuntime
from storage.agent.runtime.runc import Runc
from storage.errors import StowageError
from storage.system import loop, mounts
from storage.system.cgroups import remove_child_groups

log = structlog.get_logger(__name__)

# How long a detached loop device may take to really go before it is reported as left.
_RELEASE_WAIT_SECONDS = 5.0


def stop_node(data_dir: Path, agent_dir: Path, grace_seconds: float = 10.0) -> dict[str, Any]:
    """Stop pods under ``agent_dir``, then release every mount and loop device under ``data_dir``.

    Every count is what was verified afterwards, not what was attempted: a
    container still listed by runc, a mount still in the mount table or a loop
    device still attached is reported under ``left`` instead.
    """
    stopped = 0
    runc = Runc(agent_dir / "runc") if (agent_dir / "runc").exists() else None
    containers_before = _live_containers(runc)
    if runc is not None:
        runtime = PodRuntime(agent_dir, "down")
        try:
            for uid in sorted(runtime.running_pods()):
                try:
                    runtime.kill_pod(uid, grace_seconds)
                    stopped += 1
                except Exception as exc:
                    log.warning("down.kill_failed", uid=uid, error=str(exc))
        finally:
            runtime.close()
        for container_id in _live_containers(runc):  # not adopted by the runtime: force them down too
            try:
                runc.delete(container_id)
            except StowageError as exc:  # a stuck runc (CF13): reported under "left", the rest goes on
                log.warning("down.delete_failed", container=container_id, error=str(exc))
                continue
            remove_child_groups(container_id)  # what runc's own removal gave up on (CT5)
    containers_left = _live_containers(runc)

    found = mounts.mounts_under(data_dir)
    mounts_before = {(m.mount_id, m.mount_point) for m in found}
    # Before any unmount: a FUSE submount of a Bidirectional copy left by a dead agent must not take the
    # host's own FUSE mount (and perhaps its daemon) with it (SV13).
    mounts.isolate_tree(found)
    # FUSE mounts first, each bounded in time: a hung daemon (GlusterFS, GF7) must not stall `down`.
    for entry in found:
        if entry.fstype.startswith("fuse"):
            try:
                mounts.unmount_fuse(entry.mount_point)
            except Exception as exc:
                log.warning("down.unmount_failed", target=entry.mount_point, error=str(exc))
    try:
        mounts.unmount_all_under(data_dir)
    except Exception as exc:  # busy or reappearing mounts: what is left is counted below
        log.warning("down.unmount_failed", error=str(exc))
    mounts_left = {(m.mount_id, m.mount_point) for m in mounts.mounts_under(data_dir)}

    loops_before = loop.loops_under(data_dir)
    for device in loops_before:
        try:
            loop.detach(device, release_wait=0)  # waited for together below
        except Exception as exc:
            log.warning("down.detach_failed", device=device, error=str(exc))
    # A detach of a device still in use only marks it for autoclear: it stays attached until its
    # last user goes, so only a device no longer backed by the same file counts as released.
    loops_left = loop.wait_released(loops_before, _RELEASE_WAIT_SECONDS)
    if mounts_left:
        # A FUSE mount that backed a loop device (rbd-fuse) is busy until that device is gone: try again.
        try:
            mounts.unmount_all_under(data_dir)
        except Exception as exc:
            log.warning("down.unmount_failed", error=str(exc))
        mounts_left = {(m.mount_id, m.mount_point) for m in mounts.mounts_under(data_dir)}

    result: dict[str, Any] = {
        "pods": stopped,
        "containers": len(containers_before - containers_left),
        "mounts": len(mounts_before - mounts_left),
        "loop_devices": len(set(loops_before) - set(loops_left)),
        "left": {
            "containers": sorted(containers_left),
            "mounts": sorted(point for _, point in mounts_left),
            "loop_devices": sorted(f"{dev} ({f})" for dev, f in loops_left.items()),
        },
    }
    log.info("node stopped", pods=stopped, containers=result["containers"], mounts=result["mounts"],
             loop_devices=result["loop_devices"], left=result["left"])
    return result


def _live_containers(runc: Runc | None) -> set[str]:
    if runc is None:
        return set()
    return {str(c.get("id")) for c in runc.list() if c.get("status") != "stopped"}
