"""Playing a cloud's part on one node: attached disks that appear as real loop devices.

On a cloud, once the provider attached a disk to a VM the disk shows up there as
a block device with a udev link (``by-id/nvme-Amazon_Elastic_Block_Store_vol...``,
``by-id/google-NAME``, ``azure/scsi1/lunN``). Nothing attaches anything to this
machine, so ``SimulatedDisks`` does that part: it watches the VolumeAttachments
of one node, and when one turns ``attached`` (the control plane called the
cloud's attach API, moto's or Azurite's or the GCE fake's, for real) it backs
the volume with a sparse file (the same file on every attach, so data survives
a detach and an attach elsewhere), attaches a real loop device to it, and makes
the link that node's agent looks for under its ``--dev-disk-dir``. When the
attachment goes, so do the link and the loop device. The agent then formats,
mounts and unmounts for real.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

import structlog

from storage.api.quantity import quantity_value
from storage.errors import NotFound
from storage.system import loop

Obj = dict[str, Any]
LinkFor = Callable[[Obj, Obj], str]  # (pv, volume attachment) -> link path relative to dev_disk
log = structlog.get_logger(__name__)


def ebs_link(pv: Obj, va: Obj) -> str:
    volume_id = str((pv["spec"].get("awsElasticBlockStore") or {}).get("volumeID", "")).rsplit("/", 1)[-1]
    return f"by-id/nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}"


def gce_link(pv: Obj, va: Obj) -> str:
    return f"by-id/google-{(pv['spec'].get('gcePersistentDisk') or {}).get('pdName', '')}"


def azure_link(pv: Obj, va: Obj) -> str:
    return f"azure/scsi1/lun{((va.get('status') or {}).get('attachmentMetadata') or {})['lun']}"


class SimulatedDisks:
    """Context manager; ``devices`` maps PV name to the loop device attached for it right now."""

    def __init__(self, client: Any, *, node: str, dev_disk: Path, backing: Path, link_for: LinkFor) -> None:
        self.client = client
        self.node = node
        self.dev_disk = Path(dev_disk)
        self.backing = Path(backing)
        self.link_for = link_for
        self.devices: dict[str, str] = {}
        self._links: dict[str, Path] = {}  # attachment name -> link
        self._pv_of: dict[str, str] = {}  # attachment name -> PV name
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"simulated-disks-{node}", daemon=True)
        self.errors: list[str] = []

    def __enter__(self) -> "SimulatedDisks":
        self.dev_disk.mkdir(parents=True, exist_ok=True)
        self.backing.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for name in list(self._links):
            self._gone(name)

    def wait(self, predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
        """Block until ``predicate()`` holds after some change of attached devices (or the timeout)."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout=timeout)

    # ---- the watch -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                # A short server-side timeout bounds how long __exit__ waits for this thread.
                seen: set[str] = set()
                for event in self.client.watch("volumeattachments", timeout=1):
                    va = event.get("object") or {}
                    name = (va.get("metadata") or {}).get("name", "")
                    if (va.get("spec") or {}).get("nodeName") != self.node:
                        continue
                    seen.add(name)
                    attached = bool((va.get("status") or {}).get("attached"))
                    if event.get("type") == "DELETED" or not attached:
                        self._gone(name)
                    else:
                        self._attached(name, va)
                    if self._stop.is_set():
                        break
                else:
                    # Each watch opens with an ADDED per existing attachment: one not seen in a whole
                    # round was deleted while no watch was open.
                    for name in [n for n in self._links if n not in seen]:
                        self._gone(name)
            except Exception as exc:  # a restarting API server: watch again
                if self._stop.wait(0.2):
                    break
                log.info("simulated_disks.watch_error", error=str(exc))

    def _attached(self, name: str, va: Obj) -> None:
        if name in self._links:
            return
        pv_name = ((va.get("spec") or {}).get("source") or {}).get("persistentVolumeName") or ""
        try:
            pv = self.client.get("persistentvolumes", pv_name)
        except NotFound:
            return
        size = quantity_value(((pv.get("spec") or {}).get("capacity") or {}).get("storage") or "64Mi")
        image = self.backing / f"{pv_name}.img"
        if not image.exists():
            with open(image, "wb") as f:
                f.truncate(size)
        elif image.stat().st_size < size:  # the cloud grew the disk
            os.truncate(image, size)
        device = loop.attach(image)
        link = self.dev_disk / self.link_for(pv, va)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(device)
        with self._changed:
            self._links[name] = link
            self._pv_of[name] = pv_name
            self.devices[pv_name] = device
            self._changed.notify_all()
        log.info("simulated_disks.attached", node=self.node, pv=pv_name, device=device, link=str(link))

    def _gone(self, name: str) -> None:
        link = self._links.get(name)
        if link is None:
            return
        pv_name = self._pv_of.pop(name)
        device = self.devices.pop(pv_name, None)
        try:
            link.unlink()
        except FileNotFoundError:
            pass
        if device:
            try:
                loop.detach(device)
            except Exception as exc:  # still mounted (a forced detach): the kernel frees it at unmount
                self.errors.append(f"detach {device}: {exc}")
        with self._changed:
            del self._links[name]
            self._changed.notify_all()
        log.info("simulated_disks.detached", node=self.node, pv=pv_name, device=device)
