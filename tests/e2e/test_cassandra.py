"""examples/cassandra end to end, with the Cassandra STAND-IN.

No Cassandra is installed on the test machines, so the example's start
script runs its clearly labelled stand-in (bin/standin.py: listens on the
member's 9042 and 7000, writes a marker on the data volume). What is checked
is the orchestration around Cassandra: each member's identity (hostname),
DNS (the seed name resolves in its /etc/hosts), environment (POD_IP,
CASSANDRA_SEEDS), its data volume (a real mount at /cassandra_data backed by a
loop device, holding the marker) and the configuration the start script rendered.
Where a real Cassandra is installed the stand-in is forced, so the test stays the same.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stowage_e2e import Stowage, cmdline, container_mount, environ, find_pids, host_mount_of, is_ready, poll
from support import need_programs

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cassandra"
SELECTOR = "app=cassandra"
MEMBERS = ["cassandra-0", "cassandra-1", "cassandra-2"]
SEED = "cassandra-0.cassandra.default.svc.cluster.local"
MARKER = "STOWAGE_CASSANDRA_STANDIN.json"
INSTALLED_LIB = Path("/opt/stowage/cassandra/lib")  # where scripts/setup.sh installs the jars

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(1200)]


def manifests(tmp_path: Path) -> list[Path]:
    """The example's manifests, unchanged -- unless a real Cassandra is installed where the start script
    finds it (on PATH, or the jars scripts/setup.sh puts in /opt/stowage/cassandra/lib), then with the
    stand-in forced: the real ring is tests/e2e/test_cassandra_real.py's."""
    files = sorted(EXAMPLE.glob("*.yaml"))
    if shutil.which("cassandra") is None and not list(INSTALLED_LIB.glob("cassandra-all-*.jar")):
        return files
    out = []
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for doc in docs:
            if doc["kind"] == "StatefulSet":
                doc["spec"]["template"]["spec"]["containers"][0]["env"].append(
                    {"name": "STOWAGE_CASSANDRA_STANDIN", "value": "1"})
        copy = tmp_path / path.name
        copy.write_text(yaml.safe_dump_all(docs))
        out.append(copy)
    return out


@pytest.fixture(scope="module")
def cluster(start_stowage: Any, tmp_path_factory: pytest.TempPathFactory) -> Stowage:
    need_programs("python3")  # the start script and the stand-in are Python
    stowage = start_stowage(manifests(tmp_path_factory.mktemp("cassandra-manifests")))
    stowage.wait_ready(SELECTOR, MEMBERS, timeout=400)  # OrderedReady: one after another (S2)
    return stowage


def standin_pid(stowage: Stowage, name: str) -> int | None:
    def match(pid: int) -> bool:
        return any(a.endswith("standin.py") for a in cmdline(pid)) and environ(pid).get("HOSTNAME") == name
    pids = find_pids(stowage.data_dir, match)
    return pids[0] if len(pids) == 1 else None


def hosts_entries(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/root/etc/hosts").read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        for name in fields[1:]:
            out.setdefault(name, fields[0])
    return out


def loop_backing_file(device: str) -> str:
    return Path(f"/sys/block/{Path(device).name}/loop/backing_file").read_text().strip()


@pytest.mark.parametrize("ordinal", [0, 1, 2])
def test_member_identity_dns_environment_volume_and_config_S1(cluster: Stowage, ordinal: int) -> None:
    name = MEMBERS[ordinal]
    pods = cluster.pods(SELECTOR)
    pod, seed_ip = pods[name], pods["cassandra-0"]["status"]["podIP"]
    ip = pod["status"]["podIP"]
    assert pod["spec"]["hostname"] == name and pod["spec"]["subdomain"] == "cassandra"
    pid = poll(f"the stand-in process of {name}", lambda: standin_pid(cluster, name), 60, diagnose=cluster.describe)

    # Identity: the UTS hostname inside the member.
    uts = subprocess.run(["nsenter", "-t", str(pid), "-u", "hostname"], capture_output=True, text=True, check=True)
    assert uts.stdout.strip() == name

    # DNS: its own stable name and the seed's resolve through its /etc/hosts.
    entries = poll(f"{SEED} in {name}'s /etc/hosts",
                   lambda: (lambda e: e if e.get(SEED) == seed_ip else None)(hosts_entries(pid)), 60)
    assert entries[f"{name}.cassandra.default.svc.cluster.local"] == ip

    # Environment, as the downward API and the manifest give it.
    env = environ(pid)
    assert env["POD_IP"] == ip and env["CASSANDRA_SEEDS"] == SEED
    assert env["CASSANDRA_CLUSTER_NAME"] == "K8Demo" and env["MAX_HEAP_SIZE"] == "512M"

    # Data volume: /cassandra_data is a real mount of a loop device whose backing file the node agent made.
    device = container_mount(pid, "/cassandra_data")
    assert device is not None and device.startswith("/dev/loop"), device
    assert loop_backing_file(device).startswith(str(cluster.data_dir))
    host_mount = host_mount_of(device, cluster.data_dir)
    assert host_mount is not None, f"{device} is not mounted on the host under the data dir"
    marker = json.loads((Path(host_mount) / MARKER).read_text())  # the marker is on the claim's filesystem
    assert marker["starts"][-1]["hostname"] == name and marker["starts"][-1]["address"] == ip
    claim = cluster.client.get("persistentvolumeclaims", f"cassandra-data-{name}", "default")
    assert claim["status"]["phase"] == "Bound" and claim["spec"]["storageClassName"] == "local-ssd"

    # The configuration the start script rendered inside the member.
    conf_dir = Path(f"/proc/{pid}/root/etc/cassandra")
    conf = yaml.safe_load((conf_dir / "cassandra.yaml").read_text())
    assert conf["cluster_name"] == "K8Demo"
    assert conf["seed_provider"][0]["parameters"][0]["seeds"] == SEED
    assert conf["listen_address"] == conf["broadcast_address"] == conf["rpc_address"] == ip
    assert conf["endpoint_snitch"] == "GossipingPropertyFileSnitch"
    assert conf["data_file_directories"] == ["/cassandra_data/data"]
    assert conf["commitlog_directory"] == "/cassandra_data/commitlog"
    rackdc = (conf_dir / "cassandra-rackdc.properties").read_text().splitlines()
    assert "dc=DC1-K8Demo" in rackdc and "rack=Rack1-K8Demo" in rackdc
    jvm = (conf_dir / "jvm.options").read_text().splitlines()
    assert "-Xmx512M" in jvm and "-Xmn100M" in jvm
    assert (conf_dir / "stowage-mode").read_text().strip() == "standin"

    # The stand-in answers on the member's own address.
    with socket.create_connection((ip, 9042), timeout=5) as conn:
        assert conn.makefile().readline().split()[1:] == [name, ip]


def test_recreated_member_finds_its_data_on_the_same_claim_S2(cluster: Stowage) -> None:
    pods = cluster.wait_ready(SELECTOR, MEMBERS)
    old_uid = pods["cassandra-1"]["metadata"]["uid"]
    volume = cluster.client.get("persistentvolumeclaims", "cassandra-data-cassandra-1", "default")["spec"]["volumeName"]

    cluster.cli("delete", "pod", "cassandra-1")

    def back() -> dict[str, Any] | None:
        pod = cluster.pods(SELECTOR).get("cassandra-1")
        return pod if pod and pod["metadata"]["uid"] != old_uid and is_ready(pod) else None
    pod = poll("cassandra-1 recreated and Ready", back, 300, diagnose=cluster.describe)
    assert cluster.client.get("persistentvolumeclaims", "cassandra-data-cassandra-1", "default")["spec"]["volumeName"] == volume
    pid = poll("the new stand-in of cassandra-1", lambda: standin_pid(cluster, "cassandra-1"), 60)
    marker = json.loads(Path(f"/proc/{pid}/root/cassandra_data/{MARKER}").read_text())
    assert len(marker["starts"]) >= 2  # the first start's record survived on the claim
    assert marker["starts"][-1]["address"] == pod["status"]["podIP"]
