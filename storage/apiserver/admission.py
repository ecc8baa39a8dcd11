"""Admission: rules on writes that need objects other than the one written.

Validation (``storage.api.validation``) checks an object's shape, alone or
against its previous version; the plugins here look at the rest of the
cluster (StorageClasses) or add what Kubernetes' admission chain adds
(protection finalizers). They run after defaulting and validation and
before the store, on the main resource; a plugin with ``admit_status``
also sees ``/status`` writes.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal, Protocol, Sequence

import structlog

from storage.api import object_warnings, podsecurity, priority
from storage.api.names import INGRESS_CLASS_ANNOTATION, INGRESS_CLASS_DEFAULT_ANNOTATION, PV_PROTECTION, PVC_PROTECTION
from storage.api.quantity import parse_quantity
from storage.api.registry import ResourceInfo
from storage.api.storage_class import explicit_class, object_class
from storage.api.taints import DEFAULT_TOLERATION_SECONDS, with_default_toleration_seconds
from storage.errors import FieldError, Forbidden, Invalid, NotFound
from storage.store.base import Store

log = structlog.get_logger(__name__)

Operation = Literal["CREATE", "UPDATE"]

DEFAULT_CLASS_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)
RESIZE_FORBIDDEN = (
    "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"
)


@dataclass(frozen=True)
class AdmissionRequest:
    operation: Operation
    resource: ResourceInfo
    obj: dict[str, Any]
    old: dict[str, Any] | None
    store: Store
    user: str = ""
    # Shared by the whole chain; the API server sends each as a "Warning: 299" header.
    warnings: list[str] = field(default_factory=list)
    # A dry run is checked like any write but must leave no trace (no quota charged).
    dry_run: bool = False


class AdmissionPlugin(Protocol):
    def admit(self, req: AdmissionRequest) -> dict[str, Any]:
        """Return the (possibly changed) object or raise a StowageError."""


class Admission:
    """An ordered chain of plugins; each sees the previous one's output."""

    def __init__(self, plugins: Sequence[AdmissionPlugin]) -> None:
        self.plugins = list(plugins)

    def admit(self, req: AdmissionRequest) -> dict[str, Any]:
        for plugin in self.plugins:
            obj = plugin.admit(req)
            # A new request only when a plugin gave back another object: most pass the kinds they do not
            # judge through as they came, and a dataclass copy for each of them was about a tenth of a
            # create's CPU in the API server (PF98).
            if obj is not req.obj:
                req = replace(req, obj=obj)
        return req.obj

    def admit_status(self, req: AdmissionRequest) -> dict[str, Any]:
        """A ``/status`` write, seen by the plugins that check those (``admit_status``)."""
        obj = req.obj
        for plugin in self.plugins:
            check = getattr(plugin, "admit_status", None)
            if check is not None:
                obj = check(AdmissionRequest(req.operation, req.resource, obj, req.old, req.store, req.user))
        return obj


def is_default_class(sc: dict[str, Any]) -> bool:
    annotations = (sc.get("metadata") or {}).get("annotations") or {}
    return any(annotations.get(a) == "true" for a in DEFAULT_CLASS_ANNOTATIONS)


def is_default_ingress_class(ic: dict[str, Any]) -> bool:
    return ((ic.get("metadata") or {}).get("annotations") or {}).get(INGRESS_CLASS_DEFAULT_ANNOTATION) == "true"


def pick_default_class(classes: list[dict[str, Any]],
                       is_default: Callable[[dict[str, Any]], bool] = is_default_class) -> str | None:
    """SEMANTICS P3 (and IN6 for IngressClasses): newest creationTimestamp among defaults, ties to the
    smallest name."""
    defaults = [c for c in classes if is_default(c)]
    if not defaults:
        return None
    # RFC 3339 UTC timestamps of one format order as strings; negate by sorting twice (stable).
    defaults.sort(key=lambda c: c["metadata"]["name"])
    defaults.sort(key=lambda c: c["metadata"].get("creationTimestamp") or "", reverse=True)
    newest = defaults[0]["metadata"].get("creationTimestamp") or ""
    tied = [c["metadata"]["name"] for c in defaults if (c["metadata"].get("creationTimestamp") or "") == newest]
    return min(tied)


class DefaultStorageClass:
    """SEMANTICS P3, on create only: a claim without any class gets the default class."""

    def admit(self, req: AdmissionRequest) -> dict[str, Any]:
        if req.operation != "CREATE" or req.resource.plural != "persistentvolumeclaims":
            return req.obj
        if explicit_class(req.obj) is not None:  # explicit "" opts out
            return req.obj
        classes, _ = req.store.list("storageclasses")
        name = pick_default_class(classes)
        if name is None:
            return req.obj
        obj = dict(req.obj)
        obj["spec"] = {**(obj.get("spec") or {}), "storageClassName": name}
        return obj


class DefaultIngressClass:
    """SEMANTICS IN6, on create only: an Ingress that names no class, by field or by the old annotation,
    gets the default IngressClass, as Kubernetes' DefaultIngressClass admission plugin does."""

    def admit(self, req: AdmissionRequest) -> dict[str, Any]:
        if req.operation != "CREATE" or req.resource.plural != "ingresses":
            return req.obj
        spec = req.obj.get("spec") if isinstance(req.obj.get("spec"), dict) else {}
        annotations = (req.obj.get("metadata") or {}).get("annotations") or {}
        if spec.get("ingressClassName") is not None or INGRESS_CLASS_ANNOTATION in annotations:
            return req.obj
        classes, _ = req.store.list("ingressclasses")
        name = pick_default_class(classes, is_default_ingress_class)
        if name is None:
            return req.obj
        return {**req.obj, "spec": {**spec, "ingressClassName": name}}


class Priority:
    """SEMANTICS PC3, PC4: Kubernetes' Priority admission. A new pod's class becomes its ``spec.priority`` and
    ``preemptionPolicy``; only one PriorityClass may be the global default. (An update's keeping of the
    priority comes before validation, in the handler's write.)"""

    def admit(self, req: AdmissionRequest) -> dict[str, Any]:
        if req.resource.plural == "pods":
            if req.operation == "CREATE":
                return priority.admit_pod_create(req.store, req.obj)
        elif req.resource.plural == "priorityclasses" and req.operation in ("CREATE", "UPDATE"):
            conflict = priority.default_conflict(req.store, req.obj, creating=req.operation == "CREATE")
            if conflict is not None:
                name = str((req.obj.get("metadata") or {}).get("name") or "")
                raise Forbidden(f'{priority.RESOURCE} "{name}" is forbidden: {conflict}', kind="priorityclasses",
                                name=name)
        return req.obj


class RuntimeClassAdmission:
    """SEMANTICS RC2: Kubernetes' RuntimeClass admission. A new pod that names a RuntimeClass gets its overhead
    (``spec.overhead``, which the pod may set only to that same value) and its scheduling constraints (its node
    selector merged in, a conflicting key refused; its tolerations added); a class that does not exist refuses
    the pod."""

    def admit(self, req: AdmissionRequest) -> dict[str, Any]:
        if req.operation != "CREATE" or req.resource.plural != "pods" or not isinstance(req.obj.get("spec"), dict):
            return req.obj
        spec = dict(req.obj["spec"])
        name = str((req.obj.get("metadata") or {}).get("name") or "")
        class_name = spec.get("runtimeClassName")
        runtime_class: dict[str, Any] | None = None
        if class_name:
            try:
                runtime_class = req.store.get("runtimeclasses", "", str(class_name))
            except NotFound:
                raise self._refused(name, f'pod rejected: RuntimeClass "{class_name}" not found') from None
        overhead = ((runtime_class or {}).get("overhead") or {}).get("podFixed")
        if overhead is not None:
            if spec.get("overhead") and not _same_quantities(spec["overhead"], overhead):
                raise self._refused(name, "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead")
            spec["overhead"] = dict(overhead)
        elif spec.get("overhead"):
            raise self._refused(name, "pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead")
        scheduling = (runtime_class or {}).get("scheduling") or {}
        selector = dict(spec.get("nodeSelector") or {})
        for key, value in (scheduling.get("nodeSelector") or {}).items():
            if key in selector and selector[key] != value:
                raise self._refused(name, f"conflict: runtimeClass.scheduling.nodeSelector[{key}] = {value}; "
                                          f"pod.spec.nodeSelector[{key}] = {selector[key]}")
            selector[key] = value
        if selector:
            spec["nodeSelector"] = selector
        tolerations = list(spec.get("tolerations") or [])
        for toleration in scheduling.get("tolerations") or []:
            if toleration not in tolerations:
                tolerations.append(toleration)
        if tolerations:
            spec["tolerations"] = tolerations
        return {**req.obj, "spec": spec}

    @staticmethod
    def _refused(name: str, reason: str) -> Forbidden:
        return Forbidden(f'pods "{name}" is forbidden: {reason}', kind="pods", name=name)


def _same_quantities(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal resource lists, as Kubernetes' semantic equality compares quantities (``1`` is ``1000m``)."""
    if set(a) != set(b):
        return False
    try:
        return all(parse_quantity(str(a[k])) == parse_quantity(str(b[k])) for k in a)
    except ValueError:
        return False


class ObjectWarnings:
    """SEMANTICS WN1-WN4: the warnings Kubernetes' registry adds to a write it accepts (deprecated fields and
    annotations, likely mistakes), on the object as admission's mutating plugins left it."""

    def admit(self, req: AdmissionRequest) -> dict[str, Any]:
        if req.operation in ("CREATE", "UPDATE"):
            req.warnings.extend(object_warnings.warnings_for(req.resource.kind, req.obj, req.old))
        return req.obj


class ProtectionFinalizers:
    """SEMANTICS B11: claims and volumes carry a protection finalizer from birth."""

    _BY_RESOURCE = {"persistentvolumeclaims": PVC_PROTECTION, "persistentvolumes": PV_PROTECTION}

    def admit(self, req: AdmissionRequest) -> dict[str, Any]:
        finalizer = self._BY_RESOURCE.get(req.resource.plural)
        if req.operation != "CREATE" or finalizer is None:
            return req.obj
        meta = req.obj.get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        if finalizer in finalizers:
            return req.obj
        return {**req.obj, "metadata": {**meta, "finalizers": [*finalizers, finalizer]}}


def _requested_storage(obj: dict[str, Any]) -> str | None:
    return (((obj.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")


class ClaimResize:
    """SEMANTICS P4: a claim may grow only if its class has ``allowVolumeExpansion: true``.

    Validation already rejects any change of a Pending claim's spec and any
    shrinking (rules on the claim alone); this adds the rule that needs the class.
    """

    FIELD = "spec.resources.requests.storage"

    def admit(self, req: AdmissionRequest) -> dict[str, Any]:
        if req.operation != "UPDATE" or req.resource.plural != "persistentvolumeclaims" or req.old is None:
            return req.obj
        new_raw, old_raw = _requested_storage(req.obj), _requested_storage(req.old)
        if new_raw is None or old_raw is None or parse_quantity(new_raw) <= parse_quantity(old_raw):
            return req.obj
        class_name = object_class(req.old)
        allowed = False
        if class_name:
            try:
                allowed = req.store.get("storageclasses", "", class_name).get("allowVolumeExpansion") is True
            except NotFound:  # a missing class cannot allow expansion
                allowed = False
        if not allowed:
            # An admission refusal: 403 with Kubernetes' wording (its PersistentVolumeClaimResize plugin
            # answers admission.NewForbidden), not a validation error.
            name = (req.obj.get("metadata") or {}).get("name", "")
            raise Forbidden(f'{req.resource.plural} "{name}" is forbidden: {RESIZE_FORBIDDEN}',
                            kind=req.resource.plural, name=name)
        return req.obj


class DefaultTolerationSeconds:
    """Kubernetes' DefaultTolerationSeconds plugin (rule L7): a new pod that tolerates neither the
    ``node.kubernetes.io/not-ready`` nor the ``node.kubernetes.io/unreachable`` NoExecute taint gets a
    toleration of each with ``tolerationSeconds`` (300 by default), so it leaves a failed node after
    five minutes rather than at once.

    Only on create: validation forbids removing a toleration later, so an update could only add them
    to pods that bypassed admission, and a node agent's own update of such a pod must stay unchanged."""

    def __init__(self, not_ready_seconds: int = DEFAULT_TOLERATION_SECONDS,
                 unreachable_seconds: int = DEFAULT_TOLERATION_SECONDS) -> None:
        self.not_ready_seconds = not_ready_seconds
        self.unreachable_seconds = unreachable_seconds

    def admit(self, req: AdmissionRequest) -> dict[str, Any]:
        if req.operation != "CREATE" or req.resource.plural != "pods":
            return req.obj
        spec = req.obj.get("spec")
        if not isinstance(spec, dict):
            return req.obj
        defaulted = with_default_toleration_seconds(spec, self.not_ready_seconds, self.unreachable_seconds)
        return req.obj if defaulted is spec else {**req.obj, "spec": defaulted}


# Kinds whose objects carry a pod template (at spec.template, a CronJob's at spec.jobTemplate.spec.template):
# warned and audited, never refused (as Kubernetes); the pods their controllers make are refused (PS1).
_POD_TEMPLATE_RESOURCES = frozenset({"statefulsets", "daemonsets", "replicasets", "replicationcontrollers", "deployments",
                                     "jobs", "cronjobs"})


def _pod_template(plural: str, obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if plural == "cronjobs":
        job_template = spec.get("jobTemplate") if isinstance(spec.get("jobTemplate"), dict) else {}
        spec = job_template.get("spec") if isinstance(job_template.get("spec"), dict) else {}
    template = spec.get("template")
    return template if isinstance(template, dict) else {}


_MAX_EXISTING_POD_WARNINGS = 10


_POD_FIELDS_CHECKED = ("hostNetwork", "hostPID", "hostIPC", "hostUsers", "securityContext", "volumes", "os")
_CONTAINER_FIELDS_CHECKED = ("name", "image", "securityContext", "ports", "livenessProbe", "readinessProbe",
                             "startupProbe", "lifecycle")
_ANNOTATION_PREFIXES_CHECKED = ("container.apparmor.security.beta.kubernetes.io/", "seccomp.security.alpha.kubernetes.io/",
                                "container.seccomp.security.alpha.kubernetes.io/")


def _security_relevant(meta: dict[str, Any], spec: Any) -> Any:
    """What Pod Security reads of a pod, plus the images (which Kubernetes also counts as a significant change).

    An update that leaves this alone (labels, finalizers, a node name, tolerations) is not evaluated, as in
    Kubernetes: so a namespace tightened later never blocks controllers finishing or deleting its old pods.
    """
    annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
    kept = {k: v for k, v in annotations.items() if str(k).startswith(_ANNOTATION_PREFIXES_CHECKED)}
    if not isinstance(spec, dict):
        return kept, spec
    pod = {k: spec.get(k) for k in _POD_FIELDS_CHECKED}
    for key in ("initContainers", "containers", "ephemeralContainers"):
        containers = spec.get(key)
        pod[key] = ([{k: c.get(k) for k in _CONTAINER_FIELDS_CHECKED} if isinstance(c, dict) else c for c in containers]
                    if isinstance(containers, list) else containers)
    return kept, pod


class PodSecurity:
    """Kubernetes' Pod Security Admission, with the namespace labels ``pod-security.kubernetes.io/*``.

    Pods are refused under ``enforce``, and warned (Warning headers) and
    audited (a log line) under ``warn`` and ``audit``; workloads with a pod
    template are only warned and audited, as in Kubernetes, since the pods
    they create are checked themselves. A namespace without labels gets the
    server's default level for all three modes: ``baseline`` unless the
    administrator chose otherwise (Kubernetes' default is ``privileged``).
    Updates are checked only when they change what the checks read (or an
    image), as Kubernetes does, so a controller can always finish, bind or
    delete an existing pod.
    """

    def __init__(self, default_level: str = podsecurity.BASELINE, default_version: str = podsecurity.LATEST) -> None:
        if default_level not in podsecurity.LEVELS:
            raise ValueError(f"pod security level must be one of {', '.join(podsecurity.LEVELS)}, not {default_level!r}")
        self.default = podsecurity.LevelVersion(default_level, default_version)

    def admit(self, req: AdmissionRequest) -> dict[str, Any]:
        plural = req.resource.plural
        if plural == "namespaces":
            self._admit_namespace(req)
        elif plural == "pods":
            meta = req.obj.get("metadata") or {}
            self._evaluate(req, meta, req.obj.get("spec"), enforce=True,
                           old=(req.old.get("metadata") or {}, req.old.get("spec")) if req.old else None)
        elif plural in _POD_TEMPLATE_RESOURCES:
            template = _pod_template(plural, req.obj)
            old = None
            if req.old is not None:
                old_template = _pod_template(plural, req.old)
                old = (old_template.get("metadata") or {}, old_template.get("spec"))
            self._evaluate(req, template.get("metadata") or {}, template.get("spec"), enforce=False, old=old)
        return req.obj

    def _evaluate(self, req: AdmissionRequest, meta: Any, spec: Any, *, enforce: bool,
                  old: tuple[Any, Any] | None) -> None:
        meta = meta if isinstance(meta, dict) else {}
        if req.operation == "UPDATE" and old is not None:
            old_meta = old[0] if isinstance(old[0], dict) else {}
            if _security_relevant(meta, spec) == _security_relevant(old_meta, old[1]):
                return
        obj_meta = req.obj.get("metadata") or {}
        namespace = str(obj_meta.get("namespace") or "default")
        name = str(obj_meta.get("name") or obj_meta.get("generateName") or "")
        policy = podsecurity.namespace_policy(req.store, namespace, self.default)
        results: dict[podsecurity.LevelVersion, list[podsecurity.Violation]] = {}

        def violations(level: podsecurity.LevelVersion) -> list[podsecurity.Violation]:
            if level not in results:
                results[level] = podsecurity.check_pod(level, meta, spec)
            return results[level]

        if enforce and violations(policy.enforce):
            raise Forbidden(
                podsecurity.forbidden_message(req.resource.plural, name, policy.enforce, violations(policy.enforce)),
                kind=req.resource.plural, name=name,
            )
        if violations(policy.audit):
            log.warning("pod security audit", namespace=namespace, resource=req.resource.plural, name=name,
                        user=req.user, policy=str(policy.audit), violations=podsecurity.describe(violations(policy.audit)))
        # A pod already checked against the same policy for enforcement has nothing more to warn about.
        if (not enforce or policy.warn != policy.enforce) and violations(policy.warn):
            req.warnings.append(podsecurity.warning_message(policy.warn, violations(policy.warn)))

    def _admit_namespace(self, req: AdmissionRequest) -> None:
        labels = (req.obj.get("metadata") or {}).get("labels") or {}
        old_labels = ((req.old or {}).get("metadata") or {}).get("labels") or {} if req.old is not None else None
        policy, errors = podsecurity.parse_policy(labels, self.default)
        relevant_changed = old_labels is None or {
            k: v for k, v in labels.items() if str(k).startswith(podsecurity.LABEL_PREFIX)
        } != {k: v for k, v in old_labels.items() if str(k).startswith(podsecurity.LABEL_PREFIX)}
        if errors and relevant_changed:
            name = str((req.obj.get("metadata") or {}).get("name", ""))
            raise Invalid(
                [FieldError(e.field, "Invalid value", e.detail, e.value, has_value=True) for e in errors],
                kind="Namespace", name=name,
            )
        if req.operation != "UPDATE" or old_labels is None:
            return
        old_policy, _ = podsecurity.parse_policy(old_labels, self.default)
        if policy.enforce == old_policy.enforce or policy.enforce.level == podsecurity.PRIVILEGED:
            return
        self._warn_existing_pods(req, policy.enforce)

    def _warn_existing_pods(self, req: AdmissionRequest, level: podsecurity.LevelVersion) -> None:
        """Kubernetes' courtesy on tightening a namespace: say which running pods the new level would refuse."""
        namespace = str((req.obj.get("metadata") or {}).get("name", ""))
        pods, _ = req.store.list("pods", namespace)
        by_reasons: dict[str, list[str]] = {}
        for pod in pods:
            found = podsecurity.check_pod(level, pod.get("metadata") or {}, pod.get("spec"))
            if found:
                reasons = ", ".join(dict.fromkeys(v.reason for v in found))
                by_reasons.setdefault(reasons, []).append(str((pod.get("metadata") or {}).get("name", "")))
        if not by_reasons:
            return
        req.warnings.append(f'existing pods in namespace "{namespace}" violate the new PodSecurity enforce level "{level}"')
        for reasons, names in list(by_reasons.items())[:_MAX_EXISTING_POD_WARNINGS]:
            names.sort()
            who = names[0] if len(names) == 1 else f"{names[0]} (and {len(names) - 1} other {'pod' if len(names) == 2 else 'pods'})"
            req.warnings.append(f"{who}: {reasons}")


def default_admission(pod_security_default: str = podsecurity.BASELINE, *,
                      not_ready_toleration_seconds: int = DEFAULT_TOLERATION_SECONDS,
                      unreachable_toleration_seconds: int = DEFAULT_TOLERATION_SECONDS) -> Admission:
    from storage.api.quota_admission import LimitRanger, ResourceQuotaAdmission
    from storage.apiserver.sa_admission import ServiceAccountAdmission

    # Mutating plugins first, Pod Security last: it judges the pod as it will be stored
    # (with the service-account token volume), as Kubernetes' validating phase does.
    return Admission([DefaultStorageClass(), DefaultIngressClass(), ProtectionFinalizers(), ClaimResize(), ServiceAccountAdmission(),
                      Priority(), DefaultTolerationSeconds(not_ready_toleration_seconds, unreachable_toleration_seconds),
                      RuntimeClassAdmission(), ObjectWarnings(), PodSecurity(pod_security_default),
                      # Kubernetes' order: LimitRanger, then ResourceQuota last, so only a write every other
                      # plugin let through is charged (QL4, QL7).
                      LimitRanger(), ResourceQuotaAdmission()])
