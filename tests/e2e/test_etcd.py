"""examples/etcd end to end: `stowage up -f examples/etcd/` runs a real three-member etcd cluster.

Debian's etcd runs as each member's host program; members find each other by
their stable names (S1) through the /etc/hosts the agent writes, and keep
their data on their own local claims. The tests run in order on one cluster,
each starting from three Ready members.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stowage_e2e import Stowage, cmdline, find_pids, is_ready, poll
from support import need_programs

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "etcd"
SELECTOR = "app=etcd"
MEMBERS = ["etcd-0", "etcd-1", "etcd-2"]

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def cluster(start_stowage: Any) -> Stowage:
    need_programs("etcd", "etcdctl")
    stowage = start_stowage([EXAMPLE])
    stowage.wait_ready(SELECTOR, MEMBERS, timeout=300)
    return stowage


def etcdctl(ip: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["etcdctl", "--endpoints", f"http://{ip}:2379", "--command-timeout=5s", *args],
                          capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=timeout)


def ip_of(stowage: Stowage, name: str) -> str:
    return stowage.pods(SELECTOR)[name]["status"]["podIP"]


def put(ip: str, key: str, value: str) -> None:
    result = etcdctl(ip, "put", key, value)
    assert result.returncode == 0, f"put {key} through {ip}: {result.stderr}"


def get(ip: str, key: str) -> str:
    result = etcdctl(ip, "get", "--print-value-only", key)
    assert result.returncode == 0, f"get {key} through {ip}: {result.stderr}"
    return result.stdout.strip()


def member_ids(ip: str) -> dict[str, str]:
    """name -> member id, from `etcdctl member list -w json`."""
    result = etcdctl(ip, "member", "list", "-w", "json")
    assert result.returncode == 0, result.stderr
    members = json.loads(result.stdout)["members"]
    return {m.get("name", ""): format(m["ID"], "x") for m in members}


def healthy(stowage: Stowage) -> bool:
    pods = stowage.pods(SELECTOR)
    if sorted(pods) != MEMBERS or not all(is_ready(p) for p in pods.values()):
        return False
    return all(etcdctl(p["status"]["podIP"], "endpoint", "health").returncode == 0 for p in pods.values())


def wait_healthy(stowage: Stowage, timeout: float = 300) -> dict[str, dict[str, Any]]:
    poll("three Ready, healthy etcd members", lambda: healthy(stowage), timeout, diagnose=stowage.describe)
    return stowage.pods(SELECTOR)


def etcd_pid(stowage: Stowage, name: str, pod_ip: str) -> int | None:
    """The host PID of a member's etcd, by its command line (and our data dir, via its root)."""
    def match(pid: int) -> bool:
        argv = cmdline(pid)
        named = f"--name={name}" in argv or any(a == "--name" and b == name for a, b in zip(argv, argv[1:]))
        return bool(argv) and os.path.basename(argv[0]) == "etcd" and named and \
            f"--listen-peer-urls=http://{pod_ip}:2380" in argv
    pids = find_pids(stowage.data_dir, match)
    return pids[0] if len(pids) == 1 else None


def test_three_members_form_one_cluster_and_serve_each_others_writes_S1(cluster: Stowage) -> None:
    pods = wait_healthy(cluster)
    ips = {name: p["status"]["podIP"] for name, p in pods.items()}
    assert len(set(ips.values())) == 3  # each member its own address
    for name, pod in pods.items():
        assert pod["spec"]["hostname"] == name and pod["spec"]["subdomain"] == "etcd"
    assert sorted(member_ids(ips["etcd-0"])) == MEMBERS  # ONE cluster, not three
    put(ips["etcd-0"], "/e2e/greeting", "hello from etcd-0")
    assert get(ips["etcd-2"], "/e2e/greeting") == "hello from etcd-0"
    claims, _ = cluster.client.list("persistentvolumeclaims", "default")
    bound = {c["metadata"]["name"]: c["status"].get("phase") for c in claims}
    assert bound == {f"data-{m}": "Bound" for m in MEMBERS}


def test_deleted_member_comes_back_with_its_claim_and_data_and_rejoins_S1_S2(cluster: Stowage) -> None:
    pods = wait_healthy(cluster)
    ips = {name: p["status"]["podIP"] for name, p in pods.items()}
    put(ips["etcd-0"], "/e2e/before-delete", "kept")
    ids_before = member_ids(ips["etcd-0"])
    old_uid = pods["etcd-1"]["metadata"]["uid"]
    volume_before = cluster.client.get("persistentvolumeclaims", "data-etcd-1", "default")["spec"]["volumeName"]

    cluster.cli("delete", "pod", "etcd-1")

    def replaced() -> bool:
        pod = cluster.pods(SELECTOR).get("etcd-1")
        return bool(pod and pod["metadata"]["uid"] != old_uid and is_ready(pod))
    poll("etcd-1 recreated and Ready", replaced, 300, diagnose=cluster.describe)
    pods = wait_healthy(cluster)
    new_pod = pods["etcd-1"]
    claim_volumes = [v["persistentVolumeClaim"]["claimName"] for v in new_pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claim_volumes == ["data-etcd-1"]
    assert cluster.client.get("persistentvolumeclaims", "data-etcd-1", "default")["spec"]["volumeName"] == volume_before
    # Same member ID: it restarted from its own data dir; a member that lost its data could not rejoin.
    new_ip = new_pod["status"]["podIP"]
    assert member_ids(new_ip) == ids_before
    assert get(new_ip, "/e2e/before-delete") == "kept"
    assert etcdctl(new_ip, "get", "--consistency=s", "--print-value-only", "/e2e/before-delete").stdout.strip() == "kept"


def test_scale_to_zero_and_back_keeps_every_members_data_S5(cluster: Stowage) -> None:
    pods = wait_healthy(cluster)
    ip0 = pods["etcd-0"]["status"]["podIP"]
    for i in range(20):
        put(ip0, f"/e2e/scale/{i}", f"value-{i}")
    ids_before = member_ids(ip0)

    cluster.cli("scale", "statefulset", "etcd", "--replicas", "0")
    poll("every etcd member gone", lambda: not cluster.pods(SELECTOR), 300, diagnose=cluster.describe)
    claims, _ = cluster.client.list("persistentvolumeclaims", "default")
    assert sorted(c["metadata"]["name"] for c in claims) == [f"data-{m}" for m in MEMBERS]  # S5: Retain by default
    assert all(c["status"].get("phase") == "Bound" for c in claims)

    cluster.cli("scale", "statefulset", "etcd", "--replicas", "3")
    pods = wait_healthy(cluster)
    for name, pod in pods.items():
        ip = pod["status"]["podIP"]
        assert member_ids(ip) == ids_before, name
        assert get(ip, "/e2e/scale/19") == "value-19"
    assert get(pods["etcd-2"]["status"]["podIP"], "/e2e/before-delete") == "kept"


def test_rolling_update_replaces_members_highest_first_while_serving_S4(cluster: Stowage) -> None:
    pods = wait_healthy(cluster)
    old_uids = {name: p["metadata"]["uid"] for name, p in pods.items()}
    # The order of replacement is read from the watch stream (deletion marks in revision
    # order), not from snapshots: two members replaced within one polling round would
    # otherwise be recorded in list order.
    _, revision = cluster.client.list("pods", "default", label_selector=SELECTOR)
    deletion_order: list[str] = []

    def record_deletions() -> None:
        for event in cluster.client.watch("pods", "default", resource_version=revision,
                                          label_selector=SELECTOR, timeout=600):
            pod = event["object"]
            name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
            marked = event["type"] == "DELETED" or pod["metadata"].get("deletionTimestamp")
            if marked and uid == old_uids.get(name) and name not in deletion_order:
                deletion_order.append(name)
            if len(deletion_order) == len(MEMBERS):
                return

    watcher = threading.Thread(target=record_deletions, daemon=True)
    watcher.start()
    patch = [{"op": "add", "path": "/spec/template/spec/containers/0/env/-",
              "value": {"name": "EXAMPLE_ROLLOUT", "value": "2"}}]
    cluster.cli("patch", "statefulset", "etcd", "--type", "json", "-p", json.dumps(patch))

    replaced_order: list[str] = []
    writes = failures = 0
    deadline = time.monotonic() + 600
    while len(replaced_order) < 3:
        if time.monotonic() > deadline:
            pytest.fail(f"rollout incomplete after 600s; replaced so far {replaced_order}\n{cluster.describe()}")
        current = cluster.pods(SELECTOR)
        for name in MEMBERS:
            pod = current.get(name)
            if name not in replaced_order and (pod is None or pod["metadata"]["uid"] != old_uids[name]):
                replaced_order.append(name)
        # A write and a read through some live member, every round of the rollout.
        live = [p["status"]["podIP"] for p in current.values() if is_ready(p)]
        ok = False
        for ip in live:
            key = f"/e2e/rollout/{writes}"
            if etcdctl(ip, "put", key, "v").returncode == 0 and etcdctl(ip, "get", "--print-value-only", key).stdout.strip() == "v":
                ok = True
                break
        writes += 1
        failures += 0 if ok else 1
        time.sleep(0.5)
    watcher.join(timeout=60)
    assert deletion_order == ["etcd-2", "etcd-1", "etcd-0"], f"deleted in order {deletion_order}"
    pods = wait_healthy(cluster)
    for pod in pods.values():
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env.get("EXAMPLE_ROLLOUT") == "2"
    # Quorum holds throughout (one member down at a time); a leader election may cost a round or two.
    assert failures <= 2, f"{failures} of {writes} write/read rounds failed through every live member"
    assert get(pods["etcd-0"]["status"]["podIP"], "/e2e/greeting") == "hello from etcd-0"


def test_killed_etcd_process_is_restarted_in_place(cluster: Stowage) -> None:
    pods = wait_healthy(cluster)
    pod = pods["etcd-1"]
    ip = pod["status"]["podIP"]
    restarts_before = pod["status"]["containerStatuses"][0]["restartCount"]
    pid = poll("the host PID of etcd-1's etcd", lambda: etcd_pid(cluster, "etcd-1", ip), 30)

    os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        p = cluster.pods(SELECTOR)["etcd-1"]
        return p["metadata"]["uid"] == pod["metadata"]["uid"] and \
            p["status"]["containerStatuses"][0]["restartCount"] > restarts_before and is_ready(p)
    poll("etcd-1 restarted in the same pod", restarted, 300, diagnose=cluster.describe)
    pods = wait_healthy(cluster)
    new_pid = poll("the restarted etcd", lambda: etcd_pid(cluster, "etcd-1", pods["etcd-1"]["status"]["podIP"]), 30)
    assert new_pid != pid
    assert get(pods["etcd-1"]["status"]["podIP"], "/e2e/greeting") == "hello from etcd-0"
