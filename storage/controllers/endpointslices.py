"""EndpointSlices for Services (SEMANTICS EPS1–EPS5), as Kubernetes' two controllers keep them.

A Service with a selector gets slices of the pods it selects (the EndpointSlice controller): one endpoint
per pod with an IP that has not ended, with ``ready``/``serving``/``terminating`` conditions, grouped by
the ports the pod resolves the Service's ports to, at most 100 endpoints a slice, and one empty slice when
there are none. A Service without a selector gets its Endpoints mirrored (the EndpointSliceMirroring
controller), unless they carry ``endpointslice.kubernetes.io/skip-mirror: "true"``. Slices this module
did not write (no managed-by label of its own) are never touched.

``desired_slices`` is the pure plan; ``EndpointSliceReconciler`` writes the difference.
"""
from __future__ import annotations

import copy
import ipaddress
from typing import Any, Callable, Iterable

from storage.api.conditions import is_true
from storage.api.timestamps import now
from storage.controllers.base import Reconciler, Result, split_key
from storage.controllers.endpoints import (
    TRIGGER_ANNOTATION, endpoint_address, find_port, is_headless, pod_ip, services_selecting,
)
from storage.controllers.owners import labels_of, make_controller_ref, publish, selector_matches
from storage.errors import NotFound

Obj = dict[str, Any]
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
HEADLESS_LABEL = "service.kubernetes.io/headless"
SKIP_MIRROR_LABEL = "endpointslice.kubernetes.io/skip-mirror"
CONTROLLER = "endpointslice-controller.k8s.io"
MIRROR_CONTROLLER = "endpointslicemirroring-controller.k8s.io"
ZONE_LABEL = "topology.kubernetes.io/zone"
# kube-controller-manager's --max-endpoints-per-slice default (and the mirroring controller's).
MAX_ENDPOINTS_PER_SLICE = 100


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def _address_type(ip: str) -> str:
    try:
        return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"
    except ValueError:
        return "IPv4"


def _in_slices(pod: Obj) -> bool:
    """Kubernetes' ShouldPodBeInEndpoints with terminating pods included: an IP, and not ended."""
    return bool(pod_ip(pod)) and (pod.get("status") or {}).get("phase") not in ("Failed", "Succeeded")


def pod_endpoint(pod: Obj, service: Obj, zones: dict[str, str]) -> Obj:
    """Kubernetes' podToEndpoint: ready only when serving and not terminating (or when the Service publishes
    addresses that are not ready), the node's zone, the hostname of a pod in the Service's subdomain."""
    address = endpoint_address(pod, service)
    serving = is_true(pod, "Ready")
    terminating = bool(_meta(pod).get("deletionTimestamp"))
    ready = bool(_spec(service).get("publishNotReadyAddresses")) or (serving and not terminating)
    endpoint: Obj = {"addresses": [address["ip"]],
                     "conditions": {"ready": ready, "serving": serving, "terminating": terminating}}
    if address.get("hostname"):
        endpoint["hostname"] = address["hostname"]
    endpoint["targetRef"] = address["targetRef"]
    if address.get("nodeName"):
        endpoint["nodeName"] = address["nodeName"]
        if zones.get(address["nodeName"]):
            endpoint["zone"] = zones[address["nodeName"]]
    return endpoint


def _pod_ports(pod: Obj, service: Obj) -> list[Obj]:
    """Kubernetes' getEndpointPorts: each Service port the pod resolves, named as the Service names it."""
    ports: list[Obj] = []
    for sp in _spec(service).get("ports") or []:
        number = find_port(pod, sp)
        if number is None:
            continue
        port: Obj = {"name": sp.get("name") or "", "protocol": sp.get("protocol") or "TCP", "port": number}
        if sp.get("appProtocol"):
            port["appProtocol"] = sp["appProtocol"]
        ports.append(port)
    return ports


def _chunks(address_type: str, ports: list[Obj] | None, endpoints: list[Obj]) -> list[Obj]:
    ordered = sorted(endpoints, key=lambda e: (e["addresses"], (e.get("targetRef") or {}).get("name", "")))
    return [{"addressType": address_type, "endpoints": ordered[i:i + MAX_ENDPOINTS_PER_SLICE], "ports": ports}
            for i in range(0, len(ordered), MAX_ENDPOINTS_PER_SLICE)]


def selected_slices(service: Obj, pods: list[Obj], zones: dict[str, str]) -> list[Obj]:
    """The slices (address type, endpoints, ports) of a Service with a selector; one empty slice when no
    pod is behind it, as Kubernetes keeps a placeholder."""
    selector = {"matchLabels": _spec(service).get("selector") or {}}
    groups: dict[tuple[str, str], tuple[list[Obj], list[Obj]]] = {}
    for pod in pods:
        if not _in_slices(pod) or not selector_matches(selector, labels_of(pod)):
            continue
        ports = _pod_ports(pod, service)
        key = (_address_type(pod_ip(pod)), repr(ports))
        groups.setdefault(key, (ports, []))[1].append(pod_endpoint(pod, service, zones))
    slices = [s for (family, _), (ports, endpoints) in sorted(groups.items()) for s in _chunks(family, ports, endpoints)]
    return slices or [{"addressType": "IPv4", "endpoints": [], "ports": None}]


def mirrored_slices(endpoints: Obj) -> list[Obj]:
    """The EndpointSliceMirroring controller's slices of a selector-less Service's Endpoints: each subset's
    addresses, ready or not, with its ports."""
    slices: list[Obj] = []
    for subset in endpoints.get("subsets") or []:
        ports = [{"name": p.get("name") or "", "protocol": p.get("protocol") or "TCP", "port": p.get("port"),
                  **({"appProtocol": p["appProtocol"]} if p.get("appProtocol") else {})}
                 for p in subset.get("ports") or []]
        by_family: dict[str, list[Obj]] = {}
        for kind, ready in (("addresses", True), ("notReadyAddresses", False)):
            for address in subset.get(kind) or []:
                if not address.get("ip"):
                    continue
                endpoint: Obj = {"addresses": [address["ip"]], "conditions": {"ready": ready}}
                for field in ("hostname", "targetRef", "nodeName"):
                    if address.get(field):
                        endpoint[field] = address[field]
                by_family.setdefault(_address_type(address["ip"]), []).append(endpoint)
        for family, members in sorted(by_family.items()):
            slices += _chunks(family, ports, members)
    return slices


def desired_slices(service: Obj | None, pods: list[Obj], endpoints: Obj | None,
                   zones: dict[str, str]) -> tuple[str | None, list[Obj]]:
    """(the managing controller, the slices it wants) for a Service: none once it is gone."""
    if service is None:
        return None, []
    if _spec(service).get("selector"):
        return CONTROLLER, selected_slices(service, pods, zones)
    if endpoints is None or labels_of(endpoints).get(SKIP_MIRROR_LABEL) == "true":
        return MIRROR_CONTROLLER, []
    return MIRROR_CONTROLLER, mirrored_slices(endpoints)


def slice_labels(service: Obj, manager: str) -> dict[str, str]:
    """The Service's labels, then the ones that tie a slice to it (Kubernetes' setEndpointSliceLabels)."""
    labels = {k: v for k, v in labels_of(service).items()
              if k not in (SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL)}
    labels[SERVICE_NAME_LABEL] = _meta(service)["name"]
    labels[MANAGED_BY_LABEL] = manager
    if is_headless(service):
        labels[HEADLESS_LABEL] = ""
    return labels


def _content(obj: Obj) -> tuple[Any, Any, Any]:
    return obj.get("addressType"), obj.get("endpoints") or [], obj.get("ports")


def pair_slices(existing: list[Obj], wanted: list[Obj]) -> tuple[list[tuple[Obj, Obj]], list[Obj], list[Obj]]:
    """(existing slice, its new content) pairs, slices to create, slices to delete. An existing slice is
    reused for wanted content of the same address type and ports, so a change of pods updates slices in
    place rather than replacing them."""
    spare = sorted(existing, key=lambda s: _meta(s).get("name", ""))
    pairs: list[tuple[Obj, Obj]] = []
    create: list[Obj] = []
    for want in wanted:
        match = next((s for s in spare if (s.get("addressType"), s.get("ports")) == (want["addressType"], want["ports"])),
                     None)
        if match is None:
            match = next((s for s in spare if s.get("addressType") == want["addressType"]), None)
        if match is None:
            create.append(want)
        else:
            spare.remove(match)
            pairs.append((match, want))
    return pairs, create, spare


class EndpointSliceReconciler(Reconciler):
    name = "endpointslices"
    primary = "services"

    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        def by_label(obj: Obj) -> list[str]:
            service = labels_of(obj).get(SERVICE_NAME_LABEL)
            return [f"{_meta(obj).get('namespace', '')}/{service}"] if service else []

        return {"pods": self._pod_keys, "endpoints": lambda ep: [f"{_meta(ep).get('namespace', '')}/{_meta(ep)['name']}"],
                "endpointslices": by_label, "nodes": self._node_keys}

    def _pod_keys(self, pod: Obj) -> list[str]:
        return services_selecting(self.ctx.cache, pod)

    def _node_keys(self, node: Obj) -> list[str]:
        # A node's zone is in its pods' endpoints: only the Services of pods on that node look again.
        name = _meta(node).get("name")
        keys: set[str] = set()
        for pod in self.ctx.cache.list("pods"):
            if _spec(pod).get("nodeName") == name:
                keys.update(self._pod_keys(pod))
        return sorted(keys)

    def relevant(self, resource: str, old: Obj | None, new: Obj | None) -> bool:
        if resource == "nodes":
            return old is None or new is None or labels_of(old).get(ZONE_LABEL) != labels_of(new).get(ZONE_LABEL)
        return True

    def reconcile(self, key: str) -> Result:
        namespace, name = split_key(key)
        cache = self.ctx.cache
        service = cache.get("services", namespace, name)
        zones = {_meta(n)["name"]: labels_of(n).get(ZONE_LABEL, "") for n in cache.list("nodes")}
        manager, wanted = desired_slices(service, cache.list("pods", namespace),
                                         cache.get("endpoints", namespace, name), zones)
        mine = [s for s in cache.list("endpointslices", namespace)
                if labels_of(s).get(SERVICE_NAME_LABEL) == name
                and labels_of(s).get(MANAGED_BY_LABEL) in (CONTROLLER, MIRROR_CONTROLLER)]
        # A Service that gained or lost its selector changes hands: the other controller's slices go.
        stale = [s for s in mine if labels_of(s).get(MANAGED_BY_LABEL) != manager]
        current = [s for s in mine if labels_of(s).get(MANAGED_BY_LABEL) == manager]
        pairs, create, delete = pair_slices(current, wanted)
        for old in stale + delete:
            try:
                self.ctx.store.delete("endpointslices", namespace, _meta(old)["name"],
                                      resource_version=_meta(old).get("resourceVersion"))
            except NotFound:
                pass
        if service is None or manager is None:
            return Result()
        labels = slice_labels(service, manager)
        for old, want in pairs:
            if _content(old) == _content(want) and labels_of(old) == labels:
                continue
            updated = copy.deepcopy(old)
            updated.update(want)
            updated["metadata"]["labels"] = labels
            updated["metadata"]["annotations"] = {**(_meta(old).get("annotations") or {}), TRIGGER_ANNOTATION: now()}
            try:
                publish(cache, "endpointslices", self.ctx.store.update("endpointslices", updated))
            except NotFound:
                create.append(want)  # deleted meanwhile: make it again
        for want in create:
            fresh: Obj = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                          "metadata": {"generateName": f"{name}-", "namespace": namespace, "labels": labels,
                                       "annotations": {TRIGGER_ANNOTATION: now()},
                                       "ownerReferences": [make_controller_ref(service, "v1", "Service")]},
                          **want}
            publish(cache, "endpointslices", self.ctx.store.create("endpointslices", fresh))
        return Result()


# Picked up by storage.controllers.manager.DEFAULT_RECONCILERS.
RECONCILERS = [EndpointSliceReconciler]
