"""Atomic projection of files into a volume, as Kubernetes' AtomicWriter does.

Layout of a projected volume directory::

    ..2024_05_01_10_00_00.123456789/   the current payload (a timestamped dir)
    ..data -> ..2024_05_01_10_00_00.123456789
    key    -> ..data/key                 one link per top-level payload entry

An update writes a complete new timestamped directory, then swaps ``..data``
with a rename (atomic), so a reader inside the pod sees either the old or the
new set of files, never a mix.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import structlog

from storage.errors import FieldError, Invalid

log = structlog.get_logger(__name__)

DATA_DIR = "..data"
_DATA_TMP = "..data_tmp"


@dataclass(frozen=True)
class FileProjection:
    data: bytes
    mode: int = 0o644


def validate_path(path: str, field: str = "path") -> PurePosixPath:
    p = PurePosixPath(path)
    if not path or p.is_absolute():
        raise Invalid([FieldError(field, "Invalid value", "must be a relative path", path, True)])
    if ".." in p.parts:
        raise Invalid([FieldError(field, "Invalid value", "must not contain '..'", path, True)])
    if p.parts[0].startswith(".."):
        raise Invalid([FieldError(field, "Invalid value", "must not start with '..'", path, True)])
    return p


class AtomicWriter:
    def __init__(self, target: Path, fs_group: int | None = None) -> None:
        self.target = target
        self.fs_group = fs_group

    def _current(self) -> Path | None:
        link = self.target / DATA_DIR
        if link.is_symlink():
            return self.target / os.readlink(link)
        return None

    def _unchanged(self, current: Path | None, payload: dict[str, FileProjection]) -> bool:
        if current is None or not current.is_dir():
            return False
        existing = {str(p.relative_to(current)) for p in current.rglob("*") if p.is_file()}
        if existing != set(payload):
            return False
        for rel, proj in payload.items():
            path = current / rel
            if path.read_bytes() != proj.data or (path.stat().st_mode & 0o7777) != proj.mode:
                return False
        return True

    def write(self, payload: dict[str, FileProjection]) -> bool:
        """Make the directory hold exactly ``payload``; returns True when anything changed."""
        for rel in payload:
            validate_path(rel)
        self.target.mkdir(parents=True, exist_ok=True)
        current = self._current()
        if self._unchanged(current, payload):
            return False
        stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
        new_dir = Path(tempfile.mkdtemp(prefix=stamp, dir=self.target))
        os.chmod(new_dir, 0o755)
        for rel, proj in payload.items():
            path = new_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                f.write(proj.data)
            os.chmod(path, proj.mode)
            if self.fs_group is not None:
                os.chown(path, -1, self.fs_group)
        if self.fs_group is not None:
            for d in [new_dir, *(p for p in new_dir.rglob("*") if p.is_dir())]:
                os.chown(d, -1, self.fs_group)
                os.chmod(d, (os.stat(d).st_mode & 0o7777) | 0o2000)
        tmp_link = self.target / _DATA_TMP
        if tmp_link.is_symlink() or tmp_link.exists():
            tmp_link.unlink()
        os.symlink(new_dir.name, tmp_link)
        os.rename(tmp_link, self.target / DATA_DIR)
        # User-visible names: one link per top-level entry, pointing through ..data.
        tops = {PurePosixPath(rel).parts[0] for rel in payload}
        for name in tops:
            link = self.target / name
            if not link.is_symlink():
                os.symlink(f"{DATA_DIR}/{name}", link)
        for entry in self.target.iterdir():
            if entry.name.startswith(".."):
                continue
            if entry.is_symlink() and entry.name not in tops:
                entry.unlink()
        for entry in self.target.iterdir():
            if entry.name.startswith("..") and entry.name not in (DATA_DIR, new_dir.name) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
        log.info("atomic_writer.updated", target=str(self.target), files=len(payload))
        return True
