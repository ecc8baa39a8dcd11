"""The OCI runtime configuration (config.json) of one container.

The root filesystem is an overlay of the host's ``/``: the image name is only
recorded, and the container runs the host's programs with its own writable layer.
"""
from __future__ import annotations

import os
import resource
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from storage.api.ephemeral import claim_volumes
from storage.system.cgroups import own_v1_group

from .apparmor import process_profile
from .envvars import EnvError
from .seccomp import runtime_default
from .userns import RANGE_SIZE as USERNS_SIZE

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
# Capability numbers (linux/capability.h), to read the agent's own bounding set.
CAP_NUMBERS = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
    "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11,
    "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15, "SYS_MODULE": 16, "SYS_RAWIO": 17,
    "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20, "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23,
    "SYS_RESOURCE": 24, "SYS_TIME": 25, "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29,
    "AUDIT_CONTROL": 30, "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}
ALL_CAPS += ["PERFMON", "BPF", "CHECKPOINT_RESTORE"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _cap(name: str) -> str:
    name = name.upper()
    return name[4:] if name.startswith("CAP_") else name


def _own_bounding_set() -> set[str]:
    """The capabilities this agent may hand out: "all" means these, as containerd does it."""
    try:
        with open("/proc/self/status") as f:
            mask = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    except (OSError, StopIteration, ValueError):
        return set(ALL_CAPS)
    return {name for name, bit in CAP_NUMBERS.items() if mask >> bit & 1}


def capabilities(security: dict[str, Any], available: set[str] | None = None) -> list[str]:
    own = _own_bounding_set() if available is None else available  # once: not once per capability
    every = [c for c in ALL_CAPS if c in own]
    if security.get("privileged"):
        return ["CAP_" + c for c in every]
    caps = (security.get("capabilities") or {})
    drop = {_cap(c) for c in caps.get("drop") or []}
    chosen = [] if "ALL" in drop else [c for c in DEFAULT_CAPS if c not in drop]
    for extra in caps.get("add") or []:
        name = _cap(extra)
        if name == "ALL":
            chosen = list(every)
        elif name not in ALL_CAPS:
            raise EnvError(f"securityContext.capabilities.add: Unsupported value: {extra!r}")
        elif name not in chosen:
            chosen.append(name)
    return ["CAP_" + c for c in chosen]


# The volume types whose contents come from the API (Kubernetes' ReadOnlyAPIDataVolumes, since 1.10): always
# mounted read-only, readOnly or not. Writable, a pod could change or delete its own configuration or
# credentials under the agent, and fill the host's disk through them.
API_DATA_SOURCES = ("configMap", "secret", "downwardAPI", "projected")


def api_data_volumes(pod: dict[str, Any]) -> frozenset[str]:
    """Names of the pod's volumes of an API data type."""
    return frozenset(str(v.get("name")) for v in (pod.get("spec") or {}).get("volumes") or []
                     if any(v.get(k) is not None for k in API_DATA_SOURCES))


def volume_mounts(container: dict[str, Any], volumes: dict[str, str],
                  staged: list[str | None] | None = None,
                  stage: Callable[[str, bool], str] | None = None,
                  read_only: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """The container's volume binds. ``staged`` holds, per mount, the source that
    ``subpaths.stage_volume_mounts`` resolved safely (subPath, hostPath); ``stage(source, plain)``
    gives the path runc binds instead of a source (an idmapped copy of it in a user-namespaced
    pod); ``plain`` asks for no idmap. The volumes named in ``read_only`` are bound read-only
    whatever the mount says."""
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
        if stage is not None:
            # A staged copy is a detached mount: it receives no propagation from the host.
            source = stage(source, propagation != "rprivate")
        ro = bool(vm.get("readOnly")) or name in read_only
        options = ["rbind", propagation, "ro" if ro else "rw"]
        if ro:
            options += _locked_flags(source)
        mounts.append({"destination": destination, "type": "bind", "source": source, "options": options})
    return mounts


@dataclass(frozen=True)
class BlockDevice:
    """One ``volumeDevices`` entry: where it appears, the device, and the node made for the container
    (empty until ``runc.make_device_nodes`` has made it)."""
    device_path: str
    major: int
    minor: int
    read_only: bool
    node: str = ""


def block_device_sources(pod: dict[str, Any], container: dict[str, Any],
                         volumes: dict[str, str]) -> list[BlockDevice]:
    """Each of the container's ``volumeDevices``, read from the device the volume manager bound for the
    pod (a Block claim's volume)."""
    read_only = {v.get("name"): bool((v.get("persistentVolumeClaim") or {}).get("readOnly"))
                 for v in claim_volumes(pod)}
    out = []
    for i, vd in enumerate(container.get("volumeDevices") or []):
        field = f"volumeDevices[{i}]"
        name, path = vd.get("name", ""), vd.get("devicePath", "")
        if name not in volumes:
            raise EnvError(f"{field}.name: volume {name!r} is not ready on this node")
        if not path.startswith("/"):
            raise EnvError(f"{field}.devicePath: Invalid value: {path!r}: must be an absolute path")
        try:
            st = os.stat(volumes[name])
        except OSError as exc:
            raise EnvError(f"{field}.name: volume {name!r}: {exc.strerror}") from None
        if not stat.S_ISBLK(st.st_mode):
            raise EnvError(f"{field}.name: volume {name!r} is not a block device (its claim's volumeMode must be Block)")
        out.append(BlockDevice(path, os.major(st.st_rdev), os.minor(st.st_rdev), read_only.get(name, False)))
    return out


def add_block_devices(config: dict[str, Any], devices: list[BlockDevice]) -> None:
    """Each device node bound at its ``devicePath`` and allowed in the container's device cgroup
    (read-only claims: read only), as the kubelet hands a Block volume to its runtime."""
    for dev in devices:
        config["mounts"].append({"destination": dev.device_path, "type": "bind", "source": dev.node,
                                 "options": ["bind", "rprivate", "rw"]})
        config["linux"]["resources"]["devices"].append(
            {"allow": True, "type": "b", "major": dev.major, "minor": dev.minor, "access": "rm" if dev.read_only else "rwm"})


def _locked_flags(source: str) -> list[str]:
    """The source's nosuid/nodev/noexec, to repeat on a read-only remount: inside a user namespace the
    kernel refuses (EPERM) a remount that would clear a flag the mount was locked with (a projected
    volume's tmpfs is nosuid,nodev)."""
    try:
        flags = os.statvfs(source).f_flag
    except OSError:
        return []
    return [name for bit, name in ((os.ST_NOSUID, "nosuid"), (os.ST_NODEV, "nodev"), (os.ST_NOEXEC, "noexec"))
            if flags & bit]


# runc's and containerd's defaults; a privileged container gets neither.
MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
    # The host's /sys is bound with its submounts (see below); a fresh sysfs, as Kubernetes' containers
    # get, has no tracefs or debugfs in it.
    "/sys/kernel/tracing", "/sys/kernel/debug",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

RUN_AS_ROOT = "container has runAsNonRoot and image will run as root"
RUN_AS_USER_ROOT = "container's runAsUser breaks non-root policy"


def _effective(pod_security: dict[str, Any], security: dict[str, Any], key: str) -> Any:
    value = security.get(key)
    return pod_security.get(key) if value is None else value


def host_namespaces(pod: dict[str, Any]) -> list[str]:
    spec = pod.get("spec") or {}
    return [f for f in ("hostNetwork", "hostPID", "hostIPC") if spec.get(f)]


def uses_user_namespace(pod: dict[str, Any]) -> bool:
    """Whether the pod runs in a user namespace of its own: unless ``hostUsers: true``; a pod
    sharing a host namespace shares the host's users too (Kubernetes refuses both at once)."""
    spec = pod.get("spec") or {}
    host_users = spec.get("hostUsers")
    shared = host_namespaces(pod)
    if host_users is False and shared:
        raise EnvError(f"spec.hostUsers: Forbidden: must be true when {', '.join(shared)} is set")
    return host_users is not True and not shared


def check_run_as_non_root(pod: dict[str, Any], container: dict[str, Any]) -> None:
    """The kubelet's check: the host's programs (the image) run as root unless told otherwise."""
    pod_security = (pod.get("spec") or {}).get("securityContext") or {}
    security = container.get("securityContext") or {}
    if not _effective(pod_security, security, "runAsNonRoot"):
        return
    uid = _effective(pod_security, security, "runAsUser")
    if uid is None:
        raise EnvError(RUN_AS_ROOT)
    if int(uid) == 0:
        raise EnvError(RUN_AS_USER_ROOT)


def seccomp_profile(pod: dict[str, Any], container: dict[str, Any], caps: list[str]) -> dict[str, Any] | None:
    pod_security = (pod.get("spec") or {}).get("securityContext") or {}
    security = container.get("securityContext") or {}
    profile = security.get("seccompProfile") or pod_security.get("seccompProfile")
    kind = (profile or {}).get("type")
    if kind is None and security.get("privileged"):
        return None  # as containerd: a privileged container is unconfined unless it asks for a profile
    if kind in (None, "RuntimeDefault"):
        return runtime_default(caps)
    if kind == "Unconfined":
        return None
    if kind == "Localhost":
        raise EnvError("securityContext.seccompProfile.type: Unsupported value: \"Localhost\": "
                       "this node has no profile directory; use RuntimeDefault or Unconfined")
    raise EnvError(f"securityContext.seccompProfile.type: Unsupported value: {kind!r}")


# A fork bomb in one pod must not exhaust the host's process ids. Kubernetes leaves podPidsLimit
# unlimited by default; OpenShift's default is this.
CONTAINER_PIDS_LIMIT = 4096
CPU_PERIOD_US = 100_000  # the kubelet's CFS period


def cgroup_limits(container: dict[str, Any]) -> dict[str, Any]:
    """The container's memory and CPU resources as the kubelet converts them: limits.memory the memory
    limit; limits.cpu a CFS quota per 100 ms period (at least 1 ms); requests.cpu (limits.cpu when
    absent) the relative weight, 1024 shares per CPU (at least 2)."""
    from .envvars import parse_quantity

    spec = container.get("resources") or {}
    limits, requests = spec.get("limits") or {}, spec.get("requests") or {}
    out: dict[str, Any] = {}
    if limits.get("memory") is not None:
        out["memory"] = {"limit": int(parse_quantity(limits["memory"]))}
    cpu: dict[str, Any] = {}
    request = requests.get("cpu", limits.get("cpu"))
    if request is not None:
        cpu["shares"] = max(2, int(parse_quantity(request) * 1024))
    if limits.get("cpu") is not None:
        cpu["quota"] = max(1000, int(parse_quantity(limits["cpu"]) * CPU_PERIOD_US))
        cpu["period"] = CPU_PERIOD_US
    if cpu:
        out["cpu"] = cpu
    return out


def build_config(
    *,
    pod: dict[str, Any],
    container: dict[str, Any],
    argv: list[str],
    env: list[tuple[str, str]],
    volumes: dict[str, str],
    hostname: str,
    hosts_file: Path,
    userns_base: int | None = None,
    rootfs: str = "rootfs",
    stage: Callable[[str, bool], str] | None = None,
    staged_mounts: list[str | None] | None = None,
    memory_group: Path | None = None,
) -> dict[str, Any]:
    """config.json of one container. ``userns_base``: the first host id of the pod's user
    namespace (None: the host's users); ``stage`` maps a volume's host path to what runc binds;
    ``staged_mounts``: per volume mount, its safely resolved source (subPath, hostPath);
    ``memory_group``: the agent's memory group the container's processes go to (CT1, ``memcg``)."""
    spec = pod.get("spec") or {}
    pod_security = spec.get("securityContext") or {}
    security = container.get("securityContext") or {}
    check_run_as_non_root(pod, container)
    uid = _effective(pod_security, security, "runAsUser") or 0
    gid = _effective(pod_security, security, "runAsGroup") or 0
    groups = list(pod_security.get("supplementalGroups") or [])
    if pod_security.get("fsGroup") is not None:
        groups.append(pod_security["fsGroup"])
    privileged = bool(security.get("privileged"))
    caps = capabilities(security)
    seccomp = seccomp_profile(pod, container, caps)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = 1048576 if nofile == resource.RLIM_INFINITY else nofile
    env_list = [f"{k}={v}" for k, v in env]
    if not any(k == "PATH" for k, _ in env):
        env_list.insert(0, f"PATH={DEFAULT_PATH}")
    env_list.append(f"HOSTNAME={hostname}")
    host_ipc, host_pid, host_network = bool(spec.get("hostIPC")), bool(spec.get("hostPID")), bool(spec.get("hostNetwork"))

    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        # hostIPC shares the host's POSIX shared memory too, as the kubelet does.
        {"destination": "/dev/shm", "type": "bind", "source": "/dev/shm", "options": ["rbind", "rprivate", "rw"]}
        if host_ipc else
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        # The pod shares the host's network namespace, so sysfs is bound, not mounted anew. The bind
        # brings the host's submounts (cgroup hierarchies, tracefs): "rro" makes every one of them
        # read-only too, or a pod with the host's users could raise its own limits or freeze others.
        {"destination": "/sys", "type": "bind", "source": "/sys",
         "options": ["rbind", "rprivate", "nosuid", "noexec", "nodev", "ro", *([] if privileged else ["rro"])]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
        {"destination": "/etc/hosts", "type": "bind", "source": str(hosts_file), "options": ["bind", "rprivate", "rw"]},
    ]
    if not host_ipc:  # a message queue filesystem belongs to an IPC namespace
        mounts.insert(4, {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]})
    if os.path.exists("/etc/resolv.conf"):
        mounts.append({"destination": "/etc/resolv.conf", "type": "bind", "source": os.path.realpath("/etc/resolv.conf"),
                       "options": ["bind", "rprivate", "ro"]})
    mounts.extend(volume_mounts(container, volumes, staged_mounts, stage, read_only=api_data_volumes(pod)))

    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}], "pids": {"limit": CONTAINER_PIDS_LIMIT}}
    resources.update(cgroup_limits(container))

    # No network namespace: pods share the host network and each has its own loopback IP.
    namespaces = ["mount"]
    if not host_pid:
        namespaces.append("pid")
    if not host_ipc:
        namespaces.append("ipc")
    if not host_network:  # a host-network pod has the node's hostname, as in Kubernetes
        namespaces.append("uts")
    linux: dict[str, Any] = {"resources": resources, "namespaces": [{"type": t} for t in namespaces]}
    if userns_base is not None:
        linux["namespaces"].append({"type": "user"})
        mapping = [{"containerID": 0, "hostID": userns_base, "size": USERNS_SIZE}]
        linux["uidMappings"], linux["gidMappings"] = mapping, [dict(m) for m in mapping]
    if not privileged:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
    if seccomp is not None:
        linux["seccomp"] = seccomp

    config: dict[str, Any] = {
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
        "root": {"path": rootfs, "readonly": bool(security.get("readOnlyRootFilesystem"))},
        "mounts": mounts,
        "linux": linux,
    }
    if not host_network:
        config["hostname"] = hostname
    apparmor = process_profile(pod, container)
    if apparmor is not None:
        config["process"]["apparmorProfile"] = apparmor  # AA3
    blkio = blkio_home()
    groups = [p for p in (blkio, memory_group / "cgroup.procs" if memory_group is not None else None) if p is not None]
    if groups:
        config["hooks"] = {"createRuntime": [join_groups_hook(groups)]}
    return config


def blkio_home() -> Path | None:
    """The ``cgroup.procs`` of the agent's own group in a cgroup v1 blkio hierarchy, or None (cgroup v2, or
    no blkio hierarchy mounted).

    Why a pod's processes go there (PF97): Stowage sets no per-pod I/O limit, so a pod's own blkio group
    would only count its I/O, and on a loop device it costs I/O: the loop driver serves each group other
    than the root through a worker of its own that charges the group, 3-8% of 4 KiB IOPS measured here
    (benchmarks/sandboxed.py's cgroup control). The pod's cpu, memory, pids, devices and freezer groups
    are its own as before."""
    group = own_v1_group("blkio")
    return group / "cgroup.procs" if group is not None else None


def join_groups_hook(procs: list[Path]) -> dict[str, Any]:
    """An OCI createRuntime hook that moves the container's first process into each of ``procs``' groups, after
    runc has placed it in the container's own groups and before the container's command starts, so every process
    of the container is there from the start (runc has no setting to leave one hierarchy out). runc hands a
    hook the container's state on stdin, its ``pid`` among it. A failure leaves the process in the
    container's own group of that hierarchy: for blkio slower I/O on a loop device (PF97), for memory an OOM
    kill reported as ``Error`` (CT1), nothing else."""
    script = (r'IFS= read -r state || :; pid=${state#*\"pid\":}; pid=${pid%%[,\}]*}; '
              r'for procs; do echo "$pid" > "$procs" 2>/dev/null || :; done')
    return {"path": "/bin/sh", "args": ["sh", "-c", script, "join-groups", *map(str, procs)], "timeout": 10}


def stay_in_blkio_hook(procs: Path) -> dict[str, Any]:
    """PF97's hook alone: the container's first process into the agent's blkio group."""
    return join_groups_hook([procs])


# EC2: what an ephemeral container shares with the container it targets (``kubectl debug --target``): its
# processes (pid), and the IPC and UTS namespaces Stowage gives each container where Kubernetes gives them to
# the pod. A user-namespaced pod's target is joined in its user namespace too, whose id map is the pod's.
_TARGET_SHARED = ("pid", "ipc", "uts", "user")


def join_target(config: dict[str, Any], pid: int) -> None:
    """Point ``config``'s own pid, IPC, UTS (and user) namespaces at those of the process ``pid``. The id
    maps stay: runc checks a joined user namespace against them, and the target's are the pod's."""
    linux = config["linux"]
    for ns in linux["namespaces"]:
        if ns["type"] in _TARGET_SHARED:
            ns["path"] = f"/proc/{pid}/ns/{ns['type']}"

