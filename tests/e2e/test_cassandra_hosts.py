"""examples/cassandra's REAL Apache Cassandra ring across three hosts (rules MH1-MH3, CA3, CA7).

Each host is a network namespace on a bridge with its own ``stowage agent`` process (``--address``,
``--pod-cidr``, ``--pod-interface eth0``), as in tests/integration/agent/test_mh_hosts.py (both use
``Hosts`` of mh_cluster.py); the API server and the controllers run in the test's namespace on the bridge's
control address. The example's manifests are applied unchanged with ``stowage apply``. The three members land on
three hosts (the scheduler takes the node with the fewest pods, BP12), each on a local volume carved from
its own host's pool; they find their seed by its name (cassandra-0.cassandra.default.svc.cluster.local,
which every host's agent writes into its pods' /etc/hosts from the Endpoints) and gossip and serve CQL on
their pod addresses across the bridge.

One ring per module (three JVM starts are the cost). Skipped only where Cassandra is not installed
(CA1) or a host program it needs is missing; the controllers run with Kubernetes' default node grace
period (40 s), so a JVM start that starves an agent's heartbeat for a few seconds is not a node loss.
Teardown (also after a failure) kills the agents and whatever runs in the hosts, removes the namespaces
and links, and unmounts and detaches everything under the test's directory; it fails if any of that,
or a member's JVM, is left.
"""
from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cassandra_ring import (CASSANDRA_LIB, MEMBERS, SEEDS, SELECTOR, installed_version, manifests, member_pid,
                            read_all, wait_all_up_normal, write_replicated)
from stowage_e2e import container_mount, is_ready, poll
from support import host_tmp_dir, need_programs, need_root, stowage_executable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "agent"))  # agent_cluster, mh_cluster

from agent_cluster import Cluster  # noqa: E402
from netns_hosts import Fabric, Host  # noqa: E402
from mh_cluster import Hosts  # noqa: E402

from storage.api.node_affinity import affinity_hostnames  # noqa: E402
from storage.controllers.base import ControllerOptions  # noqa: E402
from storage.system import loop  # noqa: E402

# Slow: three JVMs start one after another (OrderedReady), ~40-60 s each on two shared cores.
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(1500)]

Obj = dict[str, Any]


class HostsRing:
    """The ring on the hosts: a ``cassandra_ring.Ring`` (the members' runc state is under the agents'
    data dirs, below ``data_dir``) with the hosts it runs on."""

    def __init__(self, hosts: Hosts) -> None:
        self.hosts = hosts
        self.jvms: dict[str, tuple[int, str]] = {}  # member -> (pid, start time): checked gone at teardown

    @property
    def data_dir(self) -> Path:
        return self.cluster.base

    @property
    def cluster(self) -> Cluster:
        return self.hosts.cluster

    @property
    def fabric(self) -> Fabric:
        return self.hosts.fabric

    def pods(self, selector: str) -> dict[str, Obj]:
        items, _ = self.cluster.client.list("pods", "default", label_selector=selector)
        return {p["metadata"]["name"]: p for p in items}

    def host_of(self, pod: Obj) -> Host:
        return self.fabric.host(pod["spec"]["nodeName"])

    def describe(self) -> str:
        lines = []
        for name, pod in sorted(self.pods(SELECTOR).items()):
            status = pod.get("status") or {}
            lines.append(f"{name}: node={pod['spec'].get('nodeName')} phase={status.get('phase')} "
                         f"ip={status.get('podIP')} ready={is_ready(pod)}")
        for event in self.cluster.client.list("events", "default")[0][-30:]:
            lines.append(f"event {event['involvedObject'].get('name')}: {event.get('reason')} {event.get('message')}")
        for host in self.fabric.hosts:
            log = self.cluster.base / f"agent-{host.name}.log"
            lines.append(f"--- agent {host.name} (tail)\n" + (log.read_text()[-3000:] if log.exists() else "(no log)"))
        return "\n".join(lines)


def _start_time(pid: int) -> str | None:
    """The process's start time (with the pid, its identity), None once it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _still_running(jvms: dict[str, tuple[int, str]], timeout: float = 30.0) -> list[str]:
    """The recorded JVMs still alive once ``timeout`` has passed: a killed JVM takes a moment to free its heap."""
    deadline = time.monotonic() + timeout
    while True:
        left = [f"JVM {pid} of {name}" for name, (pid, start) in jvms.items() if _start_time(pid) == start]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def _apply_example(cluster: Cluster) -> None:
    """``stowage apply -f`` of the example's files, as a user would (the Namespace in them updates ``default``)."""
    kubeconfig = cluster.server.kubeconfig
    assert kubeconfig is not None
    argv = [stowage_executable(), "apply", "--kubeconfig", str(kubeconfig),
            *[a for f in manifests() for a in ("-f", str(f))]]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"stowage apply failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def ring() -> Iterator[HostsRing]:
    version = installed_version()
    if version is None:
        pytest.skip(f"Apache Cassandra is not installed in {CASSANDRA_LIB} (scripts/setup.sh installs it); "
                    "tests/e2e/test_cassandra.py runs the example with the stand-in")
    need_root("network namespaces, loop devices, mounts")
    need_programs("java", "nsenter", "ip", "unshare", "runc", "losetup", "mkfs.ext4")
    import cassandra  # noqa: F401  (the `cassandra-driver` of the dev extras)
    started = time.monotonic()
    with host_tmp_dir("stowage-cassandra-hosts-") as base:
        hosts = Hosts(base, 3)
        ring = HostsRing(hosts)
        left: list[str] = []
        try:
            hosts.start(ControllerOptions())
            _apply_example(hosts.cluster)

            def members_ready() -> dict[str, Obj] | None:
                pods = ring.pods(SELECTOR)
                return pods if sorted(pods) == MEMBERS and all(is_ready(p) for p in pods.values()) else None
            poll("cassandra-0..2 Ready on the hosts", members_ready, 600, interval=1, diagnose=ring.describe)
            for name in MEMBERS:
                pid = poll(f"the Cassandra JVM of {name}", lambda n=name: member_pid(ring, n), 60)
                ring.jvms[name] = (pid, _start_time(pid) or "")
            print(f"\nreal Apache Cassandra {version} on 3 hosts: 3 members Ready after "
                  f"{time.monotonic() - started:.0f}s")
            yield ring
        finally:
            hosts.close()
            left += hosts.fabric.leftovers()
            left += [f"agent {p.args!r} still running" for p in hosts.cluster.processes if p.poll() is None]
            left += _still_running(ring.jvms)  # Fabric.close SIGKILLed everything in the hosts
        # host_tmp_dir then checks that no mount or loop device is left under the directory.
        assert not left, f"left behind: {left}"


def test_members_run_one_per_host_each_on_a_local_volume_of_its_host_MH1_MH2_MH3(ring: HostsRing) -> None:
    """The example has no anti-affinity (MH3's spread by rule): its members land on three hosts by BP12's
    fewest-pods order. MH2: each member's address is from its host's range and the JVM runs in its host's
    network namespace. MH1: the local provisioner reached each host's agent at its address, so each claim's
    volume is local to that host: the PV's node affinity and path name it, and the member's /cassandra_data
    is a loop device backed by a file in that host's pool."""
    pods = ring.pods(SELECTOR)
    nodes = {name: pods[name]["spec"]["nodeName"] for name in MEMBERS}
    assert sorted(nodes.values()) == sorted(h.name for h in ring.fabric.hosts), nodes
    for name in MEMBERS:
        host = ring.host_of(pods[name])
        ip = pods[name]["status"]["podIP"]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(host.pod_cidr), (name, ip, host)
        pid = ring.jvms[name][0]
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(host.netns_path).st_ino, \
            f"{name}'s JVM is not in {host.name}'s network namespace"

        claim = ring.cluster.client.get("persistentvolumeclaims", f"cassandra-data-{name}", "default")
        volume = ring.cluster.client.get("persistentvolumes", claim["spec"]["volumeName"])
        assert affinity_hostnames(volume) == [host.name], volume["spec"].get("nodeAffinity")
        pool = str(ring.cluster.pool_dir(host.name))
        assert volume["spec"]["local"]["path"].startswith(pool + "/"), volume["spec"]["local"]
        device = container_mount(pid, "/cassandra_data")
        assert device is not None, f"{name}: /cassandra_data is not a mount"
        assert loop.list_loops().get(device, "").startswith(pool + "/"), f"{name}: /cassandra_data on {device}"


def test_nodetool_on_every_host_shows_the_three_pod_addresses_up_normal_seeded_by_name_CA3_CA7(
        ring: HostsRing) -> None:
    """CA7: the ring forms across hosts: `nodetool status` run in each member's host shows the three pod
    addresses Up/Normal with three host IDs. The seed is a name (CA3) that every member, whichever host it
    is on, resolves to cassandra-0's address through its /etc/hosts."""
    pods = ring.pods(SELECTOR)
    ips = {n: pods[n]["status"]["podIP"] for n in MEMBERS}
    for name in MEMBERS:
        status = wait_all_up_normal(ring, MEMBERS, via=name)
        assert sorted(status) == sorted(ips.values())
        assert len({host_id for _, host_id in status.values()}) == 3
    for name in MEMBERS:
        root = Path(f"/proc/{ring.jvms[name][0]}/root")
        assert (root / "etc/cassandra/stowage-mode").read_text().strip() == "cassandra"  # not the stand-in
        conf = yaml.safe_load((root / "etc/cassandra/cassandra.yaml").read_text())
        assert conf["seed_provider"][0]["parameters"][0]["seeds"] == SEEDS
        assert conf["listen_address"] == ips[name]
        # (cassandra-0's file names it twice: its own line and the Endpoints' entry.)
        resolved = {line.split()[0] for line in (root / "etc/hosts").read_text().splitlines()
                    if not line.startswith("#") and SEEDS in line.split()[1:]}
        assert resolved == {ips["cassandra-0"]}, f"{SEEDS} in {name}'s /etc/hosts: {resolved}"


def test_rows_written_through_one_host_read_back_at_quorum_through_another_CA7(ring: HostsRing) -> None:
    """Replication factor 3 across three hosts: rows written at QUORUM through cassandra-0 (and read at
    ALL, so every host's replica answered) read back at QUORUM through cassandra-2 on another host."""
    from cassandra import ConsistencyLevel
    pods = ring.pods(SELECTOR)
    first, last = pods["cassandra-0"], pods["cassandra-2"]
    assert first["spec"]["nodeName"] != last["spec"]["nodeName"]
    keyspace, data = write_replicated(first["status"]["podIP"])
    assert read_all(last["status"]["podIP"], keyspace, ConsistencyLevel.QUORUM) == data
