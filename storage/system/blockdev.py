"""Block device probing, formatting and filesystem resizing."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import structlog

from storage.errors import BadRequest
from storage.system.executor import CommandError, Executor, default_executor

log = structlog.get_logger(__name__)

SUPPORTED_FILESYSTEMS = ("ext4", "ext3", "ext2", "xfs", "btrfs")

# blkid exit codes (util-linux): 2 = nothing found, 8 = ambivalent result.
_BLKID_NOTHING = 2
_BLKID_AMBIVALENT = 8

PARTITION_TABLE_PREFIX = "partition-table:"


def probe(device: str, *, executor: Executor | None = None) -> dict[str, str]:
    """``blkid -p -o export`` as a dict; empty when the device is blank."""
    ex = executor or default_executor()
    proc = ex.run(["blkid", "-p", "-o", "export", device], check=False)
    if proc.returncode == _BLKID_NOTHING:
        return {}
    if proc.returncode == _BLKID_AMBIVALENT:
        # Several signatures: not blank, and not safe to guess which one is real.
        return {"TYPE": "ambivalent"}
    if proc.returncode != 0:
        raise CommandError(["blkid", "-p", "-o", "export", device], proc.returncode, proc.stdout, proc.stderr)
    out: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def probe_filesystem(device: str, *, executor: Executor | None = None) -> str | None:
    """The filesystem type on ``device``, ``"partition-table:<type>"`` for a
    partitioned disk, or None when the device is blank (safe to format)."""
    found = probe(device, executor=executor)
    # On a partition blkid also reports the partition's entry in its parent's table (PART_ENTRY_*):
    # that says nothing about the contents (Kubernetes asks blkid for TYPE and PTTYPE only).
    found = {k: v for k, v in found.items() if k != "DEVNAME" and not k.startswith("PART_ENTRY_")}
    if not found:
        return None
    if "TYPE" in found:
        return found["TYPE"]
    if "PTTYPE" in found:
        return PARTITION_TABLE_PREFIX + found["PTTYPE"]
    # Some signature blkid recognises without a TYPE: treat as not blank.
    return "unknown"


def mkfs_argv(device: str, fs_type: str, options: Sequence[str] = ()) -> list[str]:
    if fs_type not in SUPPORTED_FILESYSTEMS:
        raise BadRequest(
            f'fsType: Unsupported value: "{fs_type}": supported values: {", ".join(SUPPORTED_FILESYSTEMS)}'
        )
    # No "force" flags: mkfs.xfs and mkfs.btrfs then refuse to overwrite an
    # existing signature, a second safety net behind the blkid probe.
    if fs_type.startswith("ext"):
        return [f"mkfs.{fs_type}", "-q", *options, device]
    if fs_type == "xfs":
        return ["mkfs.xfs", "-q", *options, device]
    return ["mkfs.btrfs", "-q", *options, device]


def mkfs(device: str, fs_type: str, options: Sequence[str] = (), *, executor: Executor | None = None) -> None:
    log.info("mkfs", device=device, fs_type=fs_type)
    (executor or default_executor()).run(mkfs_argv(device, fs_type, options), timeout=600)


def fs_uuid(device: str, *, executor: Executor | None = None) -> str | None:
    return probe(device, executor=executor).get("UUID")


def resize_filesystem(device: str, mount_path: str | None, fs_type: str, *, executor: Executor | None = None) -> None:
    """Grow the filesystem to fill its device. xfs and btrfs grow only while mounted."""
    ex = executor or default_executor()
    log.info("resize_filesystem", device=device, mount_path=mount_path, fs_type=fs_type)
    if fs_type.startswith("ext"):
        ex.run(["resize2fs", device], timeout=600)
    elif fs_type == "xfs":
        if not mount_path:
            raise BadRequest("xfs can only be grown while mounted: mount_path is required")
        ex.run(["xfs_growfs", mount_path], timeout=600)
    elif fs_type == "btrfs":
        if not mount_path:
            raise BadRequest("btrfs can only be grown while mounted: mount_path is required")
        ex.run(["btrfs", "filesystem", "resize", "max", mount_path], timeout=600)
    else:
        raise BadRequest(f'fsType: Unsupported value: "{fs_type}": cannot resize')


def fsck(device: str, fs_type: str, *, executor: Executor | None = None) -> tuple[bool, str]:
    """Check (and for ext*, safely repair) a filesystem that is not mounted.
    Returns (usable, output)."""
    ex = executor or default_executor()
    if fs_type.startswith("ext"):
        proc = ex.run(["e2fsck", "-f", "-p", device], check=False, timeout=600)
        # 0 clean, 1 errors corrected: usable. 2 reboot needed, 4+ uncorrected.
        return proc.returncode in (0, 1), (proc.stdout + proc.stderr).strip()
    if fs_type == "xfs":
        proc = ex.run(["xfs_repair", "-n", device], check=False, timeout=600)
        return proc.returncode == 0, (proc.stdout + proc.stderr).strip()
    if fs_type == "btrfs":
        proc = ex.run(["btrfs", "check", "--readonly", device], check=False, timeout=600)
        return proc.returncode == 0, (proc.stdout + proc.stderr).strip()
    return True, ""


def _sysfs_dir(device: str) -> Path:
    name = os.path.basename(os.path.realpath(device))
    return Path("/sys/class/block") / name


def device_size(device: str, *, executor: Executor | None = None) -> int:
    """Size in bytes."""
    size_file = _sysfs_dir(device) / "size"
    try:
        # sysfs counts 512-byte sectors whatever the logical block size.
        return int(size_file.read_text().strip()) * 512
    except OSError:
        proc = (executor or default_executor()).run(["blockdev", "--getsize64", device])
        return int(proc.stdout.strip())


def is_block_device(path: str | os.PathLike[str]) -> bool:
    import stat

    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False
