"""Safe format and mount (SEMANTICS A4), shared by every block-backed plugin.

Rules:
* probe the device with ``blkid -p`` before any format, never trust memory (a device that
  mounts as the requested type needs no probe: it is mounted first, PF1; a sparse file made in
  the same call is known blank, PF2);
* blank -> mkfs with the requested type (default ext4), then mount;
* any filesystem or partition table -> never format; mount it as the requested
  type (default ext4), which fails for a filesystem of another type: the device
  is left mounted nowhere and untouched (a partition table fails clearly);
* blank and read-only -> ``cannot mount unformatted disk``.

The type rule is Kubernetes' ``SafeFormatAndMount.formatAndMountSensitive``
(k8s.io/mount-utils, mount_linux.go), read step by step: ``existingFormat :=
GetDiskFormat(source)`` (blkid -p); then ``if len(fstype) == 0 { fstype =
"ext4" }``, *before* any comparison, so a volume without fsType is an ext4
request; a blank disk is formatted with that type (refused when read-only);
otherwise ``if fstype != existingFormat`` only logs "Configured to mount disk
... things might break" and marks the error FilesystemMismatch, and the disk is
then mounted with ``-t <fstype>``: the kernel refuses xfs as ext4, so the mount
fails and nothing was formatted (ext2/ext3 do mount as ext4, so they pass).
The message is the one kubelet events have shown for this case ("failed to
mount the volume as %q, it already contains %s. Mount error: %v").

Crash safety: an intent marker is written (and fsynced) before mkfs and
removed once the filesystem is mounted. If the marker is found on a later
attempt, the earlier format was interrupted: a blank device is formatted
(nothing was written), a filesystem of the requested type is checked with
fsck and accepted if usable, anything else fails loudly and is left alone for
an administrator. mkfs never runs on a device that holds a signature.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import structlog

from storage.errors import PermanentError
from storage.system import blockdev, mounts
from storage.system.durable import write_durably
from storage.system.executor import CommandError, Executor, default_executor
from storage.system.faults import fault_point

log = structlog.get_logger(__name__)

DEFAULT_FS_TYPE = "ext4"


class MountError(PermanentError):
    pass


class FilesystemMismatch(MountError):
    """The device holds another filesystem than the one requested; it was neither formatted nor mounted."""


def _mount_failure(exc: CommandError) -> str:
    """The mount failure as mount-utils words it."""
    return (f"mount failed: exit status {exc.returncode}\nMounting command: {exc.argv[0]}\n"
            f"Mounting arguments: {' '.join(exc.argv[1:])}\nOutput: {(exc.stderr or exc.stdout or '').strip()}")


class Mounter:
    def __init__(self, state_dir: str | os.PathLike[str], executor: Executor | None = None) -> None:
        # state_dir keeps the mkfs intent markers; it must survive restarts.
        self.state_dir = Path(state_dir)
        self.executor = executor or default_executor()

    def _marker(self, key: str) -> Path:
        safe = key.replace("/", "_")
        return self.state_dir / f"{safe}.mkfs-intent"

    def ensure_formatted(
        self,
        device: str,
        fs_type: str | None,
        *,
        key: str,
        read_only: bool = False,
        mkfs_options: Sequence[str] = (),
        known_blank: bool = False,
    ) -> str:
        """Return the filesystem type on ``device``, formatting it only if it is blank.

        ``known_blank``: the caller created the device's backing store in this very call (a new
        sparse file, PF2), so it holds only zeros and the probe is skipped; an intent marker left by
        an interrupted earlier attempt brings the probe back."""
        wanted = fs_type or DEFAULT_FS_TYPE
        marker = self._marker(key)
        known_blank = known_blank and not marker.exists()
        existing = None if known_blank else blockdev.probe_filesystem(device, executor=self.executor)
        if existing is not None:
            if marker.exists():
                self._check_interrupted_format(device, existing, wanted, marker)
            if existing.startswith(blockdev.PARTITION_TABLE_PREFIX):
                raise MountError(
                    f"device {device} holds a partition table "
                    f"({existing[len(blockdev.PARTITION_TABLE_PREFIX):]}); it is never formatted and cannot be mounted as a filesystem"
                )
            if existing != wanted:
                log.warning("mount.fs_type_differs", device=device, requested=wanted, existing=existing)
            return existing
        if read_only:
            raise MountError(f"cannot mount unformatted disk {device} as read-only")
        if marker.exists():
            log.warning("mkfs.retry_after_interrupted_format", device=device, key=key)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        write_durably(marker, json.dumps({"device": device, "fsType": wanted}))
        fault_point("before_mkfs")
        blockdev.mkfs(device, wanted, mkfs_options, executor=self.executor)
        # Make the new superblock durable before anything trusts it: an fsync of this
        # device only (a global sync would wait for every other writer on the host).
        self.executor.fsync(device)
        fault_point("after_mkfs")
        return wanted

    def _check_interrupted_format(self, device: str, existing: str, wanted: str, marker: Path) -> None:
        if existing != wanted:
            raise MountError(
                f"device {device}: an earlier format as {wanted} was interrupted and the device now "
                f"holds {existing!r}; refusing to format or mount it, an administrator must inspect it "
                f"(intent marker {marker})"
            )
        usable, output = blockdev.fsck(device, existing, executor=self.executor)
        if not usable:
            raise MountError(
                f"device {device}: an earlier format as {wanted} was interrupted and the filesystem "
                f"fails its check; refusing to reformat it: {output[-300:]}"
            )
        log.info("mkfs.interrupted_format_accepted", device=device, fs_type=existing)

    def format_and_mount(
        self,
        device: str,
        target: str | os.PathLike[str],
        fs_type: str | None,
        *,
        key: str,
        options: Sequence[str] = (),
        read_only: bool = False,
    ) -> str:
        """Mount ``device`` at ``target`` (formatting it first only if blank). Idempotent."""
        target = Path(target)
        # PF69: a device's filesystem has a device number of its own, so a target that shares its parent's
        # has nothing mounted: a stat of both, not a reading of the node's whole mount table, for the common
        # case (a new volume); the table is read only when something is mounted there.
        top = mounts.top_mount(target) if os.path.ismount(target) else None
        if top is not None:
            if any(e.mount_point == os.path.realpath(target) for e in mounts.mounts_of_device(device)):
                # A crash after mounting may have left the marker: the mount proves the format finished.
                self._marker(key).unlink(missing_ok=True)
                return top.fstype
            raise MountError(f"{target} is already a mount point of another device ({top.source})")
        wanted = fs_type or DEFAULT_FS_TYPE  # mount-utils defaults before comparing (see above)
        target.mkdir(parents=True, exist_ok=True)
        opts = list(options)
        if read_only and "ro" not in opts:
            opts.append("ro")
        if not self._marker(key).exists():
            # PF1: a device the kernel mounts as the requested type holds that filesystem already, so
            # the probe cannot change the outcome; it only decides what happens to a device that does
            # not mount (blank: formatted; anything else: refused), so it runs after a failed mount.
            # mount(8) never writes a device it cannot mount. With an intent marker, an interrupted
            # format is checked first, as before.
            try:
                mounts.mount(device, target, wanted, opts, executor=self.executor)
            except CommandError:
                pass
            else:
                fault_point("after_mount")
                return wanted
        found = self.ensure_formatted(device, fs_type, key=key, read_only=read_only)
        try:
            mounts.mount(device, target, wanted, opts, executor=self.executor)
        except CommandError as exc:
            if found != wanted:
                raise FilesystemMismatch(
                    f'failed to mount the volume as "{wanted}", it already contains {found}. '
                    f"Mount error: {_mount_failure(exc)}") from exc
            raise MountError(f"mount of {device} ({found}) at {target} failed: {exc.stderr.strip() or exc}") from exc
        fault_point("after_mount")
        self._marker(key).unlink(missing_ok=True)
        return found

    def forget(self, key: str) -> None:
        """Drop the intent marker of a volume that is being deleted."""
        self._marker(key).unlink(missing_ok=True)
