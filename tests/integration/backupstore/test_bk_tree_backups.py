"""Directory-tree backups against moto S3, the gcp-storage-emulator and Azurite (docs/semantics.md, BK)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from backupstore_support import MiB, tree_state, write_random

from storage.errors import BadRequest
from storage.system.backupstore import (
    CorruptBackup,
    backup_block,
    backup_tree,
    open_store,
    restore_block,
    restore_tree,
)


def _build_tree(root: Path) -> None:
    (root / "etc" / "conf.d").mkdir(parents=True)
    (root / "etc" / "app.conf").write_text("port = 2379\n")
    os.chmod(root / "etc" / "app.conf", 0o640)
    (root / "etc" / "conf.d" / "empty").write_bytes(b"")
    write_random(root / "big.bin", 9 * MiB + 17, seed=11)  # three chunks, the last partial
    write_random(root / "sparse.bin", MiB, seed=12, offset=6 * MiB, total=10 * MiB)
    write_random(root / "copy-a.bin", 2 * MiB, seed=13)
    write_random(root / "copy-b.bin", 2 * MiB, seed=13)  # same content: stored once
    os.symlink("etc/app.conf", root / "link-rel")
    os.symlink("/nonexistent/target", root / "link-dangling")
    os.link(root / "etc" / "app.conf", root / "hard-app.conf")
    os.mkfifo(root / "fifo", 0o620)
    (root / "bin").mkdir(mode=0o750)
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "bin" / "tool", 0o4755)
    os.chmod(root / "bin", 0o711)
    if os.geteuid() == 0:
        os.lchown(root / "etc" / "app.conf", 1234, 5678)
        os.lchown(root / "link-rel", 4321, 8765)
        os.chown(root / "etc" / "conf.d", 1000, 1000)
        os.mknod(root / "null-like", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    # mtimes last (creating entries changes their directory's mtime), children before parents
    stamp = 1_600_000_000_123_456_789
    for i, path in enumerate(sorted(root.rglob("*"), key=lambda p: -len(p.parts))):
        os.utime(path, ns=(stamp + i * 1_000_000_007, stamp + i * 1_000_000_007), follow_symlinks=False)
    os.utime(root, ns=(stamp - 5, stamp - 5))


def test_bk_tree_round_trip_keeps_contents_modes_owners_links_mtimes(object_store_target, tmp_path: Path) -> None:
    """BK10, BK11: files, directories, symlinks (also dangling), hard links, a fifo and a device node come back
    with their contents, modes (setuid too), owners and nanosecond mtimes; equal files are stored once."""
    store = open_store(*object_store_target)
    src = tmp_path / "src"
    src.mkdir()
    _build_tree(src)
    manifest, stats = backup_tree(store, src, backup_id="tree-1", labels={"app": "etcd"})
    assert manifest.kind == "tree" and manifest.labels == {"app": "etcd"}
    # big.bin 3 + sparse.bin 1 (its holes are not chunks) + copy-a/-b 1 + app.conf 1 + tool 1; empty has none
    assert stats.chunks_total == 3 + 1 + 1 + 1 + 1 + 1
    assert stats.chunks_uploaded == stats.chunks_total - 1  # copy-b reuses copy-a's chunk
    dest = tmp_path / "dest"
    restore_tree(store, "tree-1", dest)
    assert tree_state(dest) == tree_state(src)
    assert os.stat(dest / "hard-app.conf").st_ino == os.stat(dest / "etc" / "app.conf").st_ino
    assert os.stat(dest / "sparse.bin").st_blocks * 512 < 4 * MiB


def test_bk_tree_restore_replaces_what_is_in_the_way(object_store_target, tmp_path: Path) -> None:
    """BK11: restoring over an existing directory replaces entries of the backup (a symlink where a file was,
    a file where a directory was) and keeps entries the backup does not have."""
    store = open_store(*object_store_target)
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("new")
    (src / "x").write_text("file")
    backup_tree(store, src, backup_id="t")
    dest = tmp_path / "dest"
    (dest / "x").mkdir(parents=True)
    (dest / "x" / "inner").write_text("old dir")
    (dest / "d").mkdir()
    os.symlink("/etc/passwd", dest / "d" / "f")  # must be replaced, never written through
    (dest / "extra").write_text("kept")
    before = Path("/etc/passwd").read_bytes()
    restore_tree(store, "t", dest)
    assert (dest / "x").read_text() == "file"
    assert not (dest / "d" / "f").is_symlink() and (dest / "d" / "f").read_text() == "new"
    assert (dest / "extra").read_text() == "kept"
    assert Path("/etc/passwd").read_bytes() == before


def test_bk_tree_corrupted_chunk_and_kind_mismatch(object_store_target, tmp_path: Path) -> None:
    """BK14, BK15: a damaged chunk of a tree fails restore_tree with CorruptBackup naming it; a tree backup given
    to restore_block (or a block backup to restore_tree) is a BadRequest saying which to use."""
    store = open_store(*object_store_target)
    src = tmp_path / "src"
    src.mkdir()
    write_random(src / "f", MiB, seed=14)
    manifest, _ = backup_tree(store, src, backup_id="t")
    digest = manifest.chunks[0].hash
    store.put(f"chunks/{digest[:2]}/{digest}", b"R" + b"\0" * MiB)
    with pytest.raises(CorruptBackup, match=digest):
        restore_tree(store, "t", tmp_path / "dest")
    with pytest.raises(BadRequest, match="restore_tree"):
        restore_block(store, "t", src / "f")
    backup_block(store, src / "f", backup_id="blk")
    with pytest.raises(BadRequest, match="restore_block"):
        restore_tree(store, "blk", tmp_path / "dest2")
