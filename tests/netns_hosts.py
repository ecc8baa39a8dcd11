"""Several hosts on one machine: network namespaces joined by veth pairs on a bridge.

Layout (``Fabric(hosts=3)``)::

    root namespace (the test, the control plane)  stw<id>: 10.A.0.1/16
         │ veth
    fabric namespace ─ bridge br0 ─┬─ h1 ── eth0 in host namespace 1: 10.A.1.1/16, pods 10.A.1.0/24
                                   ├─ h2 ── eth0 in host namespace 2: 10.A.2.1/16, pods 10.A.2.0/24
                                   └─ h3 ── ...

Every name carries a random id, so parallel runs never meet, and ``close`` removes exactly what
was made: the namespaces (their interfaces go with them) and the root end of the control veth.
Processes enter a host with ``nsenter --net`` only, so they keep the machine's mount namespace:
their mounts and loop devices stay visible to the test and to its cleanup.
"""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from storage.system.libnfs import join_netns
from tcp_relay import TcpRelay


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _used_networks() -> list[ipaddress.IPv4Network]:
    routes = json.loads(_ip("-json", "-4", "route", "show", "table", "all").stdout or "[]")
    found = []
    for route in routes:
        dst = route.get("dst") or ""
        if dst and dst != "default" and ":" not in dst:
            try:
                found.append(ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False))
            except ValueError:
                continue
    return found


def _free_slash16() -> ipaddress.IPv4Network:
    used = _used_networks()
    candidates = list(range(100, 251))
    secrets.SystemRandom().shuffle(candidates)
    for second in candidates:
        net = ipaddress.ip_network(f"10.{second}.0.0/16")
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free 10.x.0.0/16 network on this machine for the test hosts")


@dataclass(frozen=True)
class Host:
    index: int
    name: str  # the node's name and the host's hostname
    netns: str
    address: str
    pod_cidr: str

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"


class Fabric:
    def __init__(self, hosts: int, *, prefix: str = "mh") -> None:
        self.id = secrets.token_hex(3)
        self.network = _free_slash16()
        base = int(self.network.network_address)
        self.control_ip = str(ipaddress.IPv4Address(base + 1))
        self.fabric_ns = f"stw-{self.id}-fab"
        self.root_link = f"stw{self.id}"
        self.hosts: list[Host] = []
        self._made_ns: list[str] = []
        self._made_root_link = False
        try:
            self._add_ns(self.fabric_ns)
            _ip("-n", self.fabric_ns, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.fabric_ns, "link", "set", "br0", "up")
            _ip("link", "add", self.root_link, "type", "veth", "peer", "name", "cp", "netns", self.fabric_ns)
            self._made_root_link = True
            _ip("-n", self.fabric_ns, "link", "set", "cp", "master", "br0", "up")
            _ip("addr", "add", f"{self.control_ip}/16", "dev", self.root_link)
            _ip("link", "set", self.root_link, "up")
            for i in range(1, hosts + 1):
                self.add_host(f"{prefix}{i}")
        except BaseException:
            self.close()
            raise

    def _add_ns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made_ns.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def add_host(self, name: str) -> Host:
        index = len(self.hosts) + 1
        if index > 250:
            raise ValueError("at most 250 hosts on one fabric")
        base = int(self.network.network_address)
        netns = f"stw-{self.id}-h{index}"
        self._add_ns(netns)
        link = f"h{index}"
        _ip("-n", self.fabric_ns, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("-n", self.fabric_ns, "link", "set", link, "master", "br0", "up")
        address = str(ipaddress.IPv4Address(base + (index << 8) + 1))
        _ip("-n", netns, "addr", "add", f"{address}/16", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        host = Host(index, name, netns, address, str(ipaddress.ip_network(f"{address}/24", strict=False)))
        self.hosts.append(host)
        return host

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def argv_in(self, host: Host, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``host``: its network namespace and its own hostname (a UTS namespace)."""
        return ["nsenter", f"--net={host.netns_path}", "--", "unshare", "--uts", "--",
                "sh", "-c", 'hostname "$0" && exec "$@"', host.name, *argv]

    def run_in(self, host: Host, argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv_in(host, argv), capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]

    def cut(self, host: Host) -> None:
        """The host drops off the network (its cable pulled): nothing it sends or expects arrives."""
        _ip("-n", self.fabric_ns, "link", "set", f"h{host.index}", "down")

    def restore(self, host: Host) -> None:
        _ip("-n", self.fabric_ns, "link", "set", f"h{host.index}", "up")

    def pids_in(self, host: Host) -> list[int]:
        out = _ip("netns", "pids", host.netns, check=False).stdout
        return [int(p) for p in out.split()]

    def close(self) -> None:
        """Kill what still runs in the hosts, remove the namespaces and the control link."""
        for name in reversed(self._made_ns):
            for pid in (_ip("netns", "pids", name, check=False).stdout or "").split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            _ip("netns", "del", name, check=False)
        self._made_ns.clear()
        if self._made_root_link:
            _ip("link", "del", self.root_link, check=False)  # usually gone with its peer's namespace
            self._made_root_link = False

    def leftovers(self) -> list[str]:
        found = [n for n in (_ip("netns", "list", check=False).stdout or "").split() if n.startswith(f"stw-{self.id}-")]
        if _ip("link", "show", "dev", self.root_link, check=False).returncode == 0:
            found.append(self.root_link)
        return found


def data_dir_of(base: Path, host: Host) -> Path:
    return base / "hosts" / host.name


def listen_in(host: Host, port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:``port`` inside ``host``'s network namespace.

    A socket keeps the namespace it was made in, so a short-lived thread enters the namespace
    (setns affects only the calling thread), makes the socket and ends; the caller serves it from
    the test's own namespace."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def make() -> None:
        try:
            join_netns(host.netns_path)
            made.append(socket.create_server(("127.0.0.1", port)))
        except BaseException as exc:  # handed to the caller below
            failed.append(exc)

    thread = threading.Thread(target=make, name=f"enter-{host.netns}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


class LoopbackServices:
    """The root namespace's 127.0.0.1 services (Ceph, Gluster, ... started once per test session) made
    reachable from each host at the same 127.0.0.1 ports, for daemons that hand out loopback addresses
    (a Ceph monitor's map of OSDs, a Gluster volume's bricks). ``cut`` resets a host's connections and
    refuses new ones, as its pulled cable would; ``restore`` lets them through again."""

    def __init__(self, hosts: Sequence[Host], ports: Sequence[int]) -> None:
        self.relays: dict[str, list[TcpRelay]] = {}
        try:
            for host in hosts:
                self.relays[host.name] = [TcpRelay(port, listener=listen_in(host, port)) for port in ports]
        except BaseException:
            self.close()
            raise

    def cut(self, host: Host) -> None:
        for relay in self.relays.get(host.name, []):
            relay.drop()

    def restore(self, host: Host) -> None:
        for relay in self.relays.get(host.name, []):
            relay.restore()

    def close(self) -> None:
        for relays in self.relays.values():
            for relay in relays:
                relay.close()
        self.relays.clear()
