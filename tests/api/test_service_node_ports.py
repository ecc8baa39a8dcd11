"""Service node ports (SEMANTICS K7) through the real API server and the real kubectl: NodePort and
LoadBalancer Services get a free port of 30000-32767 for each port that names none, a requested one
outside the range or held by another Service is 422 with kube-apiserver's message, an update keeps
them, a change to ClusterIP or a deletion frees them, and creates racing through two API servers that
share one store never get the same port."""
from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from storage.apiserver.server import RunningServer, start_in_thread
from storage.store import open_store
from support import kubectl_binary

SVCS = "/api/v1/namespaces/default/services"


def _svc(name: str, stype: str = "NodePort", *ports: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": stype, "selector": {"app": name},
                     "ports": list(ports) or [{"port": 80, "targetPort": 8080}], **spec}}


def _node_ports(svc: dict[str, Any]) -> list[int | None]:
    return [p.get("nodePort") for p in svc["spec"]["ports"]]


def _causes(resp: httpx.Response) -> list[tuple[str, str]]:
    return [(c["field"], c["message"]) for c in resp.json()["details"]["causes"]]


def _kubectl(server: RunningServer, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    return subprocess.run([kubectl_binary(), "--kubeconfig", str(server.kubeconfig), "--cache-dir",
                           str(tmp_path / "cache"), *args], capture_output=True, text=True, timeout=120, env=env)


def test_k7_kubectl_shows_allocated_node_ports_and_apply_keeps_them(module_server: RunningServer,
                                                                      tmp_path: Path) -> None:
    manifest = tmp_path / "svc.yaml"
    manifest.write_text("""apiVersion: v1
kind: Service
metadata:
  name: k7-web
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata:
  name: k7-lb
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
  - {port: 443}
---
apiVersion: v1
kind: Service
metadata:
  name: k7-lb-none
spec:
  type: LoadBalancer
  allocateLoadBalancerNodePorts: false
  selector: {app: web}
  ports:
  - {port: 443}
""")
    applied = _kubectl(module_server, tmp_path, "apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    got = _kubectl(module_server, tmp_path, "get", "svc", "k7-web", "k7-lb", "k7-lb-none", "-o",
                   "jsonpath={range .items[*]}{.metadata.name} {.spec.ports[*].nodePort};{end}")
    assert got.returncode == 0, got.stderr
    ports = {name: [int(p) for p in rest.split()] for name, _, rest in
             (item.partition(" ") for item in got.stdout.strip(";").split(";"))}
    assert len(ports["k7-web"]) == 2 and len(set(ports["k7-web"])) == 2
    assert len(ports["k7-lb"]) == 1 and ports["k7-lb-none"] == []
    assert all(30000 <= p <= 32767 for p in ports["k7-web"] + ports["k7-lb"])

    table = _kubectl(module_server, tmp_path, "get", "svc", "k7-web", "k7-lb", "k7-lb-none")
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[1:]}
    web, dns = ports["k7-web"]
    assert rows["k7-web"][1] == "NodePort" and rows["k7-web"][4] == f"80:{web}/TCP,53:{dns}/UDP"
    assert rows["k7-lb"][1] == "LoadBalancer" and rows["k7-lb"][4] == f"443:{ports['k7-lb'][0]}/TCP"
    assert rows["k7-lb-none"][4] == "443/TCP"

    # A second apply of the same manifest (no nodePort in it), and one that changes the target port, keep them.
    again = _kubectl(module_server, tmp_path, "apply", "-f", str(manifest))
    assert again.returncode == 0, again.stderr
    manifest.write_text(manifest.read_text().replace("targetPort: 8080", "targetPort: 9090"))
    changed = _kubectl(module_server, tmp_path, "apply", "-f", str(manifest))
    assert changed.returncode == 0, changed.stderr
    got = _kubectl(module_server, tmp_path, "get", "svc", "k7-web", "-o", "jsonpath={.spec.ports[*].nodePort}")
    assert [int(p) for p in got.stdout.split()] == [web, dns]
    # kubectl replace sends the manifest whole, without the node ports: they are kept too.
    replaced = _kubectl(module_server, tmp_path, "replace", "-f", str(manifest))
    assert replaced.returncode == 0, replaced.stderr
    got = _kubectl(module_server, tmp_path, "get", "svc", "k7-web", "-o", "jsonpath={.spec.ports[*].nodePort}")
    assert [int(p) for p in got.stdout.split()] == [web, dns]

    refused = _kubectl(module_server, tmp_path, "create", "service", "nodeport", "k7-low", "--tcp=80:80",
                       "--node-port=80")
    assert refused.returncode != 0
    assert ('Service "k7-low" is invalid: spec.ports[0].nodePort: Invalid value: 80: provided port is not '
            "in the valid range. The range of valid ports is 30000-32767") in refused.stderr, refused.stderr

    deleted = _kubectl(module_server, tmp_path, "delete", "-f", str(manifest))
    assert deleted.returncode == 0, deleted.stderr


def test_k7_requested_ports_are_checked_against_the_range_and_other_services(http: httpx.Client) -> None:
    resp = http.post(SVCS, json=_svc("k7-out", "NodePort", {"port": 80, "nodePort": 80}))
    assert resp.status_code == 422, resp.text
    assert resp.json()["message"] == ('Service "k7-out" is invalid: spec.ports[0].nodePort: Invalid value: 80: '
                                      "provided port is not in the valid range. The range of valid ports is "
                                      "30000-32767")
    resp = http.post(SVCS, json=_svc("k7-a", "NodePort", {"port": 80, "nodePort": 30080}))
    assert resp.status_code == 201, resp.text
    assert _node_ports(resp.json()) == [30080]
    resp = http.post(SVCS, json=_svc("k7-b", "NodePort", {"name": "x", "port": 81},
                                     {"name": "y", "port": 80, "nodePort": 30080}))
    assert resp.status_code == 422, resp.text
    assert _causes(resp) == [("spec.ports[1].nodePort", "Invalid value: 30080: provided port is already allocated")]
    assert http.get(f"{SVCS}/k7-b").status_code == 404
    # Nor may a LoadBalancer that allocates none, nor a health check port, take a held port.
    resp = http.post(SVCS, json=_svc("k7-b", "LoadBalancer", {"port": 80, "nodePort": 30080},
                                     allocateLoadBalancerNodePorts=False))
    assert resp.status_code == 422 and "provided port is already allocated" in resp.text
    resp = http.post(SVCS, json=_svc("k7-b", "LoadBalancer", externalTrafficPolicy="Local",
                                     healthCheckNodePort=30080))
    assert resp.status_code == 500, resp.text
    assert resp.json()["message"] == ("Internal error occurred: failed to allocate requested HealthCheck NodePort "
                                      "30080: provided port is already allocated")

    # One Service may use a node port twice only with two protocols, as Kubernetes' ValidateService.
    resp = http.post(SVCS, json=_svc("k7-dns", "NodePort", {"name": "t", "port": 53, "nodePort": 30053},
                                     {"name": "u", "port": 53, "protocol": "UDP", "nodePort": 30053}))
    assert resp.status_code == 201 and _node_ports(resp.json()) == [30053, 30053], resp.text
    resp = http.post(SVCS, json=_svc("k7-dup", "NodePort", {"name": "t", "port": 53, "nodePort": 30054},
                                     {"name": "u", "port": 54, "nodePort": 30054}))
    assert resp.status_code == 422 and _causes(resp) == [("spec.ports[1].nodePort", "Duplicate value: 30054")]
    # Ports of one number get one node port when none is named (53/TCP and 53/UDP).
    resp = http.post(SVCS, json=_svc("k7-dns2", "NodePort", {"name": "t", "port": 53},
                                     {"name": "u", "port": 53, "protocol": "UDP"}))
    assert resp.status_code == 201, resp.text
    first, second = _node_ports(resp.json())
    assert first == second and first not in (30053, 30080)

    resp = http.post(SVCS, json=_svc("k7-cip", "ClusterIP", {"port": 80, "nodePort": 30081}))
    assert resp.status_code == 422
    assert _causes(resp) == [("spec.ports[0].nodePort", "Forbidden: may not be used when `type` is 'ClusterIP'")]
    resp = http.post(SVCS, json=_svc("k7-cip", "NodePort", healthCheckNodePort=30081))
    assert resp.status_code == 422 and _causes(resp) == [(
        "spec.healthCheckNodePort",
        "Invalid value: 30081: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'")]
    # A dry run answers with a port, holding none.
    resp = http.post(f"{SVCS}?dryRun=All", json=_svc("k7-dry", "NodePort", {"port": 80, "nodePort": 30082}))
    assert resp.status_code == 201 and _node_ports(resp.json()) == [30082]
    resp = http.post(f"{SVCS}?dryRun=All", json=_svc("k7-dry", "NodePort", {"port": 80, "nodePort": 30080}))
    assert resp.status_code == 422
    for name in ("k7-a", "k7-dns", "k7-dns2"):
        assert http.delete(f"{SVCS}/{name}").status_code == 200


def test_k7_updates_keep_node_ports_and_clusterip_or_deletion_frees_them(http: httpx.Client) -> None:
    resp = http.post(SVCS, json=_svc("k7-up", "NodePort", {"name": "http", "port": 80},
                                     {"name": "admin", "port": 81, "nodePort": 30181}))
    assert resp.status_code == 201, resp.text
    live = resp.json()
    allocated, requested = _node_ports(live)
    assert requested == 30181 and 30000 <= allocated <= 32767

    # A PUT that leaves the node ports out keeps them (by port name), and a new port gets a new one.
    body = _svc("k7-up", "NodePort", {"name": "http", "port": 80}, {"name": "admin", "port": 81},
                {"name": "extra", "port": 82})
    resp = http.put(f"{SVCS}/k7-up", json=body)
    assert resp.status_code == 200, resp.text
    kept_a, kept_b, extra = _node_ports(resp.json())
    assert (kept_a, kept_b) == (allocated, 30181) and extra not in (allocated, 30181, None)
    # Asking for another Service's port on update is refused; for a free one, moves the port.
    other = http.post(SVCS, json=_svc("k7-other", "NodePort", {"port": 80, "nodePort": 30182}))
    assert other.status_code == 201, other.text
    live = resp.json()
    live["spec"]["ports"][1]["nodePort"] = 30182
    resp = http.put(f"{SVCS}/k7-up", json=live)
    assert resp.status_code == 422 and _causes(resp) == [
        ("spec.ports[1].nodePort", "Invalid value: 30182: provided port is already allocated")]
    resp = http.patch(f"{SVCS}/k7-up", json={"spec": {"ports": [{"port": 81, "nodePort": 30183}]}},
                      headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert resp.status_code == 200, resp.text
    assert _node_ports(resp.json()) == [allocated, 30183, extra]
    # 30181 is free again: another Service takes it.
    resp = http.post(SVCS, json=_svc("k7-181", "NodePort", {"port": 80, "nodePort": 30181}))
    assert resp.status_code == 201, resp.text

    # A change of type to ClusterIP drops the node ports (no edit of each port needed) and frees them.
    resp = http.patch(f"{SVCS}/k7-up", json={"spec": {"type": "ClusterIP"}},
                      headers={"Content-Type": "application/merge-patch+json"})
    assert resp.status_code == 200, resp.text
    assert _node_ports(resp.json()) == [None, None, None]
    assert "externalTrafficPolicy" not in resp.json()["spec"]
    resp = http.post(SVCS, json=_svc("k7-183", "NodePort", {"port": 80, "nodePort": 30183}))
    assert resp.status_code == 201, resp.text
    # A ClusterIP Service asking for a node port in the same write is refused.
    resp = http.patch(f"{SVCS}/k7-181", json={"spec": {"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30999}]}},
                      headers={"Content-Type": "application/merge-patch+json"})
    assert resp.status_code == 422 and _causes(resp) == [
        ("spec.ports[0].nodePort", "Forbidden: may not be used when `type` is 'ClusterIP'")]

    # Deletion frees the ports.
    assert http.delete(f"{SVCS}/k7-183").status_code == 200
    resp = http.post(SVCS, json=_svc("k7-183b", "NodePort", {"port": 80, "nodePort": 30183}))
    assert resp.status_code == 201, resp.text

    # LoadBalancer with externalTrafficPolicy Local: a health check port from the same range, kept on
    # update and freed when the policy goes back to Cluster.
    resp = http.post(SVCS, json=_svc("k7-lbl", "LoadBalancer", externalTrafficPolicy="Local"))
    assert resp.status_code == 201, resp.text
    spec = resp.json()["spec"]
    health = spec["healthCheckNodePort"]
    assert 30000 <= health <= 32767 and health != spec["ports"][0]["nodePort"]
    assert spec["allocateLoadBalancerNodePorts"] is True
    resp = http.put(f"{SVCS}/k7-lbl", json=_svc("k7-lbl", "LoadBalancer", externalTrafficPolicy="Local"))
    assert resp.status_code == 200 and resp.json()["spec"]["healthCheckNodePort"] == health, resp.text
    resp = http.patch(f"{SVCS}/k7-lbl", json={"spec": {"externalTrafficPolicy": "Cluster"}},
                      headers={"Content-Type": "application/merge-patch+json"})
    assert resp.status_code == 200 and "healthCheckNodePort" not in resp.json()["spec"], resp.text
    resp = http.post(SVCS, json=_svc("k7-hc", "NodePort", {"port": 80, "nodePort": health}))
    assert resp.status_code == 201, resp.text
    for name in ("k7-up", "k7-other", "k7-181", "k7-183b", "k7-lbl", "k7-hc"):
        assert http.delete(f"{SVCS}/{name}").status_code == 200


@pytest.fixture
def two_servers(store_url: str, tmp_path: Path) -> Iterator[list[RunningServer]]:
    """Two API servers, each with its own connection pool, on one store: two replicas."""
    servers: list[RunningServer] = []
    stores = []
    try:
        for i in range(2):
            store = open_store(store_url)
            stores.append(store)
            data_dir = tmp_path / f"apiserver{i}"
            data_dir.mkdir()
            servers.append(start_in_thread(store, data_dir=data_dir, kubeconfig=data_dir / "kubeconfig"))
        yield servers
    finally:
        for server in servers:
            server.stop()
        for store in stores:
            store.close()


@pytest.mark.xdist_group("k7-replicas")
def test_k7_concurrent_creates_through_two_servers_never_share_a_port(two_servers: list[RunningServer]) -> None:
    clients = [httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {s.token}"}, timeout=120,
                            verify=s.verify()) for s in two_servers]
    try:
        def create(i: int, requested: int | None = None) -> httpx.Response:
            port: dict[str, Any] = {"port": 80} if requested is None else {"port": 80, "nodePort": requested}
            return clients[i % 2].post(SVCS, json=_svc(f"race-{i}", "NodePort", port))

        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(create, range(20)))
        assert all(r.status_code == 201 for r in results), [r.text for r in results if r.status_code != 201]
        ports = [_node_ports(r.json())[0] for r in results]
        assert len(set(ports)) == 20 and all(30000 <= p <= 32767 for p in ports), ports

        # Ten creates asking for one free port at once: exactly one gets it.
        free = next(p for p in range(31000, 32767) if p not in ports)
        with ThreadPoolExecutor(max_workers=10) as pool:
            results = list(pool.map(lambda i: create(i, free), range(100, 110)))
        codes = sorted(r.status_code for r in results)
        assert codes == [201] + [422] * 9, [r.text for r in results]
        listed = clients[0].get(SVCS).json()["items"]
        everyone = [p.get("nodePort") for s in listed if s["metadata"]["name"].startswith("race-")
                    for p in s["spec"]["ports"]]
        assert len(everyone) == 21 and len(set(everyone)) == 21
    finally:
        for c in clients:
            c.close()
