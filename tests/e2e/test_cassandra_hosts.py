"""examples/cassandra's REAL Apache Cassandra ring across three hosts (rules MH1-MH3, CA3-CA5, CA7).

Each host is a network namespace on a bridge with its own ``stowage agent`` process (``--address``,
``--pod-cidr``, ``--pod-interface eth0``), as in tests/integration/agent/test_mh_hosts.py (both use
``Hosts`` of mh_cluster.py); the API server and the controllers run in the test's namespace on the bridge's
control address. The example's manifests are applied unchanged with ``stowage apply``. The three members land on
three hosts (the scheduler takes the node with the fewest pods, BP12), each on a local volume carved from
its own host's pool; they find their seed by its name (cassandra-0.cassandra.default.svc.cluster.local,
which every host's agent writes into its pods' /etc/hosts from the Endpoints) and gossip and serve CQL on
their pod addresses across the bridge. A member whose pod is deleted comes back on its host (its volume is
there) with its host ID and rows; a rolling update replaces the members one at a time on their hosts while
a client's QUORUM reads across the bridge go on being answered.

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
from cassandra_ring import (CASSANDRA_LIB, MEMBERS, ROLL_PATCH, SEEDS, SELECTOR, QuorumReader, check_bootstrapped,
                            installed_version, manifests, member_pid, read_all, ring_status, rolled,
                            wait_all_up_normal, write_replicated)
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
        self.jvms: dict[str, tuple[int, str]] = {}  # member -> its JVM's (pid, start time)
        self.replaced: dict[str, tuple[int, str]] = {}  # JVMs of members since replaced; all checked gone at teardown

    def note_jvm(self, name: str) -> int:
        """Waits for member ``name``'s JVM and records it (a replaced member's earlier JVM is kept to check)."""
        pid: int = poll(f"the Cassandra JVM of {name}", lambda: member_pid(self, name), 60)
        if name in self.jvms and self.jvms[name][0] != pid:
            self.replaced[f"{name} (pid {self.jvms[name][0]})"] = self.jvms[name]
        self.jvms[name] = (pid, _start_time(pid) or "")
        return pid

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
                ring.note_jvm(name)
            print(f"\nreal Apache Cassandra {version} on 3 hosts: 3 members Ready after "
                  f"{time.monotonic() - started:.0f}s")
            yield ring
        finally:
            hosts.close()
            left += hosts.fabric.leftovers()
            left += [f"agent {p.args!r} still running" for p in hosts.cluster.processes if p.poll() is None]
            left += _still_running({**ring.jvms, **ring.replaced})  # Fabric.close SIGKILLed everything in the hosts
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


@pytest.fixture(scope="module")
def written(ring: HostsRing) -> tuple[str, dict[int, str]]:
    """Rows in a keyspace replicated 3 times, written at QUORUM through cassandra-0 (and read at ALL, so every
    host's replica has them)."""
    return write_replicated(ring.pods(SELECTOR)["cassandra-0"]["status"]["podIP"])


def test_rows_written_through_one_host_read_back_at_quorum_through_another_CA7(
        ring: HostsRing, written: tuple[str, dict[int, str]]) -> None:
    """Replication factor 3 across three hosts: rows written through cassandra-0 read back at QUORUM through
    cassandra-2 on another host."""
    from cassandra import ConsistencyLevel
    keyspace, data = written
    pods = ring.pods(SELECTOR)
    assert pods["cassandra-0"]["spec"]["nodeName"] != pods["cassandra-2"]["spec"]["nodeName"]
    assert read_all(pods["cassandra-2"]["status"]["podIP"], keyspace, ConsistencyLevel.QUORUM) == data


def test_deleted_member_returns_on_its_host_with_its_claim_and_data_and_rejoins_CA4_MH1(
        ring: HostsRing, written: tuple[str, dict[int, str]]) -> None:
    """A member's pod deleted (with its grace period: the preStop drains it) comes back under its name on the
    same host, because its claim's local volume is there (MH1), with the same Cassandra host ID and its rows,
    which it serves at ONE from its own replica and at QUORUM with the other hosts'."""
    from cassandra import ConsistencyLevel
    keyspace, data = written
    old = ring.pods(SELECTOR)["cassandra-1"]
    old_host_id = ring_status(ring, "cassandra-0")[old["status"]["podIP"]][1]
    claim = ring.cluster.client.get("persistentvolumeclaims", "cassandra-data-cassandra-1", "default")

    ring.cluster.client.delete("pods", "cassandra-1", "default")

    def back() -> Obj | None:
        pod = ring.pods(SELECTOR).get("cassandra-1")
        return pod if pod and pod["metadata"]["uid"] != old["metadata"]["uid"] and is_ready(pod) else None
    pod = poll("cassandra-1 recreated and Ready", back, 300, interval=1, diagnose=ring.describe)
    pid = ring.note_jvm("cassandra-1")
    assert pod["spec"]["nodeName"] == old["spec"]["nodeName"]
    assert ring.cluster.client.get("persistentvolumeclaims", "cassandra-data-cassandra-1",
                                   "default")["spec"]["volumeName"] == claim["spec"]["volumeName"]
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(ring.host_of(pod).netns_path).st_ino

    status = wait_all_up_normal(ring, MEMBERS, via="cassandra-2")
    assert status[pod["status"]["podIP"]][1] == old_host_id  # the same node, not a fourth one
    assert len(status) == 3
    assert list(Path(f"/proc/{pid}/root/cassandra_data/data/{keyspace}").glob("kv-*/*-Data.db")), \
        "no SSTable of the keyspace on the member's claim"
    assert read_all(pod["status"]["podIP"], keyspace, ConsistencyLevel.ONE) == data
    assert read_all(pod["status"]["podIP"], keyspace, ConsistencyLevel.QUORUM) == data


def test_rolling_update_across_hosts_keeps_quorum_reads_working_CA5(
        ring: HostsRing, written: tuple[str, dict[int, str]]) -> None:
    """An environment variable added to the template replaces the members one at a time, each on its own
    host again; a client reading at QUORUM through the pod addresses across the bridge is answered
    throughout (the preStop waits for the ring to be Up/Normal before it drains, CA5)."""
    keyspace, data = written
    pods = ring.pods(SELECTOR)
    before = {n: p["metadata"]["uid"] for n, p in pods.items()}
    hosts = {n: p["spec"]["nodeName"] for n, p in pods.items()}
    with QuorumReader([p["status"]["podIP"] for p in pods.values()], keyspace, data) as reader:
        ring.cluster.client.patch("statefulsets", "cassandra", ROLL_PATCH, "default", patch_type="json")
        pods = poll("every member replaced with STOWAGE_ROLL set and Ready", lambda: rolled(ring, before), 900,
                    interval=2, diagnose=ring.describe)
        for name in MEMBERS:
            ring.note_jvm(name)
        wait_all_up_normal(ring, MEMBERS, via="cassandra-0")
    print(f"\nrolling update across hosts: {reader.ok} QUORUM reads, {reader.retries} retried attempts")
    assert {n: p["spec"]["nodeName"] for n, p in pods.items()} == hosts
    for pod in pods.values():
        assert {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}.get("STOWAGE_ROLL") == "1"
    assert not reader.failures, reader.failures[:5]
    assert reader.ok > 50


def test_scaling_to_four_bootstraps_a_member_on_a_host_from_the_other_hosts_CA6_MH1(
        ring: HostsRing, written: tuple[str, dict[int, str]]) -> None:
    """Scaled to four, cassandra-3 goes to a host that already runs a member (the fewest-pods order), on a
    volume of that host's pool, with its own pod address and JMX port; it bootstraps by streaming its ranges
    from the members on the other hosts and then serves every row at QUORUM."""
    keyspace, data = written
    members = [*MEMBERS, "cassandra-3"]
    ring.cluster.client.patch("statefulsets", "cassandra", {"spec": {"replicas": 4}}, "default", subresource="scale")

    def all_ready() -> dict[str, Obj] | None:
        pods = ring.pods(SELECTOR)
        return pods if sorted(pods) == members and all(is_ready(p) for p in pods.values()) else None
    pods = poll("cassandra-0..3 Ready on the hosts", all_ready, 600, interval=1, diagnose=ring.describe)
    ring.note_jvm("cassandra-3")
    new = pods["cassandra-3"]
    host = ring.host_of(new)
    assert ipaddress.ip_address(new["status"]["podIP"]) in ipaddress.ip_network(host.pod_cidr)
    assert len({p["status"]["podIP"] for p in pods.values()}) == 4
    claim = ring.cluster.client.get("persistentvolumeclaims", "cassandra-data-cassandra-3", "default")
    volume = ring.cluster.client.get("persistentvolumes", claim["spec"]["volumeName"])
    assert affinity_hostnames(volume) == [host.name]
    status = wait_all_up_normal(ring, members, via="cassandra-0")
    assert len({host_id for _, host_id in status.values()}) == 4
    check_bootstrapped(ring, "cassandra-3", new["status"]["podIP"], keyspace, data)
