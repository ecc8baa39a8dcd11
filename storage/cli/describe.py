"""``describe``: a readable, kubectl-style account of one object and its events.

Describers are a per-kind table (``register``); a kind without one gets its
YAML followed by its events.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable, Protocol

import yaml

from storage.cli.age import age, parse_timestamp
from storage.cli.tables import (
    access_modes,
    event_time,
    is_default_class,
    node_status,
    pod_status,
    storage_class_of,
)


class Lister(Protocol):
    """Reads the objects a description refers to (events, pods using a claim)."""

    def list_objects(self, plural: str, namespace: str | None) -> list[dict[str, Any]]: ...


Describer = Callable[[dict[str, Any], Lister], str]
_DESCRIBERS: dict[str, Describer] = {}


def register(kind: str, describer: Describer) -> None:
    _DESCRIBERS[kind] = describer


def describe(obj: dict[str, Any], lister: Lister) -> str:
    describer = _DESCRIBERS.get(str(obj.get("kind", "")), _generic)
    return describer(obj, lister)


# --- building blocks ------------------------------------------------------

Field = tuple[str, str]


def fields(pairs: list[Field], indent: int = 0) -> str:
    """``Key:   value`` lines aligned like kubectl's tabwriter (values start after the longest key)."""
    if not pairs:
        return ""
    width = max(len(k) + 1 for k, _ in pairs) + 2
    pad = " " * indent
    lines = []
    for key, value in pairs:
        label = f"{key}:"
        if "\n" in value:
            first, *rest = value.split("\n")
            lines.append(f"{pad}{label.ljust(width)}{first}".rstrip())
            lines.extend(f"{pad}{' ' * width}{line}".rstrip() for line in rest)
        else:
            lines.append(f"{pad}{label.ljust(width)}{value}".rstrip() if value else f"{pad}{label}")
    return "\n".join(lines) + "\n"


def mapping(values: dict[str, Any] | None) -> str:
    """Labels and annotations one per line, ``<none>`` when empty."""
    if not values:
        return "<none>"
    return "\n".join(f"{k}={v}" for k, v in sorted(values.items()))


def listing(values: list[Any] | None) -> str:
    if not values:
        return "<none>"
    return "\n".join(str(v) for v in values)


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _common(obj: dict[str, Any], namespaced: bool) -> list[Field]:
    meta = _meta(obj)
    out: list[Field] = [("Name", str(meta.get("name", "")))]
    if namespaced:
        out.append(("Namespace", str(meta.get("namespace", ""))))
    return out


def _labels_annotations(obj: dict[str, Any]) -> list[Field]:
    meta = _meta(obj)
    return [("Labels", mapping(meta.get("labels"))), ("Annotations", mapping(meta.get("annotations")))]


def _finalizers(obj: dict[str, Any]) -> Field:
    finalizers = _meta(obj).get("finalizers") or []
    return ("Finalizers", "[" + " ".join(finalizers) + "]")


def events_for(obj: dict[str, Any], lister: Lister) -> list[dict[str, Any]]:
    """Events about ``obj``: by uid when the event has one, else by kind, name and namespace; oldest first."""
    meta = _meta(obj)
    uid, name, kind = meta.get("uid"), meta.get("name"), obj.get("kind")
    namespace = meta.get("namespace") or ""
    # Events about cluster-scoped objects live in "default" (as in Kubernetes), so search everywhere then.
    candidates = lister.list_objects("events", namespace or None)
    matched = []
    for event in candidates:
        involved = event.get("involvedObject") or {}
        if involved.get("uid") and uid:
            if involved.get("uid") != uid:
                continue
        elif not (
            involved.get("kind") == kind
            and involved.get("name") == name
            and (involved.get("namespace") or "") == namespace
        ):
            continue
        matched.append(event)
    epoch = datetime.min.replace(tzinfo=timezone.utc)
    matched.sort(key=lambda e: parse_timestamp(event_time(e)) or epoch)
    return matched


def events_section(obj: dict[str, Any], lister: Lister, now: datetime | None = None) -> str:
    events = events_for(obj, lister)
    if not events:
        return "Events:  <none>\n"
    now = now or datetime.now(timezone.utc)
    header = ["Type", "Reason", "Age", "From", "Message"]
    rows = [header, ["-" * len(h) for h in header]]
    for e in events:
        count = int(e.get("count") or 1)
        when = age(event_time(e), now)
        if count > 1:
            when = f"{when} (x{count} over {age(e.get('firstTimestamp') or event_time(e), now)})"
        source = e.get("source") or {}
        origin = source.get("component") or e.get("reportingComponent") or ""
        rows.append([str(e.get("type", "")), str(e.get("reason", "")), when, str(origin), str(e.get("message", ""))])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = ["Events:"]
    for r in rows:
        cells = [c.ljust(widths[i] + 2) for i, c in enumerate(r[:-1])]
        lines.append(("  " + "".join(cells) + r[-1]).rstrip())
    return "\n".join(lines) + "\n"


# --- per kind -------------------------------------------------------------

def describe_pv(obj: dict[str, Any], lister: Lister) -> str:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ref = spec.get("claimRef") or {}
    phase = str(status.get("phase") or "")
    if _meta(obj).get("deletionTimestamp"):
        phase = f"Terminating (lasts {age(_meta(obj)['deletionTimestamp'])})"
    pairs = _common(obj, False) + _labels_annotations(obj) + [
        _finalizers(obj),
        ("StorageClass", storage_class_of(obj)),
        ("Status", phase),
        ("Claim", f"{ref.get('namespace', '')}/{ref.get('name', '')}" if ref.get("name") else ""),
        ("Reclaim Policy", str(spec.get("persistentVolumeReclaimPolicy") or "")),
        ("Access Modes", access_modes(spec.get("accessModes"))),
        ("VolumeMode", str(spec.get("volumeMode") or "Filesystem")),
        ("Capacity", str((spec.get("capacity") or {}).get("storage", ""))),
        ("Node Affinity", _node_affinity(spec.get("nodeAffinity"))),
        ("Message", str(status.get("message") or "")),
    ]
    return fields(pairs) + _source_section(spec) + events_section(obj, lister)


def _node_affinity(affinity: dict[str, Any] | None) -> str:
    terms = ((affinity or {}).get("required") or {}).get("nodeSelectorTerms") or []
    if not terms:
        return "<none>"
    lines = ["Required Terms:"]
    for term in terms:
        for expr in term.get("matchExpressions") or []:
            lines.append(f"  Term 0:        {expr.get('key')} {expr.get('operator', '').lower()} [{', '.join(expr.get('values') or [])}]")
    return "\n".join(lines)


_NOT_SOURCES = {
    "capacity", "accessModes", "claimRef", "persistentVolumeReclaimPolicy", "storageClassName",
    "mountOptions", "volumeMode", "nodeAffinity", "volumeAttributesClassName",
}


def _source_section(spec: dict[str, Any]) -> str:
    for key, value in spec.items():
        if key in _NOT_SOURCES or not isinstance(value, dict):
            continue
        pairs = [("Type", key)] + [(k, str(v)) for k, v in value.items() if not isinstance(v, (dict, list))]
        return "Source:\n" + fields(pairs, indent=4)
    return ""


def describe_pvc(obj: dict[str, Any], lister: Lister) -> str:
    spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, _meta(obj)
    phase = str(status.get("phase") or "")
    if meta.get("deletionTimestamp"):
        phase = f"Terminating (lasts {age(meta['deletionTimestamp'])})"
    pairs = _common(obj, True) + [
        ("StorageClass", storage_class_of(obj)),
        ("Status", phase),
        ("Volume", str(spec.get("volumeName") or "")),
    ] + _labels_annotations(obj) + [
        _finalizers(obj),
        ("Capacity", str((status.get("capacity") or {}).get("storage", ""))),
        ("Access Modes", access_modes(status.get("accessModes"))),
        ("VolumeMode", str(spec.get("volumeMode") or "Filesystem")),
        ("Used By", listing(_pods_using_claim(obj, lister))),
    ]
    return fields(pairs) + events_section(obj, lister)


def _pods_using_claim(claim: dict[str, Any], lister: Lister) -> list[str]:
    meta = _meta(claim)
    users = []
    for pod in lister.list_objects("pods", meta.get("namespace") or None):
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            if (volume.get("persistentVolumeClaim") or {}).get("claimName") == meta.get("name"):
                users.append(str(_meta(pod).get("name", "")))
                break
    return sorted(users)


def describe_sc(obj: dict[str, Any], lister: Lister) -> str:
    params = obj.get("parameters") or {}
    pairs = _common(obj, False) + [
        ("IsDefaultClass", "Yes" if is_default_class(obj) else "No"),
        ("Annotations", ",".join(f"{k}={v}" for k, v in sorted((_meta(obj).get("annotations") or {}).items()))),
        ("Provisioner", str(obj.get("provisioner", ""))),
        ("Parameters", ",".join(f"{k}={v}" for k, v in sorted(params.items())) or "<none>"),
        ("AllowVolumeExpansion", "True" if obj.get("allowVolumeExpansion") else "<unset>" if "allowVolumeExpansion" not in obj else "False"),
        ("MountOptions", listing(obj.get("mountOptions"))),
        ("ReclaimPolicy", str(obj.get("reclaimPolicy") or "Delete")),
        ("VolumeBindingMode", str(obj.get("volumeBindingMode") or "Immediate")),
    ]
    return fields(pairs) + events_section(obj, lister)


def describe_pod(obj: dict[str, Any], lister: Lister) -> str:
    spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, _meta(obj)
    pairs = _common(obj, True) + [
        ("Node", str(spec.get("nodeName") or "<none>")),
        ("Start Time", str(status.get("startTime") or "")),
    ] + _labels_annotations(obj) + [
        ("Status", pod_status(obj)),
        ("IP", str(status.get("podIP") or "")),
        ("Controlled By", _owner(obj)),
    ]
    out = fields(pairs)
    out += "Containers:\n"
    statuses = {cs.get("name"): cs for cs in status.get("containerStatuses") or []}
    for c in spec.get("containers") or []:
        cs = statuses.get(c.get("name")) or {}
        state = next(iter((cs.get("state") or {}).keys()), "Waiting").capitalize()
        mounts = "\n".join(
            f"{m.get('mountPath')} from {m.get('name')} ({'ro' if m.get('readOnly') else 'rw'})"
            for m in c.get("volumeMounts") or []
        )
        out += f"  {c.get('name')}:\n" + fields([
            ("Image", str(c.get("image", ""))),
            ("Command", listing(c.get("command"))),
            ("State", state),
            ("Ready", str(bool(cs.get("ready")))),
            ("Restart Count", str(cs.get("restartCount") or 0)),
            ("Mounts", mounts or "<none>"),
        ], indent=4)
    conditions = status.get("conditions") or []
    if conditions:
        out += "Conditions:\n" + "".join(f"  {c.get('type')}  {c.get('status')}\n" for c in conditions)
    out += "Volumes:\n"
    volumes = spec.get("volumes") or []
    if not volumes:
        out += "  <none>\n"
    for v in volumes:
        source = next((k for k in v if k != "name"), "")
        detail = v.get(source) or {}
        extra = [(k, str(val)) for k, val in detail.items()] if isinstance(detail, dict) else []
        out += f"  {v.get('name')}:\n" + fields([("Type", source)] + extra, indent=4)
    return out + events_section(obj, lister)


def _owner(obj: dict[str, Any]) -> str:
    for ref in _meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return f"{ref.get('kind')}/{ref.get('name')}"
    return "<none>"


def describe_sts(obj: dict[str, Any], lister: Lister) -> str:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    replicas = spec.get("replicas")
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    strategy = spec.get("updateStrategy") or {}
    pairs = _common(obj, True) + [
        ("CreationTimestamp", str(_meta(obj).get("creationTimestamp", ""))),
        ("Selector", ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>"),
    ] + _labels_annotations(obj) + [
        ("Replicas", f"{1 if replicas is None else replicas} desired | {status.get('replicas') or 0} total"),
        ("Update Strategy", str(strategy.get("type") or "RollingUpdate")),
        ("Partition", str((strategy.get("rollingUpdate") or {}).get("partition") or 0)),
        ("Pods Status", f"{status.get('readyReplicas') or 0} Ready / {status.get('currentReplicas') or 0} Current / {status.get('updatedReplicas') or 0} Updated"),
        ("Pod Management Policy", str(spec.get("podManagementPolicy") or "OrderedReady")),
        ("Service Name", str(spec.get("serviceName") or "")),
    ]
    out = fields(pairs)
    templates = spec.get("volumeClaimTemplates") or []
    out += "Volume Claims:\n" if templates else "Volume Claims:  <none>\n"
    for t in templates:
        tspec = t.get("spec") or {}
        out += "  " + fields([
            ("Name", str(_meta(t).get("name", ""))),
            ("StorageClass", storage_class_of(t)),
            ("Capacity", str(((tspec.get("resources") or {}).get("requests") or {}).get("storage", ""))),
            ("Access Modes", ",".join(tspec.get("accessModes") or [])),
        ], indent=2).lstrip()
    return out + events_section(obj, lister)


def describe_node(obj: dict[str, Any], lister: Lister) -> str:
    status = obj.get("status") or {}
    pairs = _common(obj, False) + _labels_annotations(obj) + [
        ("CreationTimestamp", str(_meta(obj).get("creationTimestamp", ""))),
        ("Status", node_status(obj)),
        ("Unschedulable", str(bool((obj.get("spec") or {}).get("unschedulable"))).lower()),
        ("Addresses", listing([f"{a.get('type')}: {a.get('address')}" for a in status.get("addresses") or []])),
        ("Capacity", mapping(status.get("capacity"))),
        ("Allocatable", mapping(status.get("allocatable"))),
    ]
    out = fields(pairs)
    conditions = status.get("conditions") or []
    if conditions:
        out += "Conditions:\n" + "".join(
            f"  {c.get('type')}  {c.get('status')}  {c.get('reason', '')}  {c.get('message', '')}".rstrip() + "\n"
            for c in conditions
        )
    return out + events_section(obj, lister)


def _generic(obj: dict[str, Any], lister: Lister) -> str:
    body = yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)
    return body + events_section(obj, lister)


register("PersistentVolume", describe_pv)
register("PersistentVolumeClaim", describe_pvc)
register("StorageClass", describe_sc)
register("Pod", describe_pod)
register("StatefulSet", describe_sts)
register("Node", describe_node)
