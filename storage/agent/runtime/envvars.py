"""A container's environment, resolved the way the kubelet resolves it.

Order: ``envFrom`` sources first (later sources win), then ``env`` entries in
order (winning over ``envFrom``). ``$(VAR)`` in ``env`` values, ``command`` and
``args`` expands against what is defined so far; ``$$`` escapes; unknown
references stay as written.
"""
from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Protocol

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_LABEL_PATH = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")

_SUFFIX = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|)$")


class EnvSources(Protocol):
    """Where ConfigMaps and Secrets come from (the agent reads them from the API)."""

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...


class EnvError(Exception):
    """The container cannot be configured; reported as CreateContainerConfigError."""


@dataclass(frozen=True)
class StaticEnvSources:
    """EnvSources over plain dicts: {(namespace, name): object in wire form}."""

    config_maps: dict[tuple[str, str], dict[str, Any]]
    secrets: dict[tuple[str, str], dict[str, Any]]

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.config_maps.get((namespace, name))

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get((namespace, name))


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """Kubernetes ``$(VAR)`` expansion (third_party/forked/golang/expansion)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "$" or i + 1 >= len(text):
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end < 0:
                out.append(text[i:])
                break
            name = text[i + 2:end]
            value = lookup(name) if name else None
            out.append(value if value is not None else text[i:end + 1])
            i = end + 1
        else:
            out.append(ch + nxt)
            i += 2
    return "".join(out)


def parse_quantity(text: str | int | float) -> Decimal:
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ValueError(f"invalid quantity {text!r}")
    return Decimal(match.group(1)) * Decimal(_SUFFIX[match.group(2)])


def _config_map_data(cm: dict[str, Any]) -> dict[str, str]:
    data = dict(cm.get("data") or {})
    for key, value in (cm.get("binaryData") or {}).items():
        data[key] = base64.b64decode(value).decode("utf-8", "replace")
    return data


def _secret_data(secret: dict[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


def field_ref(pod: dict[str, Any], path: str, pod_ip: str, host_ip: str) -> str:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", "default"),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return str(simple[path])
    match = _LABEL_PATH.match(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise EnvError(f"fieldRef.fieldPath: Unsupported value: {path!r}")


def resource_field_ref(container: dict[str, Any], ref: dict[str, Any], node_cpu: int, node_memory: int) -> str:
    resource = ref.get("resource", "")
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise EnvError(f"resourceFieldRef.resource: Unsupported value: {resource!r}")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(name)
    if raw is None:
        # Unset limits report the node's allocatable amount, as the kubelet does.
        value = Decimal(node_cpu if name == "cpu" else node_memory) if kind == "limits" else Decimal(0)
    else:
        value = parse_quantity(raw)
    divisor = parse_quantity(ref.get("divisor") or "1")
    if divisor <= 0:
        raise EnvError("resourceFieldRef.divisor: Invalid value: must be positive")
    return str(math.ceil(value / divisor))


@dataclass
class EnvContext:
    pod: dict[str, Any]
    pod_ip: str
    host_ip: str
    sources: EnvSources
    node_cpu: int = 1
    node_memory: int = 1 << 30


def resolve_env(container: dict[str, Any], ctx: EnvContext) -> list[tuple[str, str]]:
    """The container's environment in order; raises EnvError when a required source is missing."""
    namespace = (ctx.pod.get("metadata") or {}).get("namespace", "default")
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref = source["configMapRef"]
            obj = ctx.sources.get_config_map(namespace, ref.get("name", ""))
            data = _config_map_data(obj) if obj is not None else None
            what = "configmap"
        elif "secretRef" in source:
            ref = source["secretRef"]
            obj = ctx.sources.get_secret(namespace, ref.get("name", ""))
            data = _secret_data(obj) if obj is not None else None
            what = "secret"
        else:
            continue
        if data is None:
            if ref.get("optional"):
                continue
            raise EnvError(f'{what} "{ref.get("name", "")}" not found')
        for key, value in data.items():
            # Invalid names are skipped, as the kubelet does (it only records an event).
            if _ENV_NAME.match(prefix + key):
                env[prefix + key] = value

    for item in container.get("env") or []:
        name = item.get("name", "")
        if "value" in item or "valueFrom" not in item:
            env.pop(name, None)
            env[name] = expand(str(item.get("value", "")), env.get)
            continue
        value = _value_from(container, item["valueFrom"], name, namespace, ctx)
        if value is not None:
            env.pop(name, None)
            env[name] = value
    return list(env.items())


def _value_from(container: dict[str, Any], spec: dict[str, Any], name: str, namespace: str, ctx: EnvContext) -> str | None:
    if "fieldRef" in spec:
        return field_ref(ctx.pod, spec["fieldRef"].get("fieldPath", ""), ctx.pod_ip, ctx.host_ip)
    if "resourceFieldRef" in spec:
        return resource_field_ref(container, spec["resourceFieldRef"], ctx.node_cpu, ctx.node_memory)
    for key, getter, reader, what in (
        ("configMapKeyRef", ctx.sources.get_config_map, _config_map_data, "configmap"),
        ("secretKeyRef", ctx.sources.get_secret, _secret_data, "secret"),
    ):
        if key in spec:
            ref = spec[key]
            obj = getter(namespace, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    return None
                raise EnvError(f'{what} "{ref.get("name", "")}" not found')
            data = reader(obj)
            if ref.get("key") not in data:
                if ref.get("optional"):
                    return None
                raise EnvError(f"couldn't find key {ref.get('key')} in {what} {namespace}/{ref.get('name', '')}")
            return data[ref["key"]]
    raise EnvError(f"env[{name}].valueFrom: Invalid value: no supported source")


def command_line(container: dict[str, Any], env: list[tuple[str, str]]) -> list[str]:
    """argv from command/args with $(VAR) expanded; the host has no image defaults to fall back on."""
    lookup = dict(env).get
    command = [expand(str(c), lookup) for c in container.get("command") or []]
    args = [expand(str(a), lookup) for a in container.get("args") or []]
    argv = command + args if command else args
    if not argv:
        raise EnvError(
            f"container {container.get('name')!r}: neither command nor args given; "
            "images are names only here, so there is no default entrypoint"
        )
    return argv
