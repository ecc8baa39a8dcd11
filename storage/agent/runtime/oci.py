"""The OCI runtime configuration (config.json) of one container.

The root filesystem is an overlay of the host's ``/``: the image name is only
recorded, and the container runs the host's programs with its own writable layer.
"""
from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Any

from .envvars import EnvError

DEFAULT_CAPS = [
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
]
ALL_CAPS = DEFAULT_CAPS + [
    "DAC_READ_SEARCH", "LINUX_IMMUTABLE", "NET_BROADCAST", "NET_ADMIN", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "LEASE", "AUDIT_CONTROL", "MAC_OVERRIDE",
    "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ",
]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _cap(name: str) -> str:
    name = name.upper()
    return name[4:] if name.startswith("CAP_") else name


def capabilities(security: dict[str, Any]) -> list[str]:
    if security.get("privileged"):
        return ["CAP_" + c for c in ALL_CAPS]
    caps = (security.get("capabilities") or {})
    drop = {_cap(c) for c in caps.get("drop") or []}
    chosen = [] if "ALL" in drop else [c for c in DEFAULT_CAPS if c not in drop]
    for extra in caps.get("add") or []:
        name = _cap(extra)
        if name == "ALL":
            chosen = list(ALL_CAPS)
        elif name not in ALL_CAPS:
            raise EnvError(f"securityContext.capabilities.add: Unsupported value: {extra!r}")
        elif name not in chosen:
            chosen.append(name)
    return ["CAP_" + c for c in chosen]


def volume_mounts(container: dict[str, Any], volumes: dict[str, str],
                  staged: list[str | None] | None = None) -> list[dict[str, Any]]:
    """Bind mounts of the container's volumes; ``staged`` holds, per mount, the source
    that ``subpaths.stage_volume_mounts`` resolved safely (subPath, hostPath)."""
    mounts = []
    for i, vm in enumerate(container.get("volumeMounts") or []):
        field = f"volumeMounts[{i}]"
        name = vm.get("name", "")
        if name not in volumes:
            raise EnvError(f"{field}.name: volume {name!r} is not ready on this node")
        source = staged[i] if staged is not None and i < len(staged) else None
        if source is None:
            if vm.get("subPath") or vm.get("subPathExpr"):
                raise EnvError(f"{field}.subPath: a subPath must be resolved safely before the container starts")
            source = volumes[name]
        destination = vm.get("mountPath", "")
        if not destination.startswith("/"):
            raise EnvError(f"{field}.mountPath: Invalid value: {destination!r}: must be an absolute path")
        propagation = {"Bidirectional": "rshared", "HostToContainer": "rslave"}.get(vm.get("mountPropagation", ""), "rprivate")
        options = ["rbind", propagation, "ro" if vm.get("readOnly") else "rw"]
        mounts.append({"destination": destination, "type": "bind", "source": source, "options": options})
    return mounts


def build_config(
    *,
    pod: dict[str, Any],
    container: dict[str, Any],
    argv: list[str],
    env: list[tuple[str, str]],
    volumes: dict[str, str],
    hostname: str,
    hosts_file: Path,
    masked_dirs: list[str],
    staged_mounts: list[str | None] | None = None,
) -> dict[str, Any]:
    spec = pod.get("spec") or {}
    pod_security = spec.get("securityContext") or {}
    security = container.get("securityContext") or {}
    uid = security.get("runAsUser", pod_security.get("runAsUser", 0))
    gid = security.get("runAsGroup", pod_security.get("runAsGroup", 0))
    groups = list(pod_security.get("supplementalGroups") or [])
    if pod_security.get("fsGroup") is not None:
        groups.append(pod_security["fsGroup"])
    caps = capabilities(security)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = 1048576 if nofile == resource.RLIM_INFINITY else nofile
    env_list = [f"{k}={v}" for k, v in env]
    if not any(k == "PATH" for k, _ in env):
        env_list.insert(0, f"PATH={DEFAULT_PATH}")
    env_list.append(f"HOSTNAME={hostname}")

    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        # The pod shares the host's network namespace, so sysfs is bound, not mounted anew.
        {"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "rprivate", "nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
        {"destination": "/etc/hosts", "type": "bind", "source": str(hosts_file), "options": ["bind", "rprivate", "rw"]},
    ]
    if os.path.exists("/etc/resolv.conf"):
        mounts.append({"destination": "/etc/resolv.conf", "type": "bind", "source": os.path.realpath("/etc/resolv.conf"),
                       "options": ["bind", "rprivate", "ro"]})
    mounts.extend(volume_mounts(container, volumes, staged_mounts))

    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    memory_limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    if memory_limit is not None:
        from .envvars import parse_quantity

        resources["memory"] = {"limit": int(parse_quantity(memory_limit))}

    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": False,
            "user": {"uid": int(uid), "gid": int(gid), **({"additionalGids": [int(g) for g in groups]} if groups else {})},
            "args": argv,
            "env": env_list,
            "cwd": container.get("workingDir") or "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            # The agent's own hard limit: raising it would need privileges we may not have.
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": security.get("allowPrivilegeEscalation") is False,
        },
        "root": {"path": "rootfs", "readonly": bool(security.get("readOnlyRootFilesystem"))},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "resources": resources,
            # No network namespace: pods share the host network and each has its own loopback IP.
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
                *masked_dirs,
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }
