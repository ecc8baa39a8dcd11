"""Helpers for the backup engine tests (a unique module name: tests import it by this name)."""
from __future__ import annotations

import hashlib
import os
import random
import stat
from pathlib import Path
from typing import Any

MiB = 1024 * 1024


def write_random(path: Path, size: int, *, seed: int, offset: int = 0, total: int | None = None) -> None:
    """``size`` pseudo-random (incompressible) bytes at ``offset`` in a file of ``total`` bytes (sparse rest)."""
    rng = random.Random(seed)
    with open(path, "r+b" if path.exists() else "wb") as f:
        if total is not None:
            f.truncate(total)
        f.seek(offset)
        left = size
        while left:
            n = min(left, MiB)
            f.write(rng.randbytes(n))
            left -= n


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            h.update(block)
    return h.hexdigest()


def tree_state(root: Path) -> dict[str, dict[str, Any]]:
    """Everything restore_tree promises to keep, per relative path (the root itself as ".")."""
    out: dict[str, dict[str, Any]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            if name == "." and Path(dirpath) != root:
                continue
            path = Path(dirpath) / name if name != "." else root
            rel = str(path.relative_to(root)) if path != root else "."
            st = os.lstat(path)
            entry: dict[str, Any] = {"type": stat.S_IFMT(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
            entry["mtime_ns"] = st.st_mtime_ns
            if not stat.S_ISLNK(st.st_mode):  # a symlink's mode is always 0777 on Linux
                entry["mode"] = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                entry["target"] = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                entry["sha256"] = sha256_file(path)
                entry["size"] = st.st_size
                entry["nlink"] = st.st_nlink
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                entry["rdev"] = st.st_rdev
            out[rel] = entry
    return out
