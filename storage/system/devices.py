"""Finding a block device by serial number or by-id name (used by cloud disk plugins).

Real cloud nodes have udev and ``/dev/disk/by-id`` links; minimal hosts and
containers may not, so every lookup falls back to reading sysfs directly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

SYS_BLOCK = Path("/sys/block")


def _normalise(serial: str) -> str:
    # EBS NVMe serials are "vol0123..." while the API says "vol-0123...".
    return serial.strip().replace("-", "").lower()


def _sysfs_serial(entry: Path) -> str | None:
    for candidate in (entry / "serial", entry / "device" / "serial"):
        try:
            return candidate.read_text().strip()
        except OSError:
            continue
    return None


@dataclass(frozen=True)
class DeviceResolver:
    """Where a node looks for the devices the control plane attached to it.

    Real nodes keep the defaults. A node (or a test harness) whose disks arrive
    some other way points ``dev_disk`` at its own directory of ``by-id/``,
    ``by-path/`` and ``azure/scsi1/`` links; the serial scan of ``sys_block``
    is the fallback for hosts without udev. Every answer is the real path of
    an existing block device, never the link itself.
    """

    dev_disk: Path = Path("/dev/disk")
    sys_block: Path = SYS_BLOCK

    def link(self, relative: str) -> str | None:
        """The block device behind ``<dev_disk>/<relative>`` (e.g. ``by-id/google-disk1``)."""
        path = self.dev_disk / relative
        if not path.exists():
            return None
        real = os.path.realpath(path)
        return real if _is_block_device(real) else None

    def by_id(self, *names: str) -> str | None:
        for name in names:
            found = self.link(f"by-id/{name}")
            if found:
                return found
        return None

    def by_serial(self, serial: str) -> str | None:
        """A whole disk whose serial is ``serial`` (dashes and case ignored): udev's ID_SERIAL properties
        on a real host, then a plain scan of ``sys_block`` (hosts without udev, and test harnesses)."""
        wanted = _normalise(serial)
        if self.sys_block == SYS_BLOCK:
            found = _udev_by_serial(wanted)
            if found:
                return found
        for entry in sorted(self.sys_block.iterdir()) if self.sys_block.exists() else []:
            value = _sysfs_serial(entry)
            if value and _normalise(value) == wanted:
                return f"/dev/{entry.name}"
        return None

    def find(self, *, serial: str | None = None, by_id: tuple[str, ...] = ()) -> str | None:
        """By-id links first (exact on real nodes), then the serial number."""
        return self.by_id(*by_id) or (self.by_serial(serial) if serial else None)


def _udev_by_serial(wanted: str) -> str | None:
    try:
        import pyudev

        for device in pyudev.Context().list_devices(subsystem="block", DEVTYPE="disk"):
            props = device.properties
            for key in ("ID_SERIAL_SHORT", "ID_SERIAL"):
                value = props.get(key)
                if value and _normalise(value) == wanted:
                    return str(device.device_node)
    except Exception as exc:  # pyudev missing or /sys unreadable: the plain scan still works
        log.debug("devices.pyudev_unavailable", error=str(exc))
    return None


def _is_block_device(path: str) -> bool:
    import stat

    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False
