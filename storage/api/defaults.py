"""Kubernetes' defaults for the fields a writer left out.

``apply_defaults`` fills the object **in place** and returns it: the API
server calls it on a freshly decoded body, then ``validate``. It converts a
legacy apiVersion first, because some defaults depend on it (an
``apps/v1beta1`` StatefulSet meant ``OnDelete``). Defaults only fill what is
missing; nothing present is changed.
"""
from __future__ import annotations

import base64
import copy

from typing import Any, Callable

from storage.api import crd
from storage.api.batch import DEFAULT_BACKOFF_LIMIT, MAX_INT32
from storage.api.conversion import convert
from storage.api.models.volumes import POD_VOLUME_SOURCES

__all__ = ["apply_defaults"]

_PROBE_DEFAULTS = {"timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
_DEFAULT_MODE = 0o644  # 420: the mode Kubernetes gives projected files


def _dict(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        value = {}
        parent[key] = value
    return value


def _each_dict(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _pull_policy(image: Any) -> str:
    if not isinstance(image, str) or "@" in image:
        return "IfNotPresent" if isinstance(image, str) else "Always"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _handler(handler: dict[str, Any]) -> None:
    http = handler.get("httpGet")
    if isinstance(http, dict):
        http.setdefault("path", "/")
        http.setdefault("scheme", "HTTP")


def _container(c: dict[str, Any]) -> None:
    c.setdefault("imagePullPolicy", _pull_policy(c.get("image")))
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    for port in _each_dict(c.get("ports")):
        port.setdefault("protocol", "TCP")
    for var in _each_dict(c.get("env")):
        source = var.get("valueFrom")
        if isinstance(source, dict) and isinstance(source.get("fieldRef"), dict):
            source["fieldRef"].setdefault("apiVersion", "v1")
    for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = c.get(probe_name)
        if isinstance(probe, dict):
            for key, value in _PROBE_DEFAULTS.items():
                probe.setdefault(key, value)
            _handler(probe)
    lifecycle = c.get("lifecycle")
    if isinstance(lifecycle, dict):
        for hook in ("postStart", "preStop"):
            if isinstance(lifecycle.get(hook), dict):
                _handler(lifecycle[hook])


def _volume(v: dict[str, Any]) -> None:
    if not any(v.get(source) is not None for source in POD_VOLUME_SOURCES):
        v["emptyDir"] = {}  # Kubernetes: a volume that names no source is an emptyDir
    for source in ("secret", "configMap", "downwardAPI", "projected"):
        if isinstance(v.get(source), dict):
            v[source].setdefault("defaultMode", _DEFAULT_MODE)
    downward = v.get("downwardAPI")
    if isinstance(downward, dict):
        for item in _each_dict(downward.get("items")):
            if isinstance(item.get("fieldRef"), dict):
                item["fieldRef"].setdefault("apiVersion", "v1")
    if isinstance(v.get("hostPath"), dict):
        v["hostPath"].setdefault("type", "")
    _source_defaults(v)
    ephemeral = v.get("ephemeral")
    if isinstance(ephemeral, dict) and isinstance(ephemeral.get("volumeClaimTemplate"), dict):
        spec = ephemeral["volumeClaimTemplate"].get("spec")
        if isinstance(spec, dict):
            spec.setdefault("volumeMode", "Filesystem")


def _source_defaults(holder: dict[str, Any]) -> None:
    """Defaults of volume sources shared by pods and persistent volumes."""
    if isinstance(holder.get("iscsi"), dict):
        holder["iscsi"].setdefault("iscsiInterface", "default")
    if isinstance(holder.get("rbd"), dict):
        rbd = holder["rbd"]
        rbd.setdefault("pool", "rbd")
        rbd.setdefault("user", "admin")
        rbd.setdefault("keyring", "/etc/ceph/keyring")
    if isinstance(holder.get("azureDisk"), dict):
        disk = holder["azureDisk"]
        disk.setdefault("cachingMode", "ReadWrite")
        disk.setdefault("fsType", "ext4")
        disk.setdefault("readOnly", False)
        disk.setdefault("kind", "Shared")
    if isinstance(holder.get("scaleIO"), dict):
        sio = holder["scaleIO"]
        sio.setdefault("storageMode", "ThinProvisioned")
        sio.setdefault("fsType", "xfs")


def _pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in _each_dict(spec.get(key)):
            _container(c)
    for v in _each_dict(spec.get("volumes")):
        _volume(v)


def _pod_template(spec: dict[str, Any]) -> None:
    template = spec.get("template")
    if isinstance(template, dict):
        _pod_spec(_dict(template, "spec"))


def _pv(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
    spec.setdefault("volumeMode", "Filesystem")
    _source_defaults(spec)
    _dict(obj, "status").setdefault("phase", "Pending")


def _pvc_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("volumeMode", "Filesystem")
    normalize_data_sources(spec)


def normalize_data_sources(spec: dict[str, Any]) -> None:
    """DS4, Kubernetes' NormalizeDataSources: a claim that gives only one of dataSource and dataSourceRef gets
    the other with the same apiGroup, kind and name; except that a dataSourceRef into another namespace has no
    dataSource twin (dataSource is a local reference)."""
    source, ref = spec.get("dataSource"), spec.get("dataSourceRef")
    keys = ("apiGroup", "kind", "name")
    if isinstance(source, dict) and ref is None:
        spec["dataSourceRef"] = {k: source[k] for k in keys if k in source}
    elif isinstance(ref, dict) and source is None and not ref.get("namespace"):
        spec["dataSource"] = {k: ref[k] for k in keys if k in ref}


def _pvc(obj: dict[str, Any]) -> None:
    _pvc_spec(_dict(obj, "spec"))
    _dict(obj, "status").setdefault("phase", "Pending")


# Kubernetes' storage/v1 SetDefaults_CSIDriver.
CSI_DRIVER_DEFAULTS: dict[str, Any] = {
    "attachRequired": True, "podInfoOnMount": False, "storageCapacity": False,
    "fsGroupPolicy": "ReadWriteOnceWithFSType", "volumeLifecycleModes": ["Persistent"],
    "requiresRepublish": False, "seLinuxMount": False,
}


def _csi_driver(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    for key, value in CSI_DRIVER_DEFAULTS.items():
        if spec.get(key) is None:
            spec[key] = list(value) if isinstance(value, list) else value


def _storage_class(obj: dict[str, Any]) -> None:
    obj.setdefault("reclaimPolicy", "Delete")
    obj.setdefault("volumeBindingMode", "Immediate")


def _pod(obj: dict[str, Any]) -> None:
    _pod_spec(_dict(obj, "spec"))
    _dict(obj, "status").setdefault("phase", "Pending")


def _statefulset(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    strategy = _dict(spec, "updateStrategy")
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        _dict(strategy, "rollingUpdate").setdefault("partition", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    retention = _dict(spec, "persistentVolumeClaimRetentionPolicy")
    retention.setdefault("whenDeleted", "Retain")
    retention.setdefault("whenScaled", "Retain")
    for claim in _each_dict(spec.get("volumeClaimTemplates")):
        _pvc_spec(_dict(claim, "spec"))
        _dict(claim, "status").setdefault("phase", "Pending")
    _pod_template(spec)


def _daemonset(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    strategy = _dict(spec, "updateStrategy")
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _dict(strategy, "rollingUpdate")
        rolling.setdefault("maxUnavailable", 1)
        rolling.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    _pod_template(spec)


def _replicaset(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    spec.setdefault("replicas", 1)
    _pod_template(spec)


def _deployment(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    spec.setdefault("replicas", 1)
    strategy = _dict(spec, "strategy")
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _dict(strategy, "rollingUpdate")
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _pod_template(spec)


def _job(obj: dict[str, Any]) -> None:
    """Kubernetes' SetDefaults_Job (J1); the selector comes later, with the uid (J2)."""
    spec = _dict(obj, "spec")
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = MAX_INT32 if spec.get("backoffLimitPerIndex") is not None else DEFAULT_BACKOFF_LIMIT
    template = spec.get("template")
    labels = (template.get("metadata") or {}).get("labels") if isinstance(template, dict) else None
    meta = _dict(obj, "metadata")
    if isinstance(labels, dict) and labels and not meta.get("labels"):
        meta["labels"] = dict(labels)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") is not None else "TerminatingOrFailed")
    spec.setdefault("manualSelector", False)
    _pod_failure_policy(spec)
    _pod_template(spec)


def _pod_failure_policy(spec: dict[str, Any]) -> None:
    """A pod condition pattern of a pod failure policy matches the condition True unless it says otherwise."""
    policy = spec.get("podFailurePolicy")
    for rule in _each_dict(policy.get("rules") if isinstance(policy, dict) else None):
        for pattern in _each_dict(rule.get("onPodConditions")):
            pattern.setdefault("status", "True")


def _cronjob(obj: dict[str, Any]) -> None:
    """Kubernetes' SetDefaults_CronJob (CJ1): the job template's pods get pod defaults, its job spec none (the
    jobs it makes get theirs when created)."""
    spec = _dict(obj, "spec")
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    job_template = spec.get("jobTemplate")
    if isinstance(job_template, dict) and isinstance(job_template.get("spec"), dict):
        _pod_failure_policy(job_template["spec"])
        _pod_template(job_template["spec"])


def _ingress_class(obj: dict[str, Any]) -> None:
    """Kubernetes' SetDefaults_IngressClass (IN4): parameters without a scope name a cluster-scoped object."""
    parameters = _dict(obj, "spec").get("parameters")
    if isinstance(parameters, dict) and parameters.get("scope") is None:
        parameters["scope"] = "Cluster"


def _endpoint_slice(obj: dict[str, Any]) -> None:
    """Kubernetes' SetDefaults_EndpointPort: a port without a name has the empty one, without a protocol TCP."""
    for port in obj.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("name", "")
            port.setdefault("protocol", "TCP")


def _priority_class(obj: dict[str, Any]) -> None:
    """Kubernetes' SetDefaults_PriorityClass (PC1)."""
    obj.setdefault("preemptionPolicy", "PreemptLowerPriority")


def _network_policy(obj: dict[str, Any]) -> None:
    """Kubernetes' SetDefaults_NetworkPolicy and _NetworkPolicyPort (NP2): a policy naming no types is an
    Ingress policy, and an Egress one too when it has egress rules; a port's protocol is TCP."""
    spec = _dict(obj, "spec")
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]
    for direction in ("ingress", "egress"):
        for rule in spec.get(direction) or []:
            for port in (rule.get("ports") or []) if isinstance(rule, dict) else []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")


def _lease(obj: dict[str, Any]) -> None:
    _dict(obj, "spec")


def _replication_controller(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    spec.setdefault("replicas", 1)
    template = spec.get("template")
    labels = (template.get("metadata") or {}).get("labels") if isinstance(template, dict) else None
    if isinstance(labels, dict) and labels:
        # An RC without selector selects its template's labels, and is labelled like them.
        if not spec.get("selector"):
            spec["selector"] = dict(labels)
        meta = _dict(obj, "metadata")
        if not meta.get("labels"):
            meta["labels"] = dict(labels)
    _pod_template(spec)


def _service(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in _each_dict(spec.get("ports")):
        port.setdefault("protocol", "TCP")
        if "port" in port:
            port.setdefault("targetPort", port["port"])
    if spec["type"] != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if spec["type"] == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)


def _endpoints(obj: dict[str, Any]) -> None:
    for subset in _each_dict(obj.get("subsets")):
        for port in _each_dict(subset.get("ports")):
            port.setdefault("protocol", "TCP")


def _secret(obj: dict[str, Any]) -> None:
    obj.setdefault("type", "Opaque")
    # As Kubernetes: stringData is write-only, merged into data (its keys win) and never stored.
    string_data = obj.get("stringData")
    if isinstance(string_data, dict) and all(isinstance(v, str) for v in string_data.values()):
        data = obj.get("data")
        if data is None or isinstance(data, dict):
            obj["data"] = {**(data or {}), **{k: base64.b64encode(v.encode()).decode() for k, v in string_data.items()}}
            del obj["stringData"]


def _namespace(obj: dict[str, Any]) -> None:
    _dict(obj, "status").setdefault("phase", "Active")
    # The namespace controller removes this finalizer once the namespace is empty (Kubernetes' "kubernetes").
    if "finalizers" not in _dict(obj, "spec"):
        obj["spec"]["finalizers"] = ["kubernetes"]


def _event(obj: dict[str, Any]) -> None:
    obj.setdefault("type", "Normal")


def _binding(obj: dict[str, Any]) -> None:
    """Users and groups are RBAC subjects; a ServiceAccount is in the core group (Kubernetes' SetDefaults_Subject)."""
    for subject in _each_dict(obj.get("subjects")):
        if not subject.get("apiGroup") and subject.get("kind") in ("User", "Group"):
            subject["apiGroup"] = "rbac.authorization.k8s.io"


def _limit_range(obj: dict[str, Any]) -> None:
    """Container items get default from max and defaultRequest from default, then min (QL10)."""
    from storage.api.quota import limit_range_item_defaults  # quota imports the registry, which imports us

    limits = _dict(obj, "spec").get("limits")
    if isinstance(limits, list):
        obj["spec"]["limits"] = [limit_range_item_defaults(i) if isinstance(i, dict) else i for i in limits]


# HPA1: Kubernetes' GenerateHPAScaleUpRules / GenerateHPAScaleDownRules, field by field.
_HPA_SCALE_UP: dict[str, Any] = {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
    {"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]}
_HPA_SCALE_DOWN: dict[str, Any] = {"stabilizationWindowSeconds": 300, "selectPolicy": "Max", "policies": [
    {"type": "Percent", "value": 100, "periodSeconds": 15}]}
_HPA_DEFAULT_CPU_UTILIZATION = 80


def _horizontal_pod_autoscaler(obj: dict[str, Any]) -> None:
    """HPA1: Kubernetes' SetDefaults_HorizontalPodAutoscaler (autoscaling/v2). A behavior's missing rules
    are Kubernetes' own; a rule set's missing fields are filled one by one, so a writer who sets only
    scaleDown.stabilizationWindowSeconds keeps it and gets the default policies."""
    spec = _dict(obj, "spec")
    if spec.get("minReplicas") is None:
        spec["minReplicas"] = 1
    if not spec.get("metrics"):
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": _HPA_DEFAULT_CPU_UTILIZATION}}}]
    behavior = spec.get("behavior")
    if not isinstance(behavior, dict):
        return
    for key, defaults in (("scaleUp", _HPA_SCALE_UP), ("scaleDown", _HPA_SCALE_DOWN)):
        rules = _dict(behavior, key)
        for field, value in defaults.items():
            if rules.get(field) is None:
                rules[field] = copy.deepcopy(value)


_DEFAULTERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "CustomResourceDefinition": crd.apply_defaults,
    "PersistentVolume": _pv,
    "PersistentVolumeClaim": _pvc,
    "StorageClass": _storage_class,
    "CSIDriver": _csi_driver,
    "Pod": _pod,
    "StatefulSet": _statefulset,
    "DaemonSet": _daemonset,
    "ReplicaSet": _replicaset,
    "Deployment": _deployment,
    "Job": _job,
    "CronJob": _cronjob,
    "IngressClass": _ingress_class,
    "EndpointSlice": _endpoint_slice,
    "NetworkPolicy": _network_policy,
    "PriorityClass": _priority_class,
    "Lease": _lease,
    "ReplicationController": _replication_controller,
    "PodTemplate": _pod_template,  # PT1: the template is at the top level
    "Service": _service,
    "Endpoints": _endpoints,
    "Secret": _secret,
    "Namespace": _namespace,
    "Event": _event,
    "RoleBinding": _binding,
    "ClusterRoleBinding": _binding,
    "LimitRange": _limit_range,
    "HorizontalPodAutoscaler": _horizontal_pod_autoscaler,
}


def apply_defaults(obj: dict[str, Any]) -> dict[str, Any]:
    """Fill Kubernetes' defaults into ``obj`` (in place) and return it."""
    converted = convert(obj)
    if converted is not obj:
        # convert() shallow-copies what it changes; carry its result back into the caller's dict.
        obj.clear()
        obj.update(converted)
    defaulter = _DEFAULTERS.get(obj.get("kind", ""))
    if defaulter is not None:
        defaulter(obj)
    return obj
