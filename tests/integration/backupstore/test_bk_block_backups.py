"""Block backups against moto S3, the gcp-storage-emulator and Azurite (docs/semantics.md, BK)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from backupstore_support import MiB, sha256_file, write_random
from support import need_programs, need_root

from storage.errors import NotFound
from storage.system import loop, mounts
from storage.system.backupstore import (
    CorruptBackup,
    backup_block,
    list_backups,
    open_store,
    read_manifest,
    restore_block,
)

REPO = Path(__file__).resolve().parents[3]


def test_bk_ext4_image_round_trip_through_a_loop_device(object_store_target, host_dir: Path) -> None:
    """BK2, BK4, BK12, BK13: an ext4 filesystem backed up from its loop device (a block device, read whole)
    and restored into a new sparse file mounts and holds the same files; holes stay holes."""
    need_root("loop devices and mount")
    need_programs("mkfs.ext4", "e2fsck", "losetup", "mount", "umount")
    store = open_store(*object_store_target)
    image = host_dir / "disk.img"
    with open(image, "wb") as f:
        f.truncate(96 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image)],
                   check=True)
    device = loop.attach(image)
    mnt = host_dir / "mnt"
    mnt.mkdir()
    expected: dict[str, str] = {}
    try:
        mounts.mount(device, mnt, "ext4")
        try:
            (mnt / "data").mkdir()
            write_random(mnt / "data" / "random.bin", 10 * MiB + 123, seed=1)
            (mnt / "data" / "text.txt").write_text("hello backups\n" * 1000)
            os.symlink("data/text.txt", mnt / "link")
            for rel in ("data/random.bin", "data/text.txt"):
                expected[rel] = sha256_file(mnt / rel)
        finally:
            mounts.unmount(mnt)
        manifest, stats = backup_block(store, device, backup_id="ext4-1", labels={"fs": "ext4"})
    finally:
        loop.detach(device)
    assert manifest.kind == "block" and manifest.size == 96 * MiB and manifest.labels == {"fs": "ext4"}
    # A mostly empty filesystem: most chunks are zero and neither stored nor counted.
    assert stats.bytes_read == 96 * MiB
    assert 0 < stats.chunks_total < 96 * MiB // manifest.chunk_size
    assert stats.chunks_uploaded == stats.chunks_total

    restored = host_dir / "restored.img"
    with open(restored, "wb") as f:
        f.truncate(96 * MiB)
    restore_block(store, "ext4-1", restored)
    assert os.stat(restored).st_blocks * 512 < 60 * MiB, "holes were written as zeros"
    assert sha256_file(restored) == sha256_file(image)
    subprocess.run(["e2fsck", "-f", "-n", str(restored)], check=True, capture_output=True)
    device = loop.attach(restored)
    try:
        mounts.mount(device, mnt, "ext4", options=["ro"])
        try:
            for rel, digest in expected.items():
                assert sha256_file(mnt / rel) == digest
            assert os.readlink(mnt / "link") == "data/text.txt"
        finally:
            mounts.unmount(mnt)
    finally:
        loop.detach(device)


def test_bk_restore_overwrites_old_data_and_keeps_holes_sparse(object_store_target, tmp_path: Path) -> None:
    """BK12: restoring into a file that held other data leaves exactly the backup's bytes, zero ranges as holes."""
    store = open_store(*object_store_target)
    src = tmp_path / "src"
    write_random(src, 3 * MiB, seed=2, offset=5 * MiB, total=24 * MiB)
    backup_block(store, src, backup_id="b1")
    dest = tmp_path / "dest"
    write_random(dest, 30 * MiB, seed=3)  # every byte non-zero, and larger than the backup
    restore_block(store, "b1", dest)
    with open(dest, "rb") as f:
        assert f.read(24 * MiB) == src.read_bytes()
    assert os.path.getsize(dest) == 30 * MiB
    assert os.stat(dest).st_blocks * 512 < 20 * MiB

    small = tmp_path / "small"
    small.write_bytes(b"x")
    with pytest.raises(Exception, match="smaller than the backup"):
        restore_block(store, "b1", small)


def test_bk_second_backup_uploads_only_changed_chunks(object_store_target, tmp_path: Path) -> None:
    """BK3, BK5: after changing 1% of the data (one contiguous range), a second backup uploads < 3% of the first
    and restores to the new content; the first backup still restores to the old one."""
    store = open_store(*object_store_target)
    src = tmp_path / "src"
    write_random(src, 48 * MiB, seed=4, total=64 * MiB)
    old_digest = sha256_file(src)
    chunk = 256 * 1024
    first, stats1 = backup_block(store, src, backup_id="day1", chunk_size=chunk)
    assert stats1.chunks_uploaded == 48 * MiB // chunk
    changed = int(48 * MiB * 0.01)
    write_random(src, changed, seed=5, offset=17 * MiB + 1234)
    second, stats2 = backup_block(store, src, backup_id="day2", chunk_size=chunk)
    assert 0 < stats2.bytes_uploaded < 0.03 * stats1.bytes_uploaded, (stats1, stats2)
    assert stats2.chunks_uploaded <= changed // chunk + 2
    assert stats2.chunks_total == stats1.chunks_total
    for backup_id, digest in (("day1", old_digest), ("day2", sha256_file(src))):
        out = tmp_path / f"out-{backup_id}"
        with open(out, "wb") as f:
            f.truncate(64 * MiB)
        restore_block(store, backup_id, out)
        assert sha256_file(out) == digest


def test_bk_same_id_twice_returns_the_written_backup(object_store_target, tmp_path: Path) -> None:
    """BK8: a backup id names one backup for good; backing up again under it changes nothing."""
    store = open_store(*object_store_target)
    src = tmp_path / "src"
    write_random(src, 2 * MiB, seed=6)
    first, _ = backup_block(store, src, backup_id="once")
    write_random(src, 2 * MiB, seed=7)
    again, stats = backup_block(store, src, backup_id="once")
    assert again == first and stats.chunks_uploaded == 0 and stats.bytes_read == 0


_KILLED_BACKUP = """
import json, sys, time
from storage.system.backupstore import backup_block, open_store
args = json.loads(sys.stdin.read())
store = open_store(args["url"], args["credentials"])
def slow(done, total):
    time.sleep(0.03)  # so the parent can kill it mid-upload
backup_block(store, args["path"], backup_id="killed", chunk_size=args["chunk"], workers=2, progress=slow)
print("finished", flush=True)
"""


def test_bk_kill_9_mid_upload_leaves_no_manifest_and_resumes(object_store_target, tmp_path: Path) -> None:
    """BK6, BK7: a backup process killed with SIGKILL after some chunks leaves no manifest (nothing lists or
    restores it); running the same backup id again uploads only the chunks still missing and restores."""
    store = open_store(*object_store_target)
    src = tmp_path / "src"
    chunk = 256 * 1024
    write_random(src, 40 * MiB, seed=8)
    total_chunks = 40 * MiB // chunk
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_BACKUP], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, text=True)
    try:
        assert proc.stdin is not None
        url, credentials = object_store_target
        # Credentials on stdin, not argv (argv is world-readable in /proc).
        proc.stdin.write(json.dumps({"url": url, "credentials": credentials, "path": str(src), "chunk": chunk}))
        proc.stdin.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sum(1 for _ in store.list("chunks/")) >= 10:
                break
            assert proc.poll() is None, "the backup ended before it could be killed"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    uploaded_before = sum(1 for _ in store.list("chunks/"))
    assert 10 <= uploaded_before < total_chunks
    assert list(store.list("manifests/")) == []
    assert list_backups(store) == []
    with pytest.raises(NotFound):
        read_manifest(store, "killed")

    manifest, stats = backup_block(store, src, backup_id="killed", chunk_size=chunk)
    assert stats.chunks_total == total_chunks
    # The rerun skips exactly the chunks the store holds when it looks. That can be a few more than were
    # listed after the kill: a request the killed process had sent may still be committed by the server
    # after its client died (seen with Azurite), but never more than the killed engine had in flight
    # (2 workers, a window of 4).
    skipped = total_chunks - stats.chunks_uploaded
    assert uploaded_before <= skipped <= uploaded_before + 4, (uploaded_before, skipped)
    assert sum(1 for _ in store.list("chunks/")) == total_chunks
    out = tmp_path / "out"
    with open(out, "wb") as f:
        f.truncate(40 * MiB)
    restore_block(store, "killed", out)
    assert sha256_file(out) == sha256_file(src)


def test_bk_corrupted_chunk_is_detected_on_restore(object_store_target, tmp_path: Path) -> None:
    """BK14: a chunk object overwritten in the store (other bytes, or undecodable ones) fails the restore
    with CorruptBackup naming the chunk; a missing chunk too."""
    store = open_store(*object_store_target)
    src = tmp_path / "src"
    write_random(src, 3 * MiB, seed=9)
    manifest, _ = backup_block(store, src, backup_id="b", chunk_size=MiB)
    out = tmp_path / "out"
    with open(out, "wb") as f:
        f.truncate(3 * MiB)
    victim = manifest.chunks[1].hash
    key = f"chunks/{victim[:2]}/{victim}"
    original = store.get(key)
    # Same length and codec, one bit flipped: only the checksum can tell.
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    for damaged in (bytes(flipped), b"Z" + os.urandom(100), b"Z", b"?"):
        store.put(key, damaged)
        with pytest.raises(CorruptBackup, match=victim):
            restore_block(store, "b", out)
    store.delete(key)
    with pytest.raises(CorruptBackup, match=f"{victim}.*missing"):
        restore_block(store, "b", out)
    store.put(key, original)
    restore_block(store, "b", out)
    assert sha256_file(out) == sha256_file(src)


def test_bk_tampered_manifest_is_refused(object_store_target, tmp_path: Path) -> None:
    """BK9: a manifest whose content does not match its own checksum is CorruptBackup, not restored."""
    store = open_store(*object_store_target)
    src = tmp_path / "src"
    write_random(src, MiB, seed=10)
    backup_block(store, src, backup_id="m")
    raw = json.loads(store.get("manifests/m.json"))
    raw["manifest"]["size"] = 1
    store.put("manifests/m.json", json.dumps(raw).encode())
    with pytest.raises(CorruptBackup, match="checksum"):
        read_manifest(store, "m")
    with pytest.raises(CorruptBackup):
        restore_block(store, "m", src)
