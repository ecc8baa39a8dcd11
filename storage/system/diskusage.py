"""What a directory tree takes on disk, as ``du`` counts it (the kubelet measures emptyDirs this way)."""
from __future__ import annotations

import os
import stat
from pathlib import Path


def disk_usage(path: Path) -> int:
    """Bytes allocated to ``path`` and everything under it: blocks, so a sparse file counts what it holds,
    hard links once, symlinks as themselves; another filesystem mounted inside is not entered. 0 when
    ``path`` does not exist; an entry that vanishes while it is walked is skipped."""
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return 0
    total = top.st_blocks * 512
    if not stat.S_ISDIR(top.st_mode):
        return total
    seen: set[int] = set()
    stack = [os.fspath(path)]
    while stack:
        where = stack.pop()
        try:
            with os.scandir(where) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if st.st_dev != top.st_dev:
                        continue
                    if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                        if st.st_ino in seen:
                            continue
                        seen.add(st.st_ino)
                    total += st.st_blocks * 512
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
        except OSError:
            continue
    return total
