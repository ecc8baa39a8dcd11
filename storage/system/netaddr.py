"""Addresses on a network interface (iproute2), for pods whose addresses other hosts must reach.

A pod shares its host's network namespace; on one host a loopback address per pod is enough
(every 127/8 address is local). Across hosts a pod's address must be assigned to the host's
interface on the shared network, so that the host answers ARP for it and other hosts reach it.
"""
from __future__ import annotations

import ipaddress
import json

from storage.system.executor import CommandError, Executor, default_executor


def interface_exists(interface: str, *, executor: Executor | None = None) -> bool:
    proc = (executor or default_executor()).run(["ip", "-json", "link", "show", "dev", interface], check=False)
    return proc.returncode == 0


def addresses(interface: str | None = None, *, executor: Executor | None = None) -> set[str]:
    """IPv4 addresses assigned on ``interface`` (every interface when None)."""
    argv = ["ip", "-json", "-4", "addr", "show"] + (["dev", interface] if interface else [])
    proc = (executor or default_executor()).run(argv)
    found: set[str] = set()
    for link in json.loads(proc.stdout or "[]"):
        for info in link.get("addr_info") or []:
            if info.get("family") == "inet" and info.get("local"):
                found.add(str(info["local"]))
    return found


def add_address(address: str, interface: str, *, executor: Executor | None = None) -> None:
    """Assign ``address``/32 to ``interface``; assigning it again is not an error (restarts re-assign)."""
    ipaddress.IPv4Address(address)  # a malformed address must not reach the command line
    try:
        (executor or default_executor()).run(["ip", "addr", "add", f"{address}/32", "dev", interface])
    except CommandError as exc:
        # iproute2 says "File exists" or "Address already assigned", by version.
        if "File exists" not in exc.stderr and "already assigned" not in exc.stderr:
            raise


def delete_address(address: str, interface: str, *, executor: Executor | None = None) -> None:
    """Remove ``address``/32 from ``interface``; removing one that is not there succeeds."""
    ipaddress.IPv4Address(address)
    try:
        (executor or default_executor()).run(["ip", "addr", "del", f"{address}/32", "dev", interface])
    except CommandError as exc:
        gone = ("Cannot assign requested address", "Address not found", "does not exist")
        if not any(text in exc.stderr for text in gone):
            raise
