"""Backups of block images and directory trees as content-addressed chunks in an object store.

Layout under the store URL's prefix:
    chunks/<sha256[:2]>/<sha256>   one chunk: a 1-byte codec tag ("Z" zstd, "R" raw) and the data; the name is
                                   the sha256 of the uncompressed data, so equal data is stored once (BK3)
    manifests/<backup id>.json     {"manifest": {...}, "sha256": <hex of the canonical JSON of "manifest">}
A manifest is written only after every chunk it names is in the store (BK6), so an interrupted backup leaves
chunks but no manifest, and running it again uploads only the chunks still missing (BK7).
"""
from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog

from storage.errors import BadRequest, NotFound, PermanentError, TemporaryError

from .stores import ObjectStore

log = structlog.get_logger(__name__)
T = TypeVar("T")

CHUNK_SIZE = 4 * 1024 * 1024
WORKERS = 8
MANIFEST_VERSION = 1
_ZERO = bytes(CHUNK_SIZE)
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_ZSTD_LEVEL = 1  # level 1 keeps up with the network; higher levels cost CPU for a few % on volume data

Progress = Callable[[int, int], None]  # (bytes_read, bytes_total)


class CorruptBackup(PermanentError):
    """A chunk or manifest in the store does not match its checksum (or is missing): the backup is unusable."""


@dataclass(frozen=True)
class ChunkRef:
    offset: int  # in the block image, or in the file for trees
    length: int  # uncompressed
    hash: str  # sha256 hex of the uncompressed data


@dataclass
class Manifest:
    id: str
    kind: str  # "block" | "tree"
    size: int  # bytes of the source (block: image size; tree: sum of regular files' sizes)
    chunks: list[ChunkRef]
    created: float
    labels: dict[str, str] = field(default_factory=dict)
    chunk_size: int = CHUNK_SIZE
    # tree only: one dict per entry (path, type, mode, uid, gid, mtime_ns, and size/first/count for files,
    # target for symlinks and hard links, rdev for devices); a file's chunks are chunks[first:first+count]
    entries: list[dict[str, Any]] = field(default_factory=list)

    def chunk_hashes(self) -> set[str]:
        return {c.hash for c in self.chunks}

    def to_json(self) -> dict[str, Any]:
        return {"version": MANIFEST_VERSION, "id": self.id, "kind": self.kind, "size": self.size,
                "chunkSize": self.chunk_size, "created": self.created, "labels": dict(self.labels),
                "chunks": [[c.offset, c.length, c.hash] for c in self.chunks], "entries": self.entries}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        if data.get("version") != MANIFEST_VERSION:
            raise CorruptBackup(f"manifest {data.get('id')!r}: unsupported version {data.get('version')!r}")
        return cls(id=str(data["id"]), kind=str(data["kind"]), size=int(data["size"]),
                   chunks=[ChunkRef(int(o), int(n), str(h)) for o, n, h in data["chunks"]],
                   created=float(data["created"]), labels={str(k): str(v) for k, v in data["labels"].items()},
                   chunk_size=int(data["chunkSize"]), entries=list(data.get("entries") or []))


@dataclass
class BackupStats:
    bytes_read: int = 0
    bytes_uploaded: int = 0  # bytes sent to the store for chunks (compressed), the manifest excluded
    chunks_total: int = 0  # chunks in the manifest (holes excluded)
    chunks_uploaded: int = 0
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------- naming


def backup_url(store_url: str, backup_id: str) -> str:
    return f"{store_url}#{backup_id}"


def parse_backup_url(handle: str) -> tuple[str, str]:
    store_url, sep, backup_id = handle.rpartition("#")
    if not sep or not store_url or not backup_id:
        raise BadRequest(f"backup handle {handle.split('?')[0]!r}: want STORE_URL#BACKUP_ID")
    _check_id(backup_id)
    return store_url, backup_id


def _check_id(backup_id: str) -> None:
    if not _ID_RE.match(backup_id or ""):
        raise BadRequest(f"backup_id {backup_id!r}: letters, digits, '.', '_' and '-', starting with a letter or "
                         "digit, at most 253 characters")


def _chunk_key(digest: str) -> str:
    return f"chunks/{digest[:2]}/{digest}"


def _manifest_key(backup_id: str) -> str:
    return f"manifests/{backup_id}.json"


# ---------------------------------------------------------------------------------------------- manifests


def _encode_manifest(manifest: Manifest) -> bytes:
    body = manifest.to_json()
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return json.dumps({"manifest": body, "sha256": hashlib.sha256(canonical).hexdigest()},
                      sort_keys=True, separators=(",", ":")).encode()


def _decode_manifest(backup_id: str, raw: bytes) -> Manifest:
    try:
        outer = json.loads(raw)
        body = outer["manifest"]
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        if hashlib.sha256(canonical).hexdigest() != outer["sha256"]:
            raise CorruptBackup(f"manifest of backup {backup_id!r}: checksum mismatch")
        manifest = Manifest.from_json(body)
    except CorruptBackup:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptBackup(f"manifest of backup {backup_id!r} is unreadable: {type(exc).__name__}") from None
    if manifest.id != backup_id:
        raise CorruptBackup(f"manifest of backup {backup_id!r} names backup {manifest.id!r}")
    return manifest


def read_manifest(store: ObjectStore, backup_id: str) -> Manifest:
    _check_id(backup_id)
    try:
        raw = store.get(_manifest_key(backup_id))
    except NotFound:
        raise NotFound(f"backup {backup_id!r} not found in {_display(store)}", kind="Backup",
                       name=backup_id) from None
    return _decode_manifest(backup_id, raw)


def _display(store: ObjectStore) -> str:
    parsed = getattr(store, "parsed", None)
    return str(parsed.display) if parsed is not None else str(store.url).split("?")[0]


def list_backups(store: ObjectStore) -> list[Manifest]:
    """Every complete backup in the store, oldest first; an unreadable manifest is logged and left out."""
    ids = [k[len("manifests/"):-len(".json")] for k in store.list("manifests/") if k.endswith(".json")]
    out: list[Manifest] = []
    with ThreadPoolExecutor(WORKERS) as pool:
        for backup_id, fut in [(i, pool.submit(read_manifest, store, i)) for i in ids]:
            try:
                out.append(fut.result())
            except (CorruptBackup, BadRequest) as exc:
                log.warning("backup manifest unreadable", store=_display(store), backup=backup_id, error=str(exc))
            except NotFound:  # deleted meanwhile
                pass
    return sorted(out, key=lambda m: (m.created, m.id))


def delete_backup(store: ObjectStore, backup_id: str) -> None:
    """Manifest first (the backup is gone the moment that succeeds), then chunks no other manifest names."""
    try:
        manifest = read_manifest(store, backup_id)
    except NotFound:
        return
    except CorruptBackup:
        manifest = None
    store.delete(_manifest_key(backup_id))
    if manifest is None:
        return
    still_used: set[str] = set()
    for other in list_backups(store):
        still_used |= other.chunk_hashes()
    doomed = sorted(manifest.chunk_hashes() - still_used)
    with ThreadPoolExecutor(WORKERS) as pool:
        for fut in [pool.submit(store.delete, _chunk_key(h)) for h in doomed]:
            fut.result()
    log.info("backup deleted", store=_display(store), backup=backup_id, chunks_deleted=len(doomed),
             chunks_kept=len(manifest.chunk_hashes()) - len(doomed))


# ---------------------------------------------------------------------------------------------- backup


def _compressible(data: bytes) -> bool:
    """Whether four 16 KiB samples shrink by at least 1/32: random or already-compressed data is then stored
    without spending a full zstd pass on it (most of the CPU a backup of such data would take)."""
    import zstandard

    if len(data) <= 256 * 1024:
        return True
    step = len(data) // 4
    sample = b"".join(data[i * step:i * step + 16384] for i in range(4))
    return len(zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(sample)) < len(sample) * 31 // 32


def _pack(data: bytes) -> bytes:
    import zstandard

    if not _compressible(data):
        return b"R" + data
    packed = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(data)
    if len(packed) + 1 < len(data):
        return b"Z" + packed
    return b"R" + data


def _unpack(digest: str, blob: bytes, length: int) -> bytes:
    import zstandard

    tag, body = blob[:1], memoryview(blob)[1:]
    try:
        if tag == b"Z":
            data = zstandard.ZstdDecompressor().decompress(body, max_output_size=length)
        elif tag == b"R":
            data = bytes(body)
        else:
            raise ValueError("unknown codec tag")
    except (ValueError, zstandard.ZstdError):
        raise CorruptBackup(f"chunk {digest}: cannot be decoded") from None
    if len(data) != length or hashlib.sha256(data).hexdigest() != digest:
        raise CorruptBackup(f"chunk {digest}: checksum mismatch (the stored object was changed or damaged)")
    return data


def _retrying(fn: Callable[[], T], attempts: int = 3) -> T:
    """fn, retried after 0.5 s and 1 s on TemporaryError: one chunk's hiccup should not fail a whole backup
    (the SDKs' own retries come first; what is left after this is the caller's to retry with back-off)."""
    for attempt in range(attempts):
        try:
            return fn()
        except TemporaryError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


class _Uploader:
    """Hashes, compresses and uploads chunks on a thread pool, at most ``window`` in flight (memory bound).

    Which chunks exist is listed once at the start; chunks found there are checked again just before the
    manifest is written, so a delete_backup running meanwhile cannot leave the new manifest dangling."""

    def __init__(self, store: ObjectStore, stats: BackupStats, workers: int) -> None:
        self.store = store
        self.stats = stats
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="backup")
        self.window = threading.BoundedSemaphore(workers * 2)
        self.lock = threading.Lock()
        self.present: set[str] = {k.rsplit("/", 1)[-1] for k in store.list("chunks/")}
        self.claimed: set[str] = set()  # uploaded (or being uploaded) by this run
        self.reused: set[str] = set()  # found in the store, not uploaded by this run
        self.failed: BaseException | None = None

    def submit(self, data: bytes) -> Future[str | None]:
        """A future of the chunk's sha256, or None for an all-zero chunk (a hole). Raises the first failure of
        an earlier chunk, so a store that refuses us stops the backup instead of reading the rest first."""
        self.window.acquire()
        if self.failed is not None:
            self.window.release()
            raise self.failed
        try:
            fut = self.pool.submit(self._one, data)
        except BaseException:
            self.window.release()
            raise
        fut.add_done_callback(self._done)
        return fut

    def _done(self, fut: Future[str | None]) -> None:
        if not fut.cancelled() and fut.exception() is not None and self.failed is None:
            self.failed = fut.exception()
        self.window.release()

    def _one(self, data: bytes) -> str | None:
        if data == _ZERO[:len(data)]:
            return None
        digest = hashlib.sha256(data).hexdigest()
        with self.lock:
            if digest in self.claimed:
                return digest
            self.claimed.add(digest)
            if digest in self.present:
                self.reused.add(digest)
                return digest
        packed = _pack(data)
        _retrying(lambda: self.store.put(_chunk_key(digest), packed))
        with self.lock:
            self.stats.bytes_uploaded += len(packed)
            self.stats.chunks_uploaded += 1
        return digest

    def confirm_reused(self) -> None:
        missing = [h for h, ok in zip(sorted(self.reused), self.pool.map(
            lambda h: self.store.exists(_chunk_key(h)), sorted(self.reused))) if not ok]
        if missing:
            raise PermanentError(f"{len(missing)} chunk(s) this backup shares were deleted while it ran "
                                 f"(first {missing[0]}); run it again")

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _existing(store: ObjectStore, backup_id: str) -> Manifest | None:
    try:
        return read_manifest(store, backup_id)
    except NotFound:
        return None


def _data_ranges(fd: int, size: int) -> Callable[[int, int], bool]:
    """A test "does [start, end) hold any data?" using SEEK_DATA, so holes of a sparse file are not read.

    Block devices and filesystems without SEEK_DATA answer "yes" (then zeros are found by reading)."""
    cache = [-1, -1]  # SEEK_DATA asked at cache[0] answered cache[1]: no data in [cache[0], cache[1])

    def has_data(start: int, end: int) -> bool:
        if not cache[0] <= start <= cache[1]:
            try:
                found = os.lseek(fd, start, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: nothing but holes after start
                    return True
                found = size
            cache[:] = [start, found]
        return cache[1] < end

    return has_data


def backup_block(store: ObjectStore, path: str | os.PathLike[str], *, backup_id: str,
                 labels: dict[str, str] | None = None, progress: Progress | None = None,
                 chunk_size: int = CHUNK_SIZE, workers: int = WORKERS) -> tuple[Manifest, BackupStats]:
    """Back up a file or block device as fixed-size chunks (BK2, BK4).

    A backup id is written once: if its manifest exists, that manifest is returned and nothing is read."""
    _check_id(backup_id)
    if chunk_size <= 0 or chunk_size > CHUNK_SIZE * 16:
        raise BadRequest(f"chunk_size {chunk_size}: between 1 byte and {CHUNK_SIZE * 16}")
    started = time.monotonic()
    stats = BackupStats()
    done = _existing(store, backup_id)
    if done is not None:
        stats.chunks_total = len(done.chunks)
        return done, stats
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    uploader: _Uploader | None = None
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        has_data = _data_ranges(fd, size) if stat.S_ISREG(os.fstat(fd).st_mode) else (lambda a, b: True)
        uploader = _Uploader(store, stats, workers)
        futures: list[tuple[int, int, Future[str | None]]] = []
        for offset in range(0, size, chunk_size):
            length = min(chunk_size, size - offset)
            if has_data(offset, offset + length):
                data = os.pread(fd, length, offset)
                if len(data) != length:
                    raise PermanentError(f"{path}: short read at {offset} (the source shrank)")
                stats.bytes_read += length
                futures.append((offset, length, uploader.submit(data)))
            if progress is not None:
                progress(offset + length, size)
        chunks = []
        for offset, length, fut in futures:
            digest = fut.result()
            if digest is not None:
                chunks.append(ChunkRef(offset, length, digest))
        uploader.confirm_reused()
        manifest = Manifest(id=backup_id, kind="block", size=size, chunks=chunks, created=time.time(),
                            labels=dict(labels or {}), chunk_size=chunk_size)
        store.put(_manifest_key(backup_id), _encode_manifest(manifest))
    finally:
        if uploader is not None:
            uploader.close()
        os.close(fd)
    stats.chunks_total = len(manifest.chunks)
    stats.seconds = time.monotonic() - started
    log.info("backup written", store=_display(store), backup=backup_id, kind="block", size=size,
             chunks=stats.chunks_total, uploaded=stats.chunks_uploaded, bytes_uploaded=stats.bytes_uploaded,
             seconds=round(stats.seconds, 3))
    return manifest, stats


def _walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of everything under root, parents before children, sorted (stable manifests)."""
    stack = [""]
    while stack:
        rel = stack.pop()
        full = root / rel if rel else root
        with os.scandir(full) as it:
            names = sorted(e.name for e in it)
        subdirs = []
        for name in names:
            child = f"{rel}/{name}" if rel else name
            st = os.lstat(root / child)
            yield child, st
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(child)
        stack.extend(reversed(subdirs))


def backup_tree(store: ObjectStore, directory: str | os.PathLike[str], *, backup_id: str,
                labels: dict[str, str] | None = None, progress: Progress | None = None,
                chunk_size: int = CHUNK_SIZE, workers: int = WORKERS) -> tuple[Manifest, BackupStats]:
    """Back up a directory: regular files as content chunks (each file cut at chunk_size boundaries from its
    start, so equal files and equal file prefixes are stored once), plus dirs, symlinks, hard links, fifos
    and device nodes with modes, owners and mtimes (BK10)."""
    _check_id(backup_id)
    root = Path(directory)
    if not root.is_dir():
        raise BadRequest(f"directory {str(root)!r}: not a directory")
    started = time.monotonic()
    stats = BackupStats()
    done = _existing(store, backup_id)
    if done is not None:
        stats.chunks_total = len(done.chunks)
        return done, stats
    root_st = os.lstat(root)
    entries: list[dict[str, Any]] = [_entry("", root_st, "dir")]
    pending: list[tuple[int, int, Future[str | None]]] = []  # (entry index, offset, future)
    seen_inodes: dict[tuple[int, int], str] = {}
    total = 0
    uploader = _Uploader(store, stats, workers)
    try:
        for rel, st in _walk(root):
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                entries.append(_entry(rel, st, "dir"))
            elif stat.S_ISLNK(mode):
                entries.append({**_entry(rel, st, "symlink"), "target": os.readlink(root / rel)})
            elif stat.S_ISREG(mode):
                if st.st_nlink > 1 and (st.st_dev, st.st_ino) in seen_inodes:
                    entries.append({**_entry(rel, st, "hardlink"), "target": seen_inodes[(st.st_dev, st.st_ino)]})
                    continue
                seen_inodes[(st.st_dev, st.st_ino)] = rel
                index = len(entries)
                entries.append({**_entry(rel, st, "file"), "size": st.st_size})
                fd = os.open(root / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    size = os.fstat(fd).st_size
                    entries[index]["size"] = size
                    has_data = _data_ranges(fd, size)
                    for offset in range(0, size, chunk_size):
                        length = min(chunk_size, size - offset)
                        if not has_data(offset, offset + length):
                            continue
                        data = os.pread(fd, length, offset)
                        stats.bytes_read += len(data)
                        pending.append((index, offset, uploader.submit(data)))
                finally:
                    os.close(fd)
                total += size
                if progress is not None:
                    progress(stats.bytes_read, 0)
            elif stat.S_ISFIFO(mode):
                entries.append(_entry(rel, st, "fifo"))
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                kind = "char" if stat.S_ISCHR(mode) else "block"
                entries.append({**_entry(rel, st, kind), "rdev": st.st_rdev})
            else:  # sockets are recreated by whoever listens on them
                log.info("backup skips a socket", path=rel)
        chunks: list[ChunkRef] = []
        by_entry: dict[int, list[ChunkRef]] = {}
        for index, offset, fut in pending:
            digest = fut.result()
            if digest is not None:
                # length is known from the entry's size and the offset
                length = min(chunk_size, int(entries[index]["size"]) - offset)
                by_entry.setdefault(index, []).append(ChunkRef(offset, length, digest))
        for index, entry in enumerate(entries):
            if entry["type"] == "file":
                refs = by_entry.get(index, [])
                entry["first"], entry["count"] = len(chunks), len(refs)
                chunks.extend(refs)
        uploader.confirm_reused()
        manifest = Manifest(id=backup_id, kind="tree", size=total, chunks=chunks, created=time.time(),
                            labels=dict(labels or {}), chunk_size=chunk_size, entries=entries)
        store.put(_manifest_key(backup_id), _encode_manifest(manifest))
    finally:
        uploader.close()
    stats.chunks_total = len(chunks)
    stats.seconds = time.monotonic() - started
    log.info("backup written", store=_display(store), backup=backup_id, kind="tree", size=total,
             entries=len(entries), chunks=stats.chunks_total, uploaded=stats.chunks_uploaded,
             bytes_uploaded=stats.bytes_uploaded, seconds=round(stats.seconds, 3))
    return manifest, stats


def _entry(rel: str, st: os.stat_result, kind: str) -> dict[str, Any]:
    return {"path": rel, "type": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
            "mtime_ns": st.st_mtime_ns}


# ---------------------------------------------------------------------------------------------- restore


def _fetch_all(store: ObjectStore, refs: Iterable[ChunkRef], sink: Callable[[ChunkRef, bytes], None],
               workers: int) -> None:
    """Download, verify and hand each chunk to sink on a thread pool, a bounded number in flight."""
    window = threading.BoundedSemaphore(workers * 2)

    def one(ref: ChunkRef) -> None:
        try:
            try:
                blob = _retrying(lambda: store.get(_chunk_key(ref.hash)))
            except NotFound:
                raise CorruptBackup(f"chunk {ref.hash} (at offset {ref.offset}) is missing from the store") from None
            sink(ref, _unpack(ref.hash, blob, ref.length))
        finally:
            window.release()

    with ThreadPoolExecutor(workers, thread_name_prefix="restore") as pool:
        futures = []
        for ref in refs:
            window.acquire()
            futures.append(pool.submit(one, ref))
            if futures[0].done():
                futures.pop(0).result()  # fail early
        try:
            for fut in futures:
                fut.result()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    return libc


def _zero_range(fd: int, is_regular: bool, start: int, end: int) -> None:
    """Make [start, end) read as zeros: a punched hole in a file, BLKZEROOUT (or written zeros) on a device."""
    if end <= start:
        return
    if is_regular:
        try:
            if os.lseek(fd, start, os.SEEK_DATA) >= end:
                return  # a hole already
        except OSError:
            return  # nothing but holes after start: already zero
        if _libc().fallocate(fd, 0x01 | 0x02, start, end - start) == 0:  # KEEP_SIZE | PUNCH_HOLE
            return
    else:
        import fcntl
        import struct

        try:
            fcntl.ioctl(fd, 0x127F, struct.pack("QQ", start, end - start))  # BLKZEROOUT
            return
        except OSError:
            pass
    for pos in range(start, end, CHUNK_SIZE):
        os.pwrite(fd, _ZERO[:min(CHUNK_SIZE, end - pos)], pos)


_PIECE = 64 * 1024


def _write_sparse(fd: int, data: bytes, offset: int, zero: Callable[[int, int], None] | None) -> None:
    """pwrite data at offset, but 64 KiB pieces that are all zeros become holes: skipped when the destination
    is known to read zeros there (zero=None), else handed to zero(start, end)."""
    view = memoryview(data)
    n = len(data)
    pos = 0
    while pos < n:
        end = min(pos + _PIECE, n)
        is_zero = view[pos:end] == _ZERO[:end - pos]
        run_end = end
        while run_end < n:
            nxt = min(run_end + _PIECE, n)
            if (view[run_end:nxt] == _ZERO[:nxt - run_end]) != is_zero:
                break
            run_end = nxt
        if not is_zero:
            os.pwrite(fd, view[pos:run_end], offset + pos)
        elif zero is not None:
            zero(offset + pos, offset + run_end)
        pos = run_end


def _holes(refs: list[ChunkRef], size: int) -> Iterator[tuple[int, int]]:
    pos = 0
    for ref in sorted(refs, key=lambda r: r.offset):
        if ref.offset > pos:
            yield pos, ref.offset
        pos = max(pos, ref.offset + ref.length)
    if pos < size:
        yield pos, size


def restore_block(store: ObjectStore, backup_id: str, dest_path: str | os.PathLike[str], *,
                  workers: int = WORKERS) -> None:
    """Write a block backup into an existing file or device at least as large; holes stay sparse (BK12)."""
    manifest = read_manifest(store, backup_id)
    if manifest.kind != "block":
        raise BadRequest(f"backup {backup_id!r} is a {manifest.kind} backup; restore it with restore_tree")
    fd = os.open(dest_path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        is_regular = stat.S_ISREG(st.st_mode)
        dest_size = os.lseek(fd, 0, os.SEEK_END)
        if dest_size < manifest.size:
            raise BadRequest(f"{dest_path}: {dest_size} bytes, smaller than the backup's {manifest.size}")

        def write(ref: ChunkRef, data: bytes) -> None:
            _write_sparse(fd, data, ref.offset, lambda a, b: _zero_range(fd, is_regular, a, b))

        _fetch_all(store, manifest.chunks, write, workers)
        for start, end in _holes(manifest.chunks, manifest.size):
            _zero_range(fd, is_regular, start, end)
        os.fsync(fd)
    finally:
        os.close(fd)
    log.info("backup restored", store=_display(store), backup=backup_id, kind="block", dest=str(dest_path))


def _safe_rel(rel: str) -> str:
    parts = rel.split("/") if rel else []
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise CorruptBackup(f"manifest entry path {rel!r} is not a plain relative path")
    return rel


def restore_tree(store: ObjectStore, backup_id: str, dest_dir: str | os.PathLike[str], *,
                 workers: int = WORKERS) -> None:
    """Recreate a tree backup under dest_dir (created if missing; entries already there are replaced)."""
    manifest = read_manifest(store, backup_id)
    if manifest.kind != "tree":
        raise BadRequest(f"backup {backup_id!r} is a {manifest.kind} backup; restore it with restore_block")
    root = Path(dest_dir)
    root.mkdir(parents=True, exist_ok=True)
    entries = manifest.entries
    for entry in entries:
        if entry["path"]:
            _safe_rel(entry["path"])
    # 1. directories (parents come first in the manifest), 2. files' contents, 3. everything else,
    # 4. owners/modes/mtimes, directories last and deepest first so creating children cannot touch them.
    for entry in entries:
        if entry["type"] == "dir" and entry["path"]:
            path = root / entry["path"]
            if path.is_symlink() or (path.exists() and not path.is_dir()):
                path.unlink()
            path.mkdir(exist_ok=True)
    fds: dict[int, int] = {}
    refs: list[ChunkRef] = []
    owner: dict[int, int] = {}  # index in refs -> entry index
    try:
        for index, entry in enumerate(entries):
            if entry["type"] != "file":
                continue
            path = root / entry["path"]
            if path.is_symlink() or path.exists():
                _remove(path)  # never write through an existing name: it may be a hard link to another file
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            fds[index] = fd
            os.ftruncate(fd, int(entry["size"]))
            for ref in manifest.chunks[entry["first"]:entry["first"] + entry["count"]]:
                owner[len(refs)] = index
                refs.append(ref)
        # The same ChunkRef can be in two files; map by position, so carry the position through the sink.
        indexed = [ChunkRef(i, r.length, r.hash) for i, r in enumerate(refs)]

        def write(ref: ChunkRef, data: bytes) -> None:
            # the file was truncated to its size just now: zeros need no writing
            _write_sparse(fds[owner[ref.offset]], data, refs[ref.offset].offset, None)

        _fetch_all(store, indexed, write, workers)
        for fd in fds.values():
            os.fsync(fd)
    finally:
        for fd in fds.values():
            os.close(fd)
    for entry in entries:
        path = root / entry["path"]
        kind = entry["type"]
        if kind in ("dir", "file"):
            continue
        if path.is_symlink() or path.exists():
            _remove(path)
        if kind == "symlink":
            os.symlink(entry["target"], path)
        elif kind == "hardlink":
            os.link(root / _safe_rel(entry["target"]), path, follow_symlinks=False)
        elif kind == "fifo":
            os.mkfifo(path, 0o600)
        elif kind in ("char", "block"):
            os.mknod(path, (stat.S_IFCHR if kind == "char" else stat.S_IFBLK) | 0o600, int(entry["rdev"]))
    is_root = os.geteuid() == 0
    for entry in sorted(entries, key=lambda e: (e["type"] == "dir", -e["path"].count("/") if e["path"] else 1)):
        path = root / entry["path"] if entry["path"] else root
        if entry["type"] == "hardlink":
            continue  # same inode as its target, whose metadata is set
        try:
            os.lchown(path, int(entry["uid"]), int(entry["gid"]))
        except PermissionError:
            if is_root:
                raise
        if entry["type"] != "symlink":  # Linux has no lchmod; a symlink's mode is always 0777
            os.chmod(path, int(entry["mode"]))
        os.utime(path, ns=(int(entry["mtime_ns"]), int(entry["mtime_ns"])), follow_symlinks=False)
    log.info("backup restored", store=_display(store), backup=backup_id, kind="tree", dest=str(root),
             entries=len(entries))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        import shutil

        shutil.rmtree(path)
    else:
        path.unlink()
