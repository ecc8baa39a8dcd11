"""``describe``: a readable, kubectl-style account of one object and its events.

Describers are a per-kind table (``register``); a kind without one gets its
YAML followed by its events.
"""
from __future__ import annotations

import base64

from datetime import datetime, timezone
from typing import Any, Callable, Protocol

import yaml

from storage.api.bench_figures import describe_figures, measured_classes, node_figures
from storage.api.storage_class import object_class
from storage.cli.age import age, human_duration, parse_timestamp
from storage.cli.tables import (
    access_modes,
    event_time,
    is_default_class,
    node_status,
    pod_status,
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
        ("StorageClass", object_class(obj)),
        ("Status", phase),
        ("Claim", f"{ref.get('namespace', '')}/{ref.get('name', '')}" if ref.get("name") else ""),
        ("Reclaim Policy", str(spec.get("persistentVolumeReclaimPolicy") or "")),
        ("Access Modes", access_modes(spec.get("accessModes"))),
        ("VolumeMode", str(spec.get("volumeMode") or "Filesystem")),
        ("Capacity", str((spec.get("capacity") or {}).get("storage", ""))),
        ("Node Affinity", _node_affinity(spec.get("nodeAffinity"))),
        ("Message", str(status.get("message") or "")),
    ]
    cloud = next((key for key in _CLOUD_SOURCES if isinstance(spec.get(key), dict)), None)
    if cloud is None:
        return fields(pairs) + _source_section(spec) + events_section(obj, lister)
    # AD5: a cloud disk's identity, zone and where it is attached.
    return (fields(pairs) + _cloud_source_section(cloud, spec[cloud]) + fields([("Zone", volume_zone(obj) or "<none>")])
            + _attachments_section(obj, lister) + events_section(obj, lister))


# kubectl's rows for the cloud disk sources: (field, label), in its order.
_CLOUD_SOURCES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "awsElasticBlockStore": ("AWSElasticBlockStore (a Persistent Disk resource in AWS)",
                             [("volumeID", "VolumeID"), ("fsType", "FSType"), ("partition", "Partition"),
                              ("readOnly", "ReadOnly")]),
    "gcePersistentDisk": ("GCEPersistentDisk (a Persistent Disk resource in Google Compute Engine)",
                          [("pdName", "PDName"), ("fsType", "FSType"), ("partition", "Partition"),
                           ("readOnly", "ReadOnly")]),
    "azureDisk": ("AzureDisk (an Azure Data Disk mount on the host and bind mount to the pod)",
                  [("diskName", "DiskName"), ("diskURI", "DiskURI"), ("kind", "Kind"), ("fsType", "FSType"),
                   ("cachingMode", "CachingMode"), ("readOnly", "ReadOnly")]),
}
_ZONE_KEYS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone",
              "topology.ebs.csi.aws.com/zone", "topology.gke.io/zone", "topology.disk.csi.azure.com/zone")
_BOOL_DEFAULTS = {"readOnly": "false", "partition": "0"}


def volume_zone(pv: dict[str, Any]) -> str:
    """The zone(s) a volume lives in: its node affinity on a zone key, else the (legacy) zone label."""
    zones: list[str] = []
    for term in (((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {}).get("nodeSelectorTerms") or []:
        for expr in term.get("matchExpressions") or []:
            if expr.get("key") in _ZONE_KEYS and expr.get("operator") == "In":
                zones += [str(v) for v in expr.get("values") or [] if str(v) not in zones]
    if zones:
        return ", ".join(zones)
    labels = _meta(pv).get("labels") or {}
    return next((str(labels[k]) for k in _ZONE_KEYS if labels.get(k)), "")


def _cloud_source_section(key: str, source: dict[str, Any]) -> str:
    title, rows = _CLOUD_SOURCES[key]
    pairs = [("Type", title)]
    for name, label in rows:
        value = source.get(name)
        if value is None:
            value = _BOOL_DEFAULTS.get(name, "")
        pairs.append((label, str(value).lower() if isinstance(value, bool) else str(value)))
    return "Source:\n" + fields(pairs, indent=4)


def _attachments_section(pv: dict[str, Any], lister: Lister) -> str:
    """The VolumeAttachments of this volume: node, attached, and the last attach or detach error."""
    from storage.errors import Forbidden

    name = _meta(pv).get("name")
    try:
        items = lister.list_objects("volumeattachments", None)
    except Forbidden:
        return "Attachments:  <unknown: not allowed to list volumeattachments>\n"
    mine = sorted((va for va in items if ((va.get("spec") or {}).get("source") or {}).get("persistentVolumeName") == name),
                  key=lambda va: str((va.get("spec") or {}).get("nodeName", "")))
    if not mine:
        return "Attachments:  <none>\n"
    rows = [["Node", "Attached", "Device", "Error"], ["----", "--------", "------", "-----"]]
    for va in mine:
        status = va.get("status") or {}
        error = status.get("detachError") or status.get("attachError") or {}
        which = "detach: " if status.get("detachError") else "attach: " if error else ""
        rows.append([str((va.get("spec") or {}).get("nodeName", "")), str(bool(status.get("attached"))).lower(),
                     str((status.get("attachmentMetadata") or {}).get("devicePath") or "-"),
                     f"{which}{error.get('message', '')}" if error else "<none>"])
    return "Attachments:\n" + _table(rows, indent=2)


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
        ("StorageClass", object_class(obj)),
        ("Status", phase),
        ("Volume", str(spec.get("volumeName") or "")),
    ] + _labels_annotations(obj) + [
        _finalizers(obj),
        ("Capacity", str((status.get("capacity") or {}).get("storage", ""))),
        ("Access Modes", access_modes(status.get("accessModes"))),
        ("VolumeMode", str(spec.get("volumeMode") or "Filesystem")),
        ("Used By", listing(_pods_using_claim(obj, lister))),
    ]
    if str(status.get("phase") or "Pending") == "Pending" and not meta.get("deletionTimestamp"):
        reason = _pending_reason(obj, lister)
        if reason:
            pairs.append(("Pending Reason", reason))
    return fields(pairs) + events_section(obj, lister)


def _pending_reason(claim: dict[str, Any], lister: Lister) -> str:
    """Why the binder has not bound the claim, in the binder's own words when it can explain."""
    try:
        from storage.controllers.explain import explain_pending_claim
    except ImportError:
        return ""
    volumes = lister.list_objects("persistentvolumes", None)
    classes = lister.list_objects("storageclasses", None)
    explained = explain_pending_claim(claim, volumes, classes)
    if not explained:
        return ""
    if isinstance(explained, str):
        return explained
    return "\n".join(str(line) for line in explained)


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


def _pod_status_fields(obj: dict[str, Any]) -> list[tuple[str, str]]:
    """As kubectl: a pod being deleted shows how long its grace period still lasts (deletionTimestamp is
    when it ends) and the period itself."""
    meta = _meta(obj)
    end = parse_timestamp(meta.get("deletionTimestamp"))
    if end is None:
        return [("Status", pod_status(obj))]
    left = human_duration(max(0.0, (end - datetime.now(timezone.utc)).total_seconds()))
    return [("Status", f"Terminating (lasts {left})"),
            ("Termination Grace Period", f"{meta.get('deletionGracePeriodSeconds') or 0}s")]


def describe_pod(obj: dict[str, Any], lister: Lister) -> str:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    node = str(spec.get("nodeName") or "<none>")
    if spec.get("nodeName") and status.get("hostIP"):
        node += f"/{status['hostIP']}"
    pairs = _common(obj, True) + [
        ("Node", node),
        ("Start Time", str(status.get("startTime") or "<unset>")),
    ] + _labels_annotations(obj) + _pod_status_fields(obj) + [
        ("IP", str(status.get("podIP") or "")),
        ("Controlled By", _owner(obj)),
    ]
    out = fields(pairs)
    statuses = {cs.get("name"): cs for cs in status.get("containerStatuses") or []}
    out += "Containers:\n" if spec.get("containers") else "Containers:  <none>\n"
    for c in spec.get("containers") or []:
        out += _container_section(c, statuses.get(c.get("name")) or {})
    out += _conditions_table(status.get("conditions") or [], ["Type", "Status"])
    out += "Volumes:\n" if spec.get("volumes") else "Volumes:  <none>\n"
    for v in spec.get("volumes") or []:
        out += f"  {v.get('name')}:\n" + fields(_volume_fields(v), indent=4)
    return out + events_section(obj, lister)


def _container_section(c: dict[str, Any], cs: dict[str, Any] | None) -> str:
    """One container; ``cs`` None for a template's container, which has no state yet."""
    mounts = "\n".join(
        f"{m.get('mountPath')} from {m.get('name')} ({'ro' if m.get('readOnly') else 'rw'})"
        + (f" path=\"{m['subPath']}\"" if m.get("subPath") else "")
        for m in c.get("volumeMounts") or []
    )
    pairs = [("Image", str(c.get("image", "")))]
    if c.get("command"):
        pairs.append(("Command", listing(c.get("command"))))
    if c.get("args"):
        pairs.append(("Args", listing(c.get("args"))))
    ports = [f"{p.get('containerPort')}/{p.get('protocol') or 'TCP'}" for p in c.get("ports") or []]
    if ports:
        pairs.append(("Port", ", ".join(ports)))
    if cs is not None:
        pairs += [("State", _state(cs.get("state")))]
        if cs.get("lastState"):
            pairs.append(("Last State", _state(cs.get("lastState"))))
        pairs += [
            ("Ready", "True" if cs.get("ready") else "False"),
            ("Restart Count", str(cs.get("restartCount") or 0)),
        ]
    if c.get("readinessProbe"):
        pairs.append(("Readiness", _probe(c["readinessProbe"])))
    if c.get("livenessProbe"):
        pairs.append(("Liveness", _probe(c["livenessProbe"])))
    env = [f"{e.get('name')}:  {e.get('value', '(from a reference)')}" for e in c.get("env") or []]
    pairs += [("Environment", listing(env)), ("Mounts", mounts or "<none>")]
    return f"  {c.get('name')}:\n" + fields(pairs, indent=4)


def _state(state: dict[str, Any] | None) -> str:
    """kubectl's container state block: the state, then its reason, times and exit code."""
    if not state:
        return "Waiting"
    kind, detail = next(iter(state.items()))
    lines = [kind.capitalize()]
    detail = detail or {}
    for key, label in (("reason", "Reason"), ("message", "Message"), ("exitCode", "Exit Code"),
                       ("startedAt", "Started"), ("finishedAt", "Finished")):
        if detail.get(key) not in (None, ""):
            lines.append(f"  {label}:  {detail[key]}")
    return "\n".join(lines)


def _probe(probe: dict[str, Any]) -> str:
    if probe.get("exec"):
        how = "exec [" + " ".join((probe["exec"] or {}).get("command") or []) + "]"
    elif probe.get("httpGet"):
        get = probe["httpGet"]
        how = f"http-get {get.get('scheme', 'HTTP').lower()}://:{get.get('port')}{get.get('path', '/')}"
    elif probe.get("tcpSocket"):
        how = f"tcp-socket :{(probe['tcpSocket'] or {}).get('port')}"
    else:
        how = "<unknown>"
    return (f"{how} delay={probe.get('initialDelaySeconds', 0)}s timeout={probe.get('timeoutSeconds', 1)}s "
            f"period={probe.get('periodSeconds', 10)}s #success={probe.get('successThreshold', 1)} "
            f"#failure={probe.get('failureThreshold', 3)}")


_VOLUME_TYPES = {
    "persistentVolumeClaim": "PersistentVolumeClaim (a reference to a PersistentVolumeClaim in the same namespace)",
    "emptyDir": "EmptyDir (a temporary directory that shares a pod's lifetime)",
    "hostPath": "HostPath (bare host directory volume)",
    "configMap": "ConfigMap (a volume populated by a ConfigMap)",
    "secret": "Secret (a volume populated by a Secret)",
}


def _volume_fields(volume: dict[str, Any]) -> list[Field]:
    source = next((k for k in volume if k != "name"), "")
    detail = volume.get(source) or {}
    pairs: list[Field] = [("Type", _VOLUME_TYPES.get(source, source))]
    if source == "persistentVolumeClaim":
        return pairs + [("ClaimName", str(detail.get("claimName", ""))),
                        ("ReadOnly", "true" if detail.get("readOnly") else "false")]
    if isinstance(detail, dict):
        pairs += [(k[:1].upper() + k[1:], str(v)) for k, v in detail.items() if not isinstance(v, (dict, list))]
    return pairs


def _conditions_table(conditions: list[dict[str, Any]], columns: list[str]) -> str:
    """kubectl's Conditions block: a small table whose columns are condition fields."""
    if not conditions:
        return ""
    keys = {"Type": "type", "Status": "status", "Reason": "reason", "Message": "message",
            "LastHeartbeatTime": "lastHeartbeatTime", "LastTransitionTime": "lastTransitionTime"}
    rows = [columns, ["-" * len(c) for c in columns]]
    rows += [[str(c.get(keys[col]) or "") for col in columns] for c in conditions]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns) - 1)]
    lines = ["Conditions:"]
    for r in rows:
        lines.append(("  " + "".join(cell.ljust(widths[i] + 2) for i, cell in enumerate(r[:-1])) + r[-1]).rstrip())
    return "\n".join(lines) + "\n"


def _owner(obj: dict[str, Any]) -> str:
    for ref in _meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return f"{ref.get('kind')}/{ref.get('name')}"
    return "<none>"


def _controlled_pods(owner: dict[str, Any], lister: Lister) -> list[dict[str, Any]]:
    """Pods whose controller reference is ``owner`` (by uid, else by kind and name)."""
    meta = _meta(owner)
    out = []
    for pod in lister.list_objects("pods", meta.get("namespace") or None):
        for ref in _meta(pod).get("ownerReferences") or []:
            if not ref.get("controller"):
                continue
            if (ref.get("uid") == meta.get("uid")) if ref.get("uid") and meta.get("uid") else (
                ref.get("kind") == owner.get("kind") and ref.get("name") == meta.get("name")
            ):
                out.append(pod)
            break
    return out


def _blocker(sts: dict[str, Any], pods: list[dict[str, Any]]) -> str | None:
    """Which member holds the rollout back and why (S7), from the StatefulSet code when it is present."""
    try:
        from statefulset.update import describe_blocker
    except ImportError:
        return None
    return describe_blocker(sts, pods)


def describe_sts(obj: dict[str, Any], lister: Lister) -> str:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    replicas = spec.get("replicas")
    strategy = spec.get("updateStrategy") or {}
    pods = _controlled_pods(obj, lister)
    phases = [str((p.get("status") or {}).get("phase") or "Pending") for p in pods]
    strategy_type = str(strategy.get("type") or "RollingUpdate")
    pairs = _common(obj, True) + [
        ("CreationTimestamp", str(_meta(obj).get("creationTimestamp", ""))),
        ("Selector", _selector_text(spec.get("selector"))),
    ] + _labels_annotations(obj) + [
        ("Replicas", f"{1 if replicas is None else replicas} desired | {status.get('replicas') or 0} total"),
        ("Update Strategy", strategy_type),
    ]
    if strategy_type == "RollingUpdate":
        pairs.append(("  Partition", str((strategy.get("rollingUpdate") or {}).get("partition") or 0)))
    pairs += [
        ("Pods Status", f"{phases.count('Running')} Running / {phases.count('Pending')} Waiting / "
                        f"{phases.count('Succeeded')} Succeeded / {phases.count('Failed')} Failed"),
        ("Pod Management Policy", str(spec.get("podManagementPolicy") or "OrderedReady")),
        ("Service Name", str(spec.get("serviceName") or "")),
        ("Current Revision", str(status.get("currentRevision") or "")),
        ("Update Revision", str(status.get("updateRevision") or "")),
    ]
    blocker = _blocker(obj, pods)
    if blocker:
        pairs.append(("Rollout Blocked", blocker))
    out = fields(pairs)
    out += _pod_template_section(spec.get("template") or {})
    templates = spec.get("volumeClaimTemplates") or []
    out += "Volume Claims:\n" if templates else "Volume Claims:  <none>\n"
    for t in templates:
        tspec = t.get("spec") or {}
        out += fields([
            ("Name", str(_meta(t).get("name", ""))),
            ("StorageClass", object_class(t)),
            ("Labels", mapping(_meta(t).get("labels"))),
            ("Annotations", mapping(_meta(t).get("annotations"))),
            ("Capacity", str(((tspec.get("resources") or {}).get("requests") or {}).get("storage", ""))),
            ("Access Modes", "[" + ", ".join(tspec.get("accessModes") or []) + "]"),
        ], indent=2)
    return out + events_section(obj, lister)


def _selector_text(selector: dict[str, Any] | None) -> str:
    selector = selector or {}
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        terms.append(f"{expr.get('key')} {str(expr.get('operator', '')).lower()} ({','.join(expr.get('values') or [])})")
    return ",".join(terms) or "<none>"


def _pod_template_section(template: dict[str, Any]) -> str:
    tspec = template.get("spec") or {}
    out = "Pod Template:\n" + fields([
        ("Labels", mapping(_meta(template).get("labels"))),
        ("Annotations", mapping(_meta(template).get("annotations"))),
    ], indent=2)
    out += "  Containers:\n" if tspec.get("containers") else "  Containers:  <none>\n"
    for c in tspec.get("containers") or []:
        out += "  " + _container_section(c, None).replace("\n", "\n  ").rstrip(" ")
    out += "  Volumes:\n" if tspec.get("volumes") else "  Volumes:  <none>\n"
    for v in tspec.get("volumes") or []:
        out += f"   {v.get('name')}:\n" + fields(_volume_fields(v), indent=4)
    return out


def _size(value: Any) -> str:
    """Bytes as a binary quantity a person reads at a glance (``20Gi``, ``1.5Ti``)."""
    try:
        n = float(value)
    except (TypeError, ValueError):
        return str(value)
    for unit in ("", "Ki", "Mi", "Gi", "Ti", "Pi"):
        if abs(n) < 1024 or unit == "Pi":
            text = f"{n:.1f}".rstrip("0").rstrip(".")
            return f"{text}{unit}"
        n /= 1024
    return str(value)


def describe_node(obj: dict[str, Any], lister: Lister) -> str:
    status, spec = obj.get("status") or {}, obj.get("spec") or {}
    info = status.get("nodeInfo") or {}
    taints = [f"{t.get('key')}{'=' + t['value'] if t.get('value') else ''}:{t.get('effect')}" for t in spec.get("taints") or []]
    pairs = _common(obj, False) + _labels_annotations(obj) + [
        ("CreationTimestamp", str(_meta(obj).get("creationTimestamp", ""))),
        ("Status", node_status(obj)),
        ("Taints", listing(taints)),
        ("Unschedulable", str(bool(spec.get("unschedulable"))).lower()),
    ]
    out = fields(pairs)
    out += _conditions_table(status.get("conditions") or [],
                             ["Type", "Status", "LastHeartbeatTime", "Reason", "Message"])
    out += "Addresses:\n" + fields([(str(a.get("type")), str(a.get("address"))) for a in status.get("addresses") or []],
                                   indent=2)
    for title, key in (("Capacity", "capacity"), ("Allocatable", "allocatable")):
        values = status.get(key) or {}
        out += f"{title}:\n" + fields([(k, str(v)) for k, v in sorted(values.items())], indent=2)
    if info:
        out += "System Info:\n" + fields([
            ("Kubelet Version", str(info.get("kubeletVersion", ""))),
            ("Operating System", str(info.get("operatingSystem", ""))),
            ("Architecture", str(info.get("architecture", ""))),
            ("Container Runtime Version", str(info.get("containerRuntimeVersion", ""))),
        ], indent=2)
    pools = status.get("storagePools") or []
    out += "Storage Pools:\n" if pools else "Storage Pools:  <none>\n"
    if pools:
        rows = [["Name", "Total", "Free", "Path"], ["----", "-----", "----", "----"]]
        rows += [[str(p.get("name", "")), _size(p.get("totalBytes")), _size(p.get("freeBytes")), str(p.get("path", ""))]
                 for p in pools]
        out += _table(rows, indent=2)
    out += _measured_storage(obj)
    in_use = status.get("volumesInUse") or []
    attached = [f"{a.get('name')} ({a.get('devicePath')})" if isinstance(a, dict) and a.get("devicePath")
                else str(a.get("name") if isinstance(a, dict) else a) for a in status.get("volumesAttached") or []]
    out += fields([("Volumes In Use", listing(in_use)), ("Volumes Attached", listing(attached))])
    pods = [p for p in lister.list_objects("pods", None)
            if (p.get("spec") or {}).get("nodeName") == _meta(obj).get("name")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    out += f"Non-terminated Pods:  ({len(pods)} in total)\n"
    if pods:
        rows = [["Namespace", "Name", "Status", "Age"], ["---------", "----", "------", "---"]]
        rows += [[str(_meta(p).get("namespace", "")), str(_meta(p).get("name", "")), pod_status(p),
                  age(_meta(p).get("creationTimestamp"))] for p in sorted(pods, key=lambda p: (
                      _meta(p).get("namespace", ""), _meta(p).get("name", "")))]
        out += _table(rows, indent=2)
    return out + events_section(obj, lister)


def _measured_storage(node: dict[str, Any]) -> str:
    """What ``stowage bench --label-nodes`` recorded on the node, per storage class (BP15)."""
    classes = measured_classes(node)
    if not classes:
        return "Measured Storage:  <none>\n"
    out = "Measured Storage:\n"
    for name in classes:
        figures = node_figures(node, name) or {}
        pairs = describe_figures(figures)
        pairs.append(("Measured At", str(figures.get("measuredAt", "<unknown>"))))
        if figures.get("fioVersion"):
            pairs.append(("fio", str(figures["fioVersion"])))
        out += f"  {name}:\n" + fields(pairs, indent=4)
    return out


def _table(rows: list[list[str]], indent: int = 0) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    pad = " " * indent
    return "".join(
        (pad + "".join(cell.ljust(widths[i] + 2) for i, cell in enumerate(r[:-1])) + r[-1]).rstrip() + "\n"
        for r in rows
    )


def describe_secret(obj: dict[str, Any], lister: Lister) -> str:
    """As kubectl: sizes only, never a value (a terminal, a shared screen or a pasted log would keep it)."""
    pairs = _common(obj, True) + _labels_annotations(obj) + [("", ""), ("Type", str(obj.get("type") or "Opaque"))]
    out = fields(pairs[:-2]) + "\n" + fields(pairs[-1:]) + "\nData\n====\n"
    data = obj.get("data") or {}
    for key in sorted(data):
        try:
            size = len(base64.b64decode(str(data[key]), validate=True))
        except ValueError:
            size = len(str(data[key]))
        out += f"{key}:  {size} bytes\n"
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
register("Secret", describe_secret)
