"""The real Apache Cassandra ring of examples/cassandra, seen from a test: its members' JVMs, nodetool
against them, CQL sessions pinned to one member (rules CA1-CA7).

Shared by tests/e2e/test_cassandra_real.py (one host, ``stowage up``) and
tests/e2e/test_cassandra_hosts.py (three hosts, one ``stowage agent`` each): both only need a
``Ring``, something that lists the members and holds their containers' runc state under one directory.
"""
from __future__ import annotations

import re
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any, Protocol

from stowage_e2e import cmdline, environ, find_pids, poll

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "cassandra"
CASSANDRA_LIB = Path("/opt/stowage/cassandra/lib")  # where scripts/setup.sh installs it
NODETOOL = EXAMPLE / "bin" / "nodetool"
SELECTOR = "app=cassandra"
MEMBERS = ["cassandra-0", "cassandra-1", "cassandra-2"]
SEEDS = "cassandra-0.cassandra.default.svc.cluster.local"  # the StatefulSet's CASSANDRA_SEEDS
DC = "DC1-K8Demo"
ROWS = 50

Obj = dict[str, Any]


class Ring(Protocol):
    @property
    def data_dir(self) -> Path:
        """Where the members' containers keep their runc state (at any depth)."""
        ...

    def pods(self, selector: str) -> dict[str, Obj]:
        """The pods in ``default`` matching ``selector``, by name."""
        ...


def installed_version() -> str | None:
    jars = sorted(CASSANDRA_LIB.glob("cassandra-all-*.jar"))
    return jars[0].name[len("cassandra-all-"):-len(".jar")] if jars else None


def manifests() -> list[Path]:
    """The example's files, as they are (nothing is patched in)."""
    return sorted(EXAMPLE.glob("*.yaml"))


def member_pid(ring: Ring, name: str) -> int | None:
    def match(pid: int) -> bool:
        return "org.apache.cassandra.service.CassandraDaemon" in cmdline(pid) and environ(pid).get("HOSTNAME") == name
    pids = find_pids(ring.data_dir, match)
    return pids[0] if len(pids) == 1 else None


def nodetool(ring: Ring, name: str, *args: str) -> str:
    """The example's bin/nodetool against member ``name``'s JMX (127.0.0.1:7199+N), run in the
    member's network namespace (its host's)."""
    pid = poll(f"the Cassandra JVM of {name}", lambda: member_pid(ring, name), 60)
    port = 7199 + int(name.rsplit("-", 1)[1])
    result = subprocess.run(["nsenter", "-t", str(pid), "-n", "sh", str(NODETOOL), "-p", str(port), *args],
                            capture_output=True, text=True, timeout=120, check=False,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, f"nodetool {' '.join(args)} on {name}: {result.stdout}\n{result.stderr}"
    return result.stdout


def ring_status(ring: Ring, name: str) -> dict[str, tuple[str, str]]:
    """address -> (state, host id) as `nodetool status` on ``name`` reports them."""
    out = {}
    for line in nodetool(ring, name, "status").splitlines():
        m = re.match(r"^([UD][NLJM])\s+(\S+)\s.*\s([0-9a-f]{8}-[0-9a-f-]{27})\s", line)
        if m:
            out[m.group(2)] = (m.group(1), m.group(3))
    return out


def wait_all_up_normal(ring: Ring, names: list[str], via: str, timeout: float = 180) -> dict[str, tuple[str, str]]:
    def check() -> dict[str, tuple[str, str]] | None:
        pods = ring.pods(SELECTOR)
        want = {pods[n]["status"].get("podIP") for n in names if n in pods}
        status = ring_status(ring, via)
        return status if set(status) == want and all(s == "UN" for s, _ in status.values()) else None
    return poll(f"{names} all UN in nodetool status on {via}", check, timeout, interval=3)


def cql_listening(ip: str, timeout: float = 120) -> None:
    """Wait for the member at ``ip`` to accept CQL connections. The example's readiness probe
    (ready-probe.sh) reports a member Ready once gossip shows it UN, and Cassandra opens its native
    transport only after that: a just-restarted member can be Ready and still refuse port 9042."""
    def accepts() -> bool:
        with socket.create_connection((ip, 9042), timeout=5):
            return True
    poll(f"CQL (port 9042) on {ip}", accepts, timeout, interval=1)


def session(ip: str) -> Any:
    """A CQL session that talks to ``ip`` only, so 'written through one member' means it."""
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy
    profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([ip]), request_timeout=30)
    cluster = Cluster([ip], port=9042, execution_profiles={EXEC_PROFILE_DEFAULT: profile}, connect_timeout=20,
                      control_connection_timeout=20)
    cql_listening(ip)
    return cluster.connect()


def read_all(ip: str, keyspace: str, consistency: Any) -> dict[int, str]:
    from cassandra.query import SimpleStatement
    s = session(ip)
    try:
        rows = s.execute(SimpleStatement(f"SELECT k, v FROM {keyspace}.kv", consistency_level=consistency))
        return {r.k: r.v for r in rows}
    finally:
        s.cluster.shutdown()


def write_replicated(ip: str) -> tuple[str, dict[int, str]]:
    """ROWS rows in a new keyspace replicated 3 times, written through the member at ``ip`` at QUORUM;
    returns once every replica has every row (a read at ALL)."""
    from cassandra import ConsistencyLevel
    from cassandra.query import SimpleStatement
    keyspace = "stowage_" + uuid.uuid4().hex[:8]
    s = session(ip)
    try:
        s.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                  f"{{'class': 'NetworkTopologyStrategy', '{DC}': 3}}")
        s.execute(f"CREATE TABLE {keyspace}.kv (k int PRIMARY KEY, v text)")
        insert = s.prepare(f"INSERT INTO {keyspace}.kv (k, v) VALUES (?, ?)")
        insert.consistency_level = ConsistencyLevel.QUORUM
        data = {k: f"value-{k}-{uuid.uuid4().hex}" for k in range(ROWS)}
        for k, v in data.items():
            s.execute(insert, (k, v))
        # Every replica has every row before a member is taken away (hints would also deliver them).
        s.execute(SimpleStatement(f"SELECT count(*) FROM {keyspace}.kv", consistency_level=ConsistencyLevel.ALL))
    finally:
        s.cluster.shutdown()
    return keyspace, data
