"""Kubernetes' Pod Security Standards: the privileged, baseline and restricted levels as pure checks.

Mirrors the checks of Kubernetes' pod-security-admission (policy version
``latest`` as of Kubernetes 1.36, which resolves to policy v1.35), with
their check IDs, forbidden reasons and details word for word, so a message
reads as kubectl users know it. Works on wire-form dicts (a pod, or a
workload's pod template) so the API server, the command line and the agent
can all use it. Version-pinned labels (``...-version: v1.N``) get the rules
of that version where Kubernetes' rules changed by version.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

from storage.errors import NotFound

PRIVILEGED, BASELINE, RESTRICTED = "privileged", "baseline", "restricted"
LEVELS = (PRIVILEGED, BASELINE, RESTRICTED)
LATEST = "latest"
MODES = ("enforce", "audit", "warn")
LABEL_PREFIX = "pod-security.kubernetes.io/"

# "latest" is the newest policy version any check knows: v1.35 on Kubernetes 1.36.
_LATEST_VERSION = (1, 35)
_VERSION = re.compile(r"^v1\.(0|[1-9][0-9]*)$")

_CAPABILITIES_BASELINE = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
_SYSCTLS: tuple[tuple[tuple[int, int], frozenset[str]], ...] = (
    ((1, 0), frozenset({"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
                        "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start"})),
    ((1, 27), frozenset({"net.ipv4.ip_local_reserved_ports"})),
    ((1, 29), frozenset({"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                         "net.ipv4.tcp_keepalive_probes"})),
    ((1, 32), frozenset({"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"})),
)
_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
_SELINUX_TYPES_1_31 = _SELINUX_TYPES | {"container_engine_t"}
_RESTRICTED_VOLUMES_ALLOWED = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image", "persistentVolumeClaim", "projected", "secret",
})
# Volume sources Kubernetes names in its "restricted volume types" detail; anything else is "unknown".
_KNOWN_VOLUME_TYPES = frozenset({
    "hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi", "glusterfs", "rbd",
    "flexVolume", "cinder", "cephfs", "flocker", "fc", "azureFile", "vsphereVolume", "quobyte", "azureDisk",
    "photonPersistentDisk", "portworxVolume", "scaleIO", "storageos",
})
_APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"


@dataclass(frozen=True)
class LevelVersion:
    level: str
    version: str = LATEST  # "latest" or "v1.N"

    def __str__(self) -> str:
        return f"{self.level}:{self.version}"

    @property
    def minor(self) -> tuple[int, int]:
        if self.version == LATEST:
            return _LATEST_VERSION
        major, minor = self.version[1:].split(".")
        return min((int(major), int(minor)), _LATEST_VERSION)


@dataclass(frozen=True)
class Policy:
    enforce: LevelVersion
    audit: LevelVersion
    warn: LevelVersion


@dataclass(frozen=True)
class Violation:
    check: str  # Kubernetes' check ID; results are ordered by it, as Kubernetes orders them
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason} ({self.detail})" if self.detail else self.reason


@dataclass(frozen=True)
class LabelError:
    label: str
    value: str
    detail: str

    @property
    def field(self) -> str:
        return f"metadata.labels[{self.label}]"


def parse_policy(labels: Mapping[str, Any] | None, default: LevelVersion) -> tuple[Policy, list[LabelError]]:
    """The policy a namespace's labels ask for, and what is wrong with them.

    As Kubernetes does: a bad level fails closed (restricted), a bad version
    means latest, a missing label means the server's default.
    """
    labels = labels or {}
    errors: list[LabelError] = []
    modes: dict[str, LevelVersion] = {}
    for mode in MODES:
        level, version = default.level, default.version
        level_label, version_label = f"{LABEL_PREFIX}{mode}", f"{LABEL_PREFIX}{mode}-version"
        if level_label in labels:
            value = str(labels[level_label])
            if value in LEVELS:
                level = value
            else:
                level = RESTRICTED
                errors.append(LabelError(level_label, value, f"must be one of {', '.join(LEVELS)}"))
        if version_label in labels:
            value = str(labels[version_label])
            if value == LATEST or _VERSION.match(value):
                version = value
            else:
                version = LATEST
                errors.append(LabelError(version_label, value, 'must be "latest" or "v1.x"'))
        modes[mode] = LevelVersion(level, version)
    return Policy(modes["enforce"], modes["audit"], modes["warn"]), errors


# ---- helpers -------------------------------------------------------------------------------

def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Init containers, containers, ephemeral containers: Kubernetes' visiting order."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in _list(spec.get(key)):
            if isinstance(container, dict):
                yield container


def _name(container: dict[str, Any]) -> str:
    return str(container.get("name", ""))


def _sc(container: dict[str, Any]) -> dict[str, Any]:
    return _dict(container.get("securityContext"))


def _pod_sc(spec: dict[str, Any]) -> dict[str, Any]:
    return _dict(spec.get("securityContext"))


def _join_quote(items: Iterable[str]) -> str:
    items = list(items)
    return '"' + '", "'.join(items) + '"' if items else ""


def _plural(singular: str, plural: str, count: int) -> str:
    return singular if count == 1 else plural


def _containers_phrase(names: list[str]) -> str:
    return f"{_plural('container', 'containers', len(names))} {_join_quote(names)}"


def _user_namespace_pod(spec: dict[str, Any]) -> bool:
    return spec.get("hostUsers") is False


def _windows(spec: dict[str, Any]) -> bool:
    return _dict(spec.get("os")).get("name") == "windows"


Check = Callable[[dict[str, Any], dict[str, Any], tuple[int, int]], Violation | None]


# ---- baseline ------------------------------------------------------------------------------

def _host_namespaces(meta: dict[str, Any], spec: dict[str, Any], v: tuple[int, int]) -> Violation | None:
    used = sorted(k for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k) is True)
    if not used:
        return None
    return Violation("hostNamespaces", "host namespaces", ", ".join(f"{k}=true" for k in used))


def _privileged(meta: dict[str, Any], spec: dict[str, Any], v: tuple[int, int]) -> Violation | None:
    bad = [_name(c) for c in _containers(spec) if _sc(c).get("privileged") is True]
    if not bad:
        return None
    return Violation("privileged", "privileged", f"{_containers_phrase(bad)} must not set securityContext.privileged=true")


def _capabilities_baseline(meta: dict[str, Any], spec: dict[str, Any], v: tuple[int, int]) -> Violation | None:
    bad: list[str] = []
    caps: set[str] = set()
    for c in _containers(spec):
        added = [str(a) for a in _list(_dict(_sc(c).get("capabilities")).get("add"))]
        extra = {a for a in added if a not in _CAPABILITIES_BASELINE}
        if extra:
            bad.append(_name(c))
            caps |= extra
    if not bad:
        return None
    return Violation("capabilities_baseline", "non-default capabilities",
                     f"{_containers_phrase(bad)} must not include {_join_quote(sorted(caps))} in securityContext.capabilities.add")


def _host_path_volumes(meta: dict[str, Any], spec: dict[str, Any], v: tuple[int, int]) -> Violation | None:
    bad = [str(vol.get("name", "")) for vol in _list(spec.get("volumes")) if isinstance(vol, dict) and vol.get("hostPath") is not None]
    if not bad:
        return None
    return Violation("hostPathVolumes", "hostPath volumes", f"{_plural('volume', 'volumes', len(bad))} {_join_quote(bad)}")


def _host_ports(meta: dict[str, Any], spec: dict[str, Any], v: tuple[int, int]) -> Violation | None:
    bad: list[str] = []
    ports: set[str] = set()
    for c in _containers(spec):
        used = [p.get("hostPort") for p in _list(c.get("ports")) if isinstance(p, dict) and p.get("hostPort") not in (None, 0)]
        if used:
            bad.append(_name(c))
            ports |= {str(p) for p in used}
    if not bad:
        return None
    listed = sorted(ports)  # Kubernetes sorts them as strings
    return Violation("hostPorts", "hostPort",
                     f"{_containers_phrase(bad)} {_plural('uses', 'use', len(bad))} "
                     f"{_plural('hostPort', 'hostPorts', len(listed))} {', '.join(listed)}")


def _app_armor(meta: dict[str, Any], spec: dict[str, Any], v: tuple[int, int]) -> Violation | None:
    setters: list[str] = []
    values: set[str] = set()
    allowed_types = ("RuntimeDefault", "Localhost")
    pod_profile = _pod_sc(spec).get("appArmorProfile")
    if isinstance(pod_profile, dict) and pod_profile.get("type") not in allowed_types:
        setters.append("pod")
        values.add(str(pod_profile.get("type") or ""))
    bad: list[str] = []
    for c in _containers(spec):
        profile = _sc(c).get("appArmorProfile")
        if isinstance(profile, dict) and profile.get("type") not in allowed_types:
            bad.append(_name(c))
            values.add(str(profile.get("type") or ""))
    if bad:
        setters.append(_containers_phrase(bad))
    annotations = []
    for key, value in _dict(meta.get("annotations")).items():
        text = str(value)
        if str(key).startswith(_APPARMOR_ANNOTATION_PREFIX) and not (
            text == "" or text == "runtime/default" or text.startswith("localhost/")
        ):
            annotations.append(f'{key}="{text}"')
    listed = sorted(values)
    if annotations:
        listed += sorted(annotations)
        setters.append(_plural("annotation", "annotations", len(annotations)))
    if not setters:
        return None
    return Violation("appArmorProfile", _plural("forbidden AppArmor profile", "forbidden AppArmor profiles", len(listed)),
                     f"{' and '.join(setters)} must not set AppArmor profile type to {_join_quote(listed)}")


def _se_linux(meta: dict[str, Any], spec: dict[str, Any], v: tuple[int, int]) -> Violation | None:
    allowed = _SELINUX_TYPES_1_31 if v >= (1, 31) else _SELINUX_TYPES
    bad_types: set[str] = set()
    flags = {"user": False, "role": False}

    def valid(options: dict[str, Any]) -> bool:
        ok = True
        kind = str(options.get("type") or "")
        if kind not in allowed:
            ok = False
            bad_types.add(kind)
        for key in ("user", "role"):
            if options.get(key):
                ok = False
                flags[key] = True
        return ok

    setters: list[str] = []
    pod_options = _pod_sc(spec).get("seLinuxOptions")
    if isinstance(pod_options, dict) and not valid(pod_options):
        setters.append("pod")
    bad = [_name(c) for c in _containers(spec)
           if isinstance(_sc(c).get("seLinuxOptions"), dict) and not valid(_sc(c)["seLinuxOptions"])]
    if bad:
        setters.append(_containers_phrase(bad))
    if not setters:
        return None
    data: list[str] = []
    if bad_types:  # Kubernetes names the user and role only alongside a bad type
        data.append(f"{_plural('type', 'types', len(bad_types))} {_join_quote(sorted(bad_types))}")
        if flags["user"]:
            data.append("user may not be set")
        if flags["role"]:
            data.append("role may not be set")
    return Violation("seLinuxOptions", "seLinuxOptions",
                     f"{' and '.join(setters)} set forbidden securityContext.seLinuxOptions: {'; '.join(data)}")


def _proc_mount_any(spec: dict[str, Any], check_id: str) -> Violation | None:
    bad: list[str] = []
    kinds: set[str] = set()
    for c in _containers(spec):
        proc_mount = _sc(c).get("procMount")
        if proc_mount is not None and proc_mount != "Default":
            bad.append(_name(c))
            kinds.add(str(proc_mount))
    if not bad:
        return None
    return Violation(check_id, "procMount",
                     f"{_containers_phrase(bad)} must not set securityContext.procMount to {_join_quote(sorted(kinds))}")


def _proc_mount_baseline(meta: dict[str, Any], spec: dict[str, Any], v: tuple[int, int]) -> Violation | None:
    if v >= (1, 35) and _user_namespace_pod(spec):
        return None  # an unmasked /proc inside a user namespace exposes nothing of the host's (KEP-127)
    return _proc_mount_any(spec, "procMount")


def _valid_seccomp(profile: Any) -> bool:
    return _dict(profile).get("type") in ("RuntimeDefault", "Localhost")


def _seccomp_baseline(meta: dict[str, Any], spec: dict[str, Any], v: tuple[int, int]) -> Violation | None:
    setters: list[str] = []
    values: set[str] = set()
    pod_profile = _pod_sc(spec).get("seccompProfile")
    if isinstance(pod_profile, dict) and not _valid_seccomp(pod_profile):
        setters.append("pod")
        values.add(str(pod_profile.get("type") or ""))
    bad: list[str] = []
    for c in _containers(spec):
        profile = _sc(c).get("seccompProfile")
        if isinstance(profile, dict) and not _valid_seccomp(profile):
            bad.append(_name(c))
            values.add(str(profile.get("type") or ""))
    if bad:
        setters.append(_containers_phrase(bad))
    if not setters:
        return None
    return Violation("seccompProfile_baseline", "seccompProfile",
                     f"{' and '.join(setters)} must not set securityContext.seccompProfile.type to {_join_quote(sorted(values))}")


def _sysctls(meta: dict[str, Any], spec: dict[str, Any], v: tuple[int, int]) -> Violation | None:
    allowed: set[str] = set()
    for since, names in _SYSCTLS:
        if v >= since:
            allowed |= names
    bad = [str(s.get("name", "")) for s in _list(_pod_sc(spec).get("sysctls"))
           if isinstance(s, dict) and s.get("name") not in allowed]
    if not bad:
        return None
    return Violation("sysctls", "forbidden sysctls", ", ".join(bad))


def _host_process(meta: dict[str, Any], spec: dict[str, Any], v: tuple[int, int]) -> Violation | None:
    def set_true(sc: dict[str, Any]) -> bool:
        return _dict(sc.get("windowsOptions")).get("hostProcess") is True

    setters = ["pod"] if set_true(_pod_sc(spec)) else []
    bad = [_name(c) for c in _containers(spec) if set_true(_sc(c))]
    if bad:
        setters.append(_containers_phrase(bad))
    if not setters:
        return None
    return Violation("windowsHostProcess", "hostProcess",
                     f"{' and '.join(setters)} must not set securityContext.windowsOptions.hostProcess=true")


def _host_probes(meta: dict[str, Any], spec: dict[str, Any], v: tuple[int, int]) -> Violation | None:
    if v < (1, 34):
        return None
    bad: set[str] = set()
    hosts: set[str] = set()
    for c in _containers(spec):
        handlers = [_dict(c.get(p)) for p in ("livenessProbe", "readinessProbe", "startupProbe")]
        lifecycle = _dict(c.get("lifecycle"))
        handlers += [_dict(lifecycle.get(h)) for h in ("postStart", "preStop")]
        for handler in handlers:
            for action in ("httpGet", "tcpSocket"):
                host = _dict(handler.get(action)).get("host")
                if host:
                    bad.add(_name(c))
                    hosts.add(str(host))
    if not bad:
        return None
    return Violation("hostProbesAndHostLifecycle", "probe or lifecycle host",
                     f"{_plural('container', 'containers', len(bad))} {_join_quote(sorted(bad))} "
                     f"{_plural('uses', 'use', len(bad))} "
                     f"{_plural('probe or lifecycle host', 'probe or lifecycle hosts', len(hosts))} {_join_quote(sorted(hosts))}")


# ---- restricted ----------------------------------------------------------------------------

def _restricted_volumes(meta: dict[str, Any], spec: dict[str, Any], v: tuple[int, int]) -> Violation | None:
    bad: list[str] = []
    kinds: set[str] = set()
    for vol in _list(spec.get("volumes")):
        if not isinstance(vol, dict):
            continue
        sources = {k for k, val in vol.items() if k != "name" and val is not None}
        if sources & _RESTRICTED_VOLUMES_ALLOWED:
            continue
        bad.append(str(vol.get("name", "")))
        known = sorted(sources & _KNOWN_VOLUME_TYPES)
        kinds.add(known[0] if known else "unknown")
    if not bad:
        return None
    return Violation("restrictedVolumes", "restricted volume types",
                     f"{_plural('volume', 'volumes', len(bad))} {_join_quote(bad)} {_plural('uses', 'use', len(bad))} "
                     f"{_plural('restricted volume type', 'restricted volume types', len(kinds))} {_join_quote(sorted(kinds))}")


def _allow_privilege_escalation(meta: dict[str, Any], spec: dict[str, Any], v: tuple[int, int]) -> Violation | None:
    if v >= (1, 25) and _windows(spec):
        return None
    bad = [_name(c) for c in _containers(spec) if _sc(c).get("allowPrivilegeEscalation") is not False]
    if not bad:
        return None
    return Violation("allowPrivilegeEscalation", "allowPrivilegeEscalation != false",
                     f"{_containers_phrase(bad)} must set securityContext.allowPrivilegeEscalation=false")


def _run_as_non_root(meta: dict[str, Any], spec: dict[str, Any], v: tuple[int, int]) -> Violation | None:
    if v >= (1, 35) and _user_namespace_pod(spec):
        return None  # root in a user namespace is not root on the host (KEP-127)
    setters: list[str] = []
    pod_value = _pod_sc(spec).get("runAsNonRoot")
    pod_non_root = pod_value is True
    if pod_value is False:
        setters.append("pod")
    explicit: list[str] = []
    implicit: list[str] = []
    for c in _containers(spec):
        value = _sc(c).get("runAsNonRoot")
        if value is not None:
            if value is False:
                explicit.append(_name(c))
        elif not pod_non_root:
            implicit.append(_name(c))
    if explicit:
        setters.append(_containers_phrase(explicit))
    if setters:
        return Violation("runAsNonRoot", "runAsNonRoot != true",
                         f"{' and '.join(setters)} must not set securityContext.runAsNonRoot=false")
    if implicit:
        return Violation("runAsNonRoot", "runAsNonRoot != true",
                         f"pod or {_containers_phrase(implicit)} must set securityContext.runAsNonRoot=true")
    return None


def _run_as_user(meta: dict[str, Any], spec: dict[str, Any], v: tuple[int, int]) -> Violation | None:
    if v < (1, 23) or (v >= (1, 35) and _user_namespace_pod(spec)):
        return None
    setters = ["pod"] if _is_zero(_pod_sc(spec).get("runAsUser")) else []
    bad = [_name(c) for c in _containers(spec) if _is_zero(_sc(c).get("runAsUser"))]
    if bad:
        setters.append(_containers_phrase(bad))
    if not setters:
        return None
    return Violation("runAsUser", "runAsUser=0", f"{' and '.join(setters)} must not set runAsUser=0")


def _is_zero(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value == 0


def _seccomp_restricted(meta: dict[str, Any], spec: dict[str, Any], v: tuple[int, int]) -> Violation | None:
    if v >= (1, 25) and _windows(spec):
        return None
    setters: list[str] = []
    values: set[str] = set()
    pod_profile = _pod_sc(spec).get("seccompProfile")
    pod_set = False
    if isinstance(pod_profile, dict):
        if _valid_seccomp(pod_profile):
            pod_set = True
        else:
            setters.append("pod")
            values.add(str(pod_profile.get("type") or ""))
    explicit: list[str] = []
    implicit: list[str] = []
    for c in _containers(spec):
        profile = _sc(c).get("seccompProfile")
        if isinstance(profile, dict):
            if not _valid_seccomp(profile):
                explicit.append(_name(c))
                values.add(str(profile.get("type") or ""))
        elif not pod_set:
            implicit.append(_name(c))
    if explicit:
        setters.append(_containers_phrase(explicit))
    if setters:
        return Violation("seccompProfile_restricted", "seccompProfile",
                         f"{' and '.join(setters)} must not set securityContext.seccompProfile.type to {_join_quote(sorted(values))}")
    if implicit:
        return Violation("seccompProfile_restricted", "seccompProfile",
                         f'pod or {_containers_phrase(implicit)} must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"')
    return None


def _capabilities_restricted(meta: dict[str, Any], spec: dict[str, Any], v: tuple[int, int]) -> Violation | None:
    if v < (1, 22):
        return _capabilities_baseline(meta, spec, v)
    if v >= (1, 25) and _windows(spec):
        return None
    missing_drop: list[str] = []
    adding: list[str] = []
    caps: set[str] = set()
    for c in _containers(spec):
        capabilities = _sc(c).get("capabilities")
        if not isinstance(capabilities, dict):
            missing_drop.append(_name(c))
            continue
        if "ALL" not in [str(d) for d in _list(capabilities.get("drop"))]:
            missing_drop.append(_name(c))
        extra = {str(a) for a in _list(capabilities.get("add")) if a != "NET_BIND_SERVICE"}
        if extra:
            adding.append(_name(c))
            caps |= extra
    details: list[str] = []
    if missing_drop:
        details.append(f'{_containers_phrase(missing_drop)} must set securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f"{_containers_phrase(adding)} must not include {_join_quote(sorted(caps))} in securityContext.capabilities.add")
    if not details:
        return None
    return Violation("capabilities_restricted", "unrestricted capabilities", "; ".join(details))


def _proc_mount_restricted(meta: dict[str, Any], spec: dict[str, Any], v: tuple[int, int]) -> Violation | None:
    return _proc_mount_any(spec, "procMount_restricted")


_BASELINE_CHECKS: dict[str, Check] = {
    "hostNamespaces": _host_namespaces,
    "privileged": _privileged,
    "capabilities_baseline": _capabilities_baseline,
    "hostPathVolumes": _host_path_volumes,
    "hostPorts": _host_ports,
    "appArmorProfile": _app_armor,
    "seLinuxOptions": _se_linux,
    "procMount": _proc_mount_baseline,
    "seccompProfile_baseline": _seccomp_baseline,
    "sysctls": _sysctls,
    "windowsHostProcess": _host_process,
    "hostProbesAndHostLifecycle": _host_probes,
}
# Restricted check ID -> (check, the baseline check it replaces).
_RESTRICTED_CHECKS: dict[str, tuple[Check, str | None]] = {
    "restrictedVolumes": (_restricted_volumes, "hostPathVolumes"),
    "allowPrivilegeEscalation": (_allow_privilege_escalation, None),
    "runAsNonRoot": (_run_as_non_root, None),
    "runAsUser": (_run_as_user, None),
    "seccompProfile_restricted": (_seccomp_restricted, "seccompProfile_baseline"),
    "capabilities_restricted": (_capabilities_restricted, "capabilities_baseline"),
    "procMount_restricted": (_proc_mount_restricted, "procMount"),
}


def _checks(level: str, version: tuple[int, int]) -> list[tuple[str, Check]]:
    if level == PRIVILEGED:
        return []
    checks = dict(_BASELINE_CHECKS)
    if level == RESTRICTED:
        for check_id, (check, overrides) in _RESTRICTED_CHECKS.items():
            if check_id == "procMount_restricted" and version < (1, 35):
                continue  # before v1.35 restricted used baseline's procMount check, which had no relaxation then
            if overrides is not None:
                checks.pop(overrides, None)
            checks[check_id] = check
    return sorted(checks.items())  # Kubernetes reports violations in check-ID order


def check_pod(policy: LevelVersion, metadata: Any, spec: Any) -> list[Violation]:
    """Every violation of ``policy`` by a pod (or pod template) with this metadata and spec."""
    meta, pod_spec = _dict(metadata), _dict(spec)
    version = policy.minor
    found = []
    for _, check in _checks(policy.level, version):
        violation = check(meta, pod_spec, version)
        if violation is not None:
            found.append(violation)
    return found


def describe(violations: list[Violation]) -> str:
    """``host namespaces (hostNetwork=true), hostPath volumes (volume "data")``."""
    return ", ".join(str(v) for v in violations)


def forbidden_message(resource: str, name: str, policy: LevelVersion, violations: list[Violation]) -> str:
    return f'{resource} "{name}" is forbidden: violates PodSecurity "{policy}": {describe(violations)}'


def warning_message(policy: LevelVersion, violations: list[Violation]) -> str:
    return f'would violate PodSecurity "{policy}": {describe(violations)}'


def namespace_policy(store: Any, namespace: str, default: LevelVersion) -> Policy:
    """The levels a namespace's labels set, ``default`` for any mode they leave out."""
    try:
        labels = (store.get("namespaces", "", namespace).get("metadata") or {}).get("labels") or {}
    except NotFound:  # objects may live in a namespace nobody created: the default applies
        labels = {}
    policy, _ = parse_policy(labels, default)
    return policy


def refusal_for_namespace(store: Any, namespace: str, metadata: Any, spec: Any, default: LevelVersion,
                          name: str) -> str | None:
    """PS1: the 403 message for a new pod that breaks its namespace's ``enforce`` level, or None.

    For pods controllers write to the store themselves (a ReplicaSet's, StatefulSet's, Job's, ...): in
    Kubernetes they are created through the API server and so refused there like any pod; a workload's
    template is only warned about when the workload is written.
    """
    policy = namespace_policy(store, namespace, default)
    found = check_pod(policy.enforce, metadata, spec)
    return forbidden_message("pods", name, policy.enforce, found) if found else None
