"""The warnings kube-apiserver sends with a write it accepts (SEMANTICS WN1-WN4).

Kubernetes' registry strategies add them (``WarningsOnCreate`` / ``WarningsOnUpdate``: pkg/api/pod/warnings.go,
pkg/api/persistentvolume, pkg/api/persistentvolumeclaim, pkg/api/storage); kubectl prints each as
``Warning: <text>``. They name fields that are deprecated, ignored, or almost certainly a mistake, and never
refuse anything. The texts are Kubernetes' own, so a manifest gets the same advice here as there: "non-functional
in v1.31+" speaks of Kubernetes' releases, where that plugin no longer mounts.
"""
from __future__ import annotations

from typing import Any, Iterator

from storage.api.quantity import canonical, parse_quantity
from storage.api.validation import _d, _l

DEPRECATED_NODE_LABELS = {
    "beta.kubernetes.io/arch": 'deprecated since v1.14; use "kubernetes.io/arch" instead',
    "beta.kubernetes.io/os": 'deprecated since v1.14; use "kubernetes.io/os" instead',
    "failure-domain.beta.kubernetes.io/region": 'deprecated since v1.17; use "topology.kubernetes.io/region" instead',
    "failure-domain.beta.kubernetes.io/zone": 'deprecated since v1.17; use "topology.kubernetes.io/zone" instead',
    "beta.kubernetes.io/instance-type": 'deprecated since v1.17; use "node.kubernetes.io/instance-type" instead',
}

# In a pod's volumes: (field, text). Stowage itself still mounts rbd, cephfs and glusterfs; the text says where
# Kubernetes stopped.
DEPRECATED_POD_VOLUMES = (
    ("photonPersistentDisk", "deprecated in v1.11, non-functional in v1.16+"),
    ("gitRepo", "deprecated in v1.11"),
    ("scaleIO", "deprecated in v1.16, non-functional in v1.22+"),
    ("flocker", "deprecated in v1.22, non-functional in v1.25+"),
    ("storageos", "deprecated in v1.22, non-functional in v1.25+"),
    ("quobyte", "deprecated in v1.22, non-functional in v1.25+"),
    ("glusterfs", "deprecated in v1.25, non-functional in v1.26+"),
    ("cephfs", "deprecated in v1.28, non-functional in v1.31+"),
    ("rbd", "deprecated in v1.28, non-functional in v1.31+"),
)
DEPRECATED_PV_SOURCES = (
    ("cephfs", "deprecated in v1.28, non-functional in v1.31+"),
    ("photonPersistentDisk", "deprecated in v1.11, non-functional in v1.16+"),
    ("scaleIO", "deprecated in v1.16, non-functional in v1.22+"),
    ("storageos", "deprecated in v1.22, non-functional in v1.25+"),
    ("glusterfs", "deprecated in v1.25, non-functional in v1.26+"),
    ("rbd", "deprecated in v1.28, non-functional in v1.31+"),
)
DEPRECATED_POD_ANNOTATIONS = {
    "scheduler.alpha.kubernetes.io/critical-pod": 'non-functional in v1.16+; use the "priorityClassName" field instead',
    "security.alpha.kubernetes.io/sysctls": 'non-functional in v1.11+; use the "sysctls" field instead',
    "security.alpha.kubernetes.io/unsafe-sysctls": 'non-functional in v1.11+; use the "sysctls" field instead',
}
# Kubernetes' texts name the Go field where its JSON name differs.
_SHOWN_AS = {"storageos": "storageOS"}
SECCOMP_POD_ANNOTATION = "seccomp.security.alpha.kubernetes.io/pod"
SECCOMP_CONTAINER_ANNOTATION = "container.seccomp.security.alpha.kubernetes.io/"
APPARMOR_CONTAINER_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
BETA_STORAGE_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"
STORAGE_CLASS_ANNOTATION_TEXT = 'deprecated since v1.8; use "storageClassName" attribute instead'
NULL_SELECTOR = "a null labelSelector results in matching no pod"

# Where each kind keeps its pod template.
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "PodTemplate": ("template",),
    "Deployment": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


def _at(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    for step in path:
        obj = _d(obj).get(step)  # type: ignore[assignment]
    return obj


def _join(prefix: str, rest: str) -> str:
    return f"{prefix}.{rest}" if prefix else rest


def warnings_for(kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
    """The warnings for a create (``old`` None) or an update of the main resource."""
    if kind == "Pod":
        return pod_warnings("", obj)
    if kind in _TEMPLATES:
        path = _TEMPLATES[kind]
        template = _at(obj, path)
        # As Kubernetes' strategies: an update warns only when it changed the template.
        if not isinstance(template, dict) or (old is not None and _at(old, path) == template):
            return []
        out = pod_warnings(".".join(path), template)
        if kind == "StatefulSet":
            for i, claim in enumerate(_l(_d(obj.get("spec")).get("volumeClaimTemplates"))):
                out += claim_spec_warnings(f"spec.volumeClaimTemplates[{i}].spec", _d(_d(claim).get("spec")))
        return out
    if kind == "PersistentVolume":
        return volume_warnings(obj)
    if kind == "PersistentVolumeClaim":
        out = []
        if BETA_STORAGE_CLASS_ANNOTATION in _d(_d(obj.get("metadata")).get("annotations")):
            out.append(f"metadata.annotations[{BETA_STORAGE_CLASS_ANNOTATION}]: {STORAGE_CLASS_ANNOTATION_TEXT}")
        return out + claim_spec_warnings("spec", _d(obj.get("spec")))
    if kind == "StorageClass":
        return [f"allowedTopologies[{i}].matchLabelExpressions[{j}].key: {DEPRECATED_NODE_LABELS[key]}"
                for i, topology in enumerate(_l(obj.get("allowedTopologies")))
                for j, expression in enumerate(_l(_d(topology).get("matchLabelExpressions")))
                if (key := _d(expression).get("key")) in DEPRECATED_NODE_LABELS]
    return []


def _fractional(path: str, value: Any) -> str | None:
    """Kubernetes' warning for a byte quantity with a fraction of a byte (``1500m``)."""
    try:
        exact = parse_quantity(value)
    except (ValueError, TypeError):
        return None  # validation speaks for a quantity that does not parse
    if exact.denominator == 1:
        return None
    return f'{path}: fractional byte value "{canonical(value)}" is invalid, must be an integer'


def claim_spec_warnings(path: str, spec: dict[str, Any]) -> list[str]:
    resources = _d(spec.get("resources"))
    out = []
    for part in ("requests", "limits"):
        value = _d(resources.get(part)).get("storage")
        if value is not None and (text := _fractional(f"{path}.resources.{part}[storage]", value)):
            out.append(text)
    return out


def volume_warnings(pv: dict[str, Any]) -> list[str]:
    spec = _d(pv.get("spec"))
    out = []
    if BETA_STORAGE_CLASS_ANNOTATION in _d(_d(pv.get("metadata")).get("annotations")):
        out.append(f"metadata.annotations[{BETA_STORAGE_CLASS_ANNOTATION}]: {STORAGE_CLASS_ANNOTATION_TEXT}")
    if spec.get("persistentVolumeReclaimPolicy") == "Recycle":
        out.append("spec.persistentVolumeReclaimPolicy: The Recycle reclaim policy is deprecated. Instead, the "
                   "recommended approach is to use dynamic provisioning.")
    terms = _l(_d(_d(spec.get("nodeAffinity")).get("required")).get("nodeSelectorTerms"))
    for i, term in enumerate(terms):
        out += _term_warnings(f"spec.nodeAffinity.required.nodeSelectorTerms[{i}]", term)
    out += [f"spec.{_SHOWN_AS.get(source, source)}: {text}" for source, text in DEPRECATED_PV_SOURCES if spec.get(source) is not None]
    return out


def _term_warnings(path: str, term: Any) -> list[str]:
    return [f"{path}.matchExpressions[{i}].key: {key} is {DEPRECATED_NODE_LABELS[key]}"
            for i, expression in enumerate(_l(_d(term).get("matchExpressions")))
            if (key := _d(expression).get("key")) in DEPRECATED_NODE_LABELS]


def _containers(spec: dict[str, Any], prefix: str) -> Iterator[tuple[dict[str, Any], str]]:
    """Every container with its field path, in Kubernetes' order (init, regular, ephemeral)."""
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for i, container in enumerate(_l(spec.get(field))):
            if isinstance(container, dict):
                yield container, _join(prefix, f"spec.{field}[{i}]")


def pod_warnings(prefix: str, template: dict[str, Any]) -> list[str]:
    """A pod's warnings (``prefix`` ""), or a pod template's at ``prefix`` (``spec.template``)."""
    spec, meta = _d(template.get("spec")), _d(template.get("metadata"))
    annotations = _d(meta.get("annotations"))
    out: list[str] = []
    here = lambda rest: _join(prefix, rest)  # noqa: E731

    for key in _d(spec.get("nodeSelector")):
        if key in DEPRECATED_NODE_LABELS:
            out.append(f"{here('spec.nodeSelector')}[{key}]: {DEPRECATED_NODE_LABELS[key]}")
    node_affinity = _d(_d(spec.get("affinity")).get("nodeAffinity"))
    required = _d(node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution"))
    for i, term in enumerate(_l(required.get("nodeSelectorTerms"))):
        out += _term_warnings(here(f"spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                                   f".nodeSelectorTerms[{i}]"), term)
    for i, preferred in enumerate(_l(node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution"))):
        out += _term_warnings(here(f"spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution"
                                   f"[{i}].preference"), _d(preferred).get("preference"))
    for i, constraint in enumerate(_l(spec.get("topologySpreadConstraints"))):
        constraint = _d(constraint)
        key = constraint.get("topologyKey")
        if key in DEPRECATED_NODE_LABELS:
            out.append(f"{here(f'spec.topologySpreadConstraints[{i}].topologyKey')}: {key} is "
                       f"{DEPRECATED_NODE_LABELS[key]}")
        if constraint.get("labelSelector") is None:
            out.append(f"{here(f'spec.topologySpreadConstraints[{i}].labelSelector')}: {NULL_SELECTOR}")

    for key, text in DEPRECATED_POD_ANNOTATIONS.items():
        if key in annotations:
            out.append(f"{here('metadata.annotations')}[{key}]: {text}")

    for i, volume in enumerate(_l(spec.get("volumes"))):
        volume = _d(volume)
        for source, text in DEPRECATED_POD_VOLUMES:
            if volume.get(source) is not None:
                out.append(f"{here(f'spec.volumes[{i}].{_SHOWN_AS.get(source, source)}')}: {text}")
        claim = _d(_d(volume.get("ephemeral")).get("volumeClaimTemplate"))
        if claim:
            out += claim_spec_warnings(here(f"spec.volumes[{i}].ephemeral.volumeClaimTemplate.spec"),
                                       _d(claim.get("spec")))

    seen_ips: set[Any] = set()
    for i, alias in enumerate(_l(spec.get("hostAliases"))):
        ip = _d(alias).get("ip")
        if ip in seen_ips:
            out.append(f'{here(f"spec.hostAliases[{i}].ip")}: duplicate ip "{ip}"')
        seen_ips.add(ip)
    seen_secrets: set[Any] = set()
    for i, secret in enumerate(_l(spec.get("imagePullSecrets"))):
        name = _d(secret).get("name") or ""
        if name and name in seen_secrets:
            out.append(f'{here(f"spec.imagePullSecrets[{i}].name")}: duplicate name "{name}"')
        if not name:
            out.append(f'{here(f"spec.imagePullSecrets[{i}].name")}: invalid empty name ""')
        seen_secrets.add(name)
    for resource in ("memory", "ephemeral-storage"):
        value = _d(spec.get("overhead")).get(resource)
        if value is not None and (text := _fractional(f"{here('spec.overhead')}[{resource}]", value)):
            out.append(text)

    security = _d(spec.get("securityContext"))
    if security.get("seccompProfile") is None and SECCOMP_POD_ANNOTATION in annotations:
        out.append(f'{here("metadata.annotations")}[{SECCOMP_POD_ANNOTATION}]: non-functional in v1.27+; use the '
                   f'"seccompProfile" field instead')
    for container, path in _containers(spec, prefix):
        out += _container_warnings(container, path, annotations, security, here("metadata.annotations"))
    out += _port_warnings(spec, prefix)

    grace = spec.get("terminationGracePeriodSeconds")
    if isinstance(grace, int) and grace < 0:
        out.append(f"{here('spec.terminationGracePeriodSeconds')}: must be >= 0; negative values are invalid and "
                   f"will be treated as 1")
    affinity = _d(spec.get("affinity"))
    for kind in ("podAffinity", "podAntiAffinity"):
        terms = _d(affinity.get(kind))
        base = here(f"spec.affinity.{kind}")
        for i, term in enumerate(_l(terms.get("requiredDuringSchedulingIgnoredDuringExecution"))):
            if _d(term).get("labelSelector") is None:
                out.append(f"{base}.requiredDuringSchedulingIgnoredDuringExecution[{i}].labelSelector: {NULL_SELECTOR}")
        for i, term in enumerate(_l(terms.get("preferredDuringSchedulingIgnoredDuringExecution"))):
            if _d(_d(term).get("podAffinityTerm")).get("labelSelector") is None:
                out.append(f"{base}.preferredDuringSchedulingIgnoredDuringExecution[{i}].podAffinityTerm"
                           f".labelSelector: {NULL_SELECTOR}")
    return out


def _container_warnings(container: dict[str, Any], path: str, annotations: dict[str, Any],
                        pod_security: dict[str, Any], annotations_path: str) -> list[str]:
    out = []
    name = container.get("name")
    security = _d(container.get("securityContext"))
    if security.get("seccompProfile") is None and f"{SECCOMP_CONTAINER_ANNOTATION}{name}" in annotations:
        out.append(f'{annotations_path}[{SECCOMP_CONTAINER_ANNOTATION}{name}]: non-functional in v1.27+; use the '
                   f'"seccompProfile" field instead')
    if (security.get("appArmorProfile") is None and pod_security.get("appArmorProfile") is None
            and f"{APPARMOR_CONTAINER_ANNOTATION}{name}" in annotations):
        out.append(f'{annotations_path}[{APPARMOR_CONTAINER_ANNOTATION}{name}]: deprecated since v1.30; use the '
                   f'"appArmorProfile" field instead')
    resources = _d(container.get("resources"))
    for part in ("limits", "requests"):
        for resource in ("memory", "ephemeral-storage"):
            value = _d(resources.get(part)).get(resource)
            if value is not None and (text := _fractional(f"{path}.resources.{part}[{resource}]", value)):
                out.append(text)
    seen: set[Any] = set()
    for i, env in enumerate(_l(container.get("env"))):
        env = _d(env)
        env_name = env.get("name")
        if env_name in seen:
            ref, value = f"$({env_name})", env.get("value") or ""
            if env.get("valueFrom") is not None or value == ref or ref not in value:
                out.append(f'{path}.env[{i}]: hides previous definition of "{env_name}", which may be dropped when '
                           f'using apply')
        seen.add(env_name)
    return out


def _port_warnings(spec: dict[str, Any], prefix: str) -> list[str]:
    """Ports two containers (or one twice) declare alike: Kubernetes' duplicate, overlapping and ambiguous ones."""
    out = []
    seen: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for container, path in _containers(spec, prefix):
        for i, port in enumerate(_l(container.get("ports"))):
            port = _d(port)
            here = f"{path}.ports[{i}]"
            host_ip, host_port = port.get("hostIP") or "", port.get("hostPort") or 0
            if host_ip and not host_port:
                out.append(f"{here}: hostIP set without hostPort")
            key = f"{port.get('containerPort')}/{port.get('protocol') or 'TCP'}"
            for other_path, other in seen.get(key, []):
                other_ip, other_port = other.get("hostIP") or "", other.get("hostPort") or 0
                if host_ip == other_ip and host_port == other_port:
                    out.append(f"{here}: duplicate port definition with {other_path}")
                elif not host_port or not other_port:
                    out.append(f"{here}: overlapping port definition with {other_path}")
                elif host_port == other_port and bool(host_ip) != bool(other_ip):
                    out.append(f"{here}: dangerously ambiguous port definition with {other_path}")
            seen.setdefault(key, []).append((here, port))
    return out
