"""Server-side printing: meta.k8s.io/v1 Table responses with kubectl's columns, for lists, gets and watches."""
from __future__ import annotations

import json

import httpx
import pytest

from apiobjects import pv, pvc, storage_class
from storage.api.registry import RESOURCES, by_kind
from storage.apiserver.rendering import negotiate, parse_accept

# What kubectl sends for `kubectl get`.
KUBECTL_ACCEPT = ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,"
                  "application/json")

POD_SPEC = {"containers": [{"name": "main", "image": "busybox"}]}
TEMPLATE = {"metadata": {"labels": {"app": "t"}}, "spec": POD_SPEC}
def _csr_request() -> str:
    import base64

    from storage.system import pki

    return base64.b64encode(pki.new_csr(pki.new_key(), "t")).decode()


_RULES = [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]
_SUBJECTS = [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}]
SAMPLES: dict[str, dict] = {
    "Role": {"metadata": {"name": "t-role"}, "rules": _RULES},
    "ClusterRole": {"metadata": {"name": "t-crole"}, "rules": _RULES},
    "RoleBinding": {"metadata": {"name": "t-rb"}, "subjects": _SUBJECTS,
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}},
    "ClusterRoleBinding": {"metadata": {"name": "t-crb"}, "subjects": _SUBJECTS,
                           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}},
    "ServiceAccount": {"metadata": {"name": "t-sa"}},
    "BackupSchedule": {"metadata": {"name": "t-bsched"}, "spec": {
        "schedule": "0 3 * * *", "claimName": "t-pvc", "volumeSnapshotClassName": "t-vsclass"}},
    "CertificateSigningRequest": {"metadata": {"name": "t-csr"}, "spec": {
        "request": _csr_request(), "signerName": "example.com/nobody", "usages": ["client auth"]}},
    "PersistentVolume": pv("t-pv"),
    "PersistentVolumeClaim": pvc("t-pvc"),
    "StorageClass": storage_class("t-sc"),
    "CSIStorageCapacity": {"metadata": {"name": "t-csisc"}, "storageClassName": "t-sc", "capacity": "10Gi",
                           "nodeTopology": {"matchLabels": {"zone": "a"}}},
    "VolumeAttributesClass": {"metadata": {"name": "t-vac"}, "driverName": "csi.example.com",
                              "parameters": {"iops": "3000"}},
    "Pod": {"metadata": {"name": "t-pod"}, "spec": POD_SPEC},
    "Service": {"metadata": {"name": "t-svc"}, "spec": {"selector": {"app": "t"}, "ports": [{"port": 80}]}},
    "Endpoints": {"metadata": {"name": "t-ep"},
                  "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]},
    "Node": {"metadata": {"name": "t-node"}},
    "Namespace": {"metadata": {"name": "t-ns"}},
    "Secret": {"metadata": {"name": "t-secret"}, "data": {"k": "dg=="}},
    "ConfigMap": {"metadata": {"name": "t-cm"}, "data": {"a": "1", "b": "2"}},
    "PodTemplate": {"metadata": {"name": "t-podtemplate"}, "template": {
        "metadata": {"labels": {"app": "web", "tier": "db"}},
        "spec": {"containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "debian:12"}]}}},
    # QL1: kubectl's columns for quotas and limit ranges.
    "ResourceQuota": {"metadata": {"name": "t-quota"}, "spec": {"hard": {"requests.storage": "1Gi"}}},
    "LimitRange": {"metadata": {"name": "t-limits"},
                   "spec": {"limits": [{"type": "PersistentVolumeClaim", "max": {"storage": "1Gi"}}]}},
    "Event": {"metadata": {"name": "t-ev"}, "involvedObject": {"kind": "Pod", "name": "t-pod", "namespace": "default"},
              "reason": "Tested", "message": "hello", "type": "Normal"},
    "ReplicationController": {"metadata": {"name": "t-rc"},
                              "spec": {"replicas": 2, "selector": {"app": "t"}, "template": TEMPLATE}},
    "VolumeAttachment": {"metadata": {"name": "t-va"},
                         "spec": {"attacher": "x.csi", "nodeName": "n1", "source": {"persistentVolumeName": "t-pv"}}},
    "CSIDriver": {"metadata": {"name": "t.csi.example.com"}, "spec": {"attachRequired": False, "podInfoOnMount": True}},
    "CSINode": {"metadata": {"name": "t-csinode"}, "spec": {"drivers": [{"name": "t.csi.example.com", "nodeID": "n1"}]}},
    "StatefulSet": {"metadata": {"name": "t-sts"},
                    "spec": {"serviceName": "t", "selector": {"matchLabels": {"app": "t"}}, "template": TEMPLATE}},
    "DaemonSet": {"metadata": {"name": "t-ds"},
                  "spec": {"selector": {"matchLabels": {"app": "t"}}, "template": TEMPLATE}},
    "ReplicaSet": {"metadata": {"name": "t-rs"},
                   "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "t"}}, "template": TEMPLATE}},
    "ControllerRevision": {"metadata": {"name": "t-cr"}, "revision": 4, "data": {}},
    "CronJob": {"metadata": {"name": "t-cj"},
                "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {
                    **TEMPLATE, "spec": {**TEMPLATE["spec"], "restartPolicy": "Never"}}}}}},
    "Ingress": {"metadata": {"name": "t-ing"}, "spec": {"rules": [{"host": "t.example.com", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "t-svc", "port": {"number": 80}}}}]}}]}},
    "IngressClass": {"metadata": {"name": "t-ingclass"}, "spec": {"controller": "example.com/ingress"}},
    "RuntimeClass": {"metadata": {"name": "t-rc"}, "handler": "runc"},
    "CustomResourceDefinition": {"metadata": {"name": "volumesnapshotclasses.snapshot.storage.k8s.io"}, "spec": {
        "group": "snapshot.storage.k8s.io", "scope": "Cluster",
        "names": {"plural": "volumesnapshotclasses", "kind": "VolumeSnapshotClass"},
        "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {"type": "object"}}}]}},
    "PriorityClass": {"metadata": {"name": "t-pc"}, "value": 10},
    "NetworkPolicy": {"metadata": {"name": "t-np"}, "spec": {"podSelector": {"matchLabels": {"role": "db"}}}},
    "EndpointSlice": {"metadata": {"name": "t-eps"}, "addressType": "IPv4",
                      "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 80}]},
    "Job": {"metadata": {"name": "t-job"},
            "spec": {"completions": 2, "template": {**TEMPLATE, "spec": {**TEMPLATE["spec"], "restartPolicy": "Never"}}}},
    "PodDisruptionBudget": {"metadata": {"name": "t-pdb"},
                            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "t"}}}},
    # HPA1: kubectl's columns for autoscalers.
    "HorizontalPodAutoscaler": {"metadata": {"name": "t-hpa"}, "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "t-deploy"}, "maxReplicas": 3}},
    "VolumeSnapshot": {"metadata": {"name": "t-vs"},
                       "spec": {"source": {"persistentVolumeClaimName": "t-pvc"}, "volumeSnapshotClassName": "t-vsc"}},
    "VolumeSnapshotContent": {"metadata": {"name": "t-vscontent"}, "spec": {
        "deletionPolicy": "Retain", "driver": "t.csi.example.com", "source": {"snapshotHandle": "h-1"},
        "volumeSnapshotRef": {"name": "t-vs", "namespace": "default"}}},
    "VolumeSnapshotClass": {"metadata": {"name": "t-vsclass"}, "driver": "t.csi.example.com", "deletionPolicy": "Delete"},
    "ReferenceGrant": {"metadata": {"name": "t-grant"}, "spec": {
        "from": [{"group": "", "kind": "PersistentVolumeClaim", "namespace": "other"}],
        "to": [{"group": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot"}]}},
}
# kubectl's columns (upper-cased names); the -o wide ones follow "|".
EXPECTED = {
    "PersistentVolume": "NAME CAPACITY ACCESS_MODES RECLAIM_POLICY STATUS CLAIM STORAGECLASS VOLUMEATTRIBUTESCLASS REASON AGE | VOLUMEMODE",
    "PersistentVolumeClaim": "NAME STATUS VOLUME CAPACITY ACCESS_MODES STORAGECLASS VOLUMEATTRIBUTESCLASS AGE | VOLUMEMODE",
    "StorageClass": "NAME PROVISIONER RECLAIMPOLICY VOLUMEBINDINGMODE ALLOWVOLUMEEXPANSION AGE",
    "VolumeAttributesClass": "NAME DRIVERNAME AGE",
    "CSIStorageCapacity": "NAME STORAGECLASSNAME CAPACITY",
    "Pod": "NAME READY STATUS RESTARTS AGE | IP NODE NOMINATED_NODE READINESS_GATES",
    "Service": "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE | SELECTOR",
    "Endpoints": "NAME ENDPOINTS AGE",
    "Node": "NAME STATUS ROLES AGE VERSION | INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL-VERSION CONTAINER-RUNTIME",
    "Namespace": "NAME STATUS AGE",
    "BackupSchedule": "NAME SCHEDULE SUSPEND ACTIVE LAST_SCHEDULE AGE",  # CronJob's (BC14)
    "Secret": "NAME TYPE DATA AGE",
    "ConfigMap": "NAME DATA AGE",
    "PodTemplate": "NAME CONTAINERS IMAGES POD_LABELS",
    "ResourceQuota": "NAME AGE REQUEST LIMIT",
    "LimitRange": "NAME CREATED_AT",
    "Event": "LAST_SEEN TYPE REASON OBJECT MESSAGE | SUBOBJECT SOURCE FIRST_SEEN COUNT NAME",
    "ReplicationController": "NAME DESIRED CURRENT READY AGE | CONTAINERS IMAGES SELECTOR",
    "VolumeAttachment": "NAME ATTACHER PV NODE ATTACHED AGE",
    "CSIDriver": "NAME ATTACHREQUIRED PODINFOONMOUNT STORAGECAPACITY TOKENREQUESTS REQUIRESREPUBLISH MODES AGE",
    "CSINode": "NAME DRIVERS AGE",
    "StatefulSet": "NAME READY AGE | CONTAINERS IMAGES",
    "DaemonSet": "NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE_SELECTOR AGE | CONTAINERS IMAGES SELECTOR",
    "ReplicaSet": "NAME DESIRED CURRENT READY AGE | CONTAINERS IMAGES SELECTOR",
    "ControllerRevision": "NAME CONTROLLER REVISION AGE",
    "Job": "NAME STATUS COMPLETIONS DURATION AGE | CONTAINERS IMAGES SELECTOR",
    "Ingress": "NAME CLASS HOSTS ADDRESS PORTS AGE",
    "IngressClass": "NAME CONTROLLER PARAMETERS AGE",
    "EndpointSlice": "NAME ADDRESSTYPE PORTS ENDPOINTS AGE",
    "PriorityClass": "NAME VALUE GLOBAL-DEFAULT AGE | PREEMPTIONPOLICY",
    "NetworkPolicy": "NAME POD-SELECTOR AGE",
    "CronJob": "NAME SCHEDULE TIMEZONE SUSPEND ACTIVE LAST_SCHEDULE AGE | CONTAINERS IMAGES SELECTOR",
    "Role": "NAME CREATED_AT",
    "ClusterRole": "NAME CREATED_AT",
    "CustomResourceDefinition": "NAME CREATED_AT",
    "RuntimeClass": "NAME HANDLER AGE",
    "RoleBinding": "NAME ROLE AGE | USERS GROUPS SERVICEACCOUNTS",
    "ClusterRoleBinding": "NAME ROLE AGE | USERS GROUPS SERVICEACCOUNTS",
    "ServiceAccount": "NAME SECRETS AGE",
    "CertificateSigningRequest": "NAME AGE SIGNERNAME REQUESTOR REQUESTEDDURATION CONDITION",
    "PodDisruptionBudget": "NAME MIN_AVAILABLE MAX_UNAVAILABLE ALLOWED_DISRUPTIONS AGE",
    "HorizontalPodAutoscaler": "NAME REFERENCE TARGETS MINPODS MAXPODS REPLICAS AGE",
    # The external-snapshotter's and gateway-api's CRDs' additionalPrinterColumns (VS11).
    "VolumeSnapshot": "NAME READYTOUSE SOURCEPVC SOURCESNAPSHOTCONTENT RESTORESIZE SNAPSHOTCLASS SNAPSHOTCONTENT "
                      "CREATIONTIME AGE",
    "VolumeSnapshotContent": "NAME READYTOUSE RESTORESIZE DELETIONPOLICY DRIVER VOLUMESNAPSHOTCLASS VOLUMESNAPSHOT "
                             "VOLUMESNAPSHOTNAMESPACE AGE",
    "VolumeSnapshotClass": "NAME DRIVER DELETIONPOLICY AGE",
    "ReferenceGrant": "NAME AGE",
}


def request(api_server, method: str, path: str, body: object | None = None, accept: str = KUBECTL_ACCEPT,
            content_type: str = "application/json", **params: str) -> httpx.Response:
    return httpx.request(method, api_server.url + path, params=params, timeout=30,
                         content=json.dumps(body).encode() if body is not None else None,
                         headers={"Authorization": f"Bearer {api_server.token}", "Accept": accept,
                                  "Content-Type": content_type}, verify=api_server.verify())


def collection(kind: str) -> str:
    info = by_kind(kind)
    assert info is not None
    base = "/api/v1" if not info.group else f"/apis/{info.group}/{info.version}"
    return f"{base}/namespaces/default/{info.plural}" if info.namespaced else f"{base}/{info.plural}"


def headers_of(table: dict) -> str:
    normal = [c["name"].upper().replace(" ", "_") for c in table["columnDefinitions"] if c["priority"] == 0]
    wide = [c["name"].upper().replace(" ", "_") for c in table["columnDefinitions"] if c["priority"] == 1]
    return " ".join(normal) + (" | " + " ".join(wide) if wide else "")


def test_samples_cover_every_served_kind() -> None:
    # Kinds added to the registry later need a sample and their kubectl columns here.
    # Access reviews are only ever created, never listed or read back: they have no table.
    assert {r.kind for r in RESOURCES if r.stored} <= set(SAMPLES) | {"Deployment", "Lease"}


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_table_for_every_kind(api_server, kind: str) -> None:
    info = by_kind(kind)
    if info is None:
        pytest.skip(f"{kind} is not served by this build")
    created = request(api_server, "POST", collection(kind), {"apiVersion": info.api_version, "kind": kind,
                                                              **SAMPLES[kind]}, accept="application/json")
    assert created.status_code == 201, created.text
    name = created.json()["metadata"]["name"]

    listed = request(api_server, "GET", collection(kind))
    assert listed.status_code == 200
    assert listed.headers["content-type"] == "application/json;as=Table;v=v1;g=meta.k8s.io"
    table = listed.json()
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert headers_of(table) == EXPECTED[kind]
    assert table["metadata"]["resourceVersion"]
    rows = [r for r in table["rows"] if r["object"]["metadata"]["name"] == name]
    assert len(rows) == 1
    row = rows[0]
    assert len(row["cells"]) == len(table["columnDefinitions"])
    assert row["object"]["kind"] == "PartialObjectMetadata" and "spec" not in row["object"]
    if table["columnDefinitions"][0]["format"] == "name":
        assert row["cells"][0].split(" ")[0] == name

    one = request(api_server, "GET", f"{collection(kind)}/{name}", includeObject="Object").json()
    assert one["kind"] == "Table" and len(one["rows"]) == 1
    assert one["rows"][0]["object"]["kind"] == kind  # the whole object
    # The same object's name cell (an age cell, such as an Event's LAST SEEN, may tick between the calls).
    named = next(i for i, c in enumerate(table["columnDefinitions"]) if c["format"] == "name" or c["name"] == "Name")
    assert one["rows"][0]["cells"][named] == row["cells"][named]


def test_cells_carry_kubectl_values(api_server) -> None:
    request(api_server, "POST", collection("ReplicaSet"),
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", **SAMPLES["ReplicaSet"]})
    table = request(api_server, "GET", collection("ReplicaSet") + "/t-rs").json()
    cells = dict(zip([c["name"] for c in table["columnDefinitions"]], table["rows"][0]["cells"]))
    assert cells["Desired"] == 3 and cells["Containers"] == "main" and cells["Images"] == "busybox"
    assert cells["Selector"] == "app=t"
    request(api_server, "POST", collection("PersistentVolume"), {"apiVersion": "v1", "kind": "PersistentVolume",
                                                                 **pv("cells", size="5Gi")})
    table = request(api_server, "GET", collection("PersistentVolume") + "/cells").json()
    cells = dict(zip([c["name"] for c in table["columnDefinitions"]], table["rows"][0]["cells"]))
    assert cells["Capacity"] == "5Gi" and cells["Access Modes"] == "RWO" and cells["VolumeMode"] == "Filesystem"


def test_include_object_none_and_partial_metadata(api_server) -> None:
    request(api_server, "POST", collection("ConfigMap"), {"apiVersion": "v1", "kind": "ConfigMap",
                                                          **SAMPLES["ConfigMap"]})
    table = request(api_server, "GET", collection("ConfigMap"), includeObject="None").json()
    assert all("object" not in r for r in table["rows"])
    assert request(api_server, "GET", collection("ConfigMap"), includeObject="Bogus").status_code == 400
    partial = request(api_server, "GET", collection("ConfigMap"),
                      accept="application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io").json()
    assert partial["kind"] == "PartialObjectMetadataList"
    assert [i["metadata"]["name"] for i in partial["items"]] == ["t-cm"] and "data" not in partial["items"][0]
    plain = request(api_server, "GET", collection("ConfigMap"), accept="application/json").json()
    assert plain["kind"] == "ConfigMapList"


def test_watch_sends_table_rows(api_server) -> None:
    request(api_server, "POST", collection("ConfigMap"), {"apiVersion": "v1", "kind": "ConfigMap",
                                                          **SAMPLES["ConfigMap"]})
    with httpx.stream("GET", api_server.url + collection("ConfigMap"), params={"watch": "true", "timeoutSeconds": "5"},
                      headers={"Authorization": f"Bearer {api_server.token}", "Accept": KUBECTL_ACCEPT},
                      timeout=30, verify=api_server.verify()) as resp:
        assert resp.headers["content-type"] == "application/json;as=Table;v=v1;g=meta.k8s.io"
        lines = resp.iter_lines()
        first = json.loads(next(lines))
        assert first["type"] == "ADDED" and first["object"]["kind"] == "Table"
        assert headers_of(first["object"]) == EXPECTED["ConfigMap"]
        assert first["object"]["rows"][0]["cells"][:2] == ["t-cm", 2]
        patched = request(api_server, "PATCH", collection("ConfigMap") + "/t-cm", {"data": {"c": "3"}},
                          accept="application/json", content_type="application/merge-patch+json")
        assert patched.status_code == 200
        second = json.loads(next(lines))
        assert second["type"] == "MODIFIED" and second["object"]["columnDefinitions"] == []
        assert second["object"]["rows"][0]["cells"][:2] == ["t-cm", 3]


def test_accept_negotiation() -> None:
    assert negotiate(KUBECTL_ACCEPT).form == "Table"
    assert negotiate("application/json;as=Table;v=v1beta1;g=meta.k8s.io").version == "v1beta1"
    assert negotiate("application/json").form == "json"
    assert negotiate(None).form == "json"
    assert negotiate("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io, application/json").form == "json"
    assert negotiate("application/json;as=Table;v=v9;g=meta.k8s.io").form == "json"
    assert negotiate("application/json;q=0.5, application/json;as=Table;v=v1;g=meta.k8s.io").form == "Table"
    assert [m.type for m in parse_accept("a/b;q=0, c/d")] == ["c/d"]
