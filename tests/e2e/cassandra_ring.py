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
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from stowage_e2e import cmdline, environ, find_pids, is_ready, poll

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
    member's network namespace (its host's). Its history file goes to a directory of the call's own,
    not to the machine's /tmp."""
    pid = poll(f"the Cassandra JVM of {name}", lambda: member_pid(ring, name), 60)
    port = 7199 + int(name.rsplit("-", 1)[1])
    with tempfile.TemporaryDirectory(prefix="stowage-nodetool-") as home:
        result = subprocess.run(["nsenter", "-t", str(pid), "-n", "sh", str(NODETOOL), "-p", str(port), *args],
                                capture_output=True, text=True, timeout=120, check=False,
                                env={"PATH": "/usr/bin:/bin", "NODETOOL_HOME": home})
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


class QuorumReader:
    """Reads the rows of ``keyspace`` one after another at QUORUM, through a driver session that knows every
    member at ``ips`` (its default policy picks the coordinator), until the ``with`` block ends: what a client
    sees while members restart. A read that fails is retried twice, half a second apart (a coordinator that
    is draining may drop the request it holds); a read that fails three times, or returns another value than
    ``data`` holds, is a failure."""

    def __init__(self, ips: list[str], keyspace: str, data: dict[int, str]) -> None:
        self.ips, self.keyspace, self.data = ips, keyspace, data
        self.ok = self.retries = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> QuorumReader:
        from cassandra.cluster import Cluster
        self._cluster = Cluster(self.ips, connect_timeout=20)
        self._session = self._cluster.connect()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self._cluster.shutdown()

    def _run(self) -> None:
        from cassandra import ConsistencyLevel
        from cassandra.query import SimpleStatement
        query = SimpleStatement(f"SELECT v FROM {self.keyspace}.kv WHERE k = %s",
                                consistency_level=ConsistencyLevel.QUORUM)
        i = 0
        while not self._stop.is_set():
            k, i = i % ROWS, i + 1
            last = ""
            for _ in range(3):
                try:
                    row = self._session.execute(query, (k,), timeout=10).one()
                    if row is None or row.v != self.data[k]:
                        self.failures.append(f"k={k}: read {row!r}")
                    self.ok += 1
                    break
                except Exception as exc:  # noqa: BLE001  (the driver's errors share no base: NoHostAvailable, OperationTimedOut, ...)
                    self.retries += 1
                    last = repr(exc)
                    time.sleep(0.5)
            else:
                self.failures.append(f"k={k}: {last}")
            time.sleep(0.2)


# The rolling update's change: an environment variable added to the member template.
ROLL_PATCH = [{"op": "add", "path": "/spec/template/spec/containers/0/env/-",
               "value": {"name": "STOWAGE_ROLL", "value": "1"}}]


def rolled(ring: Ring, before: dict[str, str]) -> dict[str, Obj] | None:
    """The members once every one was replaced (``before``: name -> the old uid) and is Ready again."""
    pods = ring.pods(SELECTOR)
    if sorted(pods) != MEMBERS or not all(is_ready(p) for p in pods.values()):
        return None
    if any(pods[n]["metadata"]["uid"] == before[n] for n in MEMBERS):
        return None
    return pods


def check_bootstrapped(ring: Ring, name: str, ip: str, keyspace: str, data: dict[int, str]) -> None:
    """Member ``name`` (at ``ip``) joined a ring of four by bootstrapping (CA6): nothing was written since it
    joined, so SSTables of ``keyspace`` on its claim were streamed to it by the others; it sees four members
    `UN` and serves every row at QUORUM."""
    from cassandra import ConsistencyLevel
    pid = member_pid(ring, name)
    assert pid is not None, f"no Cassandra JVM for {name}"
    sstables = list(Path(f"/proc/{pid}/root/cassandra_data/data/{keyspace}").glob("kv-*/*-Data.db"))
    assert sstables, f"{name}'s claim holds no SSTable of the keyspace: nothing was streamed"
    owns = nodetool(ring, name, "status", keyspace)
    assert len(re.findall(r"^UN ", owns, re.MULTILINE)) == 4, owns
    assert read_all(ip, keyspace, ConsistencyLevel.QUORUM) == data
