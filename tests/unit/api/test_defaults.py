"""apply_defaults(): Kubernetes' defaults, filling only what is missing."""
from __future__ import annotations

from storage.api.defaults import apply_defaults


def test_b10_pv_defaults_retain_and_filesystem():
    pv = apply_defaults({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "a"}, "spec": {"hostPath": {"path": "/x"}}})
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert pv["spec"]["volumeMode"] == "Filesystem"
    assert pv["status"]["phase"] == "Pending"


def test_pvc_defaults():
    pvc = apply_defaults({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"}, "spec": {}})
    assert pvc["spec"]["volumeMode"] == "Filesystem"
    assert pvc["status"]["phase"] == "Pending"
    assert "storageClassName" not in pvc["spec"]  # P3: the default class is the API server's business


def test_b10_storage_class_defaults_delete_immediate_and_keep_given_values():
    sc = apply_defaults({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "s"}, "provisioner": "p"})
    assert sc["reclaimPolicy"] == "Delete" and sc["volumeBindingMode"] == "Immediate"
    sc = apply_defaults({"kind": "StorageClass", "reclaimPolicy": "Retain", "volumeBindingMode": "WaitForFirstConsumer"})
    assert sc["reclaimPolicy"] == "Retain" and sc["volumeBindingMode"] == "WaitForFirstConsumer"


def test_pod_defaults():
    pod = apply_defaults({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {
        "containers": [
            {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}],
             "livenessProbe": {"httpGet": {"port": 80}}, "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 3}},
            {"name": "b", "image": "nginx:1.25"},
            {"name": "c", "image": "nginx:latest", "imagePullPolicy": "Never"},
        ],
        "volumes": [{"name": "s", "secret": {"secretName": "x"}}, {"name": "cm", "configMap": {"name": "x"}}],
    }})
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Always"
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["terminationGracePeriodSeconds"] == 30
    a, b, c = spec["containers"]
    assert a["imagePullPolicy"] == "Always" and b["imagePullPolicy"] == "IfNotPresent" and c["imagePullPolicy"] == "Never"
    assert a["terminationMessagePath"] == "/dev/termination-log" and a["terminationMessagePolicy"] == "File"
    assert a["ports"][0]["protocol"] == "TCP"
    assert a["livenessProbe"] == {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                                  "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
    assert a["readinessProbe"]["periodSeconds"] == 3
    assert spec["volumes"][0]["secret"]["defaultMode"] == 420
    assert spec["volumes"][1]["configMap"]["defaultMode"] == 420


def test_statefulset_defaults():
    sts = apply_defaults({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s"}, "spec": {
        "template": {"spec": {"containers": [{"name": "a", "image": "x"}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "d"}, "spec": {}}],
    }})
    spec = sts["spec"]
    assert spec["replicas"] == 1
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert spec["revisionHistoryLimit"] == 10
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    assert spec["volumeClaimTemplates"][0]["spec"]["volumeMode"] == "Filesystem"
    assert spec["template"]["spec"]["restartPolicy"] == "Always"


def test_legacy_statefulset_defaults_to_on_delete():
    sts = apply_defaults({"apiVersion": "apps/v1beta1", "kind": "StatefulSet", "metadata": {"name": "s"}, "spec": {
        "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}}}})
    assert sts["apiVersion"] == "apps/v1"
    assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert sts["spec"]["selector"] == {"matchLabels": {"app": "x"}}


def test_service_rc_secret_namespace_defaults():
    svc = apply_defaults({"kind": "Service", "spec": {"ports": [{"port": 80}]}})
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["sessionAffinity"] == "None"
    assert svc["spec"]["ports"][0] == {"port": 80, "protocol": "TCP", "targetPort": 80}
    rc = apply_defaults({"kind": "ReplicationController", "metadata": {"name": "r"}, "spec": {
        "template": {"metadata": {"labels": {"app": "r"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}}}})
    assert rc["spec"]["selector"] == {"app": "r"} and rc["metadata"]["labels"] == {"app": "r"} and rc["spec"]["replicas"] == 1
    assert apply_defaults({"kind": "Secret"})["type"] == "Opaque"
    assert apply_defaults({"kind": "Namespace"})["status"]["phase"] == "Active"
    ds = apply_defaults({"kind": "DaemonSet", "spec": {}})
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
