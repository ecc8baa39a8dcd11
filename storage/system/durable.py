"""Small files that must be read whole or not at all (``write_atomically``), and also survive a crash of the
host (``write_durably``)."""
from __future__ import annotations

import os
import re
import tempfile
import threading
from pathlib import Path


def write_durably(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: written aside, synced, renamed into place, the directory synced.
    A reader sees the old content or the new, never a half-written or empty file; after a crash the
    file holds one of them."""
    staged = stage_durably(path, text)
    try:
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    sync_directory(path.parent)


def stage_durably(path: Path, text: str) -> Path:
    """The first half of ``write_durably``: ``text`` written and synced in a new file beside ``path``,
    returned for the caller to rename into place (``os.replace``) and then ``sync_directory``. Split so a
    caller can rename under its lock and sync outside it (PF85); the caller removes the file if it
    does not rename it."""
    # The writer's pid in the name: a file a killed process left staged is told from one being written
    # (``remove_stale_staged``).
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


_STAGED = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")


def remove_stale_staged(directory: Path) -> list[str]:
    """Remove the files ``stage_durably`` and ``write_atomically`` left in ``directory`` when their
    process was killed between writing aside and renaming into place: nothing else ever removes them.
    A file whose writer (the pid in its name) still runs is left alone; a reused pid only keeps a
    leftover for longer. Returns the names removed."""
    removed = []
    for entry in directory.glob(".*.tmp"):
        match = _STAGED.match(entry.name)
        if match is None or _alive(int(match.group(1))):
            continue
        entry.unlink(missing_ok=True)
        removed.append(entry.name)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sync_directory(directory: Path) -> None:
    """Make the renames and removals done in ``directory`` survive a crash of the host."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a reader sees the old content or the new, never a part: for
    state under the run directory (a tmpfs, gone at reboot anyway) or rewritten whole from what the agent
    already holds, where syncing each write would only cost time."""
    # Named for this thread (no random name to draw: this runs for every pod state change), so two writers
    # of one file never share a temporary file; a leftover of a crashed process is overwritten.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
