"""Keeping a long-lived process's resident memory near what it uses (glibc's malloc; a no-op elsewhere).

Two glibc behaviours inflate a threaded Python process's RSS without any Python object behind it:

- every thread that calls malloc under contention gets an arena of its own, up to 8 per core, and each
  keeps its freed pages (the node agent's pod-sync workers and the HTTP server's threads made 16, about
  12 MiB resident at 100 pods); ``limit_arenas`` caps them (PF44);
- free memory inside the heaps stays resident until ``malloc_trim`` hands it back: after a burst of pod
  starts the agent would keep the burst's peak for good. ``trim`` returns it (PF45).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import lru_cache
from typing import Any

M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
DEFAULT_ARENAS = 2


@lru_cache(maxsize=1)
def _glibc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # both glibc-only: musl and others have neither
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap malloc's arenas for threads started from now on; MALLOC_ARENA_MAX in the environment wins.
    Call it before the process starts its threads. True when the cap was set."""
    libc = _glibc()
    if libc is None or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    return bool(libc.mallopt(M_ARENA_MAX, arenas))


def trim() -> bool:
    """Give the heaps' free pages back to the kernel; True when some were released. It walks every
    arena under its lock (a few milliseconds for a 100 MiB heap): call it when the process is idle."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))
