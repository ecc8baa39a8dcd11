"""What the kubelet reports about its machine (SEMANTICS N7): ``status.nodeInfo`` and the well-known
architecture and OS labels, read once from the host. Charts select nodes by ``kubernetes.io/arch: amd64``,
Go's name for the architecture, which is what these report (not the kernel's ``x86_64``)."""
from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
from pathlib import Path

# uname's machine -> Go's GOARCH, the names Kubernetes' labels and nodeInfo use.
_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
           "armv6l": "arm", "i386": "386", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x",
           "riscv64": "riscv64", "mips64": "mips64", "mips64el": "mips64le", "loongarch64": "loong64"}
KUBELET_VERSION = "v1.30.0-stowage"


def go_arch(machine: str | None = None) -> str:
    machine = machine or platform.machine()
    return _GOARCH.get(machine, machine)


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    """PRETTY_NAME of os-release, as the kubelet reports it ("Debian GNU/Linux 12 (bookworm)")."""
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        for line in _read(path).splitlines():
            key, _, value = line.partition("=")
            if key == "PRETTY_NAME":
                return value.strip().strip('"')
    return "Linux"


@functools.cache
def runtime_version() -> str:
    """``runc://<version>``, in the form the kubelet gives its runtime (``containerd://1.7.2``)."""
    runc = shutil.which("runc")
    if runc is None:
        return "runc://unknown"
    try:
        first = subprocess.run([runc, "--version"], capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "runc://unknown"
    words = first[0].split() if first else []
    return f"runc://{words[2]}" if len(words) >= 3 else "runc://unknown"


@functools.cache
def node_info() -> dict[str, str]:
    uname = os.uname()
    return {
        "architecture": go_arch(uname.machine),
        "bootID": _read("/proc/sys/kernel/random/boot_id"),
        "containerRuntimeVersion": runtime_version(),
        "kernelVersion": uname.release,
        "kubeProxyVersion": "",
        "kubeletVersion": KUBELET_VERSION,
        "machineID": _read("/etc/machine-id"),
        "operatingSystem": "linux",
        "osImage": _os_image(),
        "systemUUID": _read("/sys/class/dmi/id/product_uuid").lower(),
    }


def well_known_labels(node: str) -> dict[str, str]:
    """The labels every kubelet sets on its node, the deprecated beta ones included (kubelet still sets them)."""
    arch = go_arch()
    return {"kubernetes.io/hostname": node, "kubernetes.io/os": "linux", "kubernetes.io/arch": arch,
            "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": arch}
