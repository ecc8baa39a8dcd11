"""What this host offers pods: CPUs, memory and scratch disk, as a Node's capacity and allocatable."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil

from storage.system.affinity import process_cpus

# Kubernetes' default hard eviction threshold (memory.available<100Mi) is held back from allocatable.
EVICTION_RESERVE_MEMORY = 100 * 1024 * 1024
# ... and nodefs.available<10%.
EVICTION_RESERVE_DISK_FRACTION = 0.10


def usable_cpus() -> int:
    """CPUs this process may run on (a cpuset or taskset narrows what os.cpu_count reports), as it
    started: the API server's threads may have been pinned to one since (PF92)."""
    return max(1, len(process_cpus()))


def total_memory() -> int:
    """Bytes of RAM, bounded by this process's cgroup memory limit when one is set."""
    total = int(psutil.virtual_memory().total)
    limit = _cgroup_memory_limit()
    return min(total, limit) if limit else total


def _cgroup_memory_limit() -> int | None:
    for path in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):
            return int(text)
    return None


def node_resources(data_dir: str | os.PathLike[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(capacity, allocatable) for cpu, memory and ephemeral-storage, as canonical quantities."""
    cpus = usable_cpus()
    memory = total_memory()
    disk = shutil.disk_usage(data_dir).total
    capacity = {"cpu": str(cpus), "memory": f"{memory // 1024}Ki", "ephemeral-storage": f"{disk // 1024}Ki"}
    allocatable = {
        "cpu": str(cpus),
        "memory": f"{max(0, memory - EVICTION_RESERVE_MEMORY) // 1024}Ki",
        "ephemeral-storage": f"{int(disk * (1 - EVICTION_RESERVE_DISK_FRACTION)) // 1024}Ki",
    }
    return capacity, allocatable
