"""The work Stowage does for one pod volume, done by hand: the baseline the benchmarks compare against.

A 1 GiB sparse file on a direct-I/O loop device (without ``--direct-io=on`` the
loop driver caches the file and figures are too good), formatted ext4, mounted,
bound into the pod's directory; and the pod's root, an overlay of ``/`` whose
upper and work directories live on their own tmpfs, as the agent's runtime builds it.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from storage.errors import NotFound

GiB = 1 << 30

__all__ = ["GiB", "create_volume", "make_device", "mount_pod_root", "run", "wait"]


def run(*argv: str) -> str:
    """A command's stdout; CalledProcessError when it fails."""
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120).stdout.strip()


def wait(predicate: Callable[[], Any], what: str, timeout: float = 600.0, interval: float = 0.02) -> Any:
    """``predicate()``'s first truthy result; an object not there yet (NotFound, OSError) counts as "not yet"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (NotFound, OSError):
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def make_device(image: Path, size: int = GiB) -> str:
    """truncate, losetup --direct-io=on, mkfs.ext4; the loop device."""
    run("truncate", "-s", str(size), str(image))
    device = run("losetup", "--find", "--show", "--direct-io=on", str(image))
    run("mkfs.ext4", "-q", device)
    return device


def create_volume(image: Path, mount_point: Path, size: int = GiB) -> str:
    """``make_device``, then mount it; the loop device."""
    device = make_device(image, size)
    run("mount", device, str(mount_point))
    return device


def mount_pod_root(volume: Path, pod_volume: Path, scratch: Path, rootfs: Path, tmpfs_options: str = "size=256m") -> None:
    """Bind the volume into the pod's directory and build the pod's root: an overlay of / on a tmpfs."""
    run("mount", "--bind", str(volume), str(pod_volume))
    run("mount", "-t", "tmpfs", "-o", tmpfs_options, "tmpfs", str(scratch))
    (scratch / "upper").mkdir()
    (scratch / "work").mkdir()
    run("mount", "-t", "overlay", "overlay", "-o",
        f"lowerdir=/,upperdir={scratch}/upper,workdir={scratch}/work", str(rootfs))


def runc_bundle(bundle: Path, rootfs: Path, pod_volume: Path, command: str) -> None:
    """A runc bundle that runs ``/bin/sh -c command`` on ``rootfs`` with ``pod_volume`` bound at /data,
    written before the clock starts, as an image would be pulled in advance."""
    run("runc", "spec", "--bundle", str(bundle))
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["process"]["args"] = ["/bin/sh", "-c", command]
    config["process"]["terminal"] = False
    config["root"] = {"path": str(rootfs), "readonly": False}
    config["mounts"].append({"destination": "/data", "type": "bind", "source": str(pod_volume), "options": ["rbind", "rw"]})
    config_path.write_text(json.dumps(config))
