"""Several `stowage serve` replicas on one PostgreSQL: one API, one leader (issue 17 item 1, SEMANTICS HA)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from ha_support import ReplicaSet, serve_env, wait_until
from support import UpProcess, kubectl_binary, thread_cpus

from storage.api.bootstrap_tokens import new_bootstrap_token
from storage.client import Client
from storage.client.kubeconfig import load_access, write_kubeconfig
from storage.errors import NotFound

pytestmark = pytest.mark.postgres

CM_PATH = "/api/v1/namespaces/default/configmaps"


def _configmap(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def test_ha_every_replica_accepts_the_same_credentials_and_ca(replica_set: ReplicaSet, tmp_path: Path) -> None:
    """HA7: the second replica takes the first one's admin token, CA and signing keys from the store, so one
    kubeconfig (our client and real kubectl) works against either; HA1: only one of them leads."""
    a = replica_set.start("a")
    b = replica_set.start("b")
    assert a.access.token == b.access.token
    assert a.access.ca_data == b.access.ca_data
    # A's kubeconfig, B's address: B's serving certificate verifies against A's CA and B accepts A's token.
    with b.http(a.access) as http:
        assert http.post(CM_PATH, json=_configmap("through-b")).status_code == 201
    with a.http() as http:
        assert http.get(f"{CM_PATH}/through-b").status_code == 200
    # A service-account token minted by A is verified by B (same signing key).
    with a.http() as http:
        minted = http.post("/api/v1/namespaces/default/serviceaccounts/default/token",
                           json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                 "spec": {"expirationSeconds": 600}})
        assert minted.status_code == 201, minted.text
        sa_token = minted.json()["status"]["token"]
    with b.http(a.access) as http:
        review = http.get("/api/v1/namespaces/default/configmaps", headers={"Authorization": f"Bearer {sa_token}"})
        assert review.status_code in (200, 403), review.text  # authenticated (RBAC decides), never 401
    kubeconfig = write_kubeconfig(tmp_path / "to-b.kubeconfig", b.url, a.access.token, ca_data=a.access.ca_data)
    result = subprocess.run([kubectl_binary("1.37"), "--kubeconfig", str(kubeconfig), "get", "configmap",
                             "through-b", "-o", "jsonpath={.metadata.name}"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "through-b"
    assert replica_set.holder() in ("a", "b")
    lease = replica_set.lease()["spec"]
    assert lease["leaseDurationSeconds"] == 3 and lease["renewTime"] and lease["acquireTime"]


def test_ha_replica_refuses_a_different_encryption_key(replica_set: ReplicaSet, tmp_path: Path) -> None:
    """HA7: credentials are a Secret, encrypted at rest; a replica with another key says what to fix."""
    replica_set.start("a")
    other = tmp_path / "other-encryption"
    other.mkdir()
    from storage.store.encryption import ensure_config

    proc = subprocess.run(
        [sys.executable, "-m", "storage.cli", "serve", "--data-dir", str(tmp_path / "x"), "--listen", "127.0.0.1:0",
         "--store", replica_set.store_url, "--encryption-provider-config", str(ensure_config(other))],
        capture_output=True, text=True, timeout=120, env=replica_set.env, check=False)
    assert proc.returncode != 0
    assert "same --encryption-provider-config" in proc.stderr


def _watch(replica_url: str, http: httpx.Client, since: str, names: str, want: int, out: list[dict[str, Any]],
           done: threading.Event) -> None:
    params = {"watch": "true", "resourceVersion": since, "timeoutSeconds": "60"}
    with http.stream("GET", CM_PATH, params=params, timeout=httpx.Timeout(30, read=None)) as response:
        assert response.status_code == 200, replica_url
        done.set()  # the stream is open
        for line in response.iter_lines():
            if not line.strip():
                continue
            event = json.loads(line)
            if not event["object"]["metadata"]["name"].startswith(names):
                continue
            out.append(event)
            if len(out) >= want:
                return


def test_ha_watch_on_one_replica_sees_every_write_through_another(replica_set: ReplicaSet) -> None:
    """HA3: a watch on B gets every write made through A, in order, once; resumed from a resourceVersion on C
    after "reconnecting", it continues exactly where it stopped."""
    a, b, c = replica_set.start("a"), replica_set.start("b"), replica_set.start("c")
    with a.http() as http_a, b.http() as http_b, c.http() as http_c:
        since = http_b.get(CM_PATH).json()["metadata"]["resourceVersion"]
        expected: list[tuple[str, str, str]] = []
        seen: list[dict[str, Any]] = []
        opened = threading.Event()
        total = 20 + 20 + 5
        watcher = threading.Thread(target=_watch, args=(b.url, http_b, since, "w-", total, seen, opened), daemon=True)
        watcher.start()
        assert opened.wait(30)
        for i in range(20):
            made = http_a.post(CM_PATH, json=_configmap(f"w-{i:02d}", n="0")).json()
            expected.append(("ADDED", made["metadata"]["name"], made["metadata"]["resourceVersion"]))
        for i in range(20):
            current = http_a.get(f"{CM_PATH}/w-{i:02d}").json()
            current["data"]["n"] = "1"
            made = http_a.put(f"{CM_PATH}/w-{i:02d}", json=current).json()
            expected.append(("MODIFIED", made["metadata"]["name"], made["metadata"]["resourceVersion"]))
        for i in range(5):
            gone = http_a.delete(f"{CM_PATH}/w-{i:02d}")
            assert gone.status_code == 200, gone.text
        watcher.join(60)
        got = [(e["type"], e["object"]["metadata"]["name"], e["object"]["metadata"]["resourceVersion"]) for e in seen]
        assert got[:40] == expected
        assert [(t, n) for t, n, _ in got[40:]] == [("DELETED", f"w-{i:02d}") for i in range(5)]
        versions = [int(v) for _, _, v in got]
        assert versions == sorted(versions) and len(set(versions)) == len(versions)  # in order, no duplicates
        # The client "reconnects" to another replica from the last version it saw mid-way.
        resumed: list[dict[str, Any]] = []
        opened = threading.Event()
        _watch(c.url, http_c, got[24][2], "w-", total - 25, resumed, opened)
        assert [(e["type"], e["object"]["metadata"]["name"], e["object"]["metadata"]["resourceVersion"])
                for e in resumed] == got[25:]


def _create(http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post(path, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def hostpath_class(http: httpx.Client) -> None:
    _create(http, "/apis/storage.k8s.io/v1/storageclasses", {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "hp"},
        "provisioner": "stowage.io/hostpath", "volumeBindingMode": "Immediate", "reclaimPolicy": "Delete"})


def claim(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "hp",
                     "resources": {"requests": {"storage": "1Mi"}}}}


def phase(http: httpx.Client, name: str) -> str:
    response = http.get(f"/api/v1/namespaces/default/persistentvolumeclaims/{name}")
    return str((response.json().get("status") or {}).get("phase") or "") if response.status_code == 200 else ""


def test_ha_kill9_of_the_leader_moves_the_controllers(replica_set: ReplicaSet) -> None:
    """HA2: kill -9 of the Lease holder -> another replica takes the Lease (one more transition) and its
    controllers act (HA9: from a warm cache): a claim created through a survivor right after the kill gets
    bound. HA1: the followers ran no controllers meanwhile. How fast is benchmarks/failover.py's figure
    (median of 5 kills), not a stopwatch here: a loaded CI machine stretches it."""
    for name in ("a", "b", "c"):
        replica_set.start(name)
    leader = replica_set.leader()
    survivor = next(r for r in replica_set.live() if r is not leader)
    with survivor.http() as http:
        hostpath_class(http)
        _create(http, "/api/v1/namespaces/default/persistentvolumeclaims", claim("before"))
        wait_until(lambda: phase(http, "before") == "Bound", 30, "the first claim to be bound")
        transitions = replica_set.lease()["spec"]["leaseTransitions"]
        leader.kill()
        _create(http, "/api/v1/namespaces/default/persistentvolumeclaims", claim("after-kill"))
        new = replica_set.leader(timeout=30)
        assert new is not leader and new.alive
        assert replica_set.lease()["spec"]["leaseTransitions"] == transitions + 1
        wait_until(lambda: phase(http, "after-kill") == "Bound", 30, "the new leader to bind the claim")
    # Exactly one leader among the survivors: the other never logged started_leading after the kill.
    others = [r for r in replica_set.live() if r is not new]
    for other in others:
        assert not any('"started_leading"' in line for line in other.up.seen)


def test_ha_clean_stop_hands_over_at_once(replica_set: ReplicaSet) -> None:
    """HA6: a leader stopped with SIGTERM releases the Lease, so a follower takes it without waiting it out."""
    a = replica_set.start("a")
    replica_set.start("b")
    assert replica_set.leader().name == "a"
    a.up.proc.send_signal(signal.SIGTERM)
    assert a.up.proc.wait(60) == 0
    # a gave the Lease up on its way out (not a timing: on a loaded machine the stop itself can outlast
    # the lease), and b took it.
    released = a.up.wait_for("leader_released", 10)
    assert released["identity"] == "a"
    wait_until(lambda: replica_set.holder() == "b", 10, "b to take the released Lease")


def test_ha_serve_replicas_and_client_failover(postgres_url: str, tmp_path: Path) -> None:
    """HA8: `stowage serve --replicas 2` starts two replicas and one kubeconfig naming both; after kill -9 of
    the first, our client (and a node agent) keep working through the second."""
    from ha_support import drop_pg_schema, fresh_pg_schema

    schema, url = fresh_pg_schema(postgres_url)
    env = serve_env(tmp_path / "home")
    up = UpProcess("serve", ["--replicas", "2", "--data-dir", str(tmp_path / "cluster"), "--listen", "127.0.0.1:0",
                             "--store", url, "--leader-elect-lease-duration", "3s",
                             "--leader-elect-renew-deadline", "2s", "--leader-elect-retry-period", "500ms"], env)
    agent: subprocess.Popen[bytes] | None = None
    try:
        ready = up.wait_for("stowage is ready")
        servers, pids = ready["servers"], ready["pids"]
        assert len(servers) == 2 and len(set(servers)) == 2
        access = load_access(ready["kubeconfig"])
        assert access.servers == tuple(servers)
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            # PF92: with --api-server-cpu auto the replicas' API servers take the CPUs in turn.
            for index, pid in enumerate(pids):
                pinned = {frozenset(c) for c in thread_cpus(pid).values() if len(c) == 1}
                assert pinned == {frozenset({cpus[index % len(cpus)]})}, (index, thread_cpus(pid))
        # The node agent joins through a bootstrap kubeconfig naming both replicas.
        with Client.from_access(access) as client:
            client.create(_configmap("before"))
            token, secret = new_bootstrap_token(3600, "the HA test's agent")
            client.create(secret)
        bootstrap = write_kubeconfig(tmp_path / "bootstrap.kubeconfig", servers[0], token,
                                     ca_data=access.ca_data, servers=servers)
        with open(tmp_path / "agent.log", "ab") as agent_log:
            agent = subprocess.Popen([sys.executable, "-m", "storage.cli", "agent", "--node", "ha-n1",
                                      "--bootstrap-kubeconfig", str(bootstrap), "--data-dir", str(tmp_path / "agent"),
                                      "--heartbeat", "1"],
                                     stdout=agent_log, stderr=agent_log, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=env)
        with Client.from_access(access) as client:
            def node_lease() -> str:
                try:
                    return str(client.get("leases", "ha-n1", "kube-node-lease")["spec"]["renewTime"])
                except (NotFound, httpx.HTTPError):
                    return ""
            wait_until(node_lease, 90, "the agent's node Lease")
            os.kill(pids[0], signal.SIGKILL)  # the replica named first in every kubeconfig
            # Our client: the first server refuses connections, the second answers.
            assert client.get("configmaps", "before", "default")["metadata"]["name"] == "before"
            client.create(_configmap("after"))
            # The agent: its heartbeats go on through the second replica.
            renewed = node_lease()
            wait_until(lambda: node_lease() not in ("", renewed), 30, "a node Lease renewal after the kill")
            assert "api_server_failover" in (tmp_path / "agent.log").read_text()
    finally:
        if agent is not None and agent.poll() is None:
            os.killpg(agent.pid, signal.SIGTERM)
            try:
                agent.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()
        if up.proc.poll() is None:
            up.stop(120)
        drop_pg_schema(postgres_url, schema)
