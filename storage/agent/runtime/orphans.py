"""Removing what dead agents left in the machine-wide run directory.

Container bundles (``<run dir>/containers/<id>``, with the overlay root and staged
volume mounts in them), user-namespace claims (``<run dir>/userns/<base>``) and pod
address claims (``<run dir>/podips/<address>``) live outside any agent's data dir,
because every agent on the machine shares the tmpfs, the id ranges and the loopback
addresses. An agent that is killed, and whose data dir is then
removed, leaves them behind. Each one names its owner (the pod directory), so
an entry whose owner is gone can be removed without touching a live pod's.
"""
from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import structlog

from storage.system.mounts import MountTable

from . import memcg
from .ipam import CLAIMS_DIR, holds_address
from .runc import unmount_rootfs
from .userns import holds_range

log = structlog.get_logger(__name__)

OWNER_FILE = "owner"


def _under(path: str, prefix: Path | None) -> bool:
    if prefix is None:
        return True
    base = os.path.realpath(prefix).rstrip("/")
    return path == base or path.startswith(base + "/")


def reap_orphans(run_dir: Path, *, only_under: Path | None = None) -> list[str]:
    """Remove bundles and claims whose pod directory no longer exists (and, with ``only_under``,
    lay under that directory). Entries without an owner are left alone. Returns what was removed."""
    removed: list[str] = []
    containers = Path(run_dir) / "containers"
    for bundle in sorted(containers.iterdir()) if containers.is_dir() else []:
        try:
            owner = (bundle / OWNER_FILE).read_text().strip()
        except OSError:
            continue
        if not owner or os.path.exists(owner) or not _under(owner, only_under):
            continue
        # The overlay root and staged volumes under it; the container dir went with the pod dir.
        unmount_rootfs(Path(owner) / "containers" / "gone", bundle / "rootfs")
        if MountTable.read().under(bundle):
            log.warning("orphan_bundle_still_mounted", bundle=str(bundle))
            continue
        _remove_memory_group(bundle)
        shutil.rmtree(bundle, ignore_errors=True)
        removed.append(str(bundle))
    for claims, holds in ((Path(run_dir) / "userns", holds_range), (Path(run_dir) / CLAIMS_DIR, holds_address)):
        if claims.is_dir():
            with open(claims / ".lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # as the allocators: no allocation runs meanwhile
                removed += _reap_claims(claims, only_under, holds)
    if removed:
        log.info("orphans_reaped", count=len(removed))
    return removed


def _remove_memory_group(bundle: Path) -> None:
    """CT1: the agent's memory group of the bundle's last run (its processes are gone with the pod)."""
    try:
        group = (bundle / memcg.BUNDLE_FILE).read_text().strip()
    except OSError:
        return
    if group:
        memcg.remove(Path(group))


def _reap_claims(claims: Path, only_under: Path | None, holds: Callable[[Path, str], bool]) -> list[str]:
    """Remove the claims in ``claims`` whose owner (a pod directory) no longer records what they claim."""
    removed: list[str] = []
    for claim in sorted(claims.iterdir()):
        if claim.name.startswith("."):  # the lock
            continue
        try:
            owner = claim.read_text().strip()
        except OSError:
            continue
        if not owner or not _under(owner, only_under):
            continue
        if not holds(Path(owner), claim.name):
            claim.unlink(missing_ok=True)
            removed.append(str(claim))
    return removed
