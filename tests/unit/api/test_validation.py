"""validate(): Kubernetes field paths and wording, every error collected."""
from __future__ import annotations

import copy

import pytest

from storage.api.defaults import apply_defaults
from storage.api.quantity import QUANTITY_ERROR
from storage.api.validation import validate, validate_status
from storage.errors import BadRequest, Invalid

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start "
    "and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end "
    "with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


def messages(obj, old=None):
    with pytest.raises(Invalid) as exc:
        validate(obj, old)
    return [e.message() for e in exc.value.errors]


def pv(**spec):
    base = {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/data"}}
    base.update(spec)
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv1"}, "spec": base}


def pvc(**spec):
    base = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    base.update(spec)
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c1", "namespace": "default"}, "spec": base}


def sc(**fields):
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "fast"}, "provisioner": "example.com/fast", **fields}


def pod(**spec):
    base = {"containers": [{"name": "main", "image": "busybox"}]}
    base.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "namespace": "default"}, "spec": base}


def sts(**spec):
    base = {
        "serviceName": "db",
        "replicas": 3,
        "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "db"}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
    }
    base.update(spec)
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "default"}, "spec": base}


# --- names, labels, metadata ---

def test_name_must_be_dns1123_subdomain_with_kubernetes_message():
    obj = pvc()
    obj["metadata"]["name"] = "Bad_Name"
    assert messages(obj) == [f'metadata.name: Invalid value: "Bad_Name": {SUBDOMAIN_MSG}']


def test_name_required():
    obj = pvc()
    del obj["metadata"]["name"]
    assert messages(obj) == ["metadata.name: Required value: name or generateName is required"]


def test_namespace_name_is_a_dns_label():
    msgs = messages({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}})
    assert msgs == [f'metadata.name: Invalid value: "a.b": {LABEL_MSG}']


def test_service_name_is_a_dns1035_label():
    msgs = messages({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "1svc"}, "spec": {"ports": [{"port": 80}]}})
    assert len(msgs) == 1 and msgs[0].startswith('metadata.name: Invalid value: "1svc": a DNS-1035 label must consist of')


def test_cluster_scoped_kind_refuses_namespace():
    obj = pv()
    obj["metadata"]["namespace"] = "default"
    assert messages(obj) == ["metadata.namespace: Forbidden: not allowed on this type"]


def test_label_keys_values_and_annotation_keys():
    obj = pvc()
    obj["metadata"]["labels"] = {"bad key": "ok", "good": "-bad-", "example.com/x": "y"}
    obj["metadata"]["annotations"] = {"a/b/c": "v", "volume.beta.kubernetes.io/storage-class": "fast"}
    msgs = messages(obj)
    assert len(msgs) == 3
    assert msgs[0].startswith('metadata.labels: Invalid value: "bad key": name part must consist of alphanumeric characters')
    assert msgs[1].startswith('metadata.labels: Invalid value: "-bad-": a valid label must be an empty string or consist of')
    assert msgs[2].startswith('metadata.annotations: Invalid value: "a/b/c": a qualified name must consist of')


def test_owner_references_need_identity():
    obj = pvc()
    obj["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db"}]
    assert messages(obj) == ['metadata.ownerReferences.uid: Invalid value: "": uid must not be empty']


def test_metadata_identity_is_immutable():
    old = validate(pvc())
    new = copy.deepcopy(old)
    new["metadata"]["name"] = "other"
    new["metadata"]["uid"] = "u2"
    old["metadata"]["uid"] = "u1"
    assert messages(new, old) == [
        'metadata.name: Invalid value: "other": field is immutable',
        'metadata.uid: Invalid value: "u2": field is immutable',
    ]


def test_unknown_kind_and_version_are_bad_requests():
    with pytest.raises(BadRequest):
        validate({"apiVersion": "v1", "kind": "Deployment", "metadata": {"name": "x"}})
    with pytest.raises(BadRequest, match='no kind "StorageClass" is registered for version "v1"'):
        validate({**sc(), "apiVersion": "v1"})


# --- persistent volumes ---

def test_pv_required_fields_collected_together():
    obj = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv1"}, "spec": {}}
    assert messages(obj) == [
        "spec.accessModes: Required value",
        "spec.capacity: Required value",
        "spec: Required value: must specify a volume type",
    ]


def test_pv_reclaim_policy_enum():
    assert messages(pv(persistentVolumeReclaimPolicy="Foo")) == [
        'spec.persistentVolumeReclaimPolicy: Unsupported value: "Foo": supported values: "Delete", "Recycle", "Retain"'
    ]


def test_pv_exactly_one_source_and_source_fields():
    assert messages(pv(nfs={"server": "s", "path": "exports"})) == [
        "spec.nfs: Forbidden: may not specify more than 1 volume type",
    ]
    obj = pv()
    obj["spec"]["hostPath"] = {}
    assert messages(obj) == ["spec.hostPath.path: Required value"]
    obj = pv()
    del obj["spec"]["hostPath"]
    obj["spec"]["nfs"] = {"server": "s", "path": "exports"}
    assert messages(obj) == ['spec.nfs.path: Invalid value: "exports": must be an absolute path']


def test_pv_access_modes_capacity_and_volume_mode():
    msgs = messages(pv(accessModes=["ReadWriteOnce", "ReadWriteOncePod", "RWX"], capacity={"storage": "0"}, volumeMode="Disk"))
    assert msgs == [
        'spec.accessModes: Unsupported value: "RWX": supported values: "ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"',
        "spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes",
        'spec.capacity.storage: Invalid value: "0": must be greater than zero',
        'spec.volumeMode: Unsupported value: "Disk": supported values: "Block", "Filesystem"',
    ]


def undecodable(obj, old=None) -> str:
    with pytest.raises(BadRequest) as exc:
        validate(obj, old)
    return exc.value.message


def test_k1_pv_bad_capacity_quantity_is_a_decode_error():
    assert undecodable(pv(capacity={"storage": "1GB"})) == (
        f'PersistentVolume in version "v1" cannot be handled as a PersistentVolume: {QUANTITY_ERROR}')


def test_local_pv_needs_node_affinity():
    obj = pv()
    del obj["spec"]["hostPath"]
    obj["spec"]["local"] = {"path": "/mnt/disk"}
    assert messages(obj) == ["spec.nodeAffinity: Required value: Local volume requires node affinity"]


def test_pv_source_and_volume_mode_immutable():
    old = validate(apply_defaults(pv()))
    new = copy.deepcopy(old)
    new["spec"]["hostPath"]["path"] = "/other"
    new["spec"]["volumeMode"] = "Block"
    assert messages(new, old) == [
        "spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation",
        'spec.volumeMode: Invalid value: "Block": field is immutable',
    ]
    # The binder's writes (claimRef, capacity growth, reclaim policy edits) stay allowed.
    ok = copy.deepcopy(old)
    ok["spec"]["claimRef"] = {"name": "c1", "namespace": "default", "uid": "u"}
    ok["spec"]["persistentVolumeReclaimPolicy"] = "Delete"
    validate(ok, old)


# --- claims ---

def test_k1_pvc_bad_quantity_reports_kubernetes_message():
    obj = pvc(resources={"requests": {"storage": "1Gib"}})
    assert undecodable(obj) == (
        f'PersistentVolumeClaim in version "v1" cannot be handled as a PersistentVolumeClaim: {QUANTITY_ERROR}')


def test_q3_pvc_storage_request_required_and_positive():
    assert messages(pvc(resources={})) == ["spec.resources.requests.storage: Required value"]
    assert messages(pvc(resources={"requests": {"storage": "0"}})) == [
        'spec.resources.requests.storage: Invalid value: "0": must be greater than zero'
    ]
    assert messages(pvc(resources={"requests": {"storage": "-1Gi"}})) == [
        'spec.resources.requests.storage: Invalid value: "-1Gi": must be greater than zero'
    ]


def test_pvc_access_modes_required():
    assert messages(pvc(accessModes=[])) == ["spec.accessModes: Required value: at least 1 access mode is required"]


def test_pvc_selector_operators_checked():
    msgs = messages(pvc(selector={"matchExpressions": [{"key": "a", "operator": "Near", "values": ["x"]}, {"key": "b", "operator": "In"}]}))
    assert msgs == [
        'spec.selector.matchExpressions[0].operator: Unsupported value: "Near": supported values: "DoesNotExist", "Exists", "In", "NotIn"',
        "spec.selector.matchExpressions[1].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
    ]


def test_p4_bound_claim_may_grow_not_shrink():
    old = validate(apply_defaults(pvc(resources={"requests": {"storage": "2Gi"}})))
    old["status"] = {"phase": "Bound"}
    grown = copy.deepcopy(old)
    grown["spec"]["resources"]["requests"]["storage"] = "3Gi"
    assert validate(grown, old)["spec"]["resources"]["requests"]["storage"] == "3Gi"
    shrunk = copy.deepcopy(old)
    shrunk["spec"]["resources"]["requests"]["storage"] = "1Gi"
    assert messages(shrunk, old) == ["spec.resources.requests.storage: Forbidden: field can not be less than previous value"]


def test_p4_pending_claim_spec_immutable_volume_mode_immutable():
    old = validate(apply_defaults(pvc()))
    grown = copy.deepcopy(old)
    grown["spec"]["resources"]["requests"]["storage"] = "3Gi"
    assert messages(grown, old) == [
        "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"
    ]
    block = copy.deepcopy(old)
    block["spec"]["volumeMode"] = "Block"
    assert messages(block, old)[-1] == 'spec.volumeMode: Invalid value: "Block": field is immutable'


def test_binder_may_set_volume_name_and_p3_class_once():
    old = validate(apply_defaults(pvc()))
    new = copy.deepcopy(old)
    new["spec"]["volumeName"] = "pv1"
    new["spec"]["storageClassName"] = "standard"
    out = validate(new, old)  # raises Invalid if either change is refused
    assert (out["spec"]["volumeName"], out["spec"]["storageClassName"]) == ("pv1", "standard")


# --- storage classes ---

def test_storage_class_provisioner_required_and_enums():
    obj = sc(reclaimPolicy="Recycle", volumeBindingMode="Later")
    del obj["provisioner"]
    assert messages(obj) == [
        "provisioner: Required value",
        'reclaimPolicy: Unsupported value: "Recycle": supported values: "Delete", "Retain"',
        'volumeBindingMode: Unsupported value: "Later": supported values: "Immediate", "WaitForFirstConsumer"',
    ]


def test_storage_class_immutable_fields():
    old = validate(apply_defaults(sc(parameters={"type": "gp2"})))
    new = copy.deepcopy(old)
    new.update(parameters={"type": "io1"}, provisioner="other.example.com/x", reclaimPolicy="Retain", volumeBindingMode="WaitForFirstConsumer")
    assert messages(new, old) == [
        "parameters: Forbidden: updates to parameters are forbidden.",
        "provisioner: Forbidden: updates to provisioner are forbidden.",
        "reclaimPolicy: Forbidden: updates to reclaimPolicy are forbidden.",
        'volumeBindingMode: Invalid value: "WaitForFirstConsumer": field is immutable',
    ]
    ok = copy.deepcopy(old)
    ok["allowVolumeExpansion"] = True
    validate(ok, old)


def test_legacy_storage_class_version_converted():
    out = validate({**sc(), "apiVersion": "storage.k8s.io/v1beta1"})
    assert out["apiVersion"] == "storage.k8s.io/v1"


# --- pods ---

def test_pod_containers_required():
    assert messages(pod(containers=[])) == ["spec.containers: Required value"]


def test_pod_container_rules():
    containers = [
        {"name": "Main", "ports": [{"containerPort": 70000, "name": "way-too-long-port-name", "protocol": "ICMP"}]},
        {"name": "side", "image": "x", "volumeMounts": [{"name": "nope", "mountPath": "/x", "subPath": "/abs"}]},
        {"name": "side", "image": "x", "env": [{"name": "A", "value": "v", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]},
    ]
    assert messages(pod(containers=containers, restartPolicy="Sometimes")) == [
        f'spec.containers[0].name: Invalid value: "Main": {LABEL_MSG}',
        "spec.containers[0].image: Required value",
        "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        'spec.containers[0].ports[0].protocol: Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"',
        'spec.containers[0].ports[0].name: Invalid value: "way-too-long-port-name": must be no more than 15 characters',
        'spec.containers[1].volumeMounts[0].name: Not found: "nope"',
        'spec.containers[1].volumeMounts[0].subPath: Invalid value: "/abs": must be a relative path',
        'spec.containers[2].name: Duplicate value: "side"',
        'spec.containers[2].env[0].valueFrom: Invalid value: "": may not be specified when `value` is not empty',
        'spec.containers[2].env[0].valueFrom.fieldRef.fieldPath: Unsupported value: "spec.bogus": supported values: '
        '"metadata.annotations", "metadata.labels", "metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName", '
        '"spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs"',
        'spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "Never", "OnFailure"',
    ]


def test_pod_volume_needs_exactly_one_source():
    msgs = messages(pod(volumes=[{"name": "a"}, {"name": "b", "emptyDir": {}, "hostPath": {"path": "/x"}}, {"name": "b", "emptyDir": {}}]))
    assert msgs == [
        "spec.volumes[0]: Required value: must specify a volume type",
        "spec.volumes[1].emptyDir: Forbidden: may not specify more than 1 volume type",
        'spec.volumes[2].name: Duplicate value: "b"',
    ]


def test_pod_probe_and_resources():
    c = {
        "name": "main", "image": "x",
        "livenessProbe": {"periodSeconds": -1},
        "readinessProbe": {"httpGet": {"port": 0}, "exec": {"command": ["true"]}},
        "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1", "memory": "1Gi"}},
    }
    assert messages(pod(containers=[c])) == [
        "spec.containers[0].resources.requests.cpu: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
        "spec.containers[0].livenessProbe: Required value: must specify a handler type",
        "spec.containers[0].livenessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0",
        "spec.containers[0].readinessProbe.httpGet: Forbidden: may not specify more than 1 handler type",
        "spec.containers[0].readinessProbe.httpGet.port: Invalid value: 0: must be between 1 and 65535, inclusive",
    ]


def test_k1_pod_type_errors_are_decode_errors_naming_the_go_field():
    assert undecodable(pod(terminationGracePeriodSeconds="soon")) == (
        'Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal string into Go struct field '
        'PodSpec.spec.terminationGracePeriodSeconds of type int64')


def test_pod_spec_mostly_immutable_but_node_name_settable_once():
    old = validate(apply_defaults(pod()))
    placed = copy.deepcopy(old)
    placed["spec"]["nodeName"] = "node-1"
    validate(placed, old)
    image = copy.deepcopy(placed)
    image["spec"]["containers"][0]["image"] = "busybox:2"
    validate(image, placed)
    moved = copy.deepcopy(placed)
    moved["spec"]["nodeName"] = "node-2"
    assert messages(moved, placed)[0].startswith("spec: Forbidden: pod updates may not change fields other than")


# --- statefulsets ---

def test_statefulset_valid_with_empty_service_name():
    assert validate(sts(serviceName=""))["spec"]["serviceName"] == ""  # raises Invalid if refused


def test_statefulset_selector_must_match_template():
    obj = sts(selector={"matchLabels": {"app": "other"}})
    assert messages(obj) == [
        'spec.template.metadata.labels: Invalid value: {"app":"db"}: `selector` does not match template `labels`'
    ]
    obj = sts()
    del obj["spec"]["selector"]
    assert messages(obj) == ["spec.selector: Required value"]


def test_statefulset_enums_and_template_rules():
    obj = sts(podManagementPolicy="Random", updateStrategy={"type": "Sometimes"}, replicas=-1,
              persistentVolumeClaimRetentionPolicy={"whenDeleted": "Keep"})
    obj["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    obj["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] = []
    assert messages(obj) == [
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        "spec.podManagementPolicy: Invalid value: \"Random\": must be 'OrderedReady' or 'Parallel'",
        'spec.updateStrategy: Invalid value: {"type":"Sometimes"}: must be \'RollingUpdate\' or \'OnDelete\'',
        'spec.persistentVolumeClaimRetentionPolicy.whenDeleted: Unsupported value: "Keep": supported values: "Delete", "Retain"',
        "spec.volumeClaimTemplates[0].spec.accessModes: Required value: at least 1 access mode is required",
        'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"',
    ]


def test_statefulset_partition_non_negative():
    obj = sts(updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": -1}})
    assert messages(obj) == ["spec.updateStrategy.rollingUpdate.partition: Invalid value: -1: must be greater than or equal to 0"]


S6 = (
    "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
    "'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
)


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s["spec"].update(serviceName="other"),
        lambda s: s["spec"].update(podManagementPolicy="Parallel"),
        lambda s: s["spec"]["selector"]["matchLabels"].update(tier="x"),
        lambda s: s["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"].update(storage="2Gi"),
    ],
)
def test_s6_immutable_statefulset_fields(change):
    old = validate(apply_defaults(sts()))
    new = copy.deepcopy(old)
    change(new)
    assert S6 in messages(new, old)


def test_s6_mutable_statefulset_fields():
    old = validate(apply_defaults(sts()))
    new = copy.deepcopy(old)
    new["spec"].update(replicas=5, minReadySeconds=10, ordinals={"start": 1})
    new["spec"]["updateStrategy"] = {"type": "OnDelete"}
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "db:2"
    new["spec"]["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": "Delete", "whenScaled": "Delete"}
    out = validate(new, old)  # raises Invalid if any of these changes is refused
    assert out["spec"]["replicas"] == 5 and out["spec"]["updateStrategy"]["type"] == "OnDelete"


def test_legacy_statefulset_gets_selector_from_template():
    obj = sts()
    obj["apiVersion"] = "apps/v1beta1"
    del obj["spec"]["selector"]
    out = validate(obj)
    assert out["apiVersion"] == "apps/v1"
    assert out["spec"]["selector"] == {"matchLabels": {"app": "db"}}
    assert out["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert "selector" not in obj["spec"] and obj["apiVersion"] == "apps/v1beta1"  # input untouched


# --- other kinds ---

def test_volume_attachment_rules_and_immutability():
    va = {"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment", "metadata": {"name": "va1"}, "spec": {"source": {}}}
    assert messages(va) == [
        "spec.attacher: Required value",
        "spec.nodeName: Required value",
        "spec.source: Required value: must specify exactly one of inlineVolumeSpec and persistentVolumeName",
    ]
    va["spec"] = {"attacher": "ebs.csi.aws.com", "nodeName": "n1", "source": {"persistentVolumeName": "pv1"}}
    old = validate(va)
    new = copy.deepcopy(old)
    new["spec"]["nodeName"] = "n2"
    assert messages(new, old)[0].startswith("spec: Invalid value:") and messages(new, old)[0].endswith("field is immutable")


def test_service_ports():
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"type": "Bogus", "ports": [{"port": 80}, {"port": 0, "name": "b"}]}}
    assert messages(svc) == [
        'spec.type: Unsupported value: "Bogus": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"',
        "spec.ports[0].name: Required value",
        "spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
    ]


def test_configmap_keys_and_immutable_data():
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d"}, "data": {"bad key": "v"}}
    assert messages(cm)[0].startswith('data[bad key]: Invalid value: "bad key": a valid config key must consist of')
    cm["data"] = {"k": "v"}
    cm["immutable"] = True
    old = validate(cm)
    new = copy.deepcopy(old)
    new["data"]["k"] = "w"
    assert messages(new, old) == ["data: Forbidden: field is immutable when `immutable` is set"]


def test_daemonset_and_replicaset_selector_rules():
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "d", "namespace": "n"},
          "spec": {"selector": {}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    assert messages(ds) == ["spec.selector: Invalid value: {}: empty selector is invalid for daemonset"]


@pytest.mark.parametrize("kind", ["DaemonSet", "Deployment", "ReplicaSet", "StatefulSet"])
@pytest.mark.parametrize("selector", [{"matchLabels": "a=b"}, {"matchExpressions": ["a"]}, {"matchExpressions": "a"}])
def test_malformed_workload_selector_is_a_field_error_not_a_crash(kind, selector):
    # Found by the API fuzz test: a string matchLabels on a DaemonSet update was a 500.
    obj = {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "d", "namespace": "n"},
           "spec": {"selector": selector, "serviceName": "s",
                    "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    with pytest.raises((BadRequest, Invalid)) as exc:
        validate(obj)
    assert "spec.selector" in str(exc.value)


# --- status writes ---

def test_validate_status_phase_names():
    obj = validate(apply_defaults(pvc()))
    obj["status"] = {"phase": "Bound", "capacity": {"storage": "1024Mi"}, "accessModes": ["ReadWriteOnce"]}
    assert validate_status(obj, obj)["status"]["capacity"]["storage"] == "1Gi"
    obj["status"]["phase"] = "Available"
    with pytest.raises(Invalid) as exc:
        validate_status(obj, obj)
    assert exc.value.errors[0].message() == 'status.phase: Unsupported value: "Available": supported values: "Bound", "Lost", "Pending"'


def test_invalid_maps_to_kubernetes_status():
    obj = pvc(accessModes=[])
    with pytest.raises(Invalid) as exc:
        validate(obj)
    status = exc.value.to_status()
    assert status["code"] == 422 and status["reason"] == "Invalid"
    assert status["details"]["causes"][0] == {
        # As Kubernetes: the cause's message leaves out the field (clients print "<field>: <message>").
        "reason": "FieldValueRequired", "message": "Required value: at least 1 access mode is required", "field": "spec.accessModes",
    }
    assert str(exc.value).startswith('PersistentVolumeClaim "c1" is invalid: spec.accessModes: Required value')


def test_bidirectional_mount_propagation_needs_a_privileged_container():
    """As Kubernetes: a container's own mounts would reach the host through a Bidirectional volume."""
    def with_propagation(privileged):
        container = {"name": "c", "image": "x", "volumeMounts": [{"name": "v", "mountPath": "/v", "mountPropagation": "Bidirectional"}]}
        if privileged is not None:
            container["securityContext"] = {"privileged": privileged}
        return pod(containers=[container], volumes=[{"name": "v", "emptyDir": {}}])
    expected = ("spec.containers[0].volumeMounts[0].mountPropagation: Forbidden: "
                "Bidirectional mount propagation is available only to privileged containers")
    assert expected in messages(with_propagation(None))
    assert expected in messages(with_propagation(False))
    validate(with_propagation(True))  # accepted: no error raised
    validate(pod(containers=[{"name": "c", "image": "x", "volumeMounts": [
        {"name": "v", "mountPath": "/v", "mountPropagation": "HostToContainer"}]}], volumes=[{"name": "v", "emptyDir": {}}]))


def test_csi_driver_gets_kubernetes_defaults_and_immutable_values_print_as_json():
    driver = {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": "x.csi.io"}, "spec": {}}
    apply_defaults(driver)
    assert driver["spec"] == {"attachRequired": True, "podInfoOnMount": False, "storageCapacity": False,
                              "fsGroupPolicy": "ReadWriteOnceWithFSType", "volumeLifecycleModes": ["Persistent"],
                              "requiresRepublish": False, "seLinuxMount": False}
    changed = copy.deepcopy(driver)
    changed["spec"]["attachRequired"] = False
    assert messages(changed, driver) == ["spec.attachRequired: Invalid value: false: field is immutable"]
    # One stored before its defaults were filled in: the defaulted update changes nothing immutable.
    stored = {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": "x.csi.io"}, "spec": {}}
    validate(copy.deepcopy(driver), stored)


def test_cs21_csi_driver_token_requests_are_validated_in_kubernetes_words():
    def driver(**spec):
        return {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": "x.csi.io"},
                "spec": spec}
    assert messages(driver(tokenRequests=[{"audience": "a"}, {"audience": "a"},
                                          {"audience": "b", "expirationSeconds": 599},
                                          {"audience": "c", "expirationSeconds": (1 << 32) + 1}])) == [
        'spec.tokenRequests[1].audience: Duplicate value: "a"',
        "spec.tokenRequests[2].expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes",
        "spec.tokenRequests[3].expirationSeconds: Invalid value: 4294967297: may not specify a duration larger "
        "than 2^32 seconds"]
    assert messages(driver(serviceAccountTokenInSecrets=True)) == [
        "spec.serviceAccountTokenInSecrets: Invalid value: true: serviceAccountTokenInSecrets is set but no "
        "tokenRequests are specified"]
    validate(driver(tokenRequests=[{"audience": ""}, {"audience": "vault", "expirationSeconds": 600}],
                    serviceAccountTokenInSecrets=False))
    # fsGroupPolicy may change (Kubernetes 1.29+); attachRequired may not.
    old = driver(attachRequired=True, fsGroupPolicy="File")
    validate(driver(attachRequired=True, fsGroupPolicy="None"), old)
