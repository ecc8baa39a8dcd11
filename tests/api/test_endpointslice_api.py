"""discovery.k8s.io/v1 EndpointSlices through the API server (SEMANTICS EPS1): Kubernetes' defaults and its
ValidateEndpointSlice refusals in its words, and kubectl's columns with each kubectl the README promises."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from apiobjects import causes
from storage.apiserver.server import RunningServer
from support import KUBECTL_VERSIONS, run_kubectl

SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"


def a_slice(name: str, address_type: str = "IPv4", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "web"}},
                            "addressType": address_type,
                            "endpoints": [{"addresses": ["10.1.2.3"], "conditions": {"ready": True}}],
                            "ports": [{"port": 8080}]}
    body.update(fields)
    return body


def test_eps1_a_slice_is_stored_with_kubernetes_defaults(http: httpx.Client) -> None:
    made = http.post(SLICES, json=a_slice("defaults"))
    assert made.status_code == 201, made.text
    assert made.json()["ports"] == [{"name": "", "protocol": "TCP", "port": 8080}]
    got = http.get(f"{SLICES}/defaults").json()
    assert got["addressType"] == "IPv4" and got["endpoints"][0]["addresses"] == ["10.1.2.3"]
    # addressType is immutable, as in Kubernetes.
    got["addressType"] = "IPv6"
    got["endpoints"] = [{"addresses": ["2001:db8::5"]}]
    assert 'addressType: Invalid value: "IPv6": field is immutable' in causes(http.put(f"{SLICES}/defaults", json=got))
    selected = http.get(SLICES, params={"labelSelector": "kubernetes.io/service-name=web"}).json()["items"]
    assert "defaults" in {s["metadata"]["name"] for s in selected}


@pytest.mark.parametrize("fields, wanted", [
    ({"addressType": ""}, ["addressType: Required value"]),
    ({"addressType": "IPX"}, ['addressType: Unsupported value: "IPX": supported values: "FQDN", "IPv4", "IPv6"']),
    ({"endpoints": [{"addresses": []}]}, ["endpoints[0].addresses: Required value: must contain at least 1 address"]),
    ({"endpoints": [{"addresses": ["10.1.2"]}]},
     ['endpoints[0].addresses[0]: Invalid value: "10.1.2": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)']),
    ({"endpoints": [{"addresses": ["010.1.2.3"]}]},
     ['endpoints[0].addresses[0]: Invalid value: "010.1.2.3": must not have leading 0s']),
    ({"endpoints": [{"addresses": ["2001:db8::1"]}]},
     ['endpoints[0].addresses: Invalid value: "2001:db8::1": must be an IPv4 address']),
    ({"endpoints": [{"addresses": ["169.254.1.1", "0.0.0.0", "224.0.0.5"]}]},
     ['endpoints[0].addresses[0]: Invalid value: "169.254.1.1": may not be in the link-local range (169.254.0.0/16, fe80::/10)',
      'endpoints[0].addresses[1]: Invalid value: "0.0.0.0": may not be unspecified (0.0.0.0)',
      'endpoints[0].addresses[2]: Invalid value: "224.0.0.5": may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)']),
    ({"endpoints": [{"addresses": ["10.1.2.3"], "hostname": "Web_0", "nodeName": "n/1"}]},
     ['endpoints[0].nodeName: Invalid value: "n/1": a lowercase RFC 1123 subdomain must consist of',
      'endpoints[0].hostname: Invalid value: "Web_0": a lowercase RFC 1123 label must consist of']),
    ({"ports": [{"name": "http", "port": 80}, {"name": "http", "port": 81, "protocol": "HTTP"}]},
     ['ports[1].name: Duplicate value: "http"',
      'ports[1].protocol: Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP"']),
    ({"endpoints": [{"addresses": ["10.1.2.3"]}] * 1001}, ["endpoints: Too many: 1001: must have at most 1000 items"]),
    ({"endpoints": [{"addresses": ["10.1.2.3"], "hints": {"forZones": [{"name": "a"}, {"name": "a"}]}}]},
     ['endpoints[0].hints.forZones[1].name: Duplicate value: "a"']),
])
def test_eps1_invalid_slices_are_refused_in_kubernetes_words(http: httpx.Client, fields: dict[str, Any],
                                                             wanted: list[str]) -> None:
    found = causes(http.post(SLICES, json=a_slice("bad", **fields)))
    assert len(found) == len(wanted), found
    for got, want in zip(found, wanted):
        assert got.startswith(want), (got, want)
    assert http.get(f"{SLICES}/bad").status_code == 404


def test_eps1_fqdn_and_ipv6_slices(http: httpx.Client) -> None:
    fqdn = a_slice("fqdn", "FQDN", endpoints=[{"addresses": ["db.example.com."]}])
    assert http.post(SLICES, json=fqdn).status_code == 201
    assert causes(http.post(SLICES, json=a_slice("fqdn-bad", "FQDN", endpoints=[{"addresses": ["localhost"]}]))) == [
        'endpoints[0].addresses[0]: Invalid value: "localhost": should be a domain with at least two segments '
        'separated by dots']
    assert http.post(SLICES, json=a_slice("v6", "IPv6", endpoints=[{"addresses": ["2001:db8::7"]}])).status_code == 201
    assert causes(http.post(SLICES, json=a_slice("v6-long", "IPv6", endpoints=[{"addresses": ["2001:db8:0::7"]}]))) == [
        'endpoints[0].addresses[0]: Invalid value: "2001:db8:0::7": must be in canonical form ("2001:db8::7")']


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_eps1_kubectl_lists_slices_with_its_columns(module_server: RunningServer, tmp_path: Path, version: str) -> None:
    namespace = f"eps-{version.replace('.', '')}"

    def kubectl(*args: str) -> str:
        done = run_kubectl(version, module_server.kubeconfig, tmp_path / "cache", *args)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    kubectl("create", "namespace", namespace)
    body = a_slice("many", endpoints=[{"addresses": [f"10.9.0.{i}"]} for i in range(1, 6)],
                   ports=[{"name": n, "port": p} for n, p in (("a", 80), ("b", 81), ("c", 82), ("d", 83))])
    with httpx.Client(base_url=module_server.url, headers={"Authorization": f"Bearer {module_server.token}"},
                      verify=module_server.verify()) as http:
        made = http.post(f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices", json=body)
        assert made.status_code == 201, made.text
    lines = kubectl("-n", namespace, "get", "endpointslices").strip().splitlines()
    assert lines[0].split() == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    # kubectl's listWithMoreString: three of each, then how many more.
    assert lines[1].startswith("many") and "IPv4" in lines[1], lines
    assert "80,81,82 + 1 more..." in lines[1] and "10.9.0.1,10.9.0.2,10.9.0.3 + 2 more..." in lines[1], lines



def test_eps4_the_kubernetes_service_has_the_api_servers_slice(tmp_path: Path) -> None:
    """As kube-apiserver writes it beside its Endpoints (which carry skip-mirror, so nothing mirrors them)."""
    from storage.api.validation import validate
    from storage.apiserver.namespaces import ensure_system_objects
    from storage.store import open_store

    store = open_store(str(tmp_path / "s.db"))
    try:
        for host, port in (("192.0.2.5", 6443), ("127.0.0.1", 7443)):  # a restart on another address and port
            ensure_system_objects(store, host, port)
            got = store.get("endpointslices", "default", "kubernetes")
            assert got["ports"] == [{"name": "https", "port": port, "protocol": "TCP"}]
            assert got["endpoints"] == [{"addresses": [host], "conditions": {"ready": True}}]
            assert got["metadata"]["labels"] == {"kubernetes.io/service-name": "kubernetes"}
            validate(got)  # what the server writes is what it would accept from a client
    finally:
        store.close()


def test_eps1_a_pods_loopback_address_is_kept(http: httpx.Client) -> None:
    """Stowage's pods on a single host have loopback addresses: a slice of them is stored (Kubernetes refuses
    loopback endpoints, whose pods never have such addresses)."""
    made = http.post(SLICES, json=a_slice("loopback", endpoints=[{"addresses": ["127.0.0.7"]}]))
    assert made.status_code == 201, made.text


ENDPOINTS_WARNING = "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"


def test_eps1_every_endpoints_request_carries_kubernetes_deprecation_warning(http: httpx.Client) -> None:
    """Kubernetes 1.33+ marks v1 Endpoints deprecated (APILifecycleDeprecated) and warns on every request to
    it, refused ones too; EndpointSlices carry no warning."""
    listed = http.get("/api/v1/namespaces/default/endpoints")
    missing = http.get("/api/v1/namespaces/default/endpoints/none-such")
    assert listed.status_code == 200 and missing.status_code == 404
    for response in (listed, missing):
        assert response.headers.get_list("warning") == [f'299 - "{ENDPOINTS_WARNING}"'], response.headers
    assert not http.get(SLICES).headers.get_list("warning")


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_eps1_kubectl_shows_the_endpoints_deprecation(module_server: RunningServer, tmp_path: Path,
                                                      version: str) -> None:
    done = run_kubectl(version, module_server.kubeconfig, tmp_path / "cache", "get", "endpoints", "kubernetes")
    assert done.returncode == 0, done.stderr
    assert f"Warning: {ENDPOINTS_WARNING}" in done.stderr and "kubernetes" in done.stdout
