"""The EndpointSlice plan (SEMANTICS EPS2–EPS4): which pods a Service's slices hold and with which
conditions, how they are cut and grouped, what a selector-less Service's Endpoints mirror to, and how
existing slices are reused."""
from __future__ import annotations

from typing import Any

from storage.controllers.endpointslices import (
    CONTROLLER, MAX_ENDPOINTS_PER_SLICE, MIRROR_CONTROLLER, desired_slices, mirrored_slices, pair_slices,
    selected_slices, slice_labels,
)

Obj = dict[str, Any]


def service(name: str = "web", **spec: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": "default", "uid": "svc-uid", "labels": {"team": "a"}},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
                     **spec}}


def pod(name: str, ip: str, *, ready: bool = True, node: str = "n1", port: int = 8080, **extra: Any) -> Obj:
    meta: Obj = {"name": name, "namespace": "default", "uid": f"uid-{name}", "labels": {"app": "web"}}
    if extra.get("terminating"):
        meta["deletionTimestamp"] = "2026-12-05T10:00:00Z"
    spec: Obj = {"nodeName": node, "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": port}]}]}
    if extra.get("hostname"):
        spec.update(hostname=extra["hostname"], subdomain="web")
    status: Obj = {"phase": extra.get("phase", "Running"), "podIP": ip,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return {"metadata": meta, "spec": spec, "status": status}


def test_eps2_each_pod_is_an_endpoint_with_kubernetes_conditions() -> None:
    pods = [pod("a", "10.0.0.2"), pod("b", "10.0.0.1", ready=False), pod("c", "10.0.0.3", terminating=True),
            pod("done", "10.0.0.4", phase="Succeeded"), pod("noip", ""),
            {**pod("other", "10.0.0.9"), "metadata": {"name": "other", "labels": {"app": "db"}}}]
    [only] = selected_slices(service(), pods, {"n1": "zone-a"})
    assert only["addressType"] == "IPv4"
    assert only["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    by_ip = {e["addresses"][0]: e for e in only["endpoints"]}
    assert list(by_ip) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]  # sorted; ended, IP-less and unselected out
    assert by_ip["10.0.0.2"]["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert by_ip["10.0.0.1"]["conditions"] == {"ready": False, "serving": False, "terminating": False}
    # A terminating pod still serving is listed, not ready (Kubernetes' podToEndpoint).
    assert by_ip["10.0.0.3"]["conditions"] == {"ready": False, "serving": True, "terminating": True}
    assert by_ip["10.0.0.2"]["zone"] == "zone-a" and by_ip["10.0.0.2"]["nodeName"] == "n1"
    assert by_ip["10.0.0.2"]["targetRef"] == {"kind": "Pod", "namespace": "default", "name": "a", "uid": "uid-a"}


def test_eps2_publish_not_ready_addresses_makes_every_endpoint_ready() -> None:
    [only] = selected_slices(service(publishNotReadyAddresses=True), [pod("b", "10.0.0.1", ready=False)], {})
    assert only["endpoints"][0]["conditions"] == {"ready": True, "serving": False, "terminating": False}


def test_eps2_hostname_only_for_a_pod_in_the_services_subdomain() -> None:
    [only] = selected_slices(service(), [pod("a", "10.0.0.2", hostname="web-0")], {})
    assert only["endpoints"][0]["hostname"] == "web-0"


def test_eps3_pods_resolving_ports_differently_get_slices_of_their_own() -> None:
    pods = [pod("a", "10.0.0.1", port=8080), pod("b", "10.0.0.2", port=9090), pod("c", "10.0.0.3", port=8080)]
    slices = selected_slices(service(), pods, {})
    assert sorted((s["ports"][0]["port"], [e["addresses"][0] for e in s["endpoints"]]) for s in slices) == [
        (8080, ["10.0.0.1", "10.0.0.3"]), (9090, ["10.0.0.2"])]


def test_eps3_at_most_100_endpoints_a_slice_and_an_empty_one_for_none() -> None:
    pods = [pod(f"p{i}", f"10.0.{i // 250}.{i % 250 + 1}") for i in range(MAX_ENDPOINTS_PER_SLICE * 2 + 5)]
    slices = selected_slices(service(), pods, {})
    assert [len(s["endpoints"]) for s in slices] == [100, 100, 5]
    assert selected_slices(service(), [], {}) == [{"addressType": "IPv4", "endpoints": [], "ports": None}]


def test_eps4_a_selector_less_services_endpoints_are_mirrored() -> None:
    endpoints = {"metadata": {"name": "ext"}, "subsets": [
        {"addresses": [{"ip": "192.0.2.10", "hostname": "db-0"}], "notReadyAddresses": [{"ip": "192.0.2.11"}],
         "ports": [{"name": "sql", "port": 5432, "protocol": "TCP"}]},
        {"addresses": [{"ip": "2001:db8::1"}], "ports": [{"port": 53, "protocol": "UDP"}]}]}
    slices = mirrored_slices(endpoints)
    assert [(s["addressType"], s["ports"]) for s in slices] == [
        ("IPv4", [{"name": "sql", "protocol": "TCP", "port": 5432}]), ("IPv6", [{"name": "", "protocol": "UDP", "port": 53}])]
    assert slices[0]["endpoints"] == [{"addresses": ["192.0.2.10"], "conditions": {"ready": True}, "hostname": "db-0"},
                                      {"addresses": ["192.0.2.11"], "conditions": {"ready": False}}]
    selectorless = service("ext", selector=None)
    assert desired_slices(selectorless, [], endpoints, {}) == (MIRROR_CONTROLLER, slices)
    skipped = {**endpoints, "metadata": {"name": "ext", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}}}
    assert desired_slices(selectorless, [], skipped, {}) == (MIRROR_CONTROLLER, [])
    assert desired_slices(service(), [], endpoints, {})[0] == CONTROLLER
    assert desired_slices(None, [], endpoints, {}) == (None, [])


def test_eps1_labels_tie_a_slice_to_its_service() -> None:
    assert slice_labels(service(), CONTROLLER) == {
        "team": "a", "kubernetes.io/service-name": "web", "endpointslice.kubernetes.io/managed-by": CONTROLLER}
    headless = slice_labels(service(clusterIP="None"), CONTROLLER)
    assert headless["service.kubernetes.io/headless"] == ""


def test_eps5_existing_slices_are_reused_in_place() -> None:
    ports = [{"name": "http", "protocol": "TCP", "port": 8080}]
    old_a = {"metadata": {"name": "web-aaaaa"}, "addressType": "IPv4", "ports": ports, "endpoints": []}
    old_b = {"metadata": {"name": "web-bbbbb"}, "addressType": "IPv4", "ports": None, "endpoints": []}
    want = [{"addressType": "IPv4", "ports": ports, "endpoints": [{"addresses": ["10.0.0.1"]}]},
            {"addressType": "IPv6", "ports": ports, "endpoints": [{"addresses": ["2001:db8::2"]}]}]
    pairs, create, delete = pair_slices([old_b, old_a], want)
    assert [(o["metadata"]["name"], w["addressType"]) for o, w in pairs] == [("web-aaaaa", "IPv4")]
    assert create == [want[1]] and delete == [old_b]
