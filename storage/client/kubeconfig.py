"""Kubeconfig files: the same format and search order kubectl uses."""
from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


# A cluster extension listing every API server replica (kubectl ignores extensions it does not know).
SERVERS_EXTENSION = "stowage.io/servers"


def servers_of(cluster: dict[str, Any]) -> tuple[str, ...]:
    """The replicas a kubeconfig cluster names: ``server`` first, then its stowage.io/servers extension."""
    found = [str(cluster.get("server") or "")]
    for entry in cluster.get("extensions") or []:
        if isinstance(entry, dict) and entry.get("name") == SERVERS_EXTENSION:
            found += [str(s) for s in ((entry.get("extension") or {}).get("servers") or []) if s]
    return tuple(dict.fromkeys(s.rstrip("/") for s in found if s))


def default_kubeconfig_path() -> Path:
    """``$STOWAGE_DATA_DIR/kubeconfig`` when that is set, else ``~/.stowage/kubeconfig``."""
    data_dir = os.environ.get("STOWAGE_DATA_DIR")
    if data_dir:
        return Path(data_dir) / "kubeconfig"
    return Path.home() / ".stowage" / "kubeconfig"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def write_kubeconfig(
    path: str | os.PathLike[str], server: str, token: str | None, context: str = "stowage", *,
    ca_data: bytes | None = None, client_cert: bytes | None = None, client_key: bytes | None = None,
    servers: tuple[str, ...] | list[str] = (),
) -> Path:
    """Write a one-context kubeconfig, private to its owner (it holds a token or a client key).

    ``servers``: every API server replica, kept as a cluster extension that kubectl ignores and
    Stowage's clients fail over along (SEMANTICS HA8); ``server`` is the one kubectl uses."""
    cluster: dict[str, Any] = {"server": server}
    if len(servers) > 1:
        cluster["extensions"] = [{"name": SERVERS_EXTENSION, "extension": {"servers": list(servers)}}]
    if ca_data:
        cluster["certificate-authority-data"] = _b64(ca_data)
    user: dict[str, Any] = {}
    if token:
        user["token"] = token
    if client_cert and client_key:
        user["client-certificate-data"] = _b64(client_cert)
        user["client-key-data"] = _b64(client_key)
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": context, "cluster": cluster}],
        "users": [{"name": context, "user": user}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": "default"}}],
        "current-context": context,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    os.replace(tmp, target)  # readers never see half a file
    return target


def resolve_kubeconfig_path(path: str | os.PathLike[str] | None = None) -> Path:
    """kubectl's order: an explicit path, then the first file of ``$KUBECONFIG``, then the default."""
    if path:
        return Path(path)
    env = os.environ.get("KUBECONFIG")
    if env:
        for candidate in env.split(os.pathsep):
            if candidate and Path(candidate).exists():
                return Path(candidate)
        first = next((c for c in env.split(os.pathsep) if c), None)
        if first:
            return Path(first)
    return default_kubeconfig_path()


@dataclass(frozen=True)
class ClusterAccess:
    """What a client needs from a kubeconfig context: where, whom to trust, and who it is."""

    server: str
    token: str | None = None
    ca_data: bytes | None = None
    cert_data: bytes | None = None
    key_data: bytes | None = None
    insecure: bool = False
    servers: tuple[str, ...] = ()  # every replica, ``server`` first (HA8); empty: only ``server``


def load_kubeconfig(path: str | os.PathLike[str] | None = None, context: str | None = None) -> tuple[str, str | None]:
    """``(server, token)`` of the current (or given) context."""
    access = load_access(path, context)
    return access.server, access.token


def _data_or_file(entry: dict[str, Any], key: str, base: Path) -> bytes | None:
    if entry.get(f"{key}-data"):
        return base64.b64decode(str(entry[f"{key}-data"]))
    if entry.get(key):
        file = Path(str(entry[key]))
        return (file if file.is_absolute() else base / file).read_bytes()
    return None


def load_access(path: str | os.PathLike[str] | None = None, context: str | None = None) -> ClusterAccess:
    """The current (or given) context of a kubeconfig: server, CA, token and client certificate."""
    source = resolve_kubeconfig_path(path)
    try:
        config = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"kubeconfig: no file at {source}: start a server (stowage up) or pass --kubeconfig") from None
    except yaml.YAMLError as e:
        raise ValueError(f"kubeconfig {source}: not valid YAML: {e}") from None
    name = context or config.get("current-context")
    contexts = {c.get("name"): c.get("context") or {} for c in config.get("contexts") or []}
    if not name or name not in contexts:
        raise ValueError(f"kubeconfig {source}: current-context: context {name!r} not found")
    ctx = contexts[name]
    clusters = {c.get("name"): c.get("cluster") or {} for c in config.get("clusters") or []}
    users = {u.get("name"): u.get("user") or {} for u in config.get("users") or []}
    cluster = clusters.get(ctx.get("cluster"))
    if not cluster or not cluster.get("server"):
        raise ValueError(f"kubeconfig {source}: contexts[{name}].cluster: cluster {ctx.get('cluster')!r} has no server")
    user = users.get(ctx.get("user")) or {}
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = Path(user["tokenFile"]).read_text(encoding="utf-8").strip()
    base = source.parent
    try:
        ca = _data_or_file(cluster, "certificate-authority", base)
        cert = _data_or_file(user, "client-certificate", base)
        key = _data_or_file(user, "client-key", base)
    except (OSError, ValueError) as e:
        raise ValueError(f"kubeconfig {source}: cannot read a certificate or key: {e}") from None
    return ClusterAccess(str(cluster["server"]), token or None, ca, cert, key,
                         bool(cluster.get("insecure-skip-tls-verify")), servers_of(cluster))
