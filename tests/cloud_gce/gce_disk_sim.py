"""Interim stand-in for tests/attach_harness.SimulatedDisks (same constructor), used only until that lands.

Plays Compute Engine's part on one node: for each VolumeAttachment of the node that turns attached, a loop
device backed by a per-volume file (the same file on re-attach) and a link under ``dev_disk``; when the
attachment goes, link and loop device go.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from storage.system import loop

Obj = dict[str, Any]


class SimulatedDisks:
    def __init__(self, client: Any, *, node: str, dev_disk: Path, backing: Path,
                 link_for: Callable[[Obj, Obj], str], size: int = 256 << 20) -> None:
        self.client, self.node, self.link_for, self.size = client, node, link_for, size
        self.dev_disk, self.backing = Path(dev_disk), Path(backing)
        self.active: dict[str, tuple[str, Path]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"disks-{node}", daemon=True)

    def __enter__(self) -> "SimulatedDisks":
        self.backing.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def _wanted(self) -> dict[str, tuple[Obj, Obj]]:
        items, _ = self.client.list("volumeattachments")
        out: dict[str, tuple[Obj, Obj]] = {}
        for va in items:
            if va["spec"]["nodeName"] == self.node and (va.get("status") or {}).get("attached"):
                name = va["spec"]["source"]["persistentVolumeName"]
                out[name] = (self.client.get("persistentvolumes", name), va)
        return out

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                wanted = self._wanted()
            except Exception:
                continue
            for name, (pv, va) in wanted.items():
                if name in self.active:
                    continue
                image = self.backing / f"{name}.img"
                if not image.exists():
                    with open(image, "wb") as f:
                        f.truncate(self.size)
                device = loop.attach(image)
                link = self.dev_disk / self.link_for(pv, va)
                link.parent.mkdir(parents=True, exist_ok=True)
                link.unlink(missing_ok=True)
                link.symlink_to(device)
                self.active[name] = (device, link)
            for name in [n for n in self.active if n not in wanted]:
                device, link = self.active.pop(name)
                link.unlink(missing_ok=True)
                loop.detach(device)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for device, link in self.active.values():
            link.unlink(missing_ok=True)
            loop.detach(device)
        self.active.clear()
