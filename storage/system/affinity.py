"""Keeping the API server's threads on one CPU (PF92).

The API server is one Python process: its event loop, its store threads and its watch threads take
turns on one interpreter lock, so spreading them over several CPUs buys no parallelism. It costs,
though: every hand-off (a request to a store thread, its answer back to the loop, a commit to the
watch hub) then wakes a thread sleeping on another CPU, an inter-processor interrupt that a virtual
machine turns into an exit to its hypervisor. Measured on a 2-core VM (benchmarks/api_load.py), the
same server made 1,000-1,100 creates/s with its threads free and 1,600 with them on one CPU.

Affinity is per thread and inherited by the threads and processes a thread starts, so only the
threads that start no host commands are pinned; ``process_cpus`` keeps what the process was given.
"""
from __future__ import annotations

import os
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

_PROCESS_CPUS: frozenset[int] = frozenset(os.sched_getaffinity(0))


def process_cpus() -> frozenset[int]:
    """The CPUs the process was allowed when it started, whatever its threads were pinned to since."""
    return _PROCESS_CPUS


def parse_cpu_choice(text: str) -> int | None:
    """``auto`` (-1: pick one), ``none`` (None: leave the threads free) or a CPU number."""
    value = text.strip().lower()
    if value == "auto":
        return -1
    if value in ("none", "off", ""):
        return None
    if not value.isdigit():
        raise ValueError(f"invalid CPU {text!r}: want auto, none or a CPU number")
    return int(value)


def check_allowed(cpu: int) -> None:
    """Raise ValueError, naming the CPUs it may use, for a CPU this process may not use."""
    if cpu not in _PROCESS_CPUS:
        allowed = ",".join(str(c) for c in sorted(_PROCESS_CPUS))
        raise ValueError(f"CPU {cpu} is not one this process may use: {allowed}")


def least_busy_cpu(cpus: frozenset[int] | None = None, stat: Path = Path("/proc/stat")) -> int:
    """The allowed CPU with the least busy time since boot (ties to the highest number, as the
    lowest ones take the boot-time and interrupt work)."""
    allowed = cpus if cpus is not None else _PROCESS_CPUS
    busy: dict[int, int] = {}
    try:
        for line in stat.read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in allowed:
                # user nice system idle iowait irq softirq steal (guest time is already in user and nice)
                ticks = [int(f) for f in fields[:8]]
                busy[int(name[3:])] = sum(ticks) - sum(ticks[3:5])
    except (OSError, ValueError):
        busy = {}
    if not busy:
        return max(allowed)
    return min(busy, key=lambda cpu: (busy[cpu], -cpu))


def pin_current_thread(choice: int | None) -> int | None:
    """Pin the calling thread (and so every thread it starts later) to one CPU.

    ``choice`` is -1 for the least busy allowed CPU, None to leave it free, or a CPU number, which
    must be one the process may use. A process with one CPU is left as it is. Returns the CPU."""
    if choice is None or len(_PROCESS_CPUS) < 2:
        return None
    cpu = least_busy_cpu() if choice < 0 else choice
    check_allowed(cpu)
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        # The process's cpuset shrank since it started: the pin is only a speed-up, so serve unpinned.
        log.warning("api server threads left free: the CPU cannot be set", cpu=cpu, error=exc.strerror)
        return None
    log.info("api server threads pinned", cpu=cpu)
    return cpu
