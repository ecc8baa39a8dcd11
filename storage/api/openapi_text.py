"""Descriptions in the OpenAPI documents (what ``kubectl explain`` prints).

Keys are ``Model.field`` (wire name) or ``*.field`` for a field every model
means the same way; kinds and other types are keyed by class name.
"""
from __future__ import annotations

_SOURCE = "a volume source: exactly one source may be set on a volume"

KIND_DESCRIPTIONS: dict[str, str] = {
    "PersistentVolume": "A piece of storage in the cluster, provisioned by an administrator or dynamically by a "
                        "StorageClass. It lives independently of any pod that uses it.",
    "PersistentVolumeClaim": "A user's request for storage: a claim binds to one PersistentVolume that satisfies "
                             "its size, access modes and class.",
    "StorageClass": "Describes a class of storage: which provisioner creates its volumes, with which parameters, "
                    "reclaim policy and binding mode.",
    "VolumeAttributesClass": "Mutable attributes of CSI volumes by name (IOPS, throughput, ...): a claim names one, "
                             "the driver gets its parameters when the volume is made and when the claim changes "
                             "class. driverName and parameters cannot be updated.",
    "CSIStorageCapacity": "The free capacity a CSI driver reported for one storage class in one topology segment "
                          "(the nodes nodeTopology selects); the scheduler places pods with new volumes of "
                          "drivers whose CSIDriver sets storageCapacity where enough is free.",
    "VolumeAttachment": "Records the intent to attach a volume to a node, and whether it is attached.",
    "CSIDriver": "Information about a CSI volume driver: whether its volumes are attached, whether it wants pod "
                 "information on mount, and how fsGroup applies. Named after the driver.",
    "CSINode": "The CSI drivers installed on a node, with each driver's node id, topology keys and volume limit. "
               "Named after the node and written by its agent.",
    "Pod": "A group of containers that run together on one node and share volumes and a network namespace.",
    "Service": "A named abstraction over a set of pods selected by labels, with stable ports.",
    "Endpoints": "The addresses and ports that implement a Service.",
    "Node": "A worker machine in the cluster.",
    "Namespace": "A scope for names; namespaced objects live in exactly one namespace.",
    "Secret": "Holds secret data of a certain type; values in data are base64-encoded.",
    "ConfigMap": "Holds configuration data for pods to consume.",
    "LimitRange": "Per-object bounds in a namespace: the minimum and maximum storage of a claim, and container "
                  "defaults.",
    "ResourceQuota": "Total limits of a namespace: storage requested by claims, per class, and object counts.",
    "Event": "A report of something that happened to an object in the cluster.",
    "ReplicationController": "Keeps a number of copies of a pod template running.",
    "StatefulSet": "Runs pods with stable identities (ordinal names) and stable storage, one "
                   "PersistentVolumeClaim per pod and volume claim template.",
    "DaemonSet": "Runs one copy of a pod on each selected node.",
    "CronJob": "Makes a Job from its template on a cron schedule, keeping a history of finished ones.",
    "Ingress": "Rules that route external HTTP(S) traffic by host and path to Services; an ingress controller "
               "carries them out.",
    "EndpointSlice": "A set of network endpoints of a Service (addresses, readiness, ports), as the endpoints "
                     "controller keeps them for a Service with a selector.",
    "NetworkPolicy": "Which traffic the selected pods may receive and send; stored and validated, enforced by "
                     "no component of Stowage's pod network.",
    "PriorityClass": "A name for a pod priority: new pods naming it get its value as spec.priority; the "
                     "global default applies to pods that name none.",
    "HorizontalPodAutoscaler": "Scales a workload (its scale subresource) between minReplicas and maxReplicas "
                               "to keep the metrics at their targets. Stowage stores and validates it as "
                               "Kubernetes does, as autoscaling/v2; autoscaling/v1 is served too, converted as "
                               "Kubernetes converts it (what v1 has no field for is kept in annotations).",
    "HorizontalPodAutoscalerSpec": "The scale target, the replica bounds, and the targets to hold (autoscaling/v1: "
                                   "the CPU utilization; v2: metrics, and how fast to scale up and down).",
    "HorizontalPodAutoscalerStatus": "What the autoscaler last observed: the replicas, each metric's current "
                                     "value (autoscaling/v1: the CPU utilization) and the conditions.",
    "CrossVersionObjectReference": "An object by apiVersion, kind and name, in the autoscaler's namespace.",
    "MetricSpec": "One metric to scale on: its type (Resource, ContainerResource, Pods, Object or External) and "
                  "exactly the member of that name.",
    "MetricTarget": "The target of a metric: type Utilization (averageUtilization, a percentage of the pods' "
                    "requests), AverageValue (averageValue per pod) or Value (value).",
    "HorizontalPodAutoscalerBehavior": "How fast to scale up (scaleUp) and down (scaleDown); a missing direction "
                                       "gets Kubernetes' default rules.",
    "HPAScalingRules": "The rules of one direction: a stabilization window, the policies that limit each step "
                       "and which of them applies (selectPolicy).",
    "HPAScalingPolicy": "At most value pods (Pods) or value percent of the current replicas (Percent) per "
                        "periodSeconds.",
    "PodTemplate": "A pod template stored on its own, for tools that read one by name; no controller of "
                   "Stowage acts on it.",
    "RuntimeClass": "A container runtime handler a pod may name (runtimeClassName), with the pod overhead and "
                    "scheduling constraints the RuntimeClass admission adds to each pod that names it. Stowage's "
                    "agents have one handler, runc.",
    "CustomResourceDefinition": "Defines a kind served by the API. Stowage accepts the definitions of the kinds it "
                                "serves built in (the snapshot API, ReferenceGrant, BackupSchedule) and refuses "
                                "any other.",
    "CustomResourceDefinitionSpec": "The group, names, scope and versions of the kind defined.",
    "CustomResourceValidation": "The schema of one version of the kind.",
    "IngressClass": "Names the ingress controller that carries out the Ingresses of this class, with its "
                    "parameters.",
    "Job": "Runs pods of a template to completion: a number of successful completions, with retries up to a "
           "backoff limit.",
    "ReplicaSet": "Keeps a number of copies of a pod template running, selected by a label selector.",
    "ControllerRevision": "An immutable snapshot of a workload's state, kept for rollbacks.",
    "ObjectMeta": "Metadata every persisted object has: name, namespace, labels, annotations and what the server "
                  "records (uid, resourceVersion, timestamps).",
    "PersistentVolumeSpec": "The specification of a persistent volume: where its data lives and how it may be used.",
    "PersistentVolumeStatus": "The current state of a persistent volume.",
    "PersistentVolumeClaimSpec": "What a claim asks for: size, access modes, class and optionally a volume by name.",
    "PersistentVolumeClaimStatus": "The current state of a claim: its phase and what the bound volume provides.",
    "PodSpec": "The specification of a pod: its containers, volumes and scheduling constraints.",
    "Container": "A single application container that runs within a pod.",
    "EphemeralContainer": "A container added to a running pod for debugging (kubectl debug), through the pod's "
                          "ephemeralcontainers subresource. It runs once and is never restarted; it may not have "
                          "ports, probes, lifecycle hooks or resources.",
    "Volume": "A named volume in a pod that any container in the pod may mount.",
    "Quantity": "A fixed-point number with a suffix: binary (Ki, Mi, Gi, Ti, Pi, Ei), decimal SI (m, k, M, G, T, "
                "P, E) or a decimal exponent (e3). 1Gi is 1073741824, 500m is 0.5.",
    "IntOrString": "An integer or a string, such as a port number or a port name, or a count or a percentage.",
    "ListMeta": "Metadata of a list: the resource version it was read at and the continue token of a page.",
    "Status": "The result of an operation that does not return an object, and the body of every error.",
    "DeleteOptions": "Options of a delete: grace period, dry run, preconditions and propagation policy.",
    "Patch": "A patch body; its content type names its format.",
    "LabelSelector": "A label query: matchLabels and matchExpressions are ANDed; an empty selector matches everything.",
    "ObjectReference": "A reference to an object by kind, namespace, name and uid.",
    "PodDisruptionBudget": "Limits how many pods of a replicated application voluntary disruptions (evictions, "
                           "kubectl drain) may take down at once.",
    "PodDisruptionBudgetSpec": "Which pods the budget guards and how many of them must stay available.",
    "PodDisruptionBudgetStatus": "What the disruption controller last observed, and how many disruptions the "
                                 "budget allows now.",
    "Eviction": "Evicts a pod from its node, subject to its PodDisruptionBudget: POST it to the pod's eviction "
                "subresource.",
    "VolumeSnapshot": "A user's request for a point-in-time snapshot of a claim's volume, or a namespaced handle on "
                      "a snapshot that already exists (a pre-provisioned VolumeSnapshotContent).",
    "VolumeSnapshotSpec": "What to snapshot (or which existing snapshot to bind) and with which class.",
    "VolumeSnapshotSource": "Where the snapshot comes from: exactly one of persistentVolumeClaimName (take a new "
                            "snapshot) and volumeSnapshotContentName (bind an existing one). Immutable.",
    "VolumeSnapshotStatus": "What the snapshot controller last observed. Check that the snapshot and its content "
                            "name each other before trusting the binding.",
    "VolumeSnapshotError": "The last error met while taking the snapshot; cleared once it succeeds.",
    "VolumeSnapshotContent": "A snapshot on the storage system, cluster-scoped, bound to exactly one VolumeSnapshot. "
                             "Created by the snapshot controller, or by an administrator for a snapshot that "
                             "already exists.",
    "VolumeSnapshotContentSpec": "The snapshot's driver, its source, its deletion policy and the VolumeSnapshot it "
                                 "is bound to.",
    "VolumeSnapshotContentSource": "Exactly one of volumeHandle (take a snapshot of this volume) and snapshotHandle "
                                   "(an existing snapshot). Immutable.",
    "VolumeSnapshotContentStatus": "What the driver reported about the snapshot.",
    "VolumeSnapshotClass": "Describes a class of snapshots: which driver takes them, with which parameters, and "
                           "whether a content is deleted with its snapshot. Cluster-scoped.",
    "ReferenceGrant": "Allows objects in other namespaces to refer to objects in this one: a claim in a namespace "
                      "listed in from may use a snapshot or claim here, of a kind listed in to, as its data source.",
    "ReferenceGrantSpec": "Who may refer (from) to what (to) in the grant's namespace.",
    "ReferenceGrantFrom": "A group, kind and namespace whose objects may refer to the grant's namespace.",
    "ReferenceGrantTo": "A group and kind (and optionally a name) in the grant's namespace that may be referred to.",
    "TypedObjectReference": "A reference to an object by API group, kind, name and optionally namespace.",
    "TypedLocalObjectReference": "A reference to an object in the same namespace by API group, kind and name.",
}

DESCRIPTIONS: dict[str, str] = {
    # HorizontalPodAutoscaler (HPA1, HPA2)
    "HorizontalPodAutoscalerSpec.scaleTargetRef": "The workload to scale (apiVersion, kind and name); it must "
                                                  "serve the scale subresource.",
    "HorizontalPodAutoscalerSpec.minReplicas": "The lower limit of replicas; defaults to 1, and must be at "
                                               "least 1.",
    "HorizontalPodAutoscalerSpec.maxReplicas": "The upper limit of replicas; not less than minReplicas.",
    "HorizontalPodAutoscalerSpec.metrics": "The metrics to hold at their targets; the desired replicas are the "
                                           "largest any metric asks for. Defaults to CPU at 80% utilization.",
    "HorizontalPodAutoscalerSpec.behavior": "How fast to scale in each direction; when set, missing rules and "
                                            "fields get Kubernetes' defaults.",
    "HorizontalPodAutoscalerStatus.observedGeneration": "The generation of the autoscaler the status is for.",
    "HorizontalPodAutoscalerStatus.lastScaleTime": "When the autoscaler last changed the number of replicas.",
    "HorizontalPodAutoscalerStatus.currentReplicas": "The replicas of the scale target when last observed.",
    "HorizontalPodAutoscalerStatus.desiredReplicas": "The replicas the autoscaler last asked for.",
    "HorizontalPodAutoscalerStatus.currentMetrics": "Each metric's last measured value, in the order of "
                                                    "spec.metrics.",
    "HorizontalPodAutoscalerSpec.targetCPUUtilizationPercentage": "autoscaling/v1: the pods' average CPU use to "
                                                                  "hold, as a percentage of their requests; "
                                                                  "defaults to 80.",
    "HorizontalPodAutoscalerStatus.currentCPUUtilizationPercentage": "autoscaling/v1: the pods' average CPU use "
                                                                     "last measured, as a percentage of their "
                                                                     "requests.",
    "HPAScalingRules.stabilizationWindowSeconds": "How many seconds of past recommendations to consider "
                                                  "(0 to 3600); defaults to 0 up and 300 down.",
    "HPAScalingRules.selectPolicy": "Which policy applies: Max (the largest change, default), Min, or Disabled "
                                    "(no scaling in this direction).",
    "HPAScalingRules.policies": "The limits of one step; at least one.",
    "HPAScalingRules.tolerance": "The relative difference between the metric and its target below which the "
                                 "autoscaler does not scale.",
    "HPAScalingPolicy.periodSeconds": "The window the policy limits, 1 to 1800 seconds.",
    "MetricTarget.averageUtilization": "The target average utilization, as a percentage of the pods' requests "
                                       "(Resource and ContainerResource metrics).",
    # PodDisruptionBudget and Eviction
    "PodDisruptionBudgetSpec.minAvailable": "The number (or percentage of the controllers' replicas) of selected "
                                            "pods that must stay available after an eviction. Exclusive with "
                                            "maxUnavailable.",
    "PodDisruptionBudgetSpec.maxUnavailable": "The number (or percentage of the controllers' replicas) of selected "
                                              "pods that may be unavailable after an eviction. Exclusive with "
                                              "minAvailable.",
    "PodDisruptionBudgetSpec.selector": "The pods the budget guards; an empty selector selects every pod in the "
                                        "namespace, a missing one none.",
    "PodDisruptionBudgetSpec.unhealthyPodEvictionPolicy": "When a pod that is not Ready may be evicted: "
                                                          "IfHealthyBudget (default) only while the application has "
                                                          "its desired healthy pods, AlwaysAllow always.",
    "PodDisruptionBudgetStatus.observedGeneration": "The generation of the budget the status was computed for; "
                                                    "evictions wait until it is current.",
    "PodDisruptionBudgetStatus.disruptedPods": "Pods an eviction let go that the controller has not seen deleted "
                                               "yet, with the time of the eviction.",
    "PodDisruptionBudgetStatus.disruptionsAllowed": "How many more pods may be evicted now.",
    "PodDisruptionBudgetStatus.currentHealthy": "Selected pods that are Ready and not being deleted.",
    "PodDisruptionBudgetStatus.desiredHealthy": "The fewest healthy pods the budget keeps.",
    "PodDisruptionBudgetStatus.expectedPods": "The pods the budget counts: the selected pods for an integer "
                                              "minAvailable, else the replicas of their controllers.",
    "PodDisruptionBudgetStatus.conditions": "DisruptionAllowed: True while an eviction would be allowed.",
    "Eviction.deleteOptions": "How the pod is deleted once the eviction is allowed.",
    "*.apiVersion": "The versioned schema of this representation of an object. Servers convert recognized "
                    "schemas to the latest internal value and may reject unrecognized values.",
    "*.kind": "The REST resource this object represents, in CamelCase. Servers may infer it from the endpoint "
              "the client submits requests to. Cannot be updated.",
    "*.metadata": "Standard object metadata.",
    "*.listMetadata": "Standard list metadata.",
    "*.spec": "The desired state, set by the user.",
    "*.status": "The observed state, written by the system. Read-only.",
    "ListMeta.resourceVersion": "The resource version the list was read at; watch from it to see every later change.",
    "ListMeta.continue": "Set when more items are available; pass it as the continue parameter to read the next page.",
    # ObjectMeta
    "ObjectMeta.name": "Name must be unique within a namespace (or the cluster for cluster-scoped kinds). "
                       "Cannot be updated.",
    "ObjectMeta.generateName": "A prefix the server uses to generate a unique name when name is empty.",
    "ObjectMeta.namespace": "The namespace of a namespaced object. Empty means \"default\" on create.",
    "ObjectMeta.uid": "The unique id the server gave the object on creation. Read-only.",
    "ObjectMeta.resourceVersion": "An opaque value that changes whenever the object changes; used for optimistic "
                                  "concurrency and watches. Read-only.",
    "ObjectMeta.generation": "A sequence number of changes to the desired state. Read-only.",
    "ObjectMeta.creationTimestamp": "When the object was created (RFC 3339). Read-only.",
    "ObjectMeta.deletionTimestamp": "When the object will be deleted, set once deletion was requested and "
                                    "finalizers remain. Read-only.",
    "ObjectMeta.labels": "Key/value pairs for organizing and selecting objects.",
    "ObjectMeta.annotations": "Key/value pairs for tools and extensions; not used to select objects.",
    "ObjectMeta.ownerReferences": "Objects this object depends on; it is garbage-collected when all owners are gone.",
    "ObjectMeta.finalizers": "Must be empty before the object is removed from storage; each entry names a "
                             "controller that still has cleanup to do.",
    # PersistentVolume
    "PersistentVolume.spec": "How the volume is provided and how it may be used.",
    "PersistentVolume.status": "The current state of the volume. Read-only.",
    "PersistentVolumeSpec.capacity": "The volume's resources; \"storage\" is its size.",
    "PersistentVolumeSpec.accessModes": "How the volume can be mounted: ReadWriteOnce (one node read-write), "
                                        "ReadOnlyMany, ReadWriteMany, ReadWriteOncePod (one pod).",
    "PersistentVolumeSpec.claimRef": "The claim this volume is bound to, set by the binder or pre-set by an "
                                     "administrator to reserve the volume for one claim.",
    "PersistentVolumeSpec.persistentVolumeReclaimPolicy": "What happens when the claim is released: Retain keeps "
                                                          "the volume for manual reclamation, Delete removes it "
                                                          "and its storage, Recycle (deprecated) scrubs it.",
    "PersistentVolumeSpec.storageClassName": "The StorageClass this volume belongs to; empty means no class.",
    "PersistentVolumeSpec.mountOptions": "Mount options used when the volume is mounted; not validated.",
    "PersistentVolumeSpec.volumeMode": "Filesystem (default) or Block.",
    "PersistentVolumeSpec.nodeAffinity": "The nodes the volume can be reached from; pods using it are scheduled "
                                         "there.",
    "PersistentVolumeSpec.volumeAttributesClassName": "The VolumeAttributesClass of the volume.",
    "PersistentVolumeSpec.hostPath": "A directory on the node, " + _SOURCE + ". For single-node testing only.",
    "PersistentVolumeSpec.local": "A local disk, partition or directory of one node, " + _SOURCE + ".",
    "PersistentVolumeSpec.nfs": "An NFS export, " + _SOURCE + ".",
    "PersistentVolumeSpec.iscsi": "An iSCSI disk, " + _SOURCE + ".",
    "PersistentVolumeSpec.csi": "A volume of an external CSI driver, " + _SOURCE + ".",
    "PersistentVolumeStatus.phase": "Available (free), Bound (to a claim), Released (claim deleted, not yet "
                                    "reclaimed), Failed (reclamation failed) or Pending.",
    "PersistentVolumeStatus.message": "A human-readable message about the volume's state.",
    "PersistentVolumeStatus.reason": "A brief CamelCase reason for a failure.",
    "PersistentVolumeStatus.lastPhaseTransitionTime": "When the volume last changed phase.",
    # PersistentVolumeClaim
    "PersistentVolumeClaim.spec": "What the claim asks for.",
    "PersistentVolumeClaim.status": "The current state of the claim. Read-only.",
    "PersistentVolumeClaimSpec.accessModes": "The access modes the volume must offer.",
    "PersistentVolumeClaimSpec.selector": "A label query over volumes to consider for binding.",
    "PersistentVolumeClaimSpec.resources": "The minimum resources the volume must have; requests.storage is the "
                                           "size. Raising it expands the volume when the class allows it.",
    "PersistentVolumeClaimSpec.volumeName": "Bind to this PersistentVolume by name.",
    "PersistentVolumeClaimSpec.storageClassName": "The StorageClass the claim asks for; empty asks for a volume "
                                                  "without class, unset means the default class.",
    "PersistentVolumeClaimSpec.volumeMode": "Filesystem (default) or Block.",
    "PersistentVolumeClaimSpec.dataSource": "An object to populate the new volume from: a PersistentVolumeClaim "
                                            "or a VolumeSnapshot (apiGroup snapshot.storage.k8s.io) in the same "
                                            "namespace. When only one of dataSource and dataSourceRef is given, "
                                            "the server copies it into the other (unless dataSourceRef names a "
                                            "namespace); when both are given they must be equal.",
    "VolumeSnapshotSpec.source": "Required; it cannot change once the snapshot is created.",
    "VolumeSnapshotSpec.volumeSnapshotClassName": "The VolumeSnapshotClass to use; left out, the default class "
                                                  "of the source's driver. May not be the empty string.",
    "VolumeSnapshotSource.persistentVolumeClaimName": "The claim, in the snapshot's namespace, to take a new "
                                                      "snapshot of. Immutable.",
    "VolumeSnapshotSource.volumeSnapshotContentName": "An existing VolumeSnapshotContent to bind this snapshot to. "
                                                      "Immutable.",
    "VolumeSnapshotStatus.boundVolumeSnapshotContentName": "The VolumeSnapshotContent this snapshot is bound to.",
    "VolumeSnapshotStatus.creationTime": "When the storage system took the snapshot.",
    "VolumeSnapshotStatus.readyToUse": "Whether a volume may be restored from the snapshot now.",
    "VolumeSnapshotStatus.restoreSize": "The smallest size of a volume restored from this snapshot.",
    "VolumeSnapshotStatus.error": "The last error met while taking the snapshot, if any.",
    "VolumeSnapshotStatus.volumeGroupSnapshotName": "The group snapshot this snapshot is part of, if any.",
    "VolumeSnapshotError.time": "When the error happened.",
    "VolumeSnapshotError.message": "What went wrong (never secrets).",
    "VolumeSnapshotContentSpec.volumeSnapshotRef": "The VolumeSnapshot this content is bound to; name and namespace "
                                                   "are required.",
    "VolumeSnapshotContentSpec.deletionPolicy": "Delete: the snapshot on the storage system is deleted with its "
                                                "VolumeSnapshot; Retain: it is kept. Required.",
    "VolumeSnapshotContentSpec.driver": "The driver that took (or takes) the snapshot. Required.",
    "VolumeSnapshotContentSpec.volumeSnapshotClassName": "The VolumeSnapshotClass the snapshot was taken with.",
    "VolumeSnapshotContentSpec.source": "Required; it cannot change once the content is created.",
    "VolumeSnapshotContentSpec.sourceVolumeMode": "Filesystem or Block: the mode of the snapshotted volume. "
                                                  "Immutable once set.",
    "VolumeSnapshotContentSource.volumeHandle": "The driver's id of the volume to take a snapshot of. Immutable.",
    "VolumeSnapshotContentSource.snapshotHandle": "The driver's id of an existing snapshot. Immutable.",
    "VolumeSnapshotContentStatus.snapshotHandle": "The driver's id of the snapshot.",
    "VolumeSnapshotContentStatus.creationTime": "When the snapshot was taken, in nanoseconds since the Unix epoch.",
    "VolumeSnapshotContentStatus.restoreSize": "The snapshot's size in bytes.",
    "VolumeSnapshotContentStatus.readyToUse": "Whether a volume may be restored from the snapshot now.",
    "VolumeSnapshotContentStatus.error": "The last error the driver reported, if any.",
    "VolumeSnapshotContentStatus.volumeGroupSnapshotHandle": "The driver's id of the group snapshot, if any.",
    "VolumeSnapshotClass.driver": "The driver that takes this class's snapshots. Required.",
    "VolumeSnapshotClass.parameters": "Driver-specific parameters (for backup.stowage.io: store, and the "
                                      "snapshotter secret's name and namespace).",
    "VolumeSnapshotClass.deletionPolicy": "Delete or Retain: what happens to a content taken with this class when "
                                          "its VolumeSnapshot is deleted. Required.",
    "ReferenceGrantSpec.from": "The groups, kinds and namespaces that may refer here (1 to 16 entries).",
    "ReferenceGrantSpec.to": "The groups and kinds here that may be referred to (1 to 16 entries).",
    "ReferenceGrantFrom.group": "The referring object's API group; empty for the core group.",
    "ReferenceGrantFrom.kind": "The referring object's kind (PersistentVolumeClaim for a claim's data source).",
    "ReferenceGrantFrom.namespace": "The referring object's namespace.",
    "ReferenceGrantTo.group": "The referred-to object's API group; empty for the core group.",
    "ReferenceGrantTo.kind": "The referred-to object's kind.",
    "ReferenceGrantTo.name": "The referred-to object's name; left out, every object of that kind.",
    "PersistentVolumeClaimSpec.dataSourceRef": "An object to populate the new volume from, possibly in another "
                                               "API group or, with namespace, in another namespace (allowed only "
                                               "by a ReferenceGrant there; dataSource must then be left out).",
    "PersistentVolumeClaimStatus.phase": "Pending, Bound or Lost.",
    "PersistentVolumeClaimStatus.accessModes": "The access modes the bound volume offers.",
    "PersistentVolumeClaimStatus.capacity": "The resources of the bound volume.",
    "PersistentVolumeClaimStatus.conditions": "Conditions of the claim, such as Resizing.",
    "PersistentVolumeClaimStatus.allocatedResources": "The resources allocated to the claim during an expansion.",
    "PersistentVolumeClaimSpec.volumeAttributesClassName": "The VolumeAttributesClass the volume should have (CSI "
                                                           "volumes only); a bound claim may change it.",
    "PersistentVolumeClaimStatus.currentVolumeAttributesClassName": "The VolumeAttributesClass applied to the "
                                                                    "bound volume.",
    "PersistentVolumeClaimStatus.modifyVolumeStatus": "The change of VolumeAttributesClass under way: its target "
                                                      "and Pending, InProgress or Infeasible.",
    "VolumeAttributesClass.driverName": "The CSI driver whose volumes this class applies to. Cannot be updated.",
    "VolumeAttributesClass.parameters": "The attributes passed to the driver (at least one). Cannot be updated.",
    # StorageClass
    "StorageClass.provisioner": "The provisioner that creates volumes of this class. Cannot be updated.",
    "StorageClass.parameters": "Parameters passed to the provisioner. Cannot be updated.",
    "StorageClass.reclaimPolicy": "The reclaim policy of volumes this class provisions: Delete (default) or Retain.",
    "StorageClass.mountOptions": "Mount options of volumes this class provisions.",
    "StorageClass.allowVolumeExpansion": "Whether claims of this class may be expanded.",
    "StorageClass.volumeBindingMode": "When claims are bound and provisioned: Immediate (default) or "
                                      "WaitForFirstConsumer (once a pod using the claim is scheduled).",
    "StorageClass.allowedTopologies": "The topology domains volumes of this class may be provisioned in.",
    # Pod
    "Pod.spec": "The desired behaviour of the pod.",
    "Pod.status": "The most recently observed state of the pod. Read-only.",
    "PodSpec.containers": "The containers of the pod. At least one. Cannot be updated.",
    "PodSpec.initContainers": "Containers that run to completion, in order, before the app containers start.",
    "PodSpec.ephemeralContainers": "Debugging containers added to the running pod through its ephemeralcontainers "
                                   "subresource (kubectl debug). Cannot be set on create nor changed by an update "
                                   "of the pod.",
    "PodSpec.volumes": "Volumes the pod's containers may mount.",
    "PodSpec.nodeName": "The node the pod runs on; set by the scheduler, or by the user to bypass it.",
    "PodSpec.nodeSelector": "Labels a node must have for the pod to be scheduled on it.",
    "PodSpec.restartPolicy": "Always (default), OnFailure or Never.",
    "PodSpec.terminationGracePeriodSeconds": "Seconds the pod gets to stop after SIGTERM before it is killed.",
    "PodSpec.serviceAccountName": "The service account the pod runs as.",
    "PodSpec.affinity": "Scheduling constraints on nodes and other pods.",
    "PodSpec.tolerations": "Taints the pod tolerates.",
    "PodSpec.securityContext": "Security attributes applied to every container of the pod.",
    "Container.name": "The container's name, unique within the pod (a DNS label).",
    "Container.image": "The container image.",
    "Container.command": "The entrypoint; the image's ENTRYPOINT when empty.",
    "Container.args": "Arguments to the entrypoint; the image's CMD when empty.",
    "Container.env": "Environment variables of the container.",
    "Container.ports": "Ports the container exposes (informational).",
    "Container.volumeMounts": "Pod volumes mounted into the container's filesystem.",
    "Container.volumeDevices": "Block volumes exposed to the container as devices.",
    "Container.resources": "Compute resources the container needs (requests) and may use (limits).",
    "Container.securityContext": "Security options of the container.",
    "Volume.name": "The volume's name, unique within the pod (a DNS label).",
    "Volume.persistentVolumeClaim": "A claim in the pod's namespace, " + _SOURCE + ".",
    "Volume.emptyDir": "A temporary directory that shares the pod's lifetime, " + _SOURCE + ".",
    "Volume.hostPath": "A directory on the node, " + _SOURCE + ".",
    "Volume.configMap": "A ConfigMap's data as files, " + _SOURCE + ".",
    "Volume.secret": "A Secret's data as files, " + _SOURCE + ".",
    "Volume.ephemeral": "A claim created and deleted with the pod, " + _SOURCE + ".",
    # Workloads
    "StatefulSetSpec.replicas": "The desired number of pods (default 1).",
    "StatefulSetSpec.serviceName": "The governing Service that gives the pods their network identity.",
    "StatefulSetSpec.selector": "A label query over pods that must match the template's labels.",
    "StatefulSetSpec.template": "The pod template; each pod gets a claim per volume claim template.",
    "StatefulSetSpec.volumeClaimTemplates": "Claims each pod gets, named <template>-<statefulset>-<ordinal>.",
    "StatefulSetSpec.podManagementPolicy": "OrderedReady (default): one pod at a time in order; Parallel: all at once.",
    "StatefulSetSpec.persistentVolumeClaimRetentionPolicy": "Whether claims from the templates are deleted when the "
                                                            "set is deleted or scaled down.",
    "HostPathVolumeSource.path": "The path of the directory on the node.",
    "HostPathVolumeSource.type": "What must be at the path; empty means no check.",
    "LocalVolumeSource.path": "The full path of the volume on the node.",
    "NFSVolumeSource.server": "The host name or IP address of the NFS server.",
    "NFSVolumeSource.path": "The exported path.",
    "NFSVolumeSource.readOnly": "Mount read-only.",
    # More pod and container fields
    "PodSpec.hostNetwork": "Use the node's network namespace.",
    "PodSpec.dnsPolicy": "How the pod's DNS is configured: ClusterFirst (default), ClusterFirstWithHostNet, "
                         "Default or None.",
    "PodSpec.schedulerName": "The scheduler that places the pod.",
    "PodSpec.priorityClassName": "The pod's priority class.",
    "PodSpec.imagePullSecrets": "Secrets with registry credentials for pulling the images.",
    "PodSpec.hostname": "The pod's host name; the pod's name when empty.",
    "PodSpec.subdomain": "With hostname, gives the pod the DNS name <hostname>.<subdomain>.<namespace>.svc.",
    "PodSpec.activeDeadlineSeconds": "Seconds the pod may be active before the system fails it.",
    "PodSpec.topologySpreadConstraints": "How pods of a group spread across topology domains.",
    "PodStatus.phase": "Pending, Running, Succeeded, Failed or Unknown.",
    "PodStatus.conditions": "The pod's conditions, such as Ready and PodScheduled.",
    "PodStatus.podIP": "The pod's IP address.",
    "PodStatus.hostIP": "The IP address of the pod's node.",
    "PodStatus.containerStatuses": "The state of each container.",
    "PodStatus.startTime": "When the node accepted the pod.",
    "Container.workingDir": "The container's working directory; the image's when empty.",
    "Container.imagePullPolicy": "Always, Never or IfNotPresent (default, Always for the :latest tag).",
    "Container.livenessProbe": "Restart the container when this check fails.",
    "Container.readinessProbe": "Remove the pod from service endpoints while this check fails.",
    "Container.startupProbe": "Other probes wait until this check succeeds once.",
    "Container.lifecycle": "Actions run after the container starts and before it stops.",
    "Container.envFrom": "Sources of environment variables (every key of a ConfigMap or Secret).",
    "Container.stdin": "Keep a stdin buffer open for the container.",
    "Container.tty": "Allocate a TTY for the container.",
    "CustomResourceDefinitionSpec.group": "The API group of the kind: a DNS domain with at least one dot.",
    "CustomResourceDefinitionSpec.names": "The plural, singular, kind, list kind, short names and categories.",
    "CustomResourceDefinitionSpec.scope": "Namespaced or Cluster. Cannot be changed.",
    "CustomResourceDefinitionSpec.versions": "The versions served; exactly one is the storage version.",
    "CustomResourceValidation.openAPIV3Schema": "The OpenAPI v3 schema of the kind's objects.",
    "EphemeralContainer.targetContainerName": "The container (of containers or initContainers) whose process, IPC "
                                              "and UTS namespaces this one joins, so that it sees that container's "
                                              "processes.",
    "VolumeMount.name": "The name of the pod volume to mount.",
    "VolumeMount.mountPath": "Where in the container the volume is mounted; must not contain ':'.",
    "VolumeMount.subPath": "A path within the volume to mount instead of its root.",
    "VolumeMount.readOnly": "Mount read-only (default false).",
    "VolumeMount.mountPropagation": "How mounts propagate between host and container: None (default), "
                                    "HostToContainer or Bidirectional.",
    "VolumeDevice.name": "The name of the pod's block volume.",
    "VolumeDevice.devicePath": "Where in the container the device appears.",
    "EnvVar.name": "The variable's name.",
    "EnvVar.value": "The variable's value; $(VAR) references to earlier variables are expanded.",
    "EnvVar.valueFrom": "Where the value comes from instead of value.",
    "ContainerPort.containerPort": "The port number on the pod's IP address.",
    "ContainerPort.name": "A name services can refer to the port by (an IANA service name).",
    "ContainerPort.protocol": "TCP (default), UDP or SCTP.",
    "PersistentVolumeClaimVolumeSource.claimName": "The claim's name, in the pod's namespace.",
    "PersistentVolumeClaimVolumeSource.readOnly": "Mount the claim's volume read-only.",
    "EmptyDirVolumeSource.medium": "Where the directory is kept: the node's default storage (\"\") or Memory.",
    "EmptyDirVolumeSource.sizeLimit": "The most the directory may hold.",
    "VolumeResourceRequirements.requests": "The minimum resources; requests.storage is the claim's size.",
    "VolumeResourceRequirements.limits": "The maximum resources.",
    "ResourceRequirements.requests": "The resources the container needs; scheduling reserves them.",
    "ResourceRequirements.limits": "The most the container may use.",
    "ObjectReference.kind": "The kind of the referent.",
    "ObjectReference.name": "The name of the referent.",
    "ObjectReference.namespace": "The namespace of the referent.",
    "ObjectReference.uid": "The uid of the referent.",
    "ObjectReference.apiVersion": "The API version of the referent.",
    "ObjectReference.resourceVersion": "The resource version of the referent when the reference was made.",
    "LabelSelector.matchLabels": "Labels an object must have, each key with this value.",
    "LabelSelector.matchExpressions": "Requirements on labels, all of which must hold.",
    "LabelSelectorRequirement.key": "The label key.",
    "LabelSelectorRequirement.operator": "In, NotIn, Exists or DoesNotExist.",
    "LabelSelectorRequirement.values": "Values for In and NotIn; empty for Exists and DoesNotExist.",
    "VolumeNodeAffinity.required": "Node selector terms, any of which a node must match to reach the volume.",
    "StatefulSetSpec.updateStrategy": "How pods are replaced when the template changes: RollingUpdate (default) "
                                      "or OnDelete.",
    "StatefulSetSpec.revisionHistoryLimit": "How many old revisions are kept (default 10).",
    "StatefulSetSpec.minReadySeconds": "Seconds a new pod must be ready before it counts as available.",
    "StatefulSetStatus.replicas": "The number of pods the set has.",
    "StatefulSetStatus.readyReplicas": "The number of pods that are Ready.",
    "StatefulSetStatus.currentRevision": "The revision that made the pods of the current generation.",
    "StatefulSetStatus.updateRevision": "The revision the pods are being updated to.",
    "ServiceSpec.type": "ClusterIP (default), NodePort, LoadBalancer or ExternalName.",
    "ServiceSpec.selector": "Pods with these labels receive the service's traffic.",
    "ServiceSpec.ports": "The ports the service exposes.",
    "ServiceSpec.clusterIP": "The service's virtual IP; None makes a headless service.",
    "ServicePort.port": "The port the service exposes.",
    "ServicePort.targetPort": "The pods' port, a number or a container port's name; port when empty.",
    "ServicePort.nodePort": "The port on every node for NodePort and LoadBalancer services.",
    "VolumeAttachmentSpec.attacher": "The driver that attaches the volume.",
    "VolumeAttachmentSpec.nodeName": "The node the volume is attached to.",
    "VolumeAttachmentSpec.source": "The volume to attach.",
    "VolumeAttachmentStatus.attached": "Whether the volume is attached.",
    "Secret.data": "Secret values, base64-encoded, by key.",
    "Secret.stringData": "Secret values in plain text, merged into data on write; never read back.",
    "Secret.type": "How the data is used, such as Opaque (default) or kubernetes.io/tls.",
    "ConfigMap.data": "Configuration values by key.",
    "ConfigMap.binaryData": "Binary values, base64-encoded, by key.",
    "*.immutable": "When true, the data can no longer be changed, only the object deleted.",
}
