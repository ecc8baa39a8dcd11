"""Endpoints for Services, and what a pod sees of Services: environment variables and hosts entries.

Endpoints follow Kubernetes' endpoints controller: every pod matching a
Service's selector that has an IP appears, under ``addresses`` when Ready
(or when the Service publishes not-ready addresses) and under
``notReadyAddresses`` otherwise; ports come from the Service's
``targetPort`` (a number, or a container port name looked up in the pod).
Services without a selector are left alone: their Endpoints are the user's.

There is no service proxy and so no virtual cluster IP that routes
anywhere: for a Service that is not headless, names and variables resolve to
the Service's first ready endpoint address instead of a cluster IP.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Iterable

from storage.api.conditions import is_true
from storage.api.service_links import service_address, service_env  # noqa: F401  (the agent's, PF42)
from storage.api.timestamps import now
from storage.controllers.base import Reconciler, Result, split_key
from storage.controllers.owners import labels_of, publish, selector_matches
from storage.errors import AlreadyExists, NotFound

Obj = dict[str, Any]
CLUSTER_DOMAIN = "cluster.local"
TRIGGER_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
# Kubernetes' endpoints controller stamps what it writes with this; only stamped Endpoints are its to delete.
MANAGED_BY = TRIGGER_ANNOTATION


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def is_headless(service: Obj) -> bool:
    return _spec(service).get("clusterIP") == "None"


def pod_ip(pod: Obj) -> str:
    status = pod.get("status") or {}
    if status.get("podIP"):
        return str(status["podIP"])
    ips = status.get("podIPs") or []
    return str(ips[0].get("ip", "")) if ips else ""


def _pod_ready(pod: Obj) -> bool:
    return is_true(pod, "Ready")


def find_port(pod: Obj, service_port: Obj) -> int | None:
    """The pod's port for a Service port: ``targetPort`` number, named container port, or the port itself."""
    target = service_port.get("targetPort")
    if target is None or target == "":
        return int(service_port["port"])
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    protocol = service_port.get("protocol") or "TCP"
    for container in _spec(pod).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                return int(port["containerPort"])
    return None


def endpoint_address(pod: Obj, service: Obj) -> Obj:
    pmeta = _meta(pod)
    address: Obj = {
        "ip": pod_ip(pod),
        "targetRef": {"kind": "Pod", "namespace": pmeta.get("namespace", ""), "name": pmeta["name"],
                      "uid": pmeta.get("uid", "")},
    }
    if _spec(pod).get("nodeName"):
        address["nodeName"] = _spec(pod)["nodeName"]
    hostname, subdomain = _spec(pod).get("hostname"), _spec(pod).get("subdomain")
    if hostname and subdomain == _meta(service).get("name"):
        address["hostname"] = hostname
    return address


def build_subsets(service: Obj, pods: list[Obj]) -> list[Obj]:
    """Subsets grouped by identical port lists, addresses sorted by IP for a stable object."""
    selector = _spec(service).get("selector")
    publish_not_ready = bool(_spec(service).get("publishNotReadyAddresses"))
    groups: dict[tuple[tuple[str, int, str], ...], tuple[list[Obj], list[Obj]]] = {}
    for pod in pods:
        if not selector_matches({"matchLabels": selector}, labels_of(pod)):
            continue
        if not pod_ip(pod) or _meta(pod).get("deletionTimestamp") and not publish_not_ready:
            continue
        if (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
            continue
        ports: list[tuple[str, int, str]] = []
        for sp in _spec(service).get("ports") or []:
            number = find_port(pod, sp)
            if number is not None:
                ports.append((sp.get("name") or "", number, sp.get("protocol") or "TCP"))
        ready_list, not_ready = groups.setdefault(tuple(ports), ([], []))
        address = endpoint_address(pod, service)
        (ready_list if (_pod_ready(pod) or publish_not_ready) else not_ready).append(address)
    subsets: list[Obj] = []
    for ports_key, (ready_list, not_ready) in sorted(groups.items()):
        subset: Obj = {}
        if ready_list:
            subset["addresses"] = sorted(ready_list, key=lambda a: (a["ip"], a["targetRef"]["name"]))
        if not_ready:
            subset["notReadyAddresses"] = sorted(not_ready, key=lambda a: (a["ip"], a["targetRef"]["name"]))
        if ports_key:
            subset["ports"] = [
                {**({"name": n} if n else {}), "port": p, "protocol": proto} for n, p, proto in ports_key
            ]
        subsets.append(subset)
    return subsets


def services_selecting(cache: Any, pod: Obj) -> list[str]:
    """The keys of the Services of ``pod``'s namespace whose selector selects it."""
    namespace = _meta(pod).get("namespace", "")
    return [
        f"{namespace}/{_meta(s)['name']}"
        for s in cache.list("services", namespace)
        if _spec(s).get("selector") and selector_matches({"matchLabels": _spec(s)["selector"]}, labels_of(pod))
    ]


class EndpointsReconciler(Reconciler):
    name = "endpoints"
    primary = "services"

    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        return {"pods": self._pod_keys, "endpoints": lambda ep: [f"{_meta(ep).get('namespace', '')}/{_meta(ep)['name']}"]}

    def _pod_keys(self, pod: Obj) -> list[str]:
        return services_selecting(self.ctx.cache, pod)

    def reconcile(self, key: str) -> Result:
        namespace, name = split_key(key)
        service = self.ctx.cache.get("services", namespace, name)
        current = self.ctx.cache.get("endpoints", namespace, name)
        if service is None:
            # Only Endpoints this controller wrote go with their Service: a user's (for a selector-less
            # Service, possibly created before it) are never removed here.
            if current is not None and MANAGED_BY in (_meta(current).get("annotations") or {}):
                try:
                    self.ctx.store.delete("endpoints", namespace, name,
                                          resource_version=_meta(current).get("resourceVersion"))
                except NotFound:
                    pass
            return Result()
        if not _spec(service).get("selector"):
            return Result()  # a Service without selector: its Endpoints belong to the user
        subsets = build_subsets(service, self.ctx.cache.list("pods", namespace))
        labels = labels_of(service)
        if current is not None:
            if current.get("subsets", []) == subsets and labels_of(current) == labels \
                    and MANAGED_BY in (_meta(current).get("annotations") or {}):
                return Result()
            updated = copy.deepcopy(current)
            updated["subsets"] = subsets
            updated["metadata"]["labels"] = labels
            updated["metadata"]["annotations"] = {**(_meta(current).get("annotations") or {}), MANAGED_BY: now()}
            publish(self.ctx.cache, "endpoints", self.ctx.store.update("endpoints", updated))
            return Result()
        fresh: Obj = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": {MANAGED_BY: now()}},
            "subsets": subsets,
        }
        try:
            publish(self.ctx.cache, "endpoints", self.ctx.store.create("endpoints", fresh))
        except AlreadyExists:
            pass  # the cache lagged; the watch event brings another pass
        return Result()


# --- what a pod sees ---------------------------------------------------------

def dns_entries(pod: Obj, services: list[Obj], endpoints: list[Obj]) -> list[tuple[str, list[str]]]:
    """Hosts-file lines for a pod: its own names, the members of headless Services, and Service names.

    Only Services of the pod's namespace are considered. Headless Service
    names map to every ready member; other Service names to the first ready
    endpoint address (no cluster IP routing exists, see the module note).
    """
    namespace = _meta(pod).get("namespace") or "default"
    by_name = {_meta(e)["name"]: e for e in endpoints if (_meta(e).get("namespace") or "default") == namespace}
    lines: dict[str, list[str]] = {}

    def add(ip: str, *names: str) -> None:
        entry = lines.setdefault(ip, [])
        for n in names:
            if n not in entry:
                entry.append(n)

    own_ip = pod_ip(pod)
    hostname = _spec(pod).get("hostname") or _meta(pod).get("name", "")
    subdomain = _spec(pod).get("subdomain")
    if own_ip:
        if subdomain:
            add(own_ip, f"{hostname}.{subdomain}.{namespace}.svc.{CLUSTER_DOMAIN}", f"{hostname}.{subdomain}")
        add(own_ip, hostname)
    for service in sorted(services, key=lambda s: _meta(s).get("name", "")):
        if (_meta(service).get("namespace") or "default") != namespace:
            continue
        name = _meta(service)["name"]
        service_names = (f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}", f"{name}.{namespace}", name)
        ep = by_name.get(name)
        if is_headless(service):
            for subset in (ep or {}).get("subsets") or []:
                for address in subset.get("addresses") or []:
                    ip = address.get("ip")
                    if not ip:
                        continue
                    if address.get("hostname"):
                        host = address["hostname"]
                        add(ip, f"{host}.{name}.{namespace}.svc.{CLUSTER_DOMAIN}", f"{host}.{name}")
                    add(ip, *service_names)
        else:
            address = service_address(service, ep)
            if address:
                add(address, *service_names)
    return [(ip, names) for ip, names in lines.items()]


# Picked up by storage.controllers.manager.DEFAULT_RECONCILERS.
RECONCILERS = [EndpointsReconciler]
