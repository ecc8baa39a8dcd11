"""Service node ports as kube-apiserver allocates them (SEMANTICS K7).

Kubernetes keeps a bitmap of the ``--service-node-port-range`` (30000-32767 by default) in etcd, written
under its resourceVersion, and a repair loop that frees what leaked. Here the stored Services themselves are
the record of which ports are held, so every way a Service goes away (kubectl, the namespace controller, the
garbage collector) frees its ports with no repair loop. What the Services cannot show is a port handed out to
a write not yet stored: such a port is *claimed* in one small object (``rangeallocations/servicenodeports``,
not served), written under its resourceVersion as a ResourceQuota charge is. A writer reads the claims, then
lists the Services, and claims its ports with a write that fails if anyone claimed meanwhile; so of two API
servers sharing a store, the later claimant either sees the earlier one's claim or, once that claim is
dropped after the write, its stored Service. A claim left by a server that died mid-write lapses after
``CLAIM_SECONDS``.
"""
from __future__ import annotations

import contextlib
import random
import time
import uuid
from typing import Any, Iterator

import structlog

from storage.api import retry
from storage.errors import AlreadyExists, Conflict, FieldError, Invalid, NotFound, StowageError, TooManyRequests

log = structlog.get_logger(__name__)

FIRST, LAST = 30000, 32767  # kube-apiserver's default --service-node-port-range
RANGE_TEXT = f"{FIRST}-{LAST}"
# Not a served resource: the store keeps it like any object, no client can read or write it.
ALLOC_RESOURCE, ALLOC_NAME = "rangeallocations", "servicenodeports"
# A write takes milliseconds; a claim this old belongs to a server that died before dropping it.
CLAIM_SECONDS = 120.0
MAX_ATTEMPTS = 64
FREE_ATTEMPTS = 4

NOT_IN_RANGE = f"provided port is not in the valid range. The range of valid ports is {RANGE_TEXT}"
TAKEN = "provided port is already allocated"


def _spec(svc: dict[str, Any] | None) -> dict[str, Any]:
    spec = (svc or {}).get("spec")
    return spec if isinstance(spec, dict) else {}


def _ports(svc: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [p for p in (_spec(svc).get("ports") or []) if isinstance(p, dict)]


def _number(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def needs_node_port(svc: dict[str, Any] | None) -> bool:
    return _spec(svc).get("type") in ("NodePort", "LoadBalancer")


def should_allocate(svc: dict[str, Any] | None) -> bool:
    """Ports without a nodePort get one: NodePort, and LoadBalancer unless allocateLoadBalancerNodePorts is false."""
    spec = _spec(svc)
    return spec.get("type") == "NodePort" or (
        spec.get("type") == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is not False)


def needs_health_check(svc: dict[str, Any] | None) -> bool:
    spec = _spec(svc)
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def _externally_accessible(svc: dict[str, Any] | None) -> bool:
    return needs_node_port(svc) or (_spec(svc).get("type") == "ClusterIP" and bool(_spec(svc).get("externalIPs")))


def held(svc: dict[str, Any] | None) -> set[int]:
    """The node ports a stored Service holds: its ports' and its health check's."""
    ports = {_number(p.get("nodePort")) for p in _ports(svc)}
    if needs_health_check(svc):
        ports.add(_number(_spec(svc).get("healthCheckNodePort")))
    ports.discard(0)
    return ports


def prepare_update(new: dict[str, Any], old: dict[str, Any]) -> None:
    """Kubernetes' dropTypeDependentFields and patchAllocatedValues, on a defaulted update.

    A Service leaving NodePort/LoadBalancer without asking for a node port it did not have loses them (so
    a change to ClusterIP needs no edit of every port); one that stays keeps the node port of each port,
    matched by name, that the update left out (``kubectl replace`` of a manifest without them), unless
    another port now uses it. The same for the health check port.
    """
    spec, old_spec = _spec(new), _spec(old)
    ports = _ports(new)
    old_ports = {_number(p.get("nodePort")) for p in _ports(old)} - {0}
    # Each field is dropped only when the write left it as it was: a change of it is judged by validation.
    if needs_node_port(old) and not needs_node_port(new) and \
            {_number(p.get("nodePort")) for p in ports} - {0} <= old_ports:
        for p in ports:
            p.pop("nodePort", None)
    if needs_health_check(old) and not needs_health_check(new) and \
            _number(spec.get("healthCheckNodePort")) == _number(old_spec.get("healthCheckNodePort")):
        spec.pop("healthCheckNodePort", None)
    if old_spec.get("type") == "LoadBalancer" and spec.get("type") != "LoadBalancer" and \
            spec.get("allocateLoadBalancerNodePorts") is not None and \
            spec.get("allocateLoadBalancerNodePorts") == old_spec.get("allocateLoadBalancerNodePorts"):
        spec.pop("allocateLoadBalancerNodePorts", None)
    if _externally_accessible(old) and not _externally_accessible(new) and \
            spec.get("externalTrafficPolicy") == old_spec.get("externalTrafficPolicy"):
        spec.pop("externalTrafficPolicy", None)
    if needs_node_port(old) and needs_node_port(new):
        used = {_number(p.get("nodePort")) for p in ports} & old_ports
        by_name = {p.get("name"): _number(p.get("nodePort")) for p in _ports(old)}
        for p in ports:
            previous = by_name.get(p.get("name"), 0)
            if not _number(p.get("nodePort")) and previous and previous not in used:
                p["nodePort"] = previous
    if needs_health_check(old) and needs_health_check(new) and not _number(spec.get("healthCheckNodePort")):
        previous = _number(old_spec.get("healthCheckNodePort"))
        if previous:
            spec["healthCheckNodePort"] = previous


def _key(svc: dict[str, Any]) -> str:
    meta = svc.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def _invalid(svc: dict[str, Any], path: str, port: int, detail: str) -> Invalid:
    return Invalid([FieldError(path, "Invalid value", detail, port, True)], kind="Service",
                   name=str((svc.get("metadata") or {}).get("name") or ""))


def _internal(message: str) -> StowageError:
    return StowageError(f"Internal error occurred: {message}")


def _pick(taken: set[int]) -> int:
    """A free port at random, as Kubernetes' bitmap allocator draws one, from above the static band first
    (KEP-3668: the lowest min(max(16, size/32), 128) ports, 30000-30085, are left to those who name a port);
    0 when the range is full."""
    size = LAST - FIRST + 1
    static = min(max(16, size // 32), 128)
    for low, high in ((FIRST + static, LAST), (FIRST, FIRST + static - 1)):
        count = high - low + 1
        start = random.randrange(count)
        for offset in range(count):
            port = low + (start + offset) % count
            if port not in taken:
                return port
    return 0


def assign(svc: dict[str, Any], old: dict[str, Any] | None, taken: set[int]) -> set[int]:
    """Fill ``svc``'s missing node ports and check its requested ones against ``taken`` (the ports other
    Services hold or claim), as Kubernetes' initNodePorts/updateNodePorts and health check allocation.
    Returns the ports ``svc`` takes that ``old`` (the stored Service on update) did not hold."""
    kept = held(old)
    new: set[int] = set()
    mine: set[int] = set(kept)
    numbers: set[int] = set()  # the node ports of this Service's ports

    def take(port: int, path: str, *, health: bool = False) -> None:
        if health and port in numbers:
            raise _internal(f"failed to allocate requested HealthCheck NodePort {port}: {TAKEN}")
        if port in kept or port in new:
            return  # held already, or a second port of this Service using it (another protocol)
        detail = NOT_IN_RANGE if not FIRST <= port <= LAST else TAKEN if port in taken else ""
        if detail:
            if health:
                raise _internal(f"failed to allocate requested HealthCheck NodePort {port}: {detail}")
            raise _invalid(svc, path, port, detail)
        new.add(port)
        mine.add(port)

    def next_free(what: str) -> int:
        port = _pick(taken | mine)
        if not port:
            raise _internal(f"failed to allocate a {what}: range is full")
        new.add(port)
        mine.add(port)
        return port

    ports = _ports(svc)
    if needs_node_port(svc):
        allocate = should_allocate(svc)
        by_service_port: dict[Any, int] = {}
        for i, p in enumerate(ports):
            requested = _number(p.get("nodePort"))
            if requested:
                take(requested, f"spec.ports[{i}].nodePort")
                by_service_port.setdefault(p.get("port"), requested)
            elif allocate:
                # On create, ports of one number (53/TCP, 53/UDP) share a node port, as Kubernetes gives them.
                shared = by_service_port.get(p.get("port")) if old is None else None
                if shared is None and old is None:
                    shared = next((_number(q.get("nodePort")) for q in ports
                                   if q.get("port") == p.get("port") and _number(q.get("nodePort"))), None)
                if shared:
                    take(shared, f"spec.ports[{i}].nodePort")
                    p["nodePort"] = shared
                else:
                    p["nodePort"] = next_free("nodePort")
                by_service_port.setdefault(p.get("port"), p["nodePort"])
            numbers.add(_number(p.get("nodePort")))
    if needs_health_check(svc):
        spec = _spec(svc)
        requested = _number(spec.get("healthCheckNodePort"))
        if requested:
            take(requested, "spec.healthCheckNodePort", health=True)
        else:
            spec["healthCheckNodePort"] = next_free("HealthCheck NodePort 0")
    return new


def _claims(alloc: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    claims = (alloc or {}).get("claims")
    return {k: v for k, v in claims.items() if isinstance(v, dict)} if isinstance(claims, dict) else {}


def _read(store: Any) -> dict[str, Any] | None:
    try:
        return store.get(ALLOC_RESOURCE, "", ALLOC_NAME)
    except NotFound:
        return None


def _write(store: Any, alloc: dict[str, Any] | None, claims: dict[str, dict[str, Any]]) -> None:
    """Store ``claims`` in place of ``alloc`` as read; Conflict (or AlreadyExists) if it changed meanwhile."""
    if alloc is None:
        store.create(ALLOC_RESOURCE, {"apiVersion": "v1", "kind": "RangeAllocation",
                                      "metadata": {"name": ALLOC_NAME}, "range": RANGE_TEXT, "claims": claims})
    else:
        store.update(ALLOC_RESOURCE, {**alloc, "claims": claims})


@contextlib.contextmanager
def reserved(store: Any, svc: dict[str, Any], old: dict[str, Any] | None, *, dry_run: bool = False) -> Iterator[None]:
    """Give ``svc`` (about to be created, or to replace ``old``) its node ports, and hold the new ones
    claimed while the caller stores it. A dry run is answered with ports that were free, claiming none."""
    if not needs_node_port(svc) and not needs_health_check(svc):
        yield
        return
    if old is not None and not _new_ports_wanted(svc, old):
        assign(svc, old, set())  # nothing beyond what the Service holds: no one else's ports matter
        yield
        return
    owner, token = _key(svc), uuid.uuid4().hex
    claimed: set[int] = set()
    for _ in retry.attempts(free=FREE_ATTEMPTS, limit=MAX_ATTEMPTS):
        alloc = _read(store)  # before the Services: see the module's docstring
        services, _ = store.list("services")
        now = time.time()
        others = [s for s in services if old is None or _key(s) != owner]
        taken: set[int] = set().union(*(held(s) for s in others)) if others else set()
        live = {}
        for port, claim in _claims(alloc).items():
            if now - float(claim.get("at") or 0) >= CLAIM_SECONDS or not port.isdigit():
                continue  # lapsed: its writer is gone
            live[port] = claim
            if claim.get("service") != owner or old is None:
                taken.add(int(port))
        attempt_svc = {**svc, "spec": {**_spec(svc), "ports": [dict(p) for p in _ports(svc)]}}
        new = assign(attempt_svc, old, taken)
        if not new or dry_run:
            svc["spec"] = attempt_svc["spec"]
            claimed = set()
            break
        # Claims of ports their Services now show are done with; keep the store's object small.
        holders = {p for s in services for p in held(s)}
        live = {p: c for p, c in live.items() if int(p) not in holders or c.get("service") == owner}
        for port in new:
            live[str(port)] = {"service": owner, "token": token, "at": now}
        try:
            _write(store, alloc, live)
        except (Conflict, AlreadyExists):
            continue  # another writer claimed meanwhile: judge again on what is there now
        svc["spec"] = attempt_svc["spec"]
        claimed = new
        break
    else:
        log.warning("node port claim gave up after conflicts", service=owner)
        name = str((svc.get("metadata") or {}).get("name") or "")
        raise TooManyRequests(f'Operation cannot be fulfilled on services "{name}": too many concurrent node '
                              "port allocations; please retry", retry_after=1)
    try:
        yield
    finally:
        if claimed:
            _release(store, token)


def _new_ports_wanted(svc: dict[str, Any], old: dict[str, Any]) -> bool:
    """Whether an update asks for a node port ``old`` does not hold (or leaves one to allocate)."""
    kept = held(old)
    allocate = should_allocate(svc)
    for p in _ports(svc) if needs_node_port(svc) else []:
        port = _number(p.get("nodePort"))
        if (port and port not in kept) or (not port and allocate):
            return True
    if needs_health_check(svc):
        port = _number(_spec(svc).get("healthCheckNodePort"))
        return not port or port not in kept
    return False


def _release(store: Any, token: str) -> None:
    """Drop this write's claims: its Service is stored (and shows them) or was not (and needs none)."""
    for _ in retry.attempts(free=FREE_ATTEMPTS, limit=MAX_ATTEMPTS):
        alloc = _read(store)
        claims = _claims(alloc)
        kept = {p: c for p, c in claims.items() if c.get("token") != token}
        if alloc is None or kept == claims:
            return
        try:
            _write(store, alloc, kept)
            return
        except (Conflict, AlreadyExists):
            continue
        except StowageError as exc:  # the claims lapse by themselves
            log.warning("node port claim not dropped", error=str(exc))
            return
    log.warning("node port claim not dropped after conflicts; it lapses in %ss", CLAIM_SECONDS)
