"""Every resource Stowage serves: its kind, REST names, group and scope.

One table drives the API server's routes and discovery documents, the
command line's short names, and the store's resource keys (the plural).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceInfo:
    kind: str
    plural: str
    singular: str
    group: str  # "" for the core group
    version: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    has_status: bool = True
    # apiVersions accepted on input and converted to the served one.
    legacy_api_versions: tuple[str, ...] = ()
    # Of those, the ones also served at their own paths, as Kubernetes serves autoscaling/v1 beside v2: the
    # object is stored in the served version and converted on the way out (storage.api.conversion).
    also_served: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    # False for create-only reviews the API server answers itself (SubjectAccessReview, ...): never stored.
    stored: bool = True
    # Served in Kubernetes from a CustomResourceDefinition (the external-snapshotter's, gateway-api's): JSON
    # only, so a protobuf request body for it is refused with 415 and responses are always JSON.
    crd: bool = False
    # No protobuf message here (a built-in kind whose message Stowage does not carry): a protobuf body is a 415
    # naming JSON and YAML, as for a kind served from a CRD.
    json_only: bool = False
    # Kubernetes' API lifecycle warning, sent with every request to the resource (APILifecycleDeprecated).
    deprecation: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def reads_protobuf(self) -> bool:
        return not (self.crd or self.json_only)

    def accepts(self, api_version: str) -> bool:
        return api_version == self.api_version or api_version in self.legacy_api_versions

    def serves(self, api_version: str) -> bool:
        return api_version == self.api_version or api_version in self.also_served

    def at_version(self, api_version: str) -> ResourceInfo:
        """This resource as served at ``api_version`` (one it ``serves``): the same kind and names, that
        group-version's version."""
        if api_version == self.api_version:
            return self
        group, _, version = api_version.rpartition("/")
        return dataclasses.replace(self, group=group, version=version, also_served=())


RBAC_GROUP = "rbac.authorization.k8s.io"
SNAPSHOT_GROUP = "snapshot.storage.k8s.io"
_CREATE_ONLY = ("create",)

RESOURCES: tuple[ResourceInfo, ...] = (
    ResourceInfo("PersistentVolume", "persistentvolumes", "persistentvolume", "", "v1", False, ("pv",)),
    ResourceInfo("PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", "", "v1", True, ("pvc",)),
    ResourceInfo("Pod", "pods", "pod", "", "v1", True, ("po",)),
    ResourceInfo("Service", "services", "service", "", "v1", True, ("svc",)),
    ResourceInfo("Endpoints", "endpoints", "endpoints", "", "v1", True, ("ep",), has_status=False,
                 deprecation="v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"),
    ResourceInfo("Node", "nodes", "node", "", "v1", False, ("no",)),
    # No deletecollection, as in Kubernetes: one request must not remove every namespace (default, kube-system).
    ResourceInfo("Namespace", "namespaces", "namespace", "", "v1", False, ("ns",),
                 verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    ResourceInfo("Secret", "secrets", "secret", "", "v1", True, (), has_status=False),
    ResourceInfo("ConfigMap", "configmaps", "configmap", "", "v1", True, ("cm",), has_status=False),
    # EVT1: events.k8s.io/v1 is another view of the same objects, as in Kubernetes (one store, two groups).
    ResourceInfo("Event", "events", "event", "", "v1", True, ("ev",), has_status=False,
                 legacy_api_versions=("events.k8s.io/v1",), also_served=("events.k8s.io/v1",)),
    ResourceInfo("ReplicationController", "replicationcontrollers", "replicationcontroller", "", "v1", True, ("rc",)),
    # SEMANTICS QL1: a namespace's per-object limits (no status in Kubernetes) and its total quotas.
    ResourceInfo("LimitRange", "limitranges", "limitrange", "", "v1", True, ("limits",), has_status=False),
    ResourceInfo("ResourceQuota", "resourcequotas", "resourcequota", "", "v1", True, ("quota",)),
    ResourceInfo(
        "StorageClass", "storageclasses", "storageclass", "storage.k8s.io", "v1", False, ("sc",),
        has_status=False, legacy_api_versions=("storage.k8s.io/v1beta1",),
    ),
    ResourceInfo("VolumeAttachment", "volumeattachments", "volumeattachment", "storage.k8s.io", "v1", False, ()),
    # SEMANTICS VAC1: a CSI volume's mutable attributes by name (Kubernetes 1.34+ serves v1 only by default).
    ResourceInfo("VolumeAttributesClass", "volumeattributesclasses", "volumeattributesclass", "storage.k8s.io", "v1",
                 False, ("vac",), has_status=False),
    ResourceInfo("CSIDriver", "csidrivers", "csidriver", "storage.k8s.io", "v1", False, (), has_status=False),
    ResourceInfo("CSINode", "csinodes", "csinode", "storage.k8s.io", "v1", False, (), has_status=False),
    # SEMANTICS SCAP1: a CSI driver's free capacity per class and topology segment, for the scheduler.
    ResourceInfo("CSIStorageCapacity", "csistoragecapacities", "csistoragecapacity", "storage.k8s.io", "v1", True, (),
                 has_status=False),
    ResourceInfo(
        "StatefulSet", "statefulsets", "statefulset", "apps", "v1", True, ("sts",),
        legacy_api_versions=("apps/v1beta1", "apps/v1beta2"),
    ),
    ResourceInfo(
        "DaemonSet", "daemonsets", "daemonset", "apps", "v1", True, ("ds",),
        legacy_api_versions=("apps/v1beta2", "extensions/v1beta1"),
    ),
    ResourceInfo(
        "ReplicaSet", "replicasets", "replicaset", "apps", "v1", True, ("rs",),
        legacy_api_versions=("apps/v1beta2", "extensions/v1beta1"),
    ),
    ResourceInfo(
        "ControllerRevision", "controllerrevisions", "controllerrevision", "apps", "v1", True, (),
        has_status=False, legacy_api_versions=("apps/v1beta1", "apps/v1beta2"),
    ),
    ResourceInfo(
        "Deployment", "deployments", "deployment", "apps", "v1", True, ("deploy",),
        legacy_api_versions=("apps/v1beta1", "apps/v1beta2", "extensions/v1beta1"),
    ),
    # SEMANTICS J1: run-to-completion pods.
    ResourceInfo("Job", "jobs", "job", "batch", "v1", True, ()),
    # SEMANTICS CJ1: jobs on a cron schedule.
    ResourceInfo("CronJob", "cronjobs", "cronjob", "batch", "v1", True, ("cj",)),
    # SEMANTICS IN1: stored and validated, for whatever ingress controller a cluster runs (none is built in).
    ResourceInfo("Ingress", "ingresses", "ingress", "networking.k8s.io", "v1", True, ("ing",)),
    ResourceInfo("IngressClass", "ingressclasses", "ingressclass", "networking.k8s.io", "v1", False, (),
                 has_status=False),
    # SEMANTICS NP1: stored and validated; Stowage's pod network enforces none (NP3).
    ResourceInfo("NetworkPolicy", "networkpolicies", "networkpolicy", "networking.k8s.io", "v1", True, ("netpol",),
                 has_status=False),
    # SEMANTICS EPS1: the pods behind a Service, written by the endpoints controller next to its Endpoints.
    ResourceInfo("EndpointSlice", "endpointslices", "endpointslice", "discovery.k8s.io", "v1", True, (),
                 has_status=False),
    # SEMANTICS PC1: pod priorities by name; the two system classes exist in every cluster.
    ResourceInfo("PriorityClass", "priorityclasses", "priorityclass", "scheduling.k8s.io", "v1", False, ("pc",),
                 has_status=False),
    ResourceInfo(
        "Lease", "leases", "lease", "coordination.k8s.io", "v1", True, (), has_status=False,
        legacy_api_versions=("coordination.k8s.io/v1beta1",),
    ),
    ResourceInfo("Role", "roles", "role", RBAC_GROUP, "v1", True, (), has_status=False),
    ResourceInfo("ClusterRole", "clusterroles", "clusterrole", RBAC_GROUP, "v1", False, (), has_status=False),
    ResourceInfo("RoleBinding", "rolebindings", "rolebinding", RBAC_GROUP, "v1", True, (), has_status=False),
    ResourceInfo("ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", RBAC_GROUP, "v1", False, (),
                 has_status=False),
    ResourceInfo("SubjectAccessReview", "subjectaccessreviews", "subjectaccessreview", "authorization.k8s.io", "v1",
                 False, (), has_status=False, verbs=_CREATE_ONLY, stored=False),
    ResourceInfo("SelfSubjectAccessReview", "selfsubjectaccessreviews", "selfsubjectaccessreview",
                 "authorization.k8s.io", "v1", False, (), has_status=False, verbs=_CREATE_ONLY, stored=False),
    ResourceInfo("LocalSubjectAccessReview", "localsubjectaccessreviews", "localsubjectaccessreview",
                 "authorization.k8s.io", "v1", True, (), has_status=False, verbs=_CREATE_ONLY, stored=False),
    ResourceInfo("SelfSubjectRulesReview", "selfsubjectrulesreviews", "selfsubjectrulesreview",
                 "authorization.k8s.io", "v1", False, (), has_status=False, verbs=_CREATE_ONLY, stored=False),
    ResourceInfo("SelfSubjectReview", "selfsubjectreviews", "selfsubjectreview", "authentication.k8s.io", "v1",
                 False, (), has_status=False, verbs=_CREATE_ONLY, stored=False),
    ResourceInfo("ServiceAccount", "serviceaccounts", "serviceaccount", "", "v1", True, ("sa",), has_status=False),
    ResourceInfo("CertificateSigningRequest", "certificatesigningrequests", "certificatesigningrequest",
                 "certificates.k8s.io", "v1", False, ("csr",)),
    ResourceInfo("PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", "policy", "v1", True,
                 ("pdb",)),
    # SEMANTICS HPA1: stored, defaulted and validated as Kubernetes does; HPA8: autoscaling/v1 served too.
    ResourceInfo("HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", "autoscaling",
                 "v2", True, ("hpa",), legacy_api_versions=("autoscaling/v1",), also_served=("autoscaling/v1",)),
    # Stowage's own kind (SEMANTICS BC12): snapshots of claims on a cron schedule, with retention.
    ResourceInfo("BackupSchedule", "backupschedules", "backupschedule", "backup.stowage.io", "v1alpha1", True,
                 ("bsched",), crd=True),
    ResourceInfo("VolumeSnapshot", "volumesnapshots", "volumesnapshot", SNAPSHOT_GROUP, "v1", True, ("vs",),
                 legacy_api_versions=(f"{SNAPSHOT_GROUP}/v1beta1",), crd=True),
    ResourceInfo("VolumeSnapshotContent", "volumesnapshotcontents", "volumesnapshotcontent", SNAPSHOT_GROUP, "v1",
                 False, ("vsc", "vscs"), legacy_api_versions=(f"{SNAPSHOT_GROUP}/v1beta1",), crd=True),
    ResourceInfo("VolumeSnapshotClass", "volumesnapshotclasses", "volumesnapshotclass", SNAPSHOT_GROUP, "v1", False,
                 ("vsclass", "vsclasses"), has_status=False, legacy_api_versions=(f"{SNAPSHOT_GROUP}/v1beta1",),
                 crd=True),
    # PT1: a stored pod template; no controller reads it. No protobuf message carried here.
    ResourceInfo("PodTemplate", "podtemplates", "podtemplate", "", "v1", True, (), has_status=False, json_only=True),
    # RC1: the runtime handler a pod names (Stowage's agents have one, runc); no protobuf message carried here.
    ResourceInfo("RuntimeClass", "runtimeclasses", "runtimeclass", "node.k8s.io", "v1", False, (), has_status=False,
                 json_only=True),
    # Only the definitions of kinds served here are accepted (CRD1): installing the snapshot CRDs works unchanged.
    ResourceInfo("CustomResourceDefinition", "customresourcedefinitions", "customresourcedefinition",
                 "apiextensions.k8s.io", "v1", False, ("crd", "crds"), json_only=True),
    ResourceInfo("ReferenceGrant", "referencegrants", "referencegrant", "gateway.networking.k8s.io", "v1beta1", True,
                 ("refgrant",), has_status=False, legacy_api_versions=("gateway.networking.k8s.io/v1alpha2",),
                 crd=True),
)

# K4: kinds whose objects carry no metadata.generation in Kubernetes (their registry strategies never
# set it); every other kind starts at 1 and counts changes of everything but status and metadata.
KINDS_WITHOUT_GENERATION = frozenset({
    "PersistentVolume", "PersistentVolumeClaim", "ConfigMap", "Secret", "Service", "Endpoints", "Namespace",
    "Node", "Event", "ServiceAccount", "StorageClass", "Lease", "LimitRange", "ResourceQuota", "VolumeAttributesClass",
    "CSIStorageCapacity",
})

_BY_KIND = {r.kind: r for r in RESOURCES}
_BY_PLURAL = {r.plural: r for r in RESOURCES}
_BY_ANY_NAME: dict[str, ResourceInfo] = {}
for _r in RESOURCES:
    for _n in (_r.kind.lower(), _r.plural, _r.singular, *_r.short_names):
        _BY_ANY_NAME[_n] = _r


def by_kind(kind: str) -> ResourceInfo | None:
    return _BY_KIND.get(kind)


def by_plural(plural: str) -> ResourceInfo | None:
    return _BY_PLURAL.get(plural)


def by_name(name: str) -> ResourceInfo | None:
    """Look up by plural, singular, kind or short name, as kubectl does (``pvc``, ``pods``, ``StatefulSet``)."""
    key = name.lower()
    if "." in key:  # "statefulsets.apps", "storageclasses.storage.k8s.io"
        base, _, group = key.partition(".")
        info = _BY_ANY_NAME.get(base)
        if info is None or info.group == group:
            return info
        # A view of the kind served in another group ("events.events.k8s.io"): that group's form.
        return next((info.at_version(gv) for gv in info.also_served if gv.rpartition("/")[0] == group), None)
    return _BY_ANY_NAME.get(key)


def stored_resources() -> list[ResourceInfo]:
    """The resources the store keeps (every one but the create-only reviews)."""
    return [r for r in RESOURCES if r.stored]


def groups() -> dict[str, list[ResourceInfo]]:
    """Served resources by group/version ("v1", "apps/v1", "storage.k8s.io/v1"). A resource also served at an
    older version is listed there too, as ``at_version`` gives it; a group's preferred version comes first."""
    out: dict[str, list[ResourceInfo]] = {}
    for r in RESOURCES:
        out.setdefault(r.api_version, []).append(r)
    for r in RESOURCES:
        for gv in r.also_served:
            out.setdefault(gv, []).append(r.at_version(gv))
    return out
