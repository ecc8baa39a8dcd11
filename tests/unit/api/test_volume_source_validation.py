"""Pod volume sources refused as Kubernetes' validateVolumeSource refuses them: file modes, KeyToPath items,
downwardAPI items, projected service account tokens, emptyDir.sizeLimit, csi.driver and hostPath.path, with
Kubernetes' field paths and wording, for pods and for the pod templates of workloads alike."""
from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import pytest

from storage.api.defaults import apply_defaults
from storage.api.validation import validate
from storage.errors import Invalid

MODE_MSG = "must be a number between 0 and 0777 (octal), both inclusive"
SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start "
    "and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
RESOURCES = ('"limits.cpu", "limits.ephemeral-storage", "limits.memory", '
             '"requests.cpu", "requests.ephemeral-storage", "requests.memory"')
V = "spec.volumes[0]"


def pod(volume: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "namespace": "default"},
            "spec": {"containers": [{"name": "main", "image": "busybox"}], "volumes": [{"name": "v", **volume}]}}


def deployment(volume: dict) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d1", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "d"}},
                     "template": {"metadata": {"labels": {"app": "d"}}, "spec": pod(volume)["spec"]}}}


def messages(obj: dict) -> list[str]:
    """What the API server answers: defaults applied, then validated."""
    with pytest.raises(Invalid) as exc:
        validate(apply_defaults(copy.deepcopy(obj)))
    return [e.message() for e in exc.value.errors]


def accepted(obj: dict) -> None:
    validate(apply_defaults(copy.deepcopy(obj)))


# --- 1. defaultMode ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("source, body", [
    ("secret", {"secretName": "s"}),
    ("configMap", {"name": "c"}),
    ("downwardAPI", {}),
    ("projected", {"sources": []}),
])
@pytest.mark.parametrize("mode", [4095, 0o7777, -1, 512])
def test_default_mode_outside_0_to_0777(source, body, mode):
    assert messages(pod({source: {**body, "defaultMode": mode}})) == [
        f"{V}.{source}.defaultMode: Invalid value: {mode}: {MODE_MSG}"]


def test_default_mode_in_pod_templates_of_workloads():
    assert messages(deployment({"secret": {"secretName": "s", "defaultMode": 4095}})) == [
        f"spec.template.spec.volumes[0].secret.defaultMode: Invalid value: 4095: {MODE_MSG}"]


# --- 2. KeyToPath items -----------------------------------------------------------------------------------

def test_secret_items_mode_path_and_key():
    items = [
        {"key": "a", "path": "a", "mode": -1},
        {"key": "b", "path": "/abs"},
        {"key": "c", "path": "../../escape"},
        {"key": "d", "path": ""},
        {"path": "e"},
        {"key": "f", "path": "..data"},
    ]
    assert messages(pod({"secret": {"secretName": "s", "items": items}})) == [
        f"{V}.secret.items[0].mode: Invalid value: -1: {MODE_MSG}",
        f'{V}.secret.items[1].path: Invalid value: "/abs": must be a relative path',
        f"{V}.secret.items[2].path: Invalid value: \"../../escape\": must not contain '..'",
        f"{V}.secret.items[3].path: Required value",
        f"{V}.secret.items[4].key: Required value",
        f"{V}.secret.items[5].path: Invalid value: \"..data\": must not start with '..'",
    ]


def test_config_map_items():
    items = [{"key": "a", "path": "/abs", "mode": 4095}]
    assert messages(pod({"configMap": {"name": "c", "items": items}})) == [
        f'{V}.configMap.items[0].path: Invalid value: "/abs": must be a relative path',
        f"{V}.configMap.items[0].mode: Invalid value: 4095: {MODE_MSG}",
    ]


def test_projected_secret_and_config_map_items():
    sources = [
        {"secret": {"name": "s", "items": [{"key": "a", "path": "/abs"}]}},
        {"configMap": {"name": "c", "items": [{"key": "b", "path": "x/../../y", "mode": -1}]}},
    ]
    assert messages(pod({"projected": {"sources": sources}})) == [
        f'{V}.projected.sources[0].secret.items[0].path: Invalid value: "/abs": must be a relative path',
        f"{V}.projected.sources[1].configMap.items[0].path: Invalid value: \"x/../../y\": must not contain '..'",
        f"{V}.projected.sources[1].configMap.items[0].mode: Invalid value: -1: {MODE_MSG}",
    ]


# --- 2/3. downwardAPI items (Kubernetes names the volume, not items[i]) -------------------------------------

def test_downward_api_item_path_and_mode():
    items = [{"path": "/abs", "fieldRef": {"fieldPath": "metadata.name"}, "mode": 4095},
             {"path": "../up", "fieldRef": {"fieldPath": "metadata.name"}}]
    assert messages(pod({"downwardAPI": {"items": items}})) == [
        f'{V}.downwardAPI.path: Invalid value: "/abs": must be a relative path',
        f"{V}.downwardAPI.mode: Invalid value: 4095: {MODE_MSG}",
        f"{V}.downwardAPI.path: Invalid value: \"../up\": must not contain '..'",
    ]


def test_downward_api_resource_field_ref():
    items = [
        {"path": "a", "resourceFieldRef": {"containerName": "main", "resource": "limits.gpu"}},
        {"path": "b", "resourceFieldRef": {"resource": "limits.cpu"}},
        {"path": "c", "resourceFieldRef": {"containerName": "main"}},
        {"path": "d"},
        {"path": "e", "fieldRef": {"fieldPath": "metadata.name"}, "resourceFieldRef": {"containerName": "main",
                                                                                       "resource": "limits.cpu"}},
    ]
    assert messages(pod({"downwardAPI": {"items": items}})) == [
        f'{V}.downwardAPI.resourceFieldRef.resource: Unsupported value: "limits.gpu": supported values: {RESOURCES}',
        f"{V}.downwardAPI.resourceFieldRef.containerName: Required value",
        f"{V}.downwardAPI.resourceFieldRef.resource: Required value",
        f"{V}.downwardAPI: Required value: one of fieldRef and resourceFieldRef is required",
        f'{V}.downwardAPI: Invalid value: "resource": fieldRef and resourceFieldRef can not be specified simultaneously',
    ]


def test_projected_downward_api_items():
    sources = [{"downwardAPI": {"items": [{"path": "/x", "resourceFieldRef": {"containerName": "main",
                                                                              "resource": "spec.cpu"}}]}}]
    assert messages(pod({"projected": {"sources": sources}})) == [
        f'{V}.projected.sources[0].downwardAPI.path: Invalid value: "/x": must be a relative path',
        f'{V}.projected.sources[0].downwardAPI.resourceFieldRef.resource: Unsupported value: "spec.cpu": '
        f"supported values: {RESOURCES}",
    ]


def test_env_resource_field_ref_shares_the_check_and_accepts_hugepages():
    container = {"name": "main", "image": "busybox", "env": [
        {"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.hugepages-2Mi"}}},
        {"name": "B", "valueFrom": {"resourceFieldRef": {"resource": "limits.gpu"}}},
    ]}
    obj = pod({"emptyDir": {}})
    obj["spec"]["containers"] = [container]
    assert messages(obj) == [
        f'spec.containers[0].env[1].valueFrom.resourceFieldRef.resource: Unsupported value: "limits.gpu": '
        f"supported values: {RESOURCES}"]


# --- 4. projected serviceAccountToken ---------------------------------------------------------------------

def test_service_account_token_expiration_and_path():
    sources = [
        {"serviceAccountToken": {"path": "t1", "expirationSeconds": 10}},
        {"serviceAccountToken": {"path": "t2", "expirationSeconds": (1 << 32) + 1}},
        {"serviceAccountToken": {"expirationSeconds": 3600}},
    ]
    assert messages(pod({"projected": {"sources": sources}})) == [
        f"{V}.projected.sources[0].serviceAccountToken.expirationSeconds: Invalid value: 10: "
        "may not specify a duration less than 10 minutes",
        f"{V}.projected.sources[1].serviceAccountToken.expirationSeconds: Invalid value: 4294967297: "
        "may not specify a duration larger than 2^32 seconds",
        # Kubernetes reports the token's path against the projected volume itself
        f"{V}.projected.path: Required value",
    ]


def test_projected_source_with_two_kinds_and_duplicate_paths():
    sources = [
        {"secret": {"name": "s", "items": [{"key": "a", "path": "same"}]},
         "serviceAccountToken": {"path": "token"}},
        {"configMap": {"name": "c", "items": [{"key": "b", "path": "same"}]}},
    ]
    assert messages(pod({"projected": {"sources": sources}})) == [
        f"{V}.projected.sources[0]: Forbidden: may not specify more than 1 volume type",
        f'{V}.projected: Invalid value: "c": conflicting duplicate paths',
    ]


# --- 5. emptyDir.sizeLimit --------------------------------------------------------------------------------

def test_empty_dir_negative_size_limit():
    assert messages(pod({"emptyDir": {"sizeLimit": "-5Mi"}})) == [
        f"{V}.emptyDir.sizeLimit: Forbidden: SizeLimit field must be a valid resource quantity"]


# --- 6. csi.driver ----------------------------------------------------------------------------------------

def test_csi_driver_name():
    assert messages(pod({"csi": {"driver": "Bad Driver!"}})) == [
        f'{V}.csi.driver: Invalid value: "Bad Driver!": {SUBDOMAIN_MSG}']
    assert messages(pod({"csi": {"driver": ""}})) == [
        f"{V}.csi.driver: Required value", f'{V}.csi.driver: Invalid value: "": {SUBDOMAIN_MSG}']
    long_name = "a" * 64
    assert messages(pod({"csi": {"driver": long_name}})) == [f"{V}.csi.driver: Too long: must have at most 63 bytes"]


def test_persistent_volume_csi_driver_name():
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv1"},
          "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                   "csi": {"driver": "Bad_Driver", "volumeHandle": "h"}}}
    assert messages(pv) == [f'spec.csi.driver: Invalid value: "Bad_Driver": {SUBDOMAIN_MSG}']


# --- 7. hostPath.path -------------------------------------------------------------------------------------

def test_host_path_backsteps():
    assert messages(pod({"hostPath": {"path": "/tmp/x/../y"}})) == [
        f"{V}.hostPath.path: Invalid value: \"/tmp/x/../y\": must not contain '..'"]


def test_host_path_in_stateful_set_template():
    sts = deployment({"hostPath": {"path": "/../etc"}})
    sts["kind"] = "StatefulSet"
    sts["spec"]["serviceName"] = "db"
    assert messages(sts) == [
        "spec.template.spec.volumes[0].hostPath.path: Invalid value: \"/../etc\": must not contain '..'"]


# --- valid sources stay valid -----------------------------------------------------------------------------

@pytest.mark.parametrize("volume", [
    {"secret": {"secretName": "s", "defaultMode": 0o644}},
    {"secret": {"secretName": "s", "defaultMode": 420, "items": [{"key": "k", "path": "a/b", "mode": 0o400}]}},
    {"configMap": {"name": "c", "defaultMode": 0, "items": [{"key": "k", "path": "a/b..c"}]}},
    {"configMap": {"name": "c", "defaultMode": 0o777}},
    {"downwardAPI": {"defaultMode": 420, "items": [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}, "mode": 0o444},
        {"path": "cpu/limit", "resourceFieldRef": {"containerName": "main", "resource": "limits.cpu"}},
        {"path": "huge", "resourceFieldRef": {"containerName": "main", "resource": "requests.hugepages-2Mi"}},
    ]}},
    {"projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600, "audience": "api"}},
        {"serviceAccountToken": {"path": "token2"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
    ]}},
    {"emptyDir": {"sizeLimit": "1Gi"}},
    {"emptyDir": {"medium": "Memory", "sizeLimit": "0"}},
    {"csi": {"driver": "ebs.csi.aws.com"}},
    {"csi": {"driver": "Hostpath.CSI.k8s.io"}},
    {"hostPath": {"path": "/var/log"}},
    {"hostPath": {"path": "/var/..log"}},
])
def test_valid_sources_are_accepted(volume):
    accepted(pod(volume))
    accepted(deployment(volume))


# --- the real kubectl, against a real API server -----------------------------------------------------------

_BAD_POD = """\
apiVersion: v1
kind: Pod
metadata: {name: bad-mode, namespace: default}
spec:
  containers: [{name: main, image: busybox}]
  volumes:
  - name: v
    secret: {secretName: s, defaultMode: 07777}
"""


def test_kubectl_server_dry_run_is_refused_with_kubernetes_message(tmp_path: Path) -> None:
    from serverutil import running_server
    from support import kubectl_binary

    kubectl = kubectl_binary()
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(_BAD_POD)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    with running_server(tmp_path) as server:
        r = subprocess.run([kubectl, "--kubeconfig", str(server.kubeconfig), "--cache-dir", str(tmp_path / "cache"),
                            "create", "--dry-run=server", "-f", str(manifest)],
                           capture_output=True, text=True, timeout=120, env=clean)
    assert r.returncode != 0
    assert 'The Pod "bad-mode" is invalid' in r.stderr, r.stderr
    assert f"spec.volumes[0].secret.defaultMode: Invalid value: 4095: {MODE_MSG}" in r.stderr, r.stderr
