"""The node's local storage pool: capacity-enforced volumes carved from one filesystem.

A pool is a directory (normally the mount point of a dedicated disk). A whole
block device can be given instead: ``Pool.on_device`` formats it once (only if
blank, through the safe ``Mounter``), mounts it at the pool directory and uses
that directory.

Each volume is ``<pool>/volumes/<name>.img``, a sparse file of exactly the
volume's size, attached to a loop device with direct I/O, holding its own
filesystem (ext4, xfs, btrfs) or nothing (volumeMode Block). The filesystem
cannot grow past the file, so writing past the size fails with ENOSPC.
``<pool>/volumes/<name>.json`` records name, size, fsType, mode and state; the
records, not memory, are the truth after a restart.

Capacity accounting counts every record, reserved ones included, under a lock
(a thread lock plus ``flock`` on ``<pool>/.lock`` for other processes), so a
burst of concurrent requests can never promise more than the pool holds.
Sparse files mean the pool's filesystem is not filled up front: ``capacity``
(default: the filesystem's size) is what is handed out.

Snapshots (SEMANTICS LS1-LS9) are ``<pool>/snapshots/<name>.img`` (a reflink or sparse copy of a
volume's image, cut while its filesystem is frozen) with a ``.json`` record; they count in the
accounting by the bytes their copy holds, and a new volume can be made from one (``create(...,
source_snapshot=)``) on this node only.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Callable, Iterator, Literal

import structlog

from storage.errors import AlreadyExists, BadRequest, Conflict, NotFound, TemporaryError
from storage.system import blockdev, loop, mounts, snapcopy
from storage.system.durable import remove_stale_staged, stage_durably, sync_directory, write_durably
from storage.system.executor import Executor, default_executor
from storage.system.faults import fault_point
from volume_plugins.mounter import Mounter

log = structlog.get_logger(__name__)

State = Literal["Reserved", "Creating", "Ready"]
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
FILESYSTEM_TYPES = ("ext4", "xfs", "btrfs")


class PoolFull(TemporaryError):
    """Not enough free capacity: the provisioner should pick another node or wait."""


@dataclass
class PoolVolume:
    name: str
    size: int
    fs_type: str | None  # None for volumeMode Block
    mode: str  # "Filesystem" | "Block"
    state: State
    resize_pending: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class PoolSnapshot:
    name: str
    volume: str  # the source volume's name
    size: int  # the source volume's size when cut: the smallest volume it restores into
    fs_type: str | None
    mode: str
    state: Literal["Creating", "Ready"]
    created: float = 0.0  # epoch seconds at which the copy was cut (while frozen)
    allocated: int = 0  # bytes the copy holds in the pool: what it costs in the accounting
    method: str = ""  # "reflink" | "sparse"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class Pool:
    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        capacity: int | None = None,
        executor: Executor | None = None,
        mounter: Mounter | None = None,
    ) -> None:
        self.root = Path(root)
        self.volumes_dir = self.root / "volumes"
        self.volumes_dir.mkdir(parents=True, exist_ok=True)
        self.snapshots_dir = self.root / "snapshots"
        self.snapshots_dir.mkdir(parents=True, exist_ok=True)
        self.executor = executor or default_executor()
        self.mounter = mounter or Mounter(self.root / "state", self.executor)
        self._capacity = capacity
        self._lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}
        # Volume name -> size as the records on disk say, valid while the generation written in the
        # lock file is the one read with it (PF61). Summing the records anew for every reservation read
        # every record: quadratic in a burst of volumes, under the lock every creation waits for.
        self._sizes: dict[str, int] | None = None
        self._sizes_generation = ""
        self._lock_file: IO[str] | None = None

    @classmethod
    def on_device(
        cls, device: str, mount_path: str | os.PathLike[str], *, fs_type: str = "xfs", executor: Executor | None = None, state_dir: str | os.PathLike[str]
    ) -> "Pool":
        """A pool on a whole block device: formatted once if blank, never again, mounted at ``mount_path``."""
        mounter = Mounter(state_dir, executor)
        mounter.format_and_mount(device, mount_path, fs_type, key="pool-device")
        return cls(mount_path, executor=executor)

    # ---- records -------------------------------------------------------

    def image_path(self, name: str) -> Path:
        return self.volumes_dir / f"{name}.img"

    def _record_path(self, name: str) -> Path:
        return self.volumes_dir / f"{name}.json"

    def _load(self, name: str) -> PoolVolume | None:
        try:
            raw = json.loads(self._record_path(name).read_text())
        except FileNotFoundError:
            return None
        return PoolVolume(**raw)

    def _save(self, vol: PoolVolume) -> None:
        """Write a volume's record durably; only under ``_accounting``."""
        path = self._record_path(vol.name)
        self._put_record(vol, stage_durably(path, vol.to_json()))
        sync_directory(path.parent)

    def _put_record(self, vol: PoolVolume, staged: Path) -> None:
        """Rename the record of ``vol`` staged beside its place into it; only under ``_accounting``."""
        self._bump_generation()
        try:
            os.replace(staged, self._record_path(vol.name))
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        if self._sizes is not None:
            self._sizes[vol.name] = vol.size

    def _save_syncing_outside(self, vol: PoolVolume, *, check: Callable[[], PoolVolume | None] | None = None) -> PoolVolume:
        """PF85: ``_save`` with its two syncs outside the pool lock, where concurrent creates share the
        journal's commits instead of taking turns: the record written and synced aside before the lock,
        renamed into place under it (after ``check``, whose volume, when it returns one, is kept instead),
        the directory synced after it. Durable on return, as ``_save``."""
        path = self._record_path(vol.name)
        staged = stage_durably(path, vol.to_json())
        fault_point("pool_record_staged")
        try:
            with self._accounting():
                kept = check() if check is not None else None
                if kept is None:
                    self._put_record(vol, staged)
        finally:
            staged.unlink(missing_ok=True)  # gone already when it was renamed into place
        if kept is not None:
            return kept
        sync_directory(path.parent)
        return vol

    def _remove_record(self, name: str) -> None:
        """Only under ``_accounting``."""
        self._bump_generation()
        self._record_path(name).unlink(missing_ok=True)
        if self._sizes is not None:
            self._sizes.pop(name, None)

    def _bump_generation(self) -> None:
        # Before the record changes: a process that dies between the two leaves another process with
        # a needless re-read, never with a stale sum. Only pools of this code write records.
        assert self._lock_file is not None, "pool records are written only under _accounting"
        # A write that was not preceded by a sum in the same locked section (marking a volume Ready,
        # a release) must not stamp a cache that misses another process's records as current: that
        # cache would then be believed at the next reservation and the pool overcommitted (PF61).
        if self._read_generation() != self._sizes_generation:
            self._sizes = None
        generation = secrets.token_hex(8)
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(generation)
        self._lock_file.flush()
        if self._sizes is not None:
            self._sizes_generation = generation

    def _read_generation(self) -> str:
        assert self._lock_file is not None, "the generation is read only under _accounting"
        self._lock_file.seek(0)
        return self._lock_file.read()

    def _volume_sizes(self) -> dict[str, int]:
        """Only under ``_accounting``: every process's writes are done and none is under way."""
        generation = self._read_generation()
        if self._sizes is None or generation != self._sizes_generation:
            sizes = {v.name: v.size for v in self.list()}
            for rec in self.volumes_dir.glob("*.json"):
                if rec.stem in sizes:
                    continue
                try:  # an unreadable record (``list``): its image's size stays taken
                    sizes[rec.stem] = self.image_path(rec.stem).stat().st_size
                except FileNotFoundError:
                    pass
            self._sizes = sizes
            self._sizes_generation = generation
        return self._sizes

    def list(self) -> list[PoolVolume]:
        """Every volume whose record reads. A record that does not (emptied or cut short by damage to the
        disk, edited by hand) is logged and skipped: one bad record stopped the agent's start
        (``reattach_all``) at every try. Its image is left alone, and its size still counted."""
        out = []
        for rec in sorted(self.volumes_dir.glob("*.json")):
            try:
                vol = self._load(rec.stem)
            except (ValueError, TypeError) as exc:
                log.error("pool.record_unreadable", path=str(rec), error=str(exc),
                          hint="the volume is left out until its record is repaired or removed; its image is kept")
                continue
            if vol is not None:
                out.append(vol)
        return out

    def get(self, name: str) -> PoolVolume | None:
        return self._load(name)

    def device(self, name: str) -> str | None:
        return loop.find_by_backing_file(self.image_path(name))

    # ---- locking and accounting -----------------------------------------

    @contextmanager
    def _accounting(self) -> Iterator[None]:
        with self._lock:
            with open(self.root / ".lock", "a+", encoding="ascii") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                self._lock_file = f
                try:
                    yield
                finally:
                    self._lock_file = None
                    fcntl.flock(f, fcntl.LOCK_UN)

    def _name_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._name_locks.setdefault(name, threading.Lock())

    def total(self) -> int:
        if self._capacity is not None:
            return self._capacity
        st = os.statvfs(self.root)
        return st.f_blocks * st.f_frsize

    def _committed(self) -> int:
        # Snapshots cost what their copy holds (a frozen copy never grows); a reflinked copy shares
        # blocks with its volume, counted twice here: the pool never promises more than it has.
        return sum(self._volume_sizes().values()) + sum(s.allocated or s.size for s in self.list_snapshots())

    def usage(self) -> tuple[int, int]:
        """(total, free) in bytes; reserved volumes count as used."""
        with self._accounting():
            total = self.total()
            return total, max(0, total - self._committed())

    @staticmethod
    def _validate(name: str, size: int) -> None:
        if not _NAME.match(name):
            raise BadRequest(f'name: Invalid value: "{name}": must be a lowercase RFC 1123 subdomain')
        if not isinstance(size, int) or size <= 0:
            raise BadRequest(f"size: Invalid value: {size!r}: must be a positive number of bytes")

    def reserve(self, name: str, size: int, *, creating: tuple[str | None, str] | None = None) -> PoolVolume:
        """Set ``size`` bytes aside for ``name``; idempotent; PoolFull when it does not fit.

        ``creating=(fs_type, mode)``: a new record is saved as ``Creating`` with those at once, one
        durable write instead of two (PF2); an existing record is returned as it is."""
        self._validate(name, size)
        vol = (PoolVolume(name, size, None, "Filesystem", "Reserved") if creating is None
               else PoolVolume(name, size, creating[0], creating[1], "Creating"))

        free = 0

        def existing_or_fits() -> PoolVolume | None:
            nonlocal free
            existing = self._load(name)
            if existing is not None:
                if existing.size != size:
                    raise AlreadyExists(f"pool volume {name} already exists with size {existing.size}, not {size}")
                return existing
            free = self.total() - self._committed()
            if size > free:
                raise PoolFull(f"pool {self.root} has {free} bytes free, {size} requested for {name}", delay=10.0)
            return None

        saved = self._save_syncing_outside(vol, check=existing_or_fits)
        if saved is vol:
            log.info("pool.reserved", name=name, size=size, free=free - size)
        return saved

    def release(self, name: str) -> None:
        """Give back a reservation that was never created (e.g. provisioning went elsewhere)."""
        with self._accounting():
            vol = self._load(name)
            if vol is not None and vol.state == "Reserved":
                self._remove_record(name)

    # ---- lifecycle ------------------------------------------------------

    def create(self, name: str, size: int, fs_type: str | None = "ext4", mode: str = "Filesystem", *,
               source_snapshot: str | None = None, fill: "Callable[[Path, PoolVolume], None] | None" = None) -> PoolVolume:
        """Create (or finish creating) a volume; creating it twice gives one volume.

        ``source_snapshot``: the new image is a copy of that snapshot of this pool (LS6), its filesystem
        grown to ``size``. ``fill(image, vol)``: called once the sparse image exists, before the loop
        device and the filesystem (a restore from a backup writes the image, LS7); when it leaves a
        filesystem of ``fs_type`` there, that one is kept and grown, never formatted over."""
        snap: PoolSnapshot | None = None
        if source_snapshot is not None:
            snap = self.get_snapshot(source_snapshot)
            if snap is None or snap.state != "Ready":
                raise NotFound(f"snapshot {source_snapshot} not found in pool {self.root}", name=source_snapshot)
            if size < snap.size:
                raise BadRequest(f"sizeBytes: Invalid value: {size}: smaller than snapshot {source_snapshot} ({snap.size})")
            fs_type, mode = snap.fs_type, snap.mode
        if mode not in ("Filesystem", "Block"):
            raise BadRequest(f'volumeMode: Unsupported value: "{mode}": supported values: "Block", "Filesystem"')
        if mode == "Filesystem":
            fs_type = fs_type or "ext4"
            if fs_type not in FILESYSTEM_TYPES:
                raise BadRequest(f'fsType: Unsupported value: "{fs_type}": supported values: {", ".join(FILESYSTEM_TYPES)}')
        else:
            fs_type = None
        with self._name_lock(name):
            vol = self.reserve(name, size, creating=(fs_type, mode))
            if vol.state == "Ready":
                if (vol.fs_type, vol.mode) != (fs_type, mode):
                    raise AlreadyExists(f"pool volume {name} already exists as {vol.mode}/{vol.fs_type}")
                return vol
            if (vol.state, vol.fs_type, vol.mode) != ("Creating", fs_type, mode):
                vol.fs_type, vol.mode, vol.state = fs_type, mode, "Creating"
                with self._accounting():
                    self._save(vol)
            image = self.image_path(name)
            filled = snap is not None or fill is not None
            if filled:
                # A retry after a crash starts the copy over: nothing used the half-made image.
                for dev in loop.find_all_by_backing_file(image):
                    loop.detach(dev, executor=self.executor)
                image.unlink(missing_ok=True)
                if snap is not None:
                    snapcopy.copy_image(self.snapshot_image_path(snap.name), image)
            # PF2: an image made here (O_EXCL) is new: no loop device can hold it and it holds only
            # zeros, so neither the loop devices nor the image are searched or probed. An image
            # that was there (a retry after a crash, a copy) is treated as before.
            try:
                fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
                new_image = True
            except FileExistsError:
                fd = os.open(image, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
                new_image = False
            try:
                if os.fstat(fd).st_size < size:
                    os.ftruncate(fd, size)  # sparse: no blocks are written
            finally:
                os.close(fd)
            if fill is not None:
                fill(image, vol)
            device = (None if new_image and not filled else self.device(name)) or loop.attach(image, executor=self.executor)
            if filled and fs_type:
                self._adopt_copied_filesystem(vol, device)
            elif fs_type:
                self.mounter.ensure_formatted(device, fs_type, key=f"pool-{name}", known_blank=new_image)
                self.mounter.forget(f"pool-{name}")
            vol.state = "Ready"
            self._save_syncing_outside(vol)
            log.info("pool.created", name=name, size=size, fs_type=fs_type, mode=mode, device=device)
            return vol

    def _adopt_copied_filesystem(self, vol: PoolVolume, device: str) -> None:
        """A copied filesystem (snapshot, backup) gets its own identity and the volume's whole size."""
        assert vol.fs_type is not None
        found = blockdev.probe_filesystem(device, executor=self.executor)
        if found is None:
            # A restore that brought no filesystem (a raw backup of a Block volume into a Filesystem
            # claim would be caught before): format, as for a new volume.
            self.mounter.ensure_formatted(device, vol.fs_type, key=f"pool-{vol.name}")
            self.mounter.forget(f"pool-{vol.name}")
            return
        if found != vol.fs_type:
            raise BadRequest(f"fsType: Invalid value: {vol.fs_type!r}: the source holds a {found} filesystem")
        # The copy has the source's UUID: xfs and btrfs refuse to mount a second filesystem with the
        # UUID of one already mounted, so the copy gets a new one (ext4 does not care, but gets one too).
        if vol.fs_type.startswith("ext"):
            usable, output = blockdev.fsck(device, vol.fs_type, executor=self.executor)
            if not usable:
                raise Conflict(f"pool volume {vol.name}: the copied filesystem is damaged: {output[-300:]}")
            self.executor.run(["tune2fs", "-U", "random", device], timeout=120)
            blockdev.resize_filesystem(device, None, vol.fs_type, executor=self.executor)
            return
        import tempfile

        if vol.fs_type == "xfs":
            # A frozen xfs keeps its log (crash-consistent, like a power cut): a first private mount
            # replays it (nouuid: the source may be mounted), then the UUID can be changed.
            with tempfile.TemporaryDirectory(prefix=".replay-", dir=self.root) as mnt:
                mounts.mount(device, mnt, "xfs", ["nouuid"], executor=self.executor)
                mounts.unmount(mnt, executor=self.executor)
            self.executor.run(["xfs_admin", "-U", "generate", device], timeout=120)
        elif vol.fs_type == "btrfs":
            self.executor.run(["btrfstune", "-f", "-u", device], input="y\n", timeout=120)
        # xfs and btrfs grow only while mounted: a private mount, grown, unmounted.
        with tempfile.TemporaryDirectory(prefix=".grow-", dir=self.root) as mnt:
            mounts.mount(device, mnt, vol.fs_type, executor=self.executor)
            try:
                blockdev.resize_filesystem(device, mnt, vol.fs_type, executor=self.executor)
            finally:
                mounts.unmount(mnt, executor=self.executor)

    # ---- snapshots (LS1-LS5) --------------------------------------------

    def snapshot_image_path(self, name: str) -> Path:
        return self.snapshots_dir / f"{name}.img"

    def _snapshot_record(self, name: str) -> Path:
        return self.snapshots_dir / f"{name}.json"

    def get_snapshot(self, name: str) -> PoolSnapshot | None:
        try:
            raw = json.loads(self._snapshot_record(name).read_text())
        except FileNotFoundError:
            return None
        return PoolSnapshot(**raw)

    def _save_snapshot(self, snap: PoolSnapshot) -> None:
        write_durably(self._snapshot_record(snap.name), snap.to_json())

    def list_snapshots(self) -> list[PoolSnapshot]:
        out = []
        for rec in sorted(self.snapshots_dir.glob("*.json")):
            snap = self.get_snapshot(rec.stem)
            if snap is not None:
                out.append(snap)
        return out

    def freeze_points(self, name: str) -> list[str]:
        """One mount point per mounted device of the volume (a bind mount shares its superblock)."""
        points: list[str] = []
        for dev in loop.find_all_by_backing_file(self.image_path(name)):
            used = [e for e in mounts.mounts_of_device(dev) if e.root == "/"] or mounts.mounts_of_device(dev)
            if used:
                points.append(used[0].mount_point)
        return points

    def snapshot(self, name: str, volume: str, *, freeze_limit: float = snapcopy.FREEZE_LIMIT_SECONDS) -> PoolSnapshot:
        """Cut (or find) snapshot ``name`` of ``volume``: its filesystem frozen around the copy."""
        if not _NAME.match(name):
            raise BadRequest(f'name: Invalid value: "{name}": must be a lowercase RFC 1123 subdomain')
        with self._name_lock(f"snapshot/{name}"):
            existing = self.get_snapshot(name)
            if existing is not None and existing.state == "Ready":
                if existing.volume != volume:
                    raise AlreadyExists(f"snapshot {name} already exists, of volume {existing.volume}")
                return existing
            with self._name_lock(volume):
                with self._accounting():
                    vol = self._load(volume)
                    if vol is None or vol.state != "Ready":
                        raise NotFound(f"pool volume {volume} not found", name=volume)
                    need = snapcopy.allocated_bytes(self.image_path(volume))
                    free = self.total() - self._committed() + (existing.allocated if existing else 0)
                    if need > free:
                        raise PoolFull(f"pool {self.root} has {free} bytes free, {need} needed for snapshot {name}",
                                       delay=10.0)
                    snap = PoolSnapshot(name, volume, vol.size, vol.fs_type, vol.mode, "Creating", allocated=need)
                    self._save_snapshot(snap)
                points = self.freeze_points(volume) if vol.fs_type else []
                image = self.snapshot_image_path(name)
                try:
                    with snapcopy.frozen(points, limit=freeze_limit, executor=self.executor):
                        snap.created = time.time()
                        snap.method = snapcopy.copy_image(self.image_path(volume), image)
                except BaseException:
                    image.unlink(missing_ok=True)
                    with self._accounting():
                        self._snapshot_record(name).unlink(missing_ok=True)
                    raise
            snap.state = "Ready"
            snap.allocated = snapcopy.allocated_bytes(image)
            with self._accounting():
                self._save_snapshot(snap)
            log.info("pool.snapshot", name=name, volume=volume, frozen=points, method=snap.method,
                     allocated=snap.allocated)
            return snap

    def delete_snapshot(self, name: str) -> None:
        """Remove a snapshot; deleting what is gone succeeds."""
        with self._name_lock(f"snapshot/{name}"):
            self.snapshot_image_path(name).unlink(missing_ok=True)
            self.snapshot_image_path(name).with_name(f"{name}.img.partial").unlink(missing_ok=True)
            with self._accounting():
                self._snapshot_record(name).unlink(missing_ok=True)
            log.info("pool.snapshot_deleted", name=name)

    def delete(self, name: str) -> None:
        """Remove a volume; deleting what is gone succeeds. Refuses while it is mounted."""
        with self._name_lock(name):
            image = self.image_path(name)
            devices = loop.find_all_by_backing_file(image)
            for dev in devices:
                used = mounts.mounts_of_device(dev)
                if used:
                    raise Conflict(f"pool volume {name} is in use: {dev} mounted at {used[0].mount_point}")
            for dev in devices:
                loop.detach(dev, executor=self.executor)
            image.unlink(missing_ok=True)
            self.mounter.forget(f"pool-{name}")
            with self._accounting():
                self._remove_record(name)
            log.info("pool.deleted", name=name)

    def expand(self, name: str, new_size: int) -> PoolVolume:
        """Grow a volume: the file, the loop device, and the filesystem: online when it
        is mounted (ext4, xfs, btrfs), offline for an unmounted ext4. An unmounted xfs
        or btrfs keeps ``resize_pending`` until ``complete_resize`` runs while mounted.
        (Online ext4 growth needs CAP_SYS_RESOURCE.)"""
        with self._name_lock(name):
            with self._accounting():
                vol = self._load(name)
                if vol is None or vol.state != "Ready":
                    raise NotFound(f"pool volume {name} not found", name=name)
                if new_size < vol.size:
                    raise BadRequest(f"size: Invalid value: {new_size}: volumes can only grow (now {vol.size})")
                if new_size > vol.size:
                    free = self.total() - self._committed()
                    if new_size - vol.size > free:
                        raise PoolFull(f"pool {self.root} has {free} bytes free, {new_size - vol.size} more requested for {name}", delay=10.0)
                    vol.size = new_size
                    vol.resize_pending = vol.fs_type is not None
                    self._save(vol)
            with open(self.image_path(name), "ab") as f:
                if os.fstat(f.fileno()).st_size < new_size:
                    f.truncate(new_size)
            for dev in loop.find_all_by_backing_file(self.image_path(name)):
                loop.refresh_capacity(dev, executor=self.executor)
            if vol.resize_pending:
                try:
                    self._grow_if_mounted(vol)
                except Exception as exc:
                    # The device has grown; the filesystem is the node's part (FileSystemResizePending),
                    # retried by complete_resize: e.g. online ext4 growth without CAP_SYS_RESOURCE.
                    log.warning("pool.resize_deferred", name=name, error=str(exc))
            return vol

    def complete_resize(self, name: str) -> bool:
        """Finish a pending filesystem resize if the volume is now mounted. True when done."""
        with self._name_lock(name):
            vol = self._load(name)
            if vol is None:
                raise NotFound(f"pool volume {name} not found", name=name)
            if vol.resize_pending:
                self._grow_if_mounted(vol)
            return not vol.resize_pending

    def _grow_if_mounted(self, vol: PoolVolume) -> None:
        dev = self.device(vol.name)
        if dev is None or vol.fs_type is None:
            return
        used = [e for e in mounts.mounts_of_device(dev) if e.root == "/"] or mounts.mounts_of_device(dev)
        if used:
            blockdev.resize_filesystem(dev, used[0].mount_point, vol.fs_type, executor=self.executor)
        elif vol.fs_type.startswith("ext"):
            # ext4 also grows offline; resize2fs insists on a fresh check first.
            usable, output = blockdev.fsck(dev, vol.fs_type, executor=self.executor)
            if not usable:
                raise Conflict(f"pool volume {vol.name}: filesystem check failed before resize: {output[-300:]}")
            blockdev.resize_filesystem(dev, None, vol.fs_type, executor=self.executor)
        else:
            return
        vol.resize_pending = False
        with self._accounting():
            self._save(vol)
        log.info("pool.resized", name=vol.name, size=vol.size)

    def reattach_all(self) -> dict[str, str]:
        """After a restart: attach every created volume whose loop device is gone. name -> device.
        Snapshots whose copy a crash interrupted are dropped (LS5): they hold no point in time, and
        would be counted in the pool until their name was asked for again. Records a killed process
        left staged beside their place are removed (A5b): nothing else would ever remove them."""
        for snap in self.list_snapshots():
            if snap.state != "Ready":
                self.delete_snapshot(snap.name)
        for directory in (self.volumes_dir, self.snapshots_dir):
            removed = remove_stale_staged(directory)
            if removed:
                log.info("pool.stale_records_removed", directory=str(directory), files=removed)
        out: dict[str, str] = {}
        for vol in self.list():
            image = self.image_path(vol.name)
            if vol.state == "Reserved" or not image.exists():
                continue
            out[vol.name] = self.device(vol.name) or loop.attach(image, executor=self.executor)
        return out
