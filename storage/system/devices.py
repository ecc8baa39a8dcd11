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
BY_ID = Path("/dev/disk/by-id")


def _normalise(serial: str) -> str:
    # EBS NVMe serials are "vol0123..." while the API says "vol-0123...".
    return serial.strip().replace("-", "").lower()


def _sysfs_serial(name: str) -> str | None:
    for candidate in (SYS_BLOCK / name / "serial", SYS_BLOCK / name / "device" / "serial"):
        try:
            return candidate.read_text().strip()
        except OSError:
            continue
    return None


def find_by_serial(serial: str) -> str | None:
    """The ``/dev/...`` node of the whole disk whose serial is ``serial``."""
    wanted = _normalise(serial)
    try:
        import pyudev

        context = pyudev.Context()
        for device in context.list_devices(subsystem="block", DEVTYPE="disk"):
            props = device.properties
            for key in ("ID_SERIAL_SHORT", "ID_SERIAL"):
                value = props.get(key)
                if value and _normalise(value) == wanted:
                    return device.device_node
            attr = device.attributes.get("serial") if hasattr(device, "attributes") else None
            if attr:
                text = attr.decode() if isinstance(attr, bytes) else str(attr)
                if _normalise(text) == wanted:
                    return device.device_node
    except Exception as exc:  # pyudev missing or /sys unreadable: the plain scan still works
        log.debug("devices.pyudev_unavailable", error=str(exc))
    for entry in sorted(SYS_BLOCK.iterdir()) if SYS_BLOCK.exists() else []:
        value = _sysfs_serial(entry.name)
        if value and _normalise(value) == wanted:
            return f"/dev/{entry.name}"
    return None


def find_by_id(link_name: str) -> str | None:
    """Resolve ``/dev/disk/by-id/<link_name>`` when udev made it."""
    link = BY_ID / link_name
    if link.exists():
        return os.path.realpath(link)
    return None


def find_device(*, serial: str | None = None, by_id: tuple[str, ...] = ()) -> str | None:
    """Try by-id links first (exact on real nodes), then the serial number."""
    for name in by_id:
        found = find_by_id(name)
        if found:
            return found
    if serial:
        return find_by_serial(serial)
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
        """A whole disk whose sysfs serial is ``serial`` (dashes and case ignored)."""
        if self.sys_block == SYS_BLOCK:
            return find_by_serial(serial)
        wanted = _normalise(serial)
        for entry in sorted(self.sys_block.iterdir()) if self.sys_block.exists() else []:
            for candidate in (entry / "serial", entry / "device" / "serial"):
                try:
                    value = candidate.read_text()
                except OSError:
                    continue
                if _normalise(value) == wanted:
                    return f"/dev/{entry.name}"
        return None


def _is_block_device(path: str) -> bool:
    import stat

    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False
