"""The warnings kube-apiserver adds to writes it accepts (SEMANTICS WN1-WN4), checked against the texts of
Kubernetes' pkg/api/pod, persistentvolume, persistentvolumeclaim and storage warning tests."""
from __future__ import annotations

from typing import Any

from storage.api.object_warnings import warnings_for


def _pod(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


def test_wn1_deprecated_volume_plugins_are_named_with_kubernetes_words() -> None:
    pod = _pod(volumes=[{"name": "a", "rbd": {"image": "i", "monitors": ["m"]}},
                        {"name": "b", "cephfs": {"monitors": ["m"]}},
                        {"name": "c", "glusterfs": {"endpoints": "e", "path": "p"}},
                        {"name": "d", "gitRepo": {"repository": "r"}},
                        {"name": "e", "storageos": {"volumeName": "v"}},
                        {"name": "f", "emptyDir": {}}])
    assert warnings_for("Pod", pod, None) == [
        "spec.volumes[0].rbd: deprecated in v1.28, non-functional in v1.31+",
        "spec.volumes[1].cephfs: deprecated in v1.28, non-functional in v1.31+",
        "spec.volumes[2].glusterfs: deprecated in v1.25, non-functional in v1.26+",
        "spec.volumes[3].gitRepo: deprecated in v1.11",
        "spec.volumes[4].storageOS: deprecated in v1.22, non-functional in v1.25+",
    ]
    pv = {"metadata": {"name": "v", "annotations": {"volume.beta.kubernetes.io/storage-class": "x"}},
          "spec": {"glusterfs": {"endpoints": "e", "path": "p"}, "persistentVolumeReclaimPolicy": "Recycle",
                   "nodeAffinity": {"required": {"nodeSelectorTerms": [
                       {"matchExpressions": [{"key": "failure-domain.beta.kubernetes.io/zone", "operator": "In",
                                              "values": ["a"]}]}]}}}}
    assert warnings_for("PersistentVolume", pv, None) == [
        'metadata.annotations[volume.beta.kubernetes.io/storage-class]: deprecated since v1.8; use "storageClassName" '
        'attribute instead',
        "spec.persistentVolumeReclaimPolicy: The Recycle reclaim policy is deprecated. Instead, the recommended "
        "approach is to use dynamic provisioning.",
        "spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].key: failure-domain.beta.kubernetes.io/zone"
        ' is deprecated since v1.17; use "topology.kubernetes.io/zone" instead',
        "spec.glusterfs: deprecated in v1.25, non-functional in v1.26+",
    ]


def test_wn2_templates_warn_under_their_path_and_only_when_the_template_changes() -> None:
    template = {"metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "runtime/default",
                                             "scheduler.alpha.kubernetes.io/critical-pod": ""}},
                "spec": {"nodeSelector": {"beta.kubernetes.io/os": "linux"},
                         "containers": [{"name": "c", "image": "busybox",
                                         "env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
                                         "resources": {"limits": {"memory": "1500m"}}}]}}
    deployment = {"metadata": {"name": "d"}, "spec": {"template": template}}
    expected = [
        'spec.template.spec.nodeSelector[beta.kubernetes.io/os]: deprecated since v1.14; use "kubernetes.io/os" instead',
        'spec.template.metadata.annotations[scheduler.alpha.kubernetes.io/critical-pod]: non-functional in v1.16+; '
        'use the "priorityClassName" field instead',
        'spec.template.metadata.annotations[container.apparmor.security.beta.kubernetes.io/c]: deprecated since '
        'v1.30; use the "appArmorProfile" field instead',
        'spec.template.spec.containers[0].resources.limits[memory]: fractional byte value "1500m" is invalid, must be '
        'an integer',
        'spec.template.spec.containers[0].env[1]: hides previous definition of "A", which may be dropped when using '
        'apply',
    ]
    assert warnings_for("Deployment", deployment, None) == expected
    assert warnings_for("Deployment", deployment, deployment) == []  # a scale or label change: no template change
    cron = {"spec": {"jobTemplate": {"spec": {"template": template}}}}
    assert warnings_for("CronJob", cron, None)[0].startswith(
        "spec.jobTemplate.spec.template.spec.nodeSelector[beta.kubernetes.io/os]: ")
    # The field given, the annotation is not "instead of" it: no AppArmor warning.
    with_field = {**template, "spec": {**template["spec"], "securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}}}}
    assert not any("apparmor" in w for w in warnings_for("Deployment", {"spec": {"template": with_field}}, None))


def test_wn3_likely_mistakes_in_a_pod_spec() -> None:
    pod = _pod(topologySpreadConstraints=[{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                           "whenUnsatisfiable": "DoNotSchedule"}],
               hostAliases=[{"ip": "10.0.0.1", "hostnames": ["a"]}, {"ip": "10.0.0.1", "hostnames": ["b"]}],
               imagePullSecrets=[{"name": "r"}, {"name": "r"}],
               terminationGracePeriodSeconds=-5,
               affinity={"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                   {"topologyKey": "kubernetes.io/hostname"}]}})
    pod["spec"]["containers"] = [{"name": "a", "image": "i", "ports": [{"containerPort": 80}]},
                                 {"name": "b", "image": "i", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]
    assert warnings_for("Pod", pod, None) == [
        "spec.topologySpreadConstraints[0].labelSelector: a null labelSelector results in matching no pod",
        'spec.hostAliases[1].ip: duplicate ip "10.0.0.1"',
        'spec.imagePullSecrets[1].name: duplicate name "r"',
        "spec.containers[1].ports[0]: duplicate port definition with spec.containers[0].ports[0]",
        "spec.terminationGracePeriodSeconds: must be >= 0; negative values are invalid and will be treated as 1",
        "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector: a null "
        "labelSelector results in matching no pod",
    ]
    # A later definition that builds on the earlier one is what env references are for: no warning.
    pod = _pod()
    pod["spec"]["containers"][0]["env"] = [{"name": "P", "value": "/a"}, {"name": "P", "value": "$(P):/b"}]
    assert warnings_for("Pod", pod, None) == []


def test_wn4_claims_storage_classes_and_clean_objects() -> None:
    claim = {"metadata": {"name": "c"}, "spec": {"resources": {"requests": {"storage": "0.5"}}}}
    assert warnings_for("PersistentVolumeClaim", claim, None) == [
        'spec.resources.requests[storage]: fractional byte value "500m" is invalid, must be an integer']
    statefulset = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
                            "volumeClaimTemplates": [{"metadata": {"name": "d"},
                                                      "spec": {"resources": {"requests": {"storage": "1.5"}}}}]}}
    assert warnings_for("StatefulSet", statefulset, None) == [
        'spec.volumeClaimTemplates[0].spec.resources.requests[storage]: fractional byte value "1500m" is invalid, '
        'must be an integer']
    sc = {"metadata": {"name": "s"}, "provisioner": "p", "allowedTopologies": [{"matchLabelExpressions": [
        {"key": "failure-domain.beta.kubernetes.io/zone", "values": ["a"]}]}]}
    assert warnings_for("StorageClass", sc, None) == [
        'allowedTopologies[0].matchLabelExpressions[0].key: deprecated since v1.17; use "topology.kubernetes.io/zone" '
        'instead']
    assert warnings_for("Pod", _pod(volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "c"}}]), None) == []
    assert warnings_for("PersistentVolumeClaim", {"spec": {"resources": {"requests": {"storage": "1Gi"}}}}, None) == []
    assert warnings_for("ConfigMap", {"data": {"a": "b"}}, None) == []
