"""Several hosts for real: each agent in its own network namespace with its own address (rules MH1-MH6).

The hosts are network namespaces on a bridge (tests/netns_hosts.py); the control plane runs in the
test's namespace on the bridge's control address. Each ``stowage agent`` process runs in its host's
namespace with ``--pod-interface eth0``, so its pods' addresses are assigned there and reachable
from the other hosts. Node loss is simulated by cutting a host's link and by SIGKILL of its agent.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: netns_hosts

from agent_cluster import Cluster, claim, condition, local_class, pod, wait_until  # noqa: E402
from mh_cluster import Hosts  # noqa: E402
from storage.system import netaddr  # noqa: E402
from support import need_programs, wait_for  # noqa: E402

Obj = dict[str, Any]
PYTHON = "/usr/bin/python3"  # Debian's, visible inside pods (the test's own may live under /root)
# Answers each connection with the pod's hostname and the address it was reached at.
SERVER = ("import socket, os\n"
          "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind((os.environ['POD_IP'], 7000)); s.listen()\n"
          "while True:\n"
          "    c, _ = s.accept(); c.sendall((socket.gethostname() + ' ' + os.environ['POD_IP']).encode()); c.close()\n")
CLIENT = ("import socket, sys, time\n"
          "for _ in range(300):\n"
          "    try:\n"
          "        c = socket.create_connection((sys.argv[1], 7000), timeout=1)\n"
          "        print('got', c.recv(200).decode(), flush=True); break\n"
          "    except OSError:\n"
          "        time.sleep(0.2)\n"
          "time.sleep(3600)\n")
POD_IP_ENV = [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]


@pytest.fixture
def hosts3(tmp_base: Path) -> Iterator[Hosts]:
    need_programs("ip", "nsenter", "unshare")
    h = Hosts(tmp_base, 3)
    try:
        yield h
    finally:
        h.close()
        assert not h.fabric.leftovers(), "network namespaces or links left behind"


def _on(host: str) -> Obj:
    return {"nodeSelector": {"kubernetes.io/hostname": host}}


def test_mh1_mh2_each_host_has_its_address_and_pods_reach_pods_on_other_hosts(hosts3: Hosts) -> None:
    """MH1: a node's InternalIP is its host's address. MH2: a pod's address comes from its node's range,
    is assigned on the host's interface, and a pod on another host connects to it."""
    hosts3.start()
    fabric, cluster = hosts3.fabric, hosts3.cluster
    h1, h2 = fabric.hosts[0], fabric.hosts[1]
    for host in fabric.hosts:
        addresses = hosts3.node(host.name)["status"]["addresses"]
        assert {"type": "InternalIP", "address": host.address} in addresses
    server = pod("server", f"exec {PYTHON} -c \"$SRC\"", **_on(h1.name))
    server["spec"]["containers"][0]["env"] = [*POD_IP_ENV, {"name": "SRC", "value": SERVER}]
    cluster.apply(server)
    server = cluster.wait_running("server")
    server_ip = server["status"]["podIP"]
    assert ipaddress.ip_address(server_ip) in ipaddress.ip_network(h1.pod_cidr)
    assert server_ip != h1.address
    shown = fabric.run_in(h1, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
    assert f"{server_ip}/32" in shown, shown
    assert server_ip not in netaddr.addresses()  # on host 1's interface, not on the machine's

    client = pod("client", f"exec {PYTHON} -c \"$SRC\" {server_ip}", **_on(h2.name))
    client["spec"]["containers"][0]["env"] = [{"name": "SRC", "value": CLIENT}]
    cluster.apply(client)
    cluster.wait_running("client")
    client_ip = cluster.pod("client")["status"]["podIP"]
    assert client_ip.startswith(h2.pod_cidr.rsplit(".", 1)[0] + ".")
    got = wait_until(lambda: _log_line(cluster, "client", "got "), "the client's answer from the server", timeout=60)
    assert got == f"got server {server_ip}"

    # Deleting the pod takes its address off the interface (MH2).
    cluster.client.delete("pods", "server", "default")
    cluster.wait_gone("pods", "server", "default")
    wait_for(lambda: f"{server_ip}/32" not in fabric.run_in(h1, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout,
             "the server's address removed from host 1", 30,
             diagnose=lambda: (cluster.base / f"agent-{h1.name}.log").read_text()[-6000:])


def _log_line(cluster: Cluster, name: str, prefix: str) -> str | None:
    """The first line of the pod's log starting with ``prefix``: read through the API server, which
    reaches the pod's agent at its host's address (MH1)."""
    text = b"".join(cluster.client.logs(name, "default")).decode()
    return next((line for line in text.splitlines() if line.startswith(prefix)), None)


def _statefulset(name: str, replicas: int) -> list[Obj]:
    labels = {"app": name}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
               "spec": {"clusterIP": "None", "selector": labels, "ports": [{"port": 7000}]}}
    template_pod = pod("x", "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done", claims={"data": "/data"})
    spec = template_pod["spec"]
    spec["volumes"] = []  # the claim comes from the template below
    spec["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": labels}, "topologyKey": "kubernetes.io/hostname"}]}}
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "namespace": "default"},
           "spec": {"serviceName": name, "replicas": replicas, "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": spec},
                    "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                        "accessModes": ["ReadWriteOnce"], "storageClassName": "local",
                        "resources": {"requests": {"storage": "64Mi"}}}}]}}
    return [service, sts]


def test_mh3_mh4_mh5_members_spread_across_hosts_and_local_members_stay_with_a_lost_host(hosts3: Hosts) -> None:
    """MH3: required anti-affinity on the hostname puts each member on its own host. MH4: a host whose
    link is cut goes Ready=Unknown; its member's claim stays bound to the volume on that host, and a
    replacement of the member waits for that host (as Kubernetes: a local volume cannot follow).
    MH5: the host back on the network is Ready again and the member runs there with its claim; an
    agent killed with SIGKILL and started again adopts its running member."""
    hosts3.start()
    fabric, cluster = hosts3.fabric, hosts3.cluster
    cluster.apply(local_class(), *_statefulset("db", 3))
    placed: dict[str, str] = {}
    for i in range(3):
        member = cluster.wait_running(f"db-{i}", timeout=120)
        placed[f"db-{i}"] = member["spec"]["nodeName"]
    assert sorted(placed.values()) == ["mh1", "mh2", "mh3"], placed
    lost = fabric.host(placed["db-1"])
    volume_name = cluster.client.get("persistentvolumeclaims", "data-db-1", "default")["spec"]["volumeName"]
    volume = cluster.client.get("persistentvolumes", volume_name)
    terms = volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert lost.name in str(terms)

    fabric.cut(lost)
    try:
        wait_until(lambda: condition(hosts3.node(lost.name), "Ready") == "Unknown", f"{lost.name} Ready=Unknown")
        # The member is replaced only once deleted (a StatefulSet never runs two of one identity).
        cluster.client.delete("pods", "db-1", "default", grace_period_seconds=0)
        wait_until(lambda: (lambda p: p if p["metadata"]["uid"] != "" and not p["spec"].get("nodeName")
                            and any(e["reason"] == "FailedScheduling" for e in cluster.events_for("db-1")) else None)(
            cluster.pod("db-1")), "the new db-1 unschedulable while its host is lost")
        claim_now = cluster.client.get("persistentvolumeclaims", "data-db-1", "default")
        assert claim_now["status"]["phase"] == "Bound" and claim_now["spec"]["volumeName"] == volume_name
    finally:
        fabric.restore(lost)
    wait_until(lambda: condition(hosts3.node(lost.name), "Ready") == "True", f"{lost.name} Ready again", timeout=90)
    back = cluster.wait_running("db-1", timeout=120)
    assert back["spec"]["nodeName"] == lost.name
    assert cluster.client.get("persistentvolumeclaims", "data-db-1", "default")["spec"]["volumeName"] == volume_name

    # SIGKILL of an agent: its node goes Unknown, the member keeps running, a new agent adopts it.
    third = fabric.host(placed["db-2"])
    proc = hosts3.agents[third.name]
    before = cluster.pod("db-2")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    wait_until(lambda: condition(hosts3.node(third.name), "Ready") == "Unknown", f"{third.name} Ready=Unknown")
    hosts3.start_agent(third)
    wait_for(lambda: condition(hosts3.node(third.name), "Ready") == "True", f"{third.name} Ready again", 90,
             diagnose=lambda: (cluster.base / f"agent-{third.name}.log").read_text()[-5000:])
    after = cluster.wait_running("db-2", ready=True)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["status"]["podIP"] == before["status"]["podIP"]


def test_lr_opt_in_recovery_recreates_a_lost_members_claim_on_a_live_host(hosts3: Hosts) -> None:
    """LR1-LR6 across real hosts: with ``stowage.io/recover-on-node-loss`` on the class, a member whose host
    is cut off for longer than the duration gets a new claim on a live host and runs there; the old
    volume is released and deleted once its host is back."""
    hosts3.start()
    fabric, cluster = hosts3.fabric, hosts3.cluster
    storage_class = local_class()
    storage_class["metadata"]["annotations"] = {"stowage.io/recover-on-node-loss": "2s"}
    cluster.apply(storage_class, *_statefulset("db", 2))
    placed = {f"db-{i}": cluster.wait_running(f"db-{i}", timeout=120)["spec"]["nodeName"] for i in range(2)}
    lost = fabric.host(placed["db-1"])
    spare = next(h.name for h in fabric.hosts if h.name not in placed.values())
    old_claim = cluster.client.get("persistentvolumeclaims", "data-db-1", "default")
    old_volume = old_claim["spec"]["volumeName"]

    fabric.cut(lost)
    try:
        def recreated() -> Obj | None:
            claim_now = cluster.client.get("persistentvolumeclaims", "data-db-1", "default")
            return claim_now if claim_now["metadata"]["uid"] != old_claim["metadata"]["uid"] else None

        wait_until(recreated, "a new claim data-db-1", timeout=120)
        member = cluster.wait_running("db-1", timeout=120)
        assert member["spec"]["nodeName"] == spare
        new_volume = cluster.client.get("persistentvolumeclaims", "data-db-1", "default")["spec"]["volumeName"]
        assert new_volume != old_volume and spare in str(cluster.client.get("persistentvolumes", new_volume)["spec"])
        events = [e for e in cluster.events_for("data-db-1") if e["reason"] == "RecoveringFromNodeLoss"]
        assert events and f"node {lost.name} not Ready since" in events[0]["message"]
        assert old_volume in events[0]["message"] and "abandoned" in events[0]["message"]
        assert cluster.pod("db-0")["spec"]["nodeName"] == placed["db-0"]  # the other member is untouched
    finally:
        fabric.restore(lost)
    # The host is back: the old volume, released, goes by its reclaim policy (Delete).
    cluster.wait_gone("persistentvolumes", old_volume, timeout=120, diagnose=lambda: cluster.agent_log(lost.name))
