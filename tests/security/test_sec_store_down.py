"""`stowage down` reports only what it really released (issue 8, item 7).

A loop device still held open elsewhere is only marked for auto-clear by
`losetup --detach`; it used to be reported as released anyway.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sec_store_util import serve_env
from support import need_programs, need_root, stowage_executable

from storage.system import loop, mounts


def test_down_reports_a_busy_loop_device_as_left_not_released(tmp_path: Path) -> None:
    need_root("attaches loop devices and mounts a tmpfs")
    need_programs("losetup", "mount", "umount")
    data_dir = tmp_path / "data"
    (data_dir / "pools").mkdir(parents=True)
    images = []
    for name in ("free.img", "busy.img"):
        image = data_dir / "pools" / name
        with open(image, "wb") as f:
            f.truncate(8 << 20)
        images.append(image)
    mount_point = data_dir / "agent" / "mnt"
    mount_point.mkdir(parents=True)
    devices: list[str] = []
    holder: int | None = None
    try:
        devices = [loop.attach(image, direct_io=False) for image in images]
        holder = os.open(devices[1], os.O_RDONLY)  # someone else still uses the second device
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "stowage-down-test", str(mount_point)], check=True)

        result = subprocess.run([stowage_executable(), "down", "--data-dir", str(data_dir)],
                                capture_output=True, text=True, env=serve_env(tmp_path), timeout=120)
        assert "released 1 mount(s) and 1 loop device(s)" in result.stdout, result.stdout + result.stderr
        assert result.returncode == 1
        # The error (after the command's log lines on stderr) names the busy device and not the released one.
        error = result.stderr[result.stderr.index("error: these could not be released"):]
        assert devices[1] in error and devices[0] not in error, result.stderr
        assert mounts.mounts_under(data_dir) == []
        assert devices[0] not in loop.loops_under(data_dir)
        assert loop.loops_under(data_dir).get(devices[1]) == str(images[1].resolve())
    finally:
        if holder is not None:
            os.close(holder)  # auto-clear now detaches it
        for device in devices:
            if device in loop.loops_under(data_dir):
                subprocess.run(["losetup", "--detach", device], check=False)
        if mounts.mounts_under(data_dir):
            subprocess.run(["umount", str(mount_point)], check=False)
