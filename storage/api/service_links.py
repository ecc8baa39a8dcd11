"""The Docker-link style variables Kubernetes gives a pod for each Service of its namespace.

Shared by the endpoints controller and the node agent; here in ``storage.api`` so the agent reaches it
without importing the controllers (and, through them, the store and the pydantic models: PF42).
"""
from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def ready_ips(endpoints: Obj | None) -> list[str]:
    ips: list[str] = []
    for subset in (endpoints or {}).get("subsets") or []:
        for address in subset.get("addresses") or []:
            if address.get("ip") and address["ip"] not in ips:
                ips.append(address["ip"])
    return ips


def service_address(service: Obj, endpoints: Obj | None) -> str | None:
    """Where a non-headless Service is reached: its cluster IP when set, else its first ready endpoint."""
    cluster_ip = _spec(service).get("clusterIP")
    if cluster_ip and cluster_ip != "None":
        return str(cluster_ip)
    if _spec(service).get("clusterIP") == "None":  # headless
        return None
    ips = ready_ips(endpoints)
    return ips[0] if ips else None


def service_env(services: list[Obj], endpoints: dict[str, Obj] | None = None) -> dict[str, str]:
    """Docker-link style variables Kubernetes gives a pod for each Service of its namespace.

    ``endpoints`` (by Service name) supplies the address of Services without a
    cluster IP; headless Services and Services with no address get none, as in Kubernetes.
    """
    env: dict[str, str] = {}
    for service in sorted(services, key=lambda s: _meta(s).get("name", "")):
        address = service_address(service, (endpoints or {}).get(_meta(service).get("name", "")))
        ports = _spec(service).get("ports") or []
        if not address or not ports:
            continue
        base = _env_name(_meta(service)["name"])
        env[f"{base}_SERVICE_HOST"] = address
        env[f"{base}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            if port.get("name"):
                env[f"{base}_SERVICE_PORT_{_env_name(port['name'])}"] = str(port["port"])
        for index, port in enumerate(ports):
            protocol = (port.get("protocol") or "TCP").upper()
            url = f"{protocol.lower()}://{address}:{port['port']}"
            if index == 0:
                env[f"{base}_PORT"] = url
            prefix = f"{base}_PORT_{port['port']}_{protocol}"
            env[prefix] = url
            env[f"{prefix}_PROTO"] = protocol.lower()
            env[f"{prefix}_PORT"] = str(port["port"])
            env[f"{prefix}_ADDR"] = address
    return env
