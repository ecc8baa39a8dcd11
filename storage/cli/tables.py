"""``get`` tables: kubectl's columns for each kind, and its column layout.

Each kind has one ``Columns`` entry; kinds without one get NAME and AGE.
Other modules may register more with ``register``.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from storage.cli.age import age, object_age

Row = list[str]
RowFn = Callable[[dict[str, Any], datetime], Row]

DEFAULT_CLASS_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)
BETA_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"

_MODE_ORDER = (
    ("ReadWriteOnce", "RWO"),
    ("ReadOnlyMany", "ROX"),
    ("ReadWriteMany", "RWX"),
    ("ReadWriteOncePod", "RWOP"),
)


@dataclass(frozen=True)
class Columns:
    headers: list[str]
    row: RowFn
    wide_headers: list[str] | None = None
    wide_row: RowFn | None = None


_TABLES: dict[str, Columns] = {}


def register(kind: str, columns: Columns) -> None:
    _TABLES[kind] = columns


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


def storage_class_of(obj: dict[str, Any]) -> str:
    """The beta annotation wins over the field when present, even empty (rule B1)."""
    annotations = _meta(obj).get("annotations") or {}
    if BETA_CLASS_ANNOTATION in annotations:
        return str(annotations[BETA_CLASS_ANNOTATION])
    return str(_spec(obj).get("storageClassName") or "")


def is_default_class(obj: dict[str, Any]) -> bool:
    annotations = _meta(obj).get("annotations") or {}
    return any(annotations.get(a) == "true" for a in DEFAULT_CLASS_ANNOTATIONS)


def render(headers: list[str], rows: list[Row], no_headers: bool = False) -> str:
    """Go tabwriter as kubectl configures it: padding 3, minimum cell width 6, last column unpadded."""
    lines = rows if no_headers else [headers, *rows]
    if not lines:
        return ""
    width = max(len(line) for line in lines)
    sizes = [0] * width
    for line in lines:
        for i, cell in enumerate(line[:-1]):
            sizes[i] = max(sizes[i], len(cell))
    out = []
    for line in lines:
        cells = [cell.ljust(max(sizes[i] + 3, 6)) for i, cell in enumerate(line[:-1])]
        cells.append(line[-1] if line else "")
        out.append("".join(cells).rstrip())
    return "\n".join(out) + "\n"


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
        storage_class_of(obj),
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
        storage_class_of(obj),
        object_age(obj, now),
    ]


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


def pod_status(obj: dict[str, Any]) -> str:
    status = _status(obj)
    if _meta(obj).get("deletionTimestamp"):
        return "Terminating"
    reason = status.get("reason")
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        waiting = (state.get("waiting") or {}).get("reason")
        terminated = (state.get("terminated") or {}).get("reason")
        if waiting:
            reason = waiting
        elif terminated and status.get("phase") not in ("Running",):
            reason = terminated
    return str(reason or status.get("phase") or "Pending")


def _pod(obj: dict[str, Any], now: datetime) -> Row:
    status = _status(obj)
    statuses = status.get("containerStatuses") or []
    total = len(_spec(obj).get("containers") or []) or len(statuses)
    ready = sum(1 for cs in statuses if cs.get("ready"))
    restarts = sum(int(cs.get("restartCount") or 0) for cs in statuses)
    return [str(_meta(obj).get("name", "")), f"{ready}/{total}", pod_status(obj), str(restarts), object_age(obj, now)]


def _pod_wide(obj: dict[str, Any], now: datetime) -> Row:
    return [str(_status(obj).get("podIP") or "<none>"), str(_spec(obj).get("nodeName") or "<none>")]


def _sts(obj: dict[str, Any], now: datetime) -> Row:
    replicas = _spec(obj).get("replicas")
    replicas = 1 if replicas is None else int(replicas)
    ready = int(_status(obj).get("readyReplicas") or 0)
    return [str(_meta(obj).get("name", "")), f"{ready}/{replicas}", object_age(obj, now)]


def _deploy(obj: dict[str, Any], now: datetime) -> Row:
    replicas = _spec(obj).get("replicas")
    replicas = 1 if replicas is None else int(replicas)
    status = _status(obj)
    ready = int(status.get("readyReplicas") or 0)
    return [str(_meta(obj).get("name", "")), f"{ready}/{replicas}", str(int(status.get("updatedReplicas") or 0)),
            str(int(status.get("availableReplicas") or 0)), object_age(obj, now)]


def _svc_ports(spec: dict[str, Any]) -> str:
    ports = []
    for p in spec.get("ports") or []:
        text = str(p.get("port", ""))
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        ports.append(f"{text}/{p.get('protocol') or 'TCP'}")
    return ",".join(ports) or "<none>"


def _svc(obj: dict[str, Any], now: datetime) -> Row:
    spec = _spec(obj)
    external = spec.get("externalIPs") or []
    return [
        str(_meta(obj).get("name", "")),
        str(spec.get("type") or "ClusterIP"),
        str(spec.get("clusterIP") or "<none>"),
        ",".join(external) or "<none>",
        _svc_ports(spec),
        object_age(obj, now),
    ]


def node_status(obj: dict[str, Any]) -> str:
    ready = "Unknown"
    for cond in _status(obj).get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = {"True": "Ready", "False": "NotReady"}.get(cond.get("status"), "Unknown")
    if _spec(obj).get("unschedulable"):
        ready += ",SchedulingDisabled"
    return ready


def _node(obj: dict[str, Any], now: datetime) -> Row:
    labels = _meta(obj).get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/") and "/" in k)
    version = ((_status(obj).get("nodeInfo") or {}).get("kubeletVersion")) or ""
    return [str(_meta(obj).get("name", "")), node_status(obj), ",".join(roles) or "<none>", object_age(obj, now), str(version)]


def event_time(obj: dict[str, Any]) -> str | None:
    return (
        obj.get("lastTimestamp")
        or obj.get("eventTime")
        or obj.get("firstTimestamp")
        or _meta(obj).get("creationTimestamp")
    )


def _event(obj: dict[str, Any], now: datetime) -> Row:
    involved = obj.get("involvedObject") or {}
    target = f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}"
    return [age(event_time(obj), now), str(obj.get("type", "")), str(obj.get("reason", "")), target, str(obj.get("message", ""))]


register("PersistentVolume", Columns(
    ["NAME", "CAPACITY", "ACCESS MODES", "RECLAIM POLICY", "STATUS", "CLAIM", "STORAGECLASS", "REASON", "AGE"],
    _pv, ["VOLUMEMODE"], _volume_mode,
))
register("PersistentVolumeClaim", Columns(
    ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "AGE"], _pvc, ["VOLUMEMODE"], _volume_mode,
))
register("StorageClass", Columns(
    ["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION", "AGE"], _sc,
))
register("Pod", Columns(["NAME", "READY", "STATUS", "RESTARTS", "AGE"], _pod, ["IP", "NODE"], _pod_wide))
register("StatefulSet", Columns(["NAME", "READY", "AGE"], _sts))
register("Deployment", Columns(["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], _deploy))
register("Service", Columns(["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"], _svc))
register("Node", Columns(["NAME", "STATUS", "ROLES", "AGE", "VERSION"], _node))
register("Event", Columns(["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], _event))
