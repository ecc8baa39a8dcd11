"""The per-pod /etc/hosts file, bind-mounted into every container of the pod."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

HostEntries = list[tuple[str, list[str]]]


def pod_hostname(pod: dict[str, Any]) -> str:
    spec = pod.get("spec") or {}
    return str(spec.get("hostname") or (pod.get("metadata") or {}).get("name", "pod"))[:63]


def pod_fqdn(pod: dict[str, Any]) -> str | None:
    spec = pod.get("spec") or {}
    subdomain = spec.get("subdomain")
    if not subdomain:
        return None
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    return f"{pod_hostname(pod)}.{subdomain}.{namespace}.svc.cluster.local"


def render(pod: dict[str, Any], pod_ip: str, entries: HostEntries) -> str:
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    fqdn = pod_fqdn(pod)
    names = ([fqdn] if fqdn else []) + [pod_hostname(pod)]
    lines.append(pod_ip + "\t" + "\t".join(names))
    aliases = (pod.get("spec") or {}).get("hostAliases") or []
    if aliases:
        lines.append("")
        lines.append("# Entries added by HostAliases.")
        lines.extend(a["ip"] + "\t" + "\t".join(a.get("hostnames") or []) for a in aliases if a.get("ip"))
    if entries:
        lines.append("")
        lines.append("# Entries added by Stowage (pods and services).")
        lines.extend(ip + "\t" + "\t".join(hostnames) for ip, hostnames in entries if hostnames)
    return "\n".join(lines) + "\n"


def write_in_place(path: Path, text: str) -> None:
    """Rewrite without replacing the inode: containers see the file through a bind mount."""
    data = text.encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)
