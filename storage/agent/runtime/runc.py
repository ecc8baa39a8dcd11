"""runc, run under a small shell shim that outlives the agent and records the exit code."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

# The shim waits for `runc run` (which waits for the container) and writes the exit
# status atomically; it runs in its own session so an agent restart leaves it alone.
_SHIM = '''
exit_file=$1; shift
"$@"
rc=$?
echo "$rc" > "$exit_file.tmp" && mv "$exit_file.tmp" "$exit_file"
'''


class Runc:
    def __init__(self, root: Path, binary: str = "runc") -> None:
        self.root = root
        self.binary = binary
        root.mkdir(parents=True, exist_ok=True)

    def _cmd(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.root), *args]

    def start(self, container_id: str, bundle: Path, log_path: Path, exit_path: Path) -> subprocess.Popen[bytes]:
        self.delete(container_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            return subprocess.Popen(
                ["/bin/sh", "-c", _SHIM, "stowage-shim", str(exit_path),
                 *self._cmd("run", "--bundle", str(bundle), container_id)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True, close_fds=True, cwd=str(bundle),
            )

    def state(self, container_id: str) -> dict[str, Any] | None:
        result = subprocess.run(self._cmd("state", container_id), capture_output=True, timeout=30)
        if result.returncode != 0:
            return None
        return json.loads(result.stdout)

    def list(self) -> list[dict[str, Any]]:
        result = subprocess.run(self._cmd("list", "--format", "json"), capture_output=True, timeout=30)
        if result.returncode != 0 or not result.stdout.strip():
            return []
        return json.loads(result.stdout) or []

    def kill(self, container_id: str, signal: str) -> bool:
        result = subprocess.run(self._cmd("kill", container_id, signal), capture_output=True, timeout=30)
        return result.returncode == 0

    def delete(self, container_id: str) -> None:
        subprocess.run(self._cmd("delete", "--force", container_id), capture_output=True, timeout=30)

    def exec(self, container_id: str, argv: list[str], timeout: float) -> tuple[int, bytes]:
        """Run argv inside the container; (-1, reason) on timeout."""
        proc = subprocess.Popen(self._cmd("exec", container_id, *argv), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.communicate()
            return -1, b"command timed out"
        return proc.returncode, out


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise OSError(f"{' '.join(argv)}: {result.stderr.strip()}")


def is_mountpoint(path: Path) -> bool:
    return os.path.ismount(path)


def mount_rootfs(container_dir: Path, scratch_size: str) -> Path:
    """Overlay of / with its writable layer on a private tmpfs; returns the rootfs path."""
    scratch, rootfs = container_dir / "scratch", container_dir / "rootfs"
    scratch.mkdir(parents=True, exist_ok=True)
    rootfs.mkdir(exist_ok=True)
    if not is_mountpoint(scratch):
        _run("mount", "-t", "tmpfs", "-o", f"size={scratch_size},mode=0700", "tmpfs", str(scratch))
    (scratch / "upper").mkdir(exist_ok=True)
    (scratch / "work").mkdir(exist_ok=True)
    if not is_mountpoint(rootfs):
        _run("mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir=/,upperdir={scratch / 'upper'},workdir={scratch / 'work'}", str(rootfs))
    return rootfs


def unmount_rootfs(container_dir: Path) -> None:
    for sub in ("rootfs", "scratch"):
        path = container_dir / sub
        if is_mountpoint(path):
            result = subprocess.run(["umount", str(path)], capture_output=True, text=True, timeout=60)
            if result.returncode != 0:
                log.warning("unmount busy, detaching lazily", path=str(path), error=result.stderr.strip())
                subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=60)
