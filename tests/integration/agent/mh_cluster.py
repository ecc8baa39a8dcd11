"""Several hosts, each a network namespace running its own ``stowage agent``, on one control plane
(tests/netns_hosts.py makes the namespaces); shared by the multi-host agent, Ceph and Cassandra tests."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: netns_hosts

from agent_cluster import Cluster, condition, wait_until  # noqa: E402
from netns_hosts import Fabric, Host, LoopbackServices  # noqa: E402
from storage.controllers.base import ControllerOptions  # noqa: E402

Obj = dict[str, Any]
# 10 s, not less: with 3 s a CI machine's stall of the control plane (all three nodes Unknown at once, agents
# heartbeating every second) set off the 2 s local-volume recovery before the test cut any host.
FAST = ControllerOptions(node_monitor_grace_period=10.0, node_eviction_rate=10.0)


class Hosts:
    def __init__(self, base: Path, count: int) -> None:
        self.fabric = Fabric(count)
        try:
            self.cluster = Cluster(base, server_host=self.fabric.control_ip)
        except BaseException:
            self.fabric.close()
            raise
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.services: LoopbackServices | None = None

    def reach_loopback_services(self, ports: Sequence[int]) -> None:
        """Every host reaches these ports of the test's 127.0.0.1 at its own 127.0.0.1 (netns_hosts)."""
        self.services = LoopbackServices(self.fabric.hosts, ports)

    def cut(self, host: Host) -> None:
        """The host's cable pulled: the fabric link, and its way to the loopback services."""
        self.fabric.cut(host)
        if self.services is not None:
            self.services.cut(host)

    def restore(self, host: Host) -> None:
        self.fabric.restore(host)
        if self.services is not None:
            self.services.restore(host)

    def start(self, options: ControllerOptions = FAST) -> None:
        """The controllers (``options``: short grace periods by default, for the node-loss tests), then one
        agent per host, each Ready."""
        self.cluster.start_controllers(options)
        for host in self.fabric.hosts:
            self.start_agent(host)
        for host in self.fabric.hosts:
            wait_until(lambda h=host: condition(self.node(h.name), "Ready") == "True", f"node {host.name} Ready")

    def start_agent(self, host: Host) -> subprocess.Popen[bytes]:
        proc = self.cluster.spawn_agent(
            host.name, "--address", host.address, "--pod-cidr", host.pod_cidr, "--pod-interface", "eth0",
            wrap=lambda argv, h=host: self.fabric.argv_in(h, argv))
        self.agents[host.name] = proc
        return proc

    def node(self, name: str) -> Obj:
        return self.cluster.client.get("nodes", name)

    def close(self) -> None:
        try:
            self.cluster.close()
        finally:
            try:
                if self.services is not None:
                    self.services.close()
            finally:
                self.fabric.close()
