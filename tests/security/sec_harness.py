"""Real runc pods for the attack tests: a PodRuntime on a temp data dir, cleaned up even on failure."""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from support import cleanup_tree

from storage.agent.runtime import PodRuntime, StaticEnvSources

NO_SOURCES = StaticEnvSources({}, {})
DEFAULT_CAPS = ["CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
                "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"]
CAP_BITS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
            "SETUID": 7, "SETPCAP": 8, "NET_BIND_SERVICE": 10, "NET_RAW": 13, "SYS_CHROOT": 18, "SYS_ADMIN": 21,
            "MKNOD": 27, "AUDIT_WRITE": 29, "SETFCAP": 31}


def need_runc() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts, namespaces)")
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")


def cap_mask(names: list[str]) -> int:
    return sum(1 << CAP_BITS[n] for n in names)


def make_pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    for c in containers:
        c.setdefault("image", "debian:12")
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4())},
            "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 0, "restartPolicy": "Never",
                     "containers": containers, **spec}}


def container_state(status: dict[str, Any], name: str = "c") -> dict[str, Any]:
    return next(c for c in status["containerStatuses"] if c["name"] == name)["state"]


class SecHarness:
    """One PodRuntime whose data dir lives under ``parent`` (the host's disk, /root, /tmp...)."""

    def __init__(self, parent: str) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="stowage-sec-", dir=parent))
        self.data_dir = self.base / "data"
        self.changed = threading.Condition()
        ip_range = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24"
        self.rt = PodRuntime(self.data_dir, "node-1", ip_range=ip_range, on_status_change=self._changed,
                             backoff_base=0.3, backoff_max=2.0)

    def _changed(self, uid: str) -> None:
        with self.changed:
            self.changed.notify_all()

    def volume(self, name: str) -> Path:
        """An emptyDir-like volume directory of the data dir (on the host's own disk when the data dir is)."""
        path = self.data_dir / "pods" / "volumes-for-tests" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def run(self, pod: dict[str, Any], volumes: dict[str, str] | None = None) -> str:
        self.rt.sync_pod(pod, volumes or {}, NO_SOURCES, [])
        return str(pod["metadata"]["uid"])

    def wait(self, uid: str, predicate: Callable[[dict[str, Any]], bool], what: str,
             timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            status = self.rt.pod_status(uid)
            if status is not None and predicate(status):
                return status
            with self.changed:
                self.changed.wait(0.5)
        raise AssertionError(f"timed out waiting for {what}; last status: {status}")

    def wait_exit(self, uid: str, name: str = "c") -> dict[str, Any]:
        status = self.wait(uid, lambda s: "terminated" in container_state(s, name), f"{name} to exit")
        return dict(container_state(status, name)["terminated"])

    def wait_running(self, uid: str, name: str = "c") -> int:
        """The host pid of the container's first process."""
        self.wait(uid, lambda s: "running" in container_state(s, name), f"{name} to run")
        state = self.rt.settings.runc.state(f"stowage-{uid}-{name}")
        assert state and state.get("pid"), f"runc has no state for {name}: {state}"
        return int(state["pid"])

    def logs(self, uid: str, name: str = "c") -> str:
        return "\n".join(self.rt.logs(uid, name))

    def cleanup(self) -> None:
        for uid in list(self.rt.running_pods()):
            try:
                self.rt.kill_pod(uid, 0)
                self.rt.remove_pod(uid)
            except Exception:
                pass
        self.rt.close()
        cleanup_tree(self.base)  # containers, mounts, loops, the dir, and the run dir's bundles and claims


def probe_script(checks: dict[str, Any]) -> list[str]:
    """argv of a python in the pod that runs ``ATTACK`` with ``checks`` and prints JSON."""
    return ["python3", "-c", ATTACK, json.dumps(checks)]


# Runs inside the pod (the host's python3): tries to reveal and read each target, prints the outcome.
ATTACK = r'''
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
checks = json.loads(sys.argv[1])
out = {}

def umount(path):
    return 0 if libc.umount2(path.encode(), 2) == 0 else ctypes.get_errno()

for path in checks.get("umount", []):
    out["umount " + path] = [umount(path) for _ in range(3)]
for path in checks.get("list", []):
    try:
        out["list " + path] = sorted(os.listdir(path))
    except OSError as exc:
        out["list " + path] = "error %d" % exc.errno
for path in checks.get("read", []):
    try:
        with open(path, "rb") as f:
            out["read " + path] = f.read(200).decode("latin-1")
    except OSError as exc:
        out["read " + path] = "error %d" % exc.errno
if "shocker" in checks:
    import struct
    mount_fd = os.open(checks["shocker"], os.O_RDONLY | os.O_DIRECTORY)
    handle = ctypes.create_string_buffer(struct.pack("IiII", 8, 1, 2, 0))  # ext4 root: inode 2, generation 0
    fd = libc.open_by_handle_at(mount_fd, handle, os.O_RDONLY | os.O_DIRECTORY)
    if fd < 0:
        out["shocker"] = "error %d" % ctypes.get_errno()
    else:
        out["shocker"] = sorted(os.listdir(fd))
print("RESULT " + json.dumps(out), flush=True)
'''


def result(logs: str) -> dict[str, Any]:
    for line in logs.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT "):]))
    raise AssertionError(f"the probe printed no result: {logs}")
