"""examples/cassandra end to end with a REAL Apache Cassandra 5.0 ring (rules CA1-CA6).

scripts/setup.sh installs Cassandra from Maven Central into /opt/stowage/cassandra/lib
(cassandra-all and its dependencies); the example's start script runs it as
`java ... CassandraDaemon`. One ring per module (JVM starts are the cost): three
members form one ring, data written with replication factor 3 through one member
is read through another at QUORUM, and a deleted member comes back under its name
on its claim, with its host ID and data, and rejoins; scaling to four bootstraps a
member that streams its ranges; a rolling update of an environment variable keeps
continuous QUORUM reads answered (three more JVM restarts, about a minute on an
idle 2-core machine). Where Cassandra is not
installed the module is skipped (tests/e2e/test_cassandra.py covers the
orchestration with the stand-in); the test asserts that Cassandra, not the
stand-in, ran, and records which version in its output.

The example's manifests are applied unchanged: scripts/setup.sh installs Cassandra's jars at
/opt/stowage/cassandra/lib, where the start script looks for them.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cassandra_ring import (CASSANDRA_LIB, MEMBERS, ROLL_PATCH, SELECTOR, QuorumReader, check_bootstrapped,
                            installed_version, manifests, member_pid, nodetool, read_all, ring_status, rolled,
                            wait_all_up_normal, write_replicated)
from stowage_e2e import Stowage, is_ready, poll
from support import need_programs

# Slow: three JVMs start one after another (OrderedReady), each ~40-60 s on two shared cores.
pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def ring(start_stowage: Any) -> Iterator[Stowage]:
    version = installed_version()
    if version is None:
        pytest.skip(f"Apache Cassandra is not installed in {CASSANDRA_LIB} (scripts/setup.sh installs it); "
                    "tests/e2e/test_cassandra.py runs the example with the stand-in")
    need_programs("java", "nsenter")
    import cassandra  # noqa: F401  (the `cassandra-driver` of the dev extras)
    started = time.monotonic()
    stowage = start_stowage(manifests())
    stowage.wait_ready(SELECTOR, MEMBERS, timeout=600)
    print(f"\nreal Apache Cassandra {version} (Maven install): 3 members Ready after "
          f"{time.monotonic() - started:.0f}s")
    yield stowage
    # The harness stops `stowage up`, runs `stowage down` and kills whatever is left under the
    # data dir (the JVMs are the containers' processes), also when a test failed.


@pytest.fixture(scope="module")
def written(ring: Stowage) -> tuple[str, dict[int, str]]:
    """ROWS rows in a keyspace replicated 3 times, written through cassandra-0 at QUORUM."""
    return write_replicated(ring.pods(SELECTOR)["cassandra-0"]["status"]["podIP"])


def test_three_members_form_one_ring_seeded_by_name_CA1(ring: Stowage) -> None:
    pods = ring.pods(SELECTOR)
    ips = {n: pods[n]["status"]["podIP"] for n in MEMBERS}
    assert len(set(ips.values())) == 3, ips  # one address per member (CA2)
    for name in MEMBERS:
        status = wait_all_up_normal(ring, MEMBERS, via=name)
        assert sorted(status) == sorted(ips.values())
        assert len({host_id for _, host_id in status.values()}) == 3
    # It is Cassandra, not the stand-in: the start script says so and the JVM runs CassandraDaemon.
    for name in MEMBERS:
        pid = member_pid(ring, name)
        assert pid is not None, f"no CassandraDaemon JVM for {name}"
        assert Path(f"/proc/{pid}/root/etc/cassandra/stowage-mode").read_text().strip() == "cassandra"
        conf = yaml.safe_load(Path(f"/proc/{pid}/root/etc/cassandra/cassandra.yaml").read_text())
        assert conf["seed_provider"][0]["parameters"][0]["seeds"] == "cassandra-0.cassandra.default.svc.cluster.local"
        assert conf["listen_address"] == ips[name]
    version = nodetool(ring, "cassandra-1", "version").split(":", 1)[1].strip()
    assert version == installed_version()


def test_replicated_write_through_one_member_reads_through_another_at_quorum_CA3(
        ring: Stowage, written: tuple[str, dict[int, str]]) -> None:
    from cassandra import ConsistencyLevel
    keyspace, data = written
    ip2 = ring.pods(SELECTOR)["cassandra-2"]["status"]["podIP"]
    assert read_all(ip2, keyspace, ConsistencyLevel.QUORUM) == data
    # Replication factor 3 on three members: each holds every row on its own claim.
    owns = nodetool(ring, "cassandra-2", "status", keyspace)
    assert len(re.findall(r"^UN .*\s100\.0%\s", owns, re.MULTILINE)) == 3, owns


def test_deleted_member_returns_with_its_name_claim_and_data_and_rejoins_CA4(
        ring: Stowage, written: tuple[str, dict[int, str]]) -> None:
    from cassandra import ConsistencyLevel
    keyspace, data = written
    pods = ring.pods(SELECTOR)
    old = pods["cassandra-1"]
    old_host_id = ring_status(ring, "cassandra-0")[old["status"]["podIP"]][1]
    volume = ring.client.get("persistentvolumeclaims", "cassandra-data-cassandra-1", "default")["spec"]["volumeName"]

    ring.cli("delete", "pod", "cassandra-1", timeout=180)

    def back() -> dict[str, Any] | None:
        pod = ring.pods(SELECTOR).get("cassandra-1")
        return pod if pod and pod["metadata"]["uid"] != old["metadata"]["uid"] and is_ready(pod) else None
    pod = poll("cassandra-1 recreated and Ready", back, 300, diagnose=ring.describe)
    assert ring.client.get("persistentvolumeclaims", "cassandra-data-cassandra-1",
                           "default")["spec"]["volumeName"] == volume

    status = wait_all_up_normal(ring, MEMBERS, via="cassandra-0")
    # The same Cassandra node: its host ID (kept in its system keyspace, on the claim) is back,
    # under the pod's current address, and no fourth node appeared.
    assert status[pod["status"]["podIP"]][1] == old_host_id
    assert len(status) == 3
    # Its own copy of the data survived on the claim: the preStop `nodetool drain` flushed the
    # rows into SSTables there, and the member reads them back.
    pid = member_pid(ring, "cassandra-1")
    assert pid is not None
    sstables = list(Path(f"/proc/{pid}/root/cassandra_data/data/{keyspace}").glob("kv-*/*-Data.db"))
    assert sstables, "no SSTable of the keyspace on the member's claim"
    assert read_all(pod["status"]["podIP"], keyspace, ConsistencyLevel.ONE) == data
    # QUORUM through the returned member.
    assert read_all(pod["status"]["podIP"], keyspace, ConsistencyLevel.QUORUM) == data


def test_rolling_update_of_an_env_var_keeps_quorum_reads_working_CA5(
        ring: Stowage, written: tuple[str, dict[int, str]]) -> None:
    keyspace, data = written
    before = {n: p["metadata"]["uid"] for n, p in ring.pods(SELECTOR).items()}
    with QuorumReader([p["status"]["podIP"] for p in ring.pods(SELECTOR).values()], keyspace, data) as reader:
        ring.cli("patch", "statefulset", "cassandra", "--type", "json", "-p", json.dumps(ROLL_PATCH))
        pods = poll("every member replaced with STOWAGE_ROLL set and Ready", lambda: rolled(ring, before), 900,
                    interval=2, diagnose=ring.describe)
        for pod in pods.values():
            env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
            assert env.get("STOWAGE_ROLL") == "1"
        wait_all_up_normal(ring, MEMBERS, via="cassandra-2")
    print(f"\nrolling update: {reader.ok} QUORUM reads, {reader.retries} retried attempts")
    assert not reader.failures, reader.failures[:5]
    assert reader.ok > 50


def test_scaling_to_four_bootstraps_a_member_that_streams_its_ranges_CA6(
        ring: Stowage, written: tuple[str, dict[int, str]]) -> None:
    keyspace, data = written
    members = [*MEMBERS, "cassandra-3"]
    ring.cli("scale", "statefulset", "cassandra", "--replicas", "4")
    pods = ring.wait_ready(SELECTOR, members, timeout=600)
    status = wait_all_up_normal(ring, members, via="cassandra-0")
    assert len({host_id for _, host_id in status.values()}) == 4
    # With RF 3 on 4 members it owns about 3/4 of the rows, streamed while it bootstrapped.
    check_bootstrapped(ring, "cassandra-3", pods["cassandra-3"]["status"]["podIP"], keyspace, data)
