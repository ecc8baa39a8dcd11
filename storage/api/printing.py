"""kubectl's ``get`` columns for each kind, as pure functions of an object.

The command line lays these out as text; the API server sends them as
``meta.k8s.io/v1`` Table responses (server-side printing), so both print
the same cells. Each kind has one ``Columns`` entry; kinds without one get
NAME and AGE. Other modules may register more with ``register``.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from storage.api.age import age, human_duration, object_age, parse_timestamp
from storage.api.models.autoscaling import METRIC_SOURCE_MEMBERS
from storage.api.names import INGRESS_CLASS_DEFAULT_ANNOTATION
from storage.api.storage_class import object_class

Row = list[str]
RowFn = Callable[[dict[str, Any], datetime], Row]

DEFAULT_CLASS_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)

_MODE_ORDER = (
    ("ReadWriteOnce", "RWO"),
    ("ReadOnlyMany", "ROX"),
    ("ReadWriteMany", "RWX"),
    ("ReadWriteOncePod", "RWOP"),
)


@dataclass(frozen=True)
class Column:
    """A column as a CustomResourceDefinition's additionalPrinterColumns declares it (the Table's name, type,
    format and description), for kinds that Kubernetes serves from a CRD."""

    name: str
    type: str = "string"
    description: str = ""
    format: str = ""


@dataclass(frozen=True)
class Columns:
    headers: list[str]
    row: RowFn
    wide_headers: list[str] | None = None
    wide_row: RowFn | None = None
    # Per header: the Table column definition, where it is not derived from the header.
    definitions: dict[str, Column] | None = None


_TABLES: dict[str, Columns] = {}
# Each kind's Table column definitions and the positions of its integer columns, built on first use.
_DEFINITIONS: dict[str, tuple[tuple[dict[str, Any], ...], tuple[int, ...]]] = {}


def register(kind: str, columns: Columns) -> None:
    _TABLES[kind] = columns
    _DEFINITIONS.pop(kind, None)


def columns_for(kind: str) -> Columns:
    return _TABLES.get(kind, _GENERIC)


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("spec") or {}


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


def access_modes(modes: list[str] | None) -> str:
    """kubectl's fixed order, each mode once: ``RWO,RWX``."""
    present = set(modes or [])
    return ",".join(short for full, short in _MODE_ORDER if full in present)


def is_default_class(obj: dict[str, Any]) -> bool:
    annotations = _meta(obj).get("annotations") or {}
    return any(annotations.get(a) == "true" for a in DEFAULT_CLASS_ANNOTATIONS)


def table_rows(
    kind: str,
    objects: list[dict[str, Any]],
    *,
    wide: bool = False,
    with_namespace: bool = False,
    now: datetime | None = None,
) -> tuple[list[str], list[Row]]:
    now = now or datetime.now(timezone.utc)
    cols = columns_for(kind)
    headers = list(cols.headers)
    rows = [cols.row(obj, now) for obj in objects]
    if wide and cols.wide_headers and cols.wide_row:
        headers += cols.wide_headers
        rows = [row + cols.wide_row(obj, now) for row, obj in zip(rows, objects)]
    if with_namespace:
        headers.insert(0, "NAMESPACE")
        rows = [[str(_meta(obj).get("namespace") or ""), *row] for row, obj in zip(rows, objects)]
    return headers, rows


# --- per kind -------------------------------------------------------------

def _generic(obj: dict[str, Any], now: datetime) -> Row:
    return [str(_meta(obj).get("name", "")), object_age(obj, now)]


_GENERIC = Columns(["NAME", "AGE"], _generic)


def _pv(obj: dict[str, Any], now: datetime) -> Row:
    spec, status = _spec(obj), _status(obj)
    ref = spec.get("claimRef") or {}
    claim = f"{ref.get('namespace', '')}/{ref.get('name', '')}" if ref.get("name") else ""
    phase = status.get("phase") or ""
    if _meta(obj).get("deletionTimestamp"):
        phase = "Terminating"
    return [
        str(_meta(obj).get("name", "")),
        str((spec.get("capacity") or {}).get("storage", "")),
        access_modes(spec.get("accessModes")),
        str(spec.get("persistentVolumeReclaimPolicy") or ""),
        phase,
        claim,
        object_class(obj),
        _attributes_class(spec),
        str(status.get("reason") or ""),
        object_age(obj, now),
    ]


def _volume_mode(obj: dict[str, Any], now: datetime) -> Row:
    return [str(_spec(obj).get("volumeMode") or "Filesystem")]


def _pvc(obj: dict[str, Any], now: datetime) -> Row:
    spec, status = _spec(obj), _status(obj)
    phase = status.get("phase") or ""
    if _meta(obj).get("deletionTimestamp"):
        phase = "Terminating"
    return [
        str(_meta(obj).get("name", "")),
        phase,
        str(spec.get("volumeName") or ""),
        str((status.get("capacity") or {}).get("storage", "")),
        access_modes(status.get("accessModes")),
        object_class(obj),
        _attributes_class(spec),
        object_age(obj, now),
    ]


def _attributes_class(spec: dict[str, Any]) -> str:
    """Kubernetes 1.37's VOLUMEATTRIBUTESCLASS column of volumes and claims: the spec's name, ``<unset>`` without."""
    name = spec.get("volumeAttributesClassName")
    return name if isinstance(name, str) else "<unset>"


def _csi_storage_capacity(obj: dict[str, Any], now: datetime) -> Row:
    capacity = obj.get("capacity")
    return [_name(obj), str(obj.get("storageClassName") or ""), str(capacity) if capacity is not None else "<unset>"]


def _vac(obj: dict[str, Any], now: datetime) -> Row:
    return [_name(obj), str(obj.get("driverName") or ""), object_age(obj, now)]


def _sc(obj: dict[str, Any], now: datetime) -> Row:
    name = str(_meta(obj).get("name", ""))
    if is_default_class(obj):
        name += " (default)"
    return [
        name,
        str(obj.get("provisioner", "")),
        str(obj.get("reclaimPolicy") or "Delete"),
        str(obj.get("volumeBindingMode") or "Immediate"),
        "true" if obj.get("allowVolumeExpansion") else "false",
        object_age(obj, now),
    ]


@dataclass
class _PodSummary:
    ready: int
    total: int
    reason: str
    restarts: int
    last_restart: datetime | None


def _sidecar_names(spec: dict[str, Any]) -> set[str]:
    """Restartable init containers (sidecars): counted with the pod's containers, as kubectl counts them."""
    return {str(c.get("name")) for c in spec.get("initContainers") or [] if isinstance(c, dict)
            and c.get("restartPolicy") == "Always"}


def _later(current: datetime | None, state: Any) -> datetime | None:
    finished = parse_timestamp(((state or {}).get("terminated") or {}).get("finishedAt"))
    return finished if finished is not None and (current is None or finished > current) else current


def _terminated_reason(terminated: dict[str, Any], prefix: str = "") -> str:
    if terminated.get("reason"):
        return prefix + str(terminated["reason"])
    if terminated.get("signal"):
        return f"{prefix}Signal:{terminated['signal']}"
    return f"{prefix}ExitCode:{terminated.get('exitCode', 0)}"


def _pod_summary(obj: dict[str, Any]) -> _PodSummary:
    """Kubernetes' printPod: READY, STATUS and RESTARTS from the phase, the init containers in order (the first
    not done names the state: ``Init:1/2``, ``Init:CrashLoopBackOff``), then the containers."""
    spec, status = _spec(obj), _status(obj)
    sidecars = _sidecar_names(spec)
    total = len(spec.get("containers") or []) + len(sidecars)
    phase = status.get("phase")
    reason = str(status.get("reason") or phase or "Pending")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    ready = restarts = sidecar_restarts = 0
    last_restart: datetime | None = None
    last_sidecar_restart: datetime | None = None
    initializing = False
    init_count = len(spec.get("initContainers") or [])
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        state = cs.get("state") or {}
        restarts += int(cs.get("restartCount") or 0)
        last_restart = _later(last_restart, cs.get("lastState"))
        sidecar = cs.get("name") in sidecars
        if sidecar:
            sidecar_restarts += int(cs.get("restartCount") or 0)
            last_sidecar_restart = _later(last_sidecar_restart, cs.get("lastState"))
        terminated, waiting = state.get("terminated"), state.get("waiting") or {}
        if terminated is not None and int(terminated.get("exitCode") or 0) == 0:
            continue
        if sidecar and cs.get("started"):
            ready += 1 if cs.get("ready") else 0
            continue
        if terminated is not None:
            reason = _terminated_reason(terminated, "Init:")
        elif waiting.get("reason") and waiting.get("reason") != "PodInitializing":
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{i}/{init_count}"
        initializing = True
        break
    initialized = any(c.get("type") == "Initialized" and c.get("status") == "True"
                      for c in status.get("conditions") or [])
    if not initializing or initialized:
        restarts, last_restart = sidecar_restarts, last_sidecar_restart
        running = False
        for cs in reversed(status.get("containerStatuses") or []):
            state = cs.get("state") or {}
            restarts += int(cs.get("restartCount") or 0)
            last_restart = _later(last_restart, cs.get("lastState"))
            waiting, terminated = state.get("waiting") or {}, state.get("terminated")
            if waiting.get("reason"):
                reason = str(waiting["reason"])
            elif terminated is not None:
                reason = _terminated_reason(terminated)
            elif cs.get("ready") and state.get("running") is not None:
                running = True
                ready += 1
        if reason == "Completed" and running:
            pod_ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                            for c in status.get("conditions") or [])
            reason = "Running" if pod_ready else "NotReady"
    if _meta(obj).get("deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif phase not in ("Succeeded", "Failed"):
            reason = "Terminating"
    return _PodSummary(ready, total, reason, restarts, last_restart)


def pod_status(obj: dict[str, Any]) -> str:
    return _pod_summary(obj).reason


def _pod(obj: dict[str, Any], now: datetime) -> Row:
    summary = _pod_summary(obj)
    restarts = str(summary.restarts)
    if summary.restarts and summary.last_restart is not None:
        restarts += f" ({human_duration((now - summary.last_restart).total_seconds())} ago)"
    return [str(_meta(obj).get("name", "")), f"{summary.ready}/{summary.total}", summary.reason, restarts,
            object_age(obj, now)]


def _pod_wide(obj: dict[str, Any], now: datetime) -> Row:
    gates = [str(g.get("conditionType", "")) for g in _spec(obj).get("readinessGates") or []]
    if gates:
        true = {c.get("type") for c in _status(obj).get("conditions") or [] if c.get("status") == "True"}
        gates_text = f"{sum(1 for g in gates if g in true)}/{len(gates)}"
    else:
        gates_text = "<none>"
    return [str(_status(obj).get("podIP") or "<none>"), str(_spec(obj).get("nodeName") or "<none>"),
            str(_status(obj).get("nominatedNodeName") or "<none>"), gates_text]


def _sts(obj: dict[str, Any], now: datetime) -> Row:
    replicas = _spec(obj).get("replicas")
    replicas = 1 if replicas is None else int(replicas)
    ready = int(_status(obj).get("readyReplicas") or 0)
    return [str(_meta(obj).get("name", "")), f"{ready}/{replicas}", object_age(obj, now)]


def _svc_ports(spec: dict[str, Any]) -> str:
    ports = []
    for p in spec.get("ports") or []:
        text = str(p.get("port", ""))
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        ports.append(f"{text}/{p.get('protocol') or 'TCP'}")
    return ",".join(ports) or "<none>"


def _external_ip(obj: dict[str, Any]) -> str:
    """kubectl's EXTERNAL-IP (getServiceExternalIP): a LoadBalancer's ingress addresses, ``<pending>`` until it
    has one; an ExternalName service's name."""
    spec = _spec(obj)
    external = [str(ip) for ip in spec.get("externalIPs") or []]
    kind = spec.get("type") or "ClusterIP"
    if kind == "ExternalName":
        return str(spec.get("externalName") or "")
    if kind != "LoadBalancer":
        return ",".join(external) or "<none>"
    ingress = ((_status(obj).get("loadBalancer") or {}).get("ingress")) or []
    balancers = ",".join(str(i.get("ip") or i.get("hostname") or "") for i in ingress if isinstance(i, dict))
    if len(balancers) > 16:
        balancers = balancers[:13] + "..."
    return ",".join(x for x in (balancers, *external) if x) or "<pending>"


def _svc(obj: dict[str, Any], now: datetime) -> Row:
    spec = _spec(obj)
    return [
        str(_meta(obj).get("name", "")),
        str(spec.get("type") or "ClusterIP"),
        str(spec.get("clusterIP") or "<none>"),
        _external_ip(obj),
        _svc_ports(spec),
        object_age(obj, now),
    ]


def node_status(obj: dict[str, Any]) -> str:
    """kubectl's STATUS of a node: ``Ready`` when the Ready condition is True, ``NotReady`` for any
    other value of it (False, or Unknown once the node stopped reporting), ``Unknown`` only without
    the condition; ``,SchedulingDisabled`` when cordoned (``spec.unschedulable``)."""
    ready = "Unknown"
    for cond in _status(obj).get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = "Ready" if cond.get("status") == "True" else "NotReady"
    if _spec(obj).get("unschedulable"):
        ready += ",SchedulingDisabled"
    return ready


def _node_roles(labels: dict[str, str]) -> list[str]:
    """kubectl's findNodeRoles: ``node-role.kubernetes.io/<role>`` keys and the ``kubernetes.io/role`` value."""
    roles = {k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/") and k.split("/", 1)[1]}
    if labels.get("kubernetes.io/role"):
        roles.add(labels["kubernetes.io/role"])
    return sorted(roles)


def _node(obj: dict[str, Any], now: datetime) -> Row:
    labels = _meta(obj).get("labels") or {}
    roles = _node_roles(labels)
    version = ((_status(obj).get("nodeInfo") or {}).get("kubeletVersion")) or ""
    return [str(_meta(obj).get("name", "")), node_status(obj), ",".join(roles) or "<none>", object_age(obj, now), str(version)]


def event_time(obj: dict[str, Any]) -> str | None:
    return (
        obj.get("lastTimestamp")
        or obj.get("eventTime")
        or obj.get("firstTimestamp")
        or _meta(obj).get("creationTimestamp")
    )


def _event_wide(obj: dict[str, Any], now: datetime) -> Row:
    source = obj.get("source") or {}
    origin = ", ".join(str(v) for v in (source.get("component"), source.get("host")) if v)
    origin = origin or str(obj.get("reportingComponent") or "")
    first = obj.get("firstTimestamp") or obj.get("eventTime") or _meta(obj).get("creationTimestamp")
    return [str((obj.get("involvedObject") or {}).get("fieldPath") or ""), origin, age(first, now),
            str(obj.get("count") or 1), str(_meta(obj).get("name", ""))]


def _event(obj: dict[str, Any], now: datetime) -> Row:
    involved = obj.get("involvedObject") or {}
    target = f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}"
    return [age(event_time(obj), now), str(obj.get("type", "")), str(obj.get("reason", "")), target, str(obj.get("message", ""))]


register("PersistentVolume", Columns(
    ["NAME", "CAPACITY", "ACCESS MODES", "RECLAIM POLICY", "STATUS", "CLAIM", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS",
     "REASON", "AGE"],
    _pv, ["VOLUMEMODE"], _volume_mode,
))
register("PersistentVolumeClaim", Columns(
    ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "AGE"], _pvc,
    ["VOLUMEMODE"], _volume_mode,
))
register("VolumeAttributesClass", Columns(["NAME", "DRIVERNAME", "AGE"], _vac))
register("CSIStorageCapacity", Columns(["NAME", "STORAGECLASSNAME", "CAPACITY"], _csi_storage_capacity))
register("StorageClass", Columns(
    ["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION", "AGE"], _sc,
))
register("Pod", Columns(["NAME", "READY", "STATUS", "RESTARTS", "AGE"], _pod,
                        ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"], _pod_wide))
register("Event", Columns(["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], _event,
                         ["SUBOBJECT", "SOURCE", "FIRST SEEN", "COUNT", "NAME"], _event_wide))


# --- more kinds (kubectl's server-side columns) -----------------------------------------------

def _name(obj: dict[str, Any]) -> str:
    return str(_meta(obj).get("name", ""))


def _count(value: Any) -> str:
    return str(int(value or 0))


def _selector_text(selector: Any) -> str:
    """A label selector as kubectl prints it: ``app=web,tier in (a,b)``; ``<none>`` when empty."""
    if not isinstance(selector, dict) or not selector:
        return "<none>"
    labels = selector.get("matchLabels") if ("matchLabels" in selector or "matchExpressions" in selector) else selector
    parts = [f"{k}={v}" for k, v in sorted((labels or {}).items())]
    for expr in selector.get("matchExpressions") or [] if "matchExpressions" in selector else []:
        op, key, values = expr.get("operator"), expr.get("key", ""), ",".join(expr.get("values") or [])
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}.get(op, key))
    return ",".join(parts) or "<none>"


def _template_containers(obj: dict[str, Any]) -> Row:
    return _containers_and_images(_spec(obj).get("template"))


def _containers_and_images(template: Any) -> Row:
    """A pod template's container names and their images, each comma-separated, as kubectl prints them."""
    containers = [c for c in ((template or {}).get("spec") or {}).get("containers") or [] if isinstance(c, dict)]
    return [",".join(str(c.get("name", "")) for c in containers), ",".join(str(c.get("image", "")) for c in containers)]


def _replicated(obj: dict[str, Any], now: datetime) -> Row:
    desired = _spec(obj).get("replicas")
    status = _status(obj)
    return [_name(obj), _count(1 if desired is None else desired), _count(status.get("replicas")),
            _count(status.get("readyReplicas")), object_age(obj, now)]


def _replicated_wide(obj: dict[str, Any], now: datetime) -> Row:
    return [*_template_containers(obj), _selector_text(_spec(obj).get("selector"))]


def _daemonset(obj: dict[str, Any], now: datetime) -> Row:
    status = _status(obj)
    node_selector = ((_spec(obj).get("template") or {}).get("spec") or {}).get("nodeSelector") or {}
    return [
        _name(obj), _count(status.get("desiredNumberScheduled")), _count(status.get("currentNumberScheduled")),
        _count(status.get("numberReady")), _count(status.get("updatedNumberScheduled")),
        _count(status.get("numberAvailable")),
        ",".join(f"{k}={v}" for k, v in sorted(node_selector.items())) or "<none>", object_age(obj, now),
    ]


def _deployment(obj: dict[str, Any], now: datetime) -> Row:
    desired = _spec(obj).get("replicas")
    status = _status(obj)
    return [_name(obj), f"{int(status.get('readyReplicas') or 0)}/{1 if desired is None else int(desired)}",
            _count(status.get("updatedReplicas")), _count(status.get("availableReplicas")), object_age(obj, now)]


def _sts_wide(obj: dict[str, Any], now: datetime) -> Row:
    return _template_containers(obj)


def _svc_wide(obj: dict[str, Any], now: datetime) -> Row:
    return [_selector_text(_spec(obj).get("selector"))]


def _more(shown: list[str], count: int, limit: int = 3, empty: str = "<unset>") -> str:
    """kubectl's listWithMoreString: the first ``limit`` of ``count`` entries, then ``+ N more...``; ``empty``
    for none (kubectl's Endpoints column says ``<none>``)."""
    text = ",".join(shown[:limit])
    if count > limit:
        return f"{text} + {count - limit} more..."
    return text or empty


def _endpoints(obj: dict[str, Any], now: datetime) -> Row:
    shown: list[str] = []
    total = 0
    for subset in obj.get("subsets") or []:
        ports = subset.get("ports") or [{}]
        for address in subset.get("addresses") or []:
            for port in ports:
                total += 1
                if len(shown) < 3:
                    ip = str(address.get("ip", ""))
                    shown.append(f"{ip}:{port['port']}" if port.get("port") is not None else ip)
    return [_name(obj), _more(shown, total, empty="<none>"), object_age(obj, now)]


def _namespace(obj: dict[str, Any], now: datetime) -> Row:
    return [_name(obj), str(_status(obj).get("phase") or "Active"), object_age(obj, now)]


def _secret(obj: dict[str, Any], now: datetime) -> Row:
    return [_name(obj), str(obj.get("type") or "Opaque"), str(len(obj.get("data") or {})), object_age(obj, now)]


def _configmap(obj: dict[str, Any], now: datetime) -> Row:
    return [_name(obj), str(len(obj.get("data") or {}) + len(obj.get("binaryData") or {})), object_age(obj, now)]


def _controller_revision(obj: dict[str, Any], now: datetime) -> Row:
    owner = next((o for o in _meta(obj).get("ownerReferences") or [] if o.get("controller")), None)
    controller = "<none>"
    if owner:
        group = str(owner.get("apiVersion", "")).split("/")[0] if "/" in str(owner.get("apiVersion", "")) else ""
        kind = str(owner.get("kind", "")).lower() + (f".{group}" if group else "")
        controller = f"{kind}/{owner.get('name', '')}"
    return [_name(obj), controller, str(obj.get("revision", 0)), object_age(obj, now)]


def _volume_attachment(obj: dict[str, Any], now: datetime) -> Row:
    spec = _spec(obj)
    return [_name(obj), str(spec.get("attacher", "")), str((spec.get("source") or {}).get("persistentVolumeName") or ""),
            str(spec.get("nodeName", "")), "true" if _status(obj).get("attached") else "false", object_age(obj, now)]


def _csi_driver(obj: dict[str, Any], now: datetime) -> Row:
    spec = _spec(obj)

    def flag(key: str, default: bool) -> str:
        value = spec.get(key)
        return ("true" if value else "false") if value is not None else ("true" if default else "false")

    modes = ",".join(spec.get("volumeLifecycleModes") or ["Persistent"])
    return [_name(obj), flag("attachRequired", True), flag("podInfoOnMount", False), flag("storageCapacity", False),
            str(len(spec.get("tokenRequests") or [])) if spec.get("tokenRequests") else "<unset>",
            flag("requiresRepublish", False), modes, object_age(obj, now)]


def _csi_node(obj: dict[str, Any], now: datetime) -> Row:
    return [_name(obj), str(len(_spec(obj).get("drivers") or [])), object_age(obj, now)]


def _node_wide(obj: dict[str, Any], now: datetime) -> Row:
    status = _status(obj)
    addresses = status.get("addresses") or []
    info = status.get("nodeInfo") or {}

    def address(kind: str) -> str:
        return next((str(a.get("address")) for a in addresses if a.get("type") == kind), "<none>")

    return [address("InternalIP"), address("ExternalIP"), str(info.get("osImage") or "<unknown>"),
            str(info.get("kernelVersion") or "<unknown>"), str(info.get("containerRuntimeVersion") or "<unknown>")]


def _lease(obj: dict[str, Any], now: datetime) -> Row:
    return [_name(obj), str(_spec(obj).get("holderIdentity") or ""), object_age(obj, now)]


def _created_at(obj: dict[str, Any], now: datetime) -> Row:
    return [_name(obj), str(_meta(obj).get("creationTimestamp") or "")]


def _binding(obj: dict[str, Any], now: datetime) -> Row:
    ref = obj.get("roleRef") or {}
    return [_name(obj), f"{ref.get('kind', '')}/{ref.get('name', '')}", object_age(obj, now)]


def _binding_wide(obj: dict[str, Any], now: datetime) -> Row:
    subjects = obj.get("subjects") or []

    def of(kind: str) -> str:
        names = [(f"{s.get('namespace')}/" if kind == "ServiceAccount" and s.get("namespace") else "") + str(s.get("name"))
                 for s in subjects if s.get("kind") == kind]
        return ", ".join(names)

    return [of("User"), of("Group"), of("ServiceAccount")]


def _service_account(obj: dict[str, Any], now: datetime) -> Row:
    return [_name(obj), str(len(obj.get("secrets") or [])), object_age(obj, now)]


def _csr(obj: dict[str, Any], now: datetime) -> Row:
    """kubectl's printCertificateSigningRequest (SEMANTICS CSR4): Denied, else Approved, else Pending; then
    ",Failed" and ",Issued"; the requested duration as a human duration (86400 seconds: 24h)."""
    spec = _spec(obj)
    types = {str(c.get("type")) for c in _status(obj).get("conditions") or [] if isinstance(c, dict)}
    shown = "Denied" if "Denied" in types else "Approved" if "Approved" in types else "Pending"
    if "Failed" in types:
        shown += ",Failed"
    if _status(obj).get("certificate"):
        shown += ",Issued"
    duration = spec.get("expirationSeconds")
    return [_name(obj), object_age(obj, now), str(spec.get("signerName") or "<none>"), str(spec.get("username") or ""),
            human_duration(duration) if isinstance(duration, int) else "<none>", shown]


def _pod_disruption_budget(obj: dict[str, Any], now: datetime) -> Row:
    spec = _spec(obj)
    shown = [str(spec[k]) if spec.get(k) is not None else "N/A" for k in ("minAvailable", "maxUnavailable")]
    return [_name(obj), *shown, str(int(_status(obj).get("disruptionsAllowed") or 0)), object_age(obj, now)]


def _job(obj: dict[str, Any], now: datetime) -> Row:
    """kubectl's printJob: completions as succeeded/wanted, the run's duration, and a status from its conditions."""
    spec, status = _spec(obj), _status(obj)
    succeeded = int(status.get("succeeded") or 0)
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{spec['completions']}"
    elif int(spec.get("parallelism") or 0) > 1:
        completions = f"{succeeded}/1 of {spec['parallelism']}"
    else:
        completions = f"{succeeded}/1"
    started, finished = parse_timestamp(status.get("startTime")), parse_timestamp(status.get("completionTime"))
    duration = "" if started is None else human_duration(((finished or now) - started).total_seconds())
    held = {str(c.get("type")) for c in status.get("conditions") or [] if isinstance(c, dict) and c.get("status") == "True"}
    if "Complete" in held:
        shown = "Complete"
    elif "Failed" in held:
        shown = "Failed"
    elif _meta(obj).get("deletionTimestamp"):
        shown = "Terminating"
    else:
        shown = next((c for c in ("Suspended", "FailureTarget", "SuccessCriteriaMet") if c in held), "Running")
    return [_name(obj), shown, completions, duration, object_age(obj, now)]


def _cronjob(obj: dict[str, Any], now: datetime) -> Row:
    """kubectl's printCronJob."""
    spec, status = _spec(obj), _status(obj)
    suspend = spec.get("suspend")
    last = status.get("lastScheduleTime")
    return [_name(obj), str(spec.get("schedule") or ""), str(spec.get("timeZone") or "<none>"),
            "<unset>" if suspend is None else str(bool(suspend)), str(len(status.get("active") or [])),
            age(last, now) if last else "<none>", object_age(obj, now)]


def _cronjob_wide(obj: dict[str, Any], now: datetime) -> Row:
    job_spec = (_spec(obj).get("jobTemplate") or {}).get("spec") or {}
    return [*_template_containers({"spec": job_spec}), _selector_text(job_spec.get("selector"))]


# kubectl's loadBalancerWidth: a long address list is clipped to this many characters.
_LOAD_BALANCER_WIDTH = 16


def _ingress(obj: dict[str, Any], now: datetime) -> Row:
    """kubectl's printIngress: the class, up to three hosts (``*`` for none), the addresses a controller
    reported, and 80 or ``80, 443`` with TLS."""
    spec = _spec(obj)
    rules = [r for r in spec.get("rules") or [] if isinstance(r, dict)]
    hosts = [str(r["host"]) for r in rules if r.get("host")][:3]
    shown = ",".join(hosts) if hosts else "*"
    if len(rules) > 3 and len(hosts) == 3:
        shown += f" + {len(rules) - 3} more..."
    addresses = sorted({str(i.get("ip") or i.get("hostname")) for i in
                        ((_status(obj).get("loadBalancer") or {}).get("ingress") or [])
                        if isinstance(i, dict) and (i.get("ip") or i.get("hostname"))})
    address = ",".join(addresses)
    if len(address) > _LOAD_BALANCER_WIDTH:
        address = address[: _LOAD_BALANCER_WIDTH - 3] + "..."
    return [_name(obj), str(spec.get("ingressClassName") or "<none>"), shown, address,
            "80, 443" if spec.get("tls") else "80", object_age(obj, now)]


def _runtime_class(obj: dict[str, Any], now: datetime) -> Row:
    return [_name(obj), str(obj.get("handler") or ""), object_age(obj, now)]


def _ingress_class(obj: dict[str, Any], now: datetime) -> Row:
    name = _name(obj)
    if (_meta(obj).get("annotations") or {}).get(INGRESS_CLASS_DEFAULT_ANNOTATION) == "true":
        name += " (default)"
    spec = _spec(obj)
    params = spec.get("parameters")
    shown = "<none>"
    if isinstance(params, dict):
        group = f".{params['apiGroup']}" if params.get("apiGroup") is not None else ""
        shown = f"{params.get('kind') or ''}{group}/{params.get('name') or ''}"
    return [name, str(spec.get("controller") or ""), shown, object_age(obj, now)]


def _endpoint_slice(obj: dict[str, Any], now: datetime) -> Row:
    """kubectl's printEndpointSlice: up to three ports (a name where the number is unset, else ``*``) and up
    to three addresses."""
    ports = [p for p in obj.get("ports") or [] if isinstance(p, dict)]
    port_texts = [str(p["port"]) if p.get("port") is not None else (str(p["name"]) if p.get("name") is not None
                                                                      else "*") for p in ports]
    addresses = [str(a) for e in obj.get("endpoints") or [] if isinstance(e, dict) for a in e.get("addresses") or []]
    return [_name(obj), str(obj.get("addressType") or ""), _more(port_texts, len(port_texts)),
            _more(addresses, len(addresses)), object_age(obj, now)]


def _priority_class(obj: dict[str, Any], now: datetime) -> Row:
    return [_name(obj), str(obj.get("value") or 0), "true" if obj.get("globalDefault") is True else "false",
            object_age(obj, now)]


def _priority_class_wide(obj: dict[str, Any], now: datetime) -> Row:
    return [str(obj.get("preemptionPolicy") or "")]


def _pod_template_row(obj: dict[str, Any], now: datetime) -> Row:
    """kubectl's printPodTemplate: the template's containers, their images and the pod labels (PT1)."""
    template = obj.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    return [_name(obj), *_containers_and_images(template),
            ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"]


def _quantity_text(value: Any) -> str:
    return "<nil>" if value is None else str(value)  # Go's (*Quantity).String() of a nil pointer


def _hpa_metric(spec: dict[str, Any], status: dict[str, Any] | None) -> str:
    """One metric of kubectl's formatHPAMetrics: ``current/target``, ``<unknown>`` before the controller has
    measured it; an average of an object or external metric says ``(avg)``, a (container) resource metric is
    prefixed with its resource name."""
    kind = spec.get("type")
    member = METRIC_SOURCE_MEMBERS.get(str(kind))
    if member is None:
        return "<unknown type>"
    source = spec.get(member) or {}
    target = source.get("target") or {}
    measured = isinstance(status, dict) and isinstance(status.get(member), dict)
    current = (status or {}).get(member, {}).get("current") or {} if measured else {}
    if member == "pods":
        now = _quantity_text(current.get("averageValue")) if measured else "<unknown>"
        return f"{now}/{_quantity_text(target.get('averageValue'))}"
    if member in ("external", "object"):
        if target.get("averageValue") is not None:
            now = _quantity_text(current["averageValue"]) if current.get("averageValue") is not None else "<unknown>"
            return f"{now}/{_quantity_text(target['averageValue'])} (avg)"
        now = _quantity_text(current.get("value")) if measured else "<unknown>"
        return f"{now}/{_quantity_text(target.get('value'))}"
    name = str(source.get("name") or "")
    if target.get("averageValue") is not None:
        now = _quantity_text(current.get("averageValue")) if measured else "<unknown>"
        return f"{name}: {now}/{_quantity_text(target['averageValue'])}"
    now = f"{current['averageUtilization']}%" if current.get("averageUtilization") is not None else "<unknown>"
    wanted = f"{target['averageUtilization']}%" if target.get("averageUtilization") is not None else "<auto>"
    return f"{name}: {now}/{wanted}"


def _hpa_row(obj: dict[str, Any], now: datetime) -> Row:
    """kubectl's printHorizontalPodAutoscaler (HPA1): status.currentMetrics is matched to spec.metrics by
    position, as there; two metrics are shown, then ``+ N more...``."""
    spec, status = _spec(obj), _status(obj)
    ref = spec.get("scaleTargetRef") or {}
    metrics = [m for m in spec.get("metrics") or [] if isinstance(m, dict)]
    current = [m for m in status.get("currentMetrics") or [] if isinstance(m, dict)]
    shown = [_hpa_metric(m, current[i] if i < len(current) else None) for i, m in enumerate(metrics)]
    targets = ", ".join(shown[:2]) + (f" + {len(shown) - 2} more..." if len(shown) > 2 else "") or "<none>"
    min_pods = str(spec["minReplicas"]) if spec.get("minReplicas") is not None else "<unset>"
    return [_name(obj), f"{ref.get('kind') or ''}/{ref.get('name') or ''}", targets, min_pods,
            _count(spec.get("maxReplicas")), _count(status.get("currentReplicas")), object_age(obj, now)]


_WORKLOAD_WIDE = ["CONTAINERS", "IMAGES", "SELECTOR"]
register("PodTemplate", Columns(["NAME", "CONTAINERS", "IMAGES", "POD LABELS"], _pod_template_row))
register("HorizontalPodAutoscaler", Columns(
    ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"], _hpa_row,
    definitions={"REFERENCE": Column("Reference", "string", "The scale target: its kind and name."),
                 "TARGETS": Column("Targets", "string", "Each metric's current value and target."),
                 "MINPODS": Column("MinPods", "string", "The lower limit of replicas."),
                 "MAXPODS": Column("MaxPods", "string", "The upper limit of replicas."),
                 "REPLICAS": Column("Replicas", "string", "The current number of replicas.")}))
register("ReplicaSet", Columns(["NAME", "DESIRED", "CURRENT", "READY", "AGE"], _replicated,
                               _WORKLOAD_WIDE, _replicated_wide))
register("ReplicationController", Columns(["NAME", "DESIRED", "CURRENT", "READY", "AGE"], _replicated,
                                          _WORKLOAD_WIDE, _replicated_wide))
register("DaemonSet", Columns(
    ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE"], _daemonset,
    _WORKLOAD_WIDE, _replicated_wide,
))
register("Deployment", Columns(["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], _deployment,
                               _WORKLOAD_WIDE, _replicated_wide))
register("StatefulSet", Columns(["NAME", "READY", "AGE"], _sts, ["CONTAINERS", "IMAGES"], _sts_wide))
register("Job", Columns(["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"], _job, _WORKLOAD_WIDE, _replicated_wide))
register("CronJob", Columns(
    ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"], _cronjob, _WORKLOAD_WIDE,
    _cronjob_wide, definitions={"SUSPEND": Column("Suspend", "boolean", "Whether new jobs are held back."),
                                "ACTIVE": Column("Active", "integer", "How many of its jobs are running.")}))
register("Ingress", Columns(["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"], _ingress))
register("IngressClass", Columns(["NAME", "CONTROLLER", "PARAMETERS", "AGE"], _ingress_class))
register("NetworkPolicy", Columns(["NAME", "POD-SELECTOR", "AGE"],
                                 lambda obj, now: [_name(obj), _selector_text(_spec(obj).get("podSelector")),
                                                   object_age(obj, now)]))
register("EndpointSlice", Columns(["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"], _endpoint_slice))
register("PriorityClass", Columns(
    ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE"], _priority_class, ["PREEMPTIONPOLICY"], _priority_class_wide,
    definitions={"VALUE": Column("Value", "integer", "The priority pods of this class get."),
                 "GLOBAL-DEFAULT": Column("Global-Default", "boolean", "Whether pods naming no class get this one."),
                 "PREEMPTIONPOLICY": Column("PreemptionPolicy", "string", "Whether its pods may preempt others.")}))
register("Service", Columns(["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"], _svc,
                            ["SELECTOR"], _svc_wide))
register("Node", Columns(["NAME", "STATUS", "ROLES", "AGE", "VERSION"], _node,
                         ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"], _node_wide))
register("Endpoints", Columns(["NAME", "ENDPOINTS", "AGE"], _endpoints))
register("Namespace", Columns(["NAME", "STATUS", "AGE"], _namespace))
register("Secret", Columns(["NAME", "TYPE", "DATA", "AGE"], _secret))
register("ConfigMap", Columns(["NAME", "DATA", "AGE"], _configmap))
register("ControllerRevision", Columns(["NAME", "CONTROLLER", "REVISION", "AGE"], _controller_revision))
register("VolumeAttachment", Columns(["NAME", "ATTACHER", "PV", "NODE", "ATTACHED", "AGE"], _volume_attachment))
register("CSIDriver", Columns(["NAME", "ATTACHREQUIRED", "PODINFOONMOUNT", "STORAGECAPACITY", "TOKENREQUESTS",
                               "REQUIRESREPUBLISH", "MODES", "AGE"], _csi_driver))
register("CSINode", Columns(["NAME", "DRIVERS", "AGE"], _csi_node))
register("Lease", Columns(["NAME", "HOLDER", "AGE"], _lease))


def _resource_quota(obj: dict[str, Any], now: datetime) -> Row:
    """kubectl's columns: ``used/hard`` of status.hard in name order, limits.* apart from the rest (SEMANTICS QL1)."""
    status = _status(obj)
    used = status.get("used") or {}
    request: list[str] = []
    limit: list[str] = []
    for name, hard in sorted((status.get("hard") or {}).items()):
        (limit if name.split(".")[0] == "limits" and "." in name else request).append(
            f"{name}: {used.get(name, '0')}/{hard}")
    return [_name(obj), object_age(obj, now), ", ".join(request), ", ".join(limit)]


register("ResourceQuota", Columns(["NAME", "AGE", "REQUEST", "LIMIT"], _resource_quota))
register("LimitRange", Columns(["NAME", "CREATED AT"], _created_at))
# kubectl's columns for the RBAC kinds, service accounts and certificate requests.
register("Role", Columns(["NAME", "CREATED AT"], _created_at))
register("ClusterRole", Columns(["NAME", "CREATED AT"], _created_at))
register("CustomResourceDefinition", Columns(["NAME", "CREATED AT"], _created_at))
register("RuntimeClass", Columns(["NAME", "HANDLER", "AGE"], _runtime_class))
register("RoleBinding", Columns(["NAME", "ROLE", "AGE"], _binding, ["USERS", "GROUPS", "SERVICEACCOUNTS"], _binding_wide))
register("ClusterRoleBinding", Columns(["NAME", "ROLE", "AGE"], _binding, ["USERS", "GROUPS", "SERVICEACCOUNTS"],
                                       _binding_wide))
register("ServiceAccount", Columns(["NAME", "SECRETS", "AGE"], _service_account))
register("CertificateSigningRequest", Columns(["NAME", "AGE", "SIGNERNAME", "REQUESTOR", "REQUESTEDDURATION", "CONDITION"],
                                              _csr))
register("PodDisruptionBudget", Columns(["NAME", "MIN AVAILABLE", "MAX UNAVAILABLE", "ALLOWED DISRUPTIONS", "AGE"],
                                        _pod_disruption_budget))


def _backup_schedule(obj: dict[str, Any], now: datetime) -> Row:
    from storage.api.backup_schedule import printed_row

    return printed_row(obj, now)


# CronJob's columns (SEMANTICS BC14).
register("BackupSchedule", Columns(["NAME", "SCHEDULE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"], _backup_schedule))


# --- snapshot.storage.k8s.io and gateway.networking.k8s.io: their CRDs' additionalPrinterColumns ------------


def _path(obj: dict[str, Any], *keys: str) -> Any:
    value: Any = obj
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _crd_cell(value: Any) -> str:
    """A CRD column's cell as kubectl shows it: booleans in lower case, an absent value as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _crd_date(value: Any, now: datetime) -> str:
    # The API server turns a CRD's "date" column into a duration since then (apiextensions' tableconvertor).
    return age(value, now) if value else ""


def _volume_snapshot(obj: dict[str, Any], now: datetime) -> Row:
    spec, status = _spec(obj), _status(obj)
    source = spec.get("source") or {}
    return [_name(obj), _crd_cell(status.get("readyToUse")), _crd_cell(source.get("persistentVolumeClaimName")),
            _crd_cell(source.get("volumeSnapshotContentName")), _crd_cell(status.get("restoreSize")),
            _crd_cell(spec.get("volumeSnapshotClassName")), _crd_cell(status.get("boundVolumeSnapshotContentName")),
            _crd_date(status.get("creationTime"), now), object_age(obj, now)]


def _volume_snapshot_content(obj: dict[str, Any], now: datetime) -> Row:
    spec, status = _spec(obj), _status(obj)
    return [_name(obj), _crd_cell(status.get("readyToUse")), _crd_cell(status.get("restoreSize")),
            _crd_cell(spec.get("deletionPolicy")), _crd_cell(spec.get("driver")),
            _crd_cell(spec.get("volumeSnapshotClassName")), _crd_cell(_path(spec, "volumeSnapshotRef", "name")),
            _crd_cell(_path(spec, "volumeSnapshotRef", "namespace")), object_age(obj, now)]


def _volume_snapshot_class(obj: dict[str, Any], now: datetime) -> Row:
    return [_name(obj), _crd_cell(obj.get("driver")), _crd_cell(obj.get("deletionPolicy")), object_age(obj, now)]


def _name_age(obj: dict[str, Any], now: datetime) -> Row:
    return [_name(obj), object_age(obj, now)]


_CRD_NAME = Column("Name", "string", "The object's name, unique in its namespace (or the cluster).", "name")
_CRD_AGE = Column("Age", "date", "How long ago the object was created.")


def _crd_columns(headers: list[str], row: RowFn, columns: list[Column]) -> Columns:
    definitions = {"NAME": _CRD_NAME, "AGE": _CRD_AGE}
    definitions.update({header: column for header, column in zip(headers[1:], columns)})
    return Columns(headers, row, definitions=definitions)


_READY = Column("ReadyToUse", "boolean", "Whether a volume may be restored from the snapshot now.")
register("VolumeSnapshot", _crd_columns(
    ["NAME", "READYTOUSE", "SOURCEPVC", "SOURCESNAPSHOTCONTENT", "RESTORESIZE", "SNAPSHOTCLASS", "SNAPSHOTCONTENT",
     "CREATIONTIME", "AGE"], _volume_snapshot, [
        _READY,
        Column("SourcePVC", "string", "The claim a new snapshot is (or was) taken of."),
        Column("SourceSnapshotContent", "string", "The existing VolumeSnapshotContent this snapshot binds."),
        Column("RestoreSize", "string", "The smallest size of a volume restored from the snapshot."),
        Column("SnapshotClass", "string", "The VolumeSnapshotClass the snapshot asks for."),
        Column("SnapshotContent", "string", "The VolumeSnapshotContent the snapshot is bound to (the binding holds "
               "only when the content names the snapshot too)."),
        Column("CreationTime", "date", "When the storage system took the snapshot."),
    ]))
register("VolumeSnapshotContent", _crd_columns(
    ["NAME", "READYTOUSE", "RESTORESIZE", "DELETIONPOLICY", "DRIVER", "VOLUMESNAPSHOTCLASS", "VOLUMESNAPSHOT",
     "VOLUMESNAPSHOTNAMESPACE", "AGE"], _volume_snapshot_content, [
        _READY,
        Column("RestoreSize", "integer", "The snapshot's size in bytes."),
        Column("DeletionPolicy", "string", "Whether the snapshot on the storage system is deleted (Delete) or kept "
               "(Retain) with its VolumeSnapshot."),
        Column("Driver", "string", "The driver that took the snapshot."),
        Column("VolumeSnapshotClass", "string", "The VolumeSnapshotClass the snapshot was taken with."),
        Column("VolumeSnapshot", "string", "The VolumeSnapshot the content is bound to."),
        Column("VolumeSnapshotNamespace", "string", "The namespace of the VolumeSnapshot the content is bound to."),
    ]))
register("VolumeSnapshotClass", _crd_columns(
    ["NAME", "DRIVER", "DELETIONPOLICY", "AGE"], _volume_snapshot_class, [
        Column("Driver", "string"),
        Column("DeletionPolicy", "string", "Whether a content taken with this class is deleted (Delete) or kept "
               "(Retain) with its VolumeSnapshot."),
    ]))
register("ReferenceGrant", _crd_columns(["NAME", "AGE"], _name_age, []))


# --- meta.k8s.io/v1 Table ------------------------------------------------------------------------

# Column names as Kubernetes sends them (kubectl upper-cases them for display).
_COLUMN_NAMES = {
    "NAME": "Name", "AGE": "Age", "CAPACITY": "Capacity", "ACCESS MODES": "Access Modes",
    "RECLAIM POLICY": "Reclaim Policy", "STATUS": "Status", "CLAIM": "Claim", "STORAGECLASS": "StorageClass",
    "VOLUMEATTRIBUTESCLASS": "VolumeAttributesClass", "DRIVERNAME": "DriverName", "STORAGECLASSNAME": "StorageClassName",
    "REASON": "Reason", "VOLUMEMODE": "VolumeMode", "VOLUME": "Volume", "PROVISIONER": "Provisioner",
    "RECLAIMPOLICY": "ReclaimPolicy", "VOLUMEBINDINGMODE": "VolumeBindingMode",
    "ALLOWVOLUMEEXPANSION": "AllowVolumeExpansion", "READY": "Ready", "RESTARTS": "Restarts", "IP": "IP",
    "NODE": "Node", "TYPE": "Type", "CLUSTER-IP": "Cluster-IP", "EXTERNAL-IP": "External-IP",
    "PORT(S)": "Port(s)", "SELECTOR": "Selector", "ROLES": "Roles", "VERSION": "Version",
    "INTERNAL-IP": "Internal-IP", "OS-IMAGE": "OS-Image", "KERNEL-VERSION": "Kernel-Version",
    "CONTAINER-RUNTIME": "Container-Runtime", "NOMINATED NODE": "Nominated Node",
    "READINESS GATES": "Readiness Gates", "LAST SEEN": "Last Seen", "OBJECT": "Object",
    "MESSAGE": "Message", "SUBOBJECT": "Subobject", "SOURCE": "Source", "FIRST SEEN": "First Seen",
    "COUNT": "Count", "DESIRED": "Desired", "CURRENT": "Current", "UP-TO-DATE": "Up-to-date",
    "AVAILABLE": "Available", "NODE SELECTOR": "Node Selector", "CONTAINERS": "Containers", "IMAGES": "Images",
    "POD LABELS": "Pod Labels",
    "ENDPOINTS": "Endpoints", "ADDRESSTYPE": "AddressType", "POD-SELECTOR": "Pod-Selector", "DATA": "Data", "CONTROLLER": "Controller", "REVISION": "Revision",
    "ATTACHER": "Attacher", "PV": "PV", "ATTACHED": "Attached", "HOLDER": "Holder",
    "MIN AVAILABLE": "Min Available", "MAX UNAVAILABLE": "Max Unavailable", "ALLOWED DISRUPTIONS": "Allowed Disruptions",
}
_INTEGER_COLUMNS = {"RESTARTS", "DESIRED", "CURRENT", "UP-TO-DATE", "AVAILABLE", "DATA", "REVISION", "COUNT",
                    "ALLOWED DISRUPTIONS"}


def column_definitions(kind: str) -> list[dict[str, Any]]:
    """``columnDefinitions`` of a kind's Table: the ``-o wide`` columns have priority 1."""
    return [dict(d) for d in _definitions(kind)[0]]


def _definitions(kind: str) -> tuple[tuple[dict[str, Any], ...], tuple[int, ...]]:
    cached = _DEFINITIONS.get(kind)
    if cached is not None:
        return cached
    cols = columns_for(kind)
    out = []
    for priority, headers in ((0, cols.headers), (1, cols.wide_headers or [])):
        for header in headers:
            declared = (cols.definitions or {}).get(header)
            if declared is not None:
                out.append({"name": declared.name, "type": declared.type, "format": declared.format,
                            "description": declared.description, "priority": priority})
                continue
            definition: dict[str, Any] = {
                "name": _COLUMN_NAMES.get(header, header.title()),
                "type": "integer" if header in _INTEGER_COLUMNS else "string",
                "format": "name" if header == "NAME" else "",
                "description": f"{_COLUMN_NAMES.get(header, header.title())} of the {kind}.",
                "priority": priority,
            }
            out.append(definition)
    cached = (tuple(out), tuple(i for i, d in enumerate(out) if d["type"] in ("integer", "boolean")))
    _DEFINITIONS[kind] = cached
    return cached


def table_cells(kind: str, obj: dict[str, Any], now: datetime) -> list[Any]:
    """One Table row's cells: every column, the wide ones included (clients hide priority > 0)."""
    cols = columns_for(kind)
    cells: list[Any] = list(cols.row(obj, now))
    if cols.wide_row is not None:
        cells += cols.wide_row(obj, now)
    definitions = _definitions(kind)[0]
    for i in _definitions(kind)[1]:
        try:
            if definitions[i]["type"] == "boolean":
                if cells[i] in ("true", "false"):
                    cells[i] = cells[i] == "true"
            else:
                cells[i] = int(cells[i])
        except (TypeError, ValueError, IndexError):
            pass
    return cells


def partial_object_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": _meta(obj)}


def table(kind: str, objects: list[dict[str, Any]], *, include_object: str = "Metadata",
          list_metadata: dict[str, Any] | None = None, with_columns: bool = True,
          now: datetime | None = None) -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table of ``objects``.

    ``include_object``: "None", "Metadata" (PartialObjectMetadata, the default) or "Object" (the whole object).
    ``with_columns=False`` leaves out the column definitions (watch events after the first, as Kubernetes).
    """
    now = now or datetime.now(timezone.utc)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": table_cells(kind, obj, now)}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = partial_object_metadata(obj)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": dict(list_metadata or {}),
        "columnDefinitions": column_definitions(kind) if with_columns else [],
        "rows": rows,
    }
