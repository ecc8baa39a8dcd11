"""The real kubectl with the snapshot kinds and ReferenceGrant: the external-snapshotter's example manifests
applied unchanged, ``get vs,vsc,vsclass`` columns and cells, explain, describe, refusals naming the field
(SEMANTICS VS1-VS14, DS1-DS5).

Statuses are written through the API's status subresource here (the snapshot controller is not running).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from serverutil import running_server
from storage.apiserver.server import RunningServer
from support import kubectl_binary

# kubernetes-csi/external-snapshotter examples/kubernetes/, byte for byte.
SNAPSHOTCLASS_V1 = """\
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata:
  name: csi-hostpath-snapclass-v1
driver: hostpath.csi.k8s.io
deletionPolicy: Delete
"""
PVC = """\
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: hpvc
spec:
  storageClassName: csi-hostpath-sc
  accessModes:
    - ReadWriteOnce
  resources:
    requests:
      storage: 1Gi
"""
SNAPSHOT_V1 = """\
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata:
  name: new-snapshot-demo-v1
spec:
  volumeSnapshotClassName: csi-hostpath-snapclass-v1
  source:
    persistentVolumeClaimName: hpvc
"""
INVALID_SNAPSHOT_V1 = """\
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata:
  name: new-snapshot-demo-v1
spec:
  volumeSnapshotClassName: csi-hostpath-snapclass-v1
  source: # Only one of the two fields should be set for a snapshot. Therefore this snapshot is invalid.
    persistentVolumeClaimName: pvc 
    volumeSnapshotContentName: vsc 
"""
RESTORE = """\
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: hpvc-restore
spec:
  storageClassName: csi-hostpath-sc
  dataSource:
    name: new-snapshot-demo-v1
    kind: VolumeSnapshot
    apiGroup: snapshot.storage.k8s.io
  accessModes:
    - ReadWriteOnce
  resources:
    requests:
      storage: 1Gi
"""
# A pre-provisioned snapshot, as the Kubernetes documentation (concepts/storage/volume-snapshots) writes it.
STATIC_CONTENT = """\
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotContent
metadata:
  name: new-snapshot-content-test
spec:
  deletionPolicy: Delete
  driver: hostpath.csi.k8s.io
  source:
    snapshotHandle: 7bdd0de3-aaeb-11e8-9aae-0242ac110002
  sourceVolumeMode: Filesystem
  volumeSnapshotRef:
    name: new-snapshot-test
    namespace: default
"""
STATIC_SNAPSHOT = """\
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata:
  name: new-snapshot-test
spec:
  source:
    volumeSnapshotContentName: new-snapshot-content-test
"""
GRANT = """\
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata:
  name: allow-restore-from-default
  namespace: other
spec:
  from:
  - group: ""
    kind: PersistentVolumeClaim
    namespace: default
  to:
  - group: snapshot.storage.k8s.io
    kind: VolumeSnapshot
"""

VS_HEADERS = ["NAME", "READYTOUSE", "SOURCEPVC", "SOURCESNAPSHOTCONTENT", "RESTORESIZE", "SNAPSHOTCLASS",
              "SNAPSHOTCONTENT", "CREATIONTIME", "AGE"]
VSC_HEADERS = ["NAME", "READYTOUSE", "RESTORESIZE", "DELETIONPOLICY", "DRIVER", "VOLUMESNAPSHOTCLASS",
               "VOLUMESNAPSHOT", "VOLUMESNAPSHOTNAMESPACE", "AGE"]
CLASS_HEADERS = ["NAME", "DRIVER", "DELETIONPOLICY", "AGE"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path) as running:
        assert running.kubeconfig is not None
        yield running


def kubectl(server: RunningServer, *args: str, stdin: str | None = None, ok: bool = True,
            version: str = "1.37") -> subprocess.CompletedProcess[str]:
    assert server.kubeconfig is not None
    cache = server.kubeconfig.parent / f"kube-cache-{version}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    proc = subprocess.run([kubectl_binary(version), "--kubeconfig", str(server.kubeconfig), "--cache-dir", str(cache),
                           *args], input=stdin, capture_output=True, text=True, timeout=120, env=clean)
    if ok:
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc


def table(text: str, headers: list[str]) -> list[dict[str, str]]:
    """Rows of kubectl's table as {header: cell}, cut at the header's column offsets (cells may be empty)."""
    lines = text.rstrip("\n").split("\n")
    head = lines[0]
    assert head.split() == headers, head
    starts = [m.start() for m in re.finditer(r"\S+", head)]
    rows = []
    for line in lines[1:]:
        cells = [line[s:(starts[i + 1] if i + 1 < len(starts) else None)].strip() for i, s in enumerate(starts)]
        rows.append(dict(zip(headers, cells)))
    return rows


def set_statuses(server: RunningServer) -> None:
    """What the snapshot controller would write (VS10): through the status subresource only."""
    client = server.client()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    snap = client.get("volumesnapshots", "new-snapshot-demo-v1", "default")
    snap["status"] = {"boundVolumeSnapshotContentName": "snapcontent-1", "readyToUse": True, "restoreSize": "1Gi",
                      "creationTime": created}
    snap["spec"]["volumeSnapshotClassName"] = "not-through-status"  # a status write leaves the spec alone
    written = client.update_status(snap)
    assert written["spec"]["volumeSnapshotClassName"] == "csi-hostpath-snapclass-v1"
    assert written["status"]["readyToUse"] is True
    static = client.get("volumesnapshotcontents", "new-snapshot-content-test")
    static["status"] = {"readyToUse": True, "restoreSize": 1073741824, "snapshotHandle": static["spec"]["source"][
        "snapshotHandle"], "creationTime": (int(time.time()) - 3600) * 10**9}
    client.update_status(static)


def test_examples_get_explain_describe(server: RunningServer, kubectl_version: str) -> None:
    """VS1-VS13 with each kubectl: the examples apply unchanged, kubectl prints the CRDs' columns with the
    values the statuses hold, and explain and describe work."""
    def run(*args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return kubectl(server, *args, stdin=stdin, ok=ok, version=kubectl_version)

    assert "volumesnapshotclass.snapshot.storage.k8s.io/csi-hostpath-snapclass-v1 created" in run(
        "apply", "-f", "-", stdin=SNAPSHOTCLASS_V1).stdout
    run("apply", "-f", "-", stdin=PVC)
    assert "volumesnapshot.snapshot.storage.k8s.io/new-snapshot-demo-v1 created" in run(
        "apply", "-f", "-", stdin=SNAPSHOT_V1).stdout
    run("apply", "-f", "-", stdin=STATIC_CONTENT)
    run("apply", "-f", "-", stdin=STATIC_SNAPSHOT)
    set_statuses(server)
    # Applying again changes nothing and keeps the status (VS10).
    assert "unchanged" in run("apply", "-f", "-", stdin=SNAPSHOT_V1).stdout
    assert run("get", "vs", "new-snapshot-demo-v1", "-o", "jsonpath={.status.readyToUse}").stdout == "true"

    blocks = run("get", "vs,vsc,vsclass").stdout.strip().split("\n\n")
    assert len(blocks) == 3, blocks
    snaps = {r["NAME"]: r for r in table(blocks[0], VS_HEADERS)}
    demo = snaps["volumesnapshot.snapshot.storage.k8s.io/new-snapshot-demo-v1"]
    assert {k: demo[k] for k in VS_HEADERS[1:7]} == {
        "READYTOUSE": "true", "SOURCEPVC": "hpvc", "SOURCESNAPSHOTCONTENT": "", "RESTORESIZE": "1Gi",
        "SNAPSHOTCLASS": "csi-hostpath-snapclass-v1", "SNAPSHOTCONTENT": "snapcontent-1"}
    assert demo["CREATIONTIME"] in ("60m", "61m") and re.fullmatch(r"\d+s", demo["AGE"]), demo
    static = snaps["volumesnapshot.snapshot.storage.k8s.io/new-snapshot-test"]
    assert static["SOURCESNAPSHOTCONTENT"] == "new-snapshot-content-test" and static["READYTOUSE"] == ""
    contents = table(blocks[1], VSC_HEADERS)
    assert contents == [{
        "NAME": "volumesnapshotcontent.snapshot.storage.k8s.io/new-snapshot-content-test", "READYTOUSE": "true",
        "RESTORESIZE": "1073741824", "DELETIONPOLICY": "Delete", "DRIVER": "hostpath.csi.k8s.io",
        "VOLUMESNAPSHOTCLASS": "", "VOLUMESNAPSHOT": "new-snapshot-test", "VOLUMESNAPSHOTNAMESPACE": "default",
        "AGE": contents[0]["AGE"]}]
    classes = table(blocks[2], CLASS_HEADERS)
    assert [(r["NAME"], r["DRIVER"], r["DELETIONPOLICY"]) for r in classes] == [
        ("volumesnapshotclass.snapshot.storage.k8s.io/csi-hostpath-snapclass-v1", "hostpath.csi.k8s.io", "Delete")]
    # The CRDs declare no priority columns: -o wide adds nothing.
    wide = run("get", "volumesnapshots", "-o", "wide").stdout
    assert wide.splitlines()[0].split() == VS_HEADERS
    assert run("get", "volumesnapshotclasses").stdout.splitlines()[0].split() == CLASS_HEADERS

    explained = run("explain", "volumesnapshot.spec.source").stdout
    assert re.search(r"^KIND:\s+VolumeSnapshot$", explained, re.M), explained
    assert re.search(r"^(GROUP|VERSION):\s+snapshot.storage.k8s.io", explained, re.M) or (
        "snapshot.storage.k8s.io/v1" in explained), explained
    assert "persistentVolumeClaimName" in explained and "volumeSnapshotContentName" in explained
    policy = run("explain", "volumesnapshotcontent.spec.deletionPolicy").stdout
    assert "Delete" in policy and "Retain" in policy

    described = run("describe", "volumesnapshot", "new-snapshot-demo-v1").stdout
    for line in (r"Name:\s+new-snapshot-demo-v1", r"Namespace:\s+default", r"Kind:\s+VolumeSnapshot",
                 r"API Version:\s+snapshot.storage.k8s.io/v1", r"Persistent Volume Claim Name:\s+hpvc",
                 r"Volume Snapshot Class Name:\s+csi-hostpath-snapclass-v1", r"Ready To Use:\s+true",
                 r"Restore Size:\s+1Gi", r"Bound Volume Snapshot Content Name:\s+snapcontent-1"):
        assert re.search(line, described), (line, described)

    # As for any custom resource: no strategic merge patch (kubectl patch's default), merge patches and apply
    # work (VS12); client-side apply above sent merge patches, as kubectl does for a CRD.
    refused = run("patch", "vs", "new-snapshot-demo-v1", "-p", '{"metadata":{"labels":{"a":"b"}}}', ok=False)
    assert refused.returncode != 0 and "the body of the request was in an unknown format" in refused.stderr, \
        refused.stderr
    run("patch", "vs", "new-snapshot-demo-v1", "--type=merge", "-p", '{"metadata":{"labels":{"a":"b"}}}')
    run("label", "vs", "new-snapshot-demo-v1", "c=d")
    assert run("get", "vs", "new-snapshot-demo-v1", "-o", "jsonpath={.metadata.labels}").stdout == '{"a":"b","c":"d"}'
    assert "serverside-applied" in run("apply", "--server-side", "-f", "-", stdin=SNAPSHOTCLASS_V1).stdout

    resources = run("api-resources", "--api-group=snapshot.storage.k8s.io").stdout
    assert re.search(r"^volumesnapshots\s+vs\s+snapshot.storage.k8s.io/v1\s+true\s+VolumeSnapshot$", resources,
                     re.M), resources
    assert re.search(r"^volumesnapshotcontents\s+vsc,vscs\s+snapshot.storage.k8s.io/v1\s+false\s+"
                     r"VolumeSnapshotContent$", resources, re.M), resources


def test_refusals_name_the_field(server: RunningServer) -> None:
    """VS2, VS4, VS5, VS7, VS9, DS5: kubectl shows the server's 422 naming the field and the CRD's message;
    unknown fields are refused by strict field validation; nothing invalid is stored."""
    def run(*args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return kubectl(server, *args, stdin=stdin, ok=ok)

    run("create", "namespace", "other")
    refused = run("apply", "-n", "other", "-f", "-", stdin=INVALID_SNAPSHOT_V1, ok=False)
    assert refused.returncode != 0
    assert ('The VolumeSnapshot "new-snapshot-demo-v1" is invalid: spec.source: Invalid value: "object": exactly '
            'one of volumeSnapshotContentName and persistentVolumeClaimName must be set') in refused.stderr, \
        refused.stderr
    assert run("get", "vs", "-n", "other", "-o", "name").stdout == ""

    run("apply", "-f", "-", stdin=SNAPSHOT_V1)
    moved = run("apply", "-f", "-", stdin=SNAPSHOT_V1.replace("persistentVolumeClaimName: hpvc",
                                                              "persistentVolumeClaimName: other"), ok=False)
    assert ('spec.source.persistentVolumeClaimName: Invalid value: "string": persistentVolumeClaimName is '
            'immutable') in moved.stderr, moved.stderr
    empty_class = SNAPSHOT_V1.replace("name: new-snapshot-demo-v1", "name: empty-class").replace(
        "volumeSnapshotClassName: csi-hostpath-snapclass-v1", 'volumeSnapshotClassName: ""')
    assert "volumeSnapshotClassName must not be the empty string when set" in run(
        "apply", "-f", "-", stdin=empty_class, ok=False).stderr

    no_driver = STATIC_CONTENT.replace("  driver: hostpath.csi.k8s.io\n", "").replace("    namespace: default\n", "")
    refused = run("apply", "-f", "-", stdin=no_driver, ok=False)
    assert "spec.driver: Required value" in refused.stderr, refused.stderr
    assert ("spec.volumeSnapshotRef: Invalid value: \"object\": both spec.volumeSnapshotRef.name and "
            "spec.volumeSnapshotRef.namespace must be set") in refused.stderr, refused.stderr
    bad_policy = SNAPSHOTCLASS_V1.replace("deletionPolicy: Delete", "deletionPolicy: Keep")
    assert 'deletionPolicy: Unsupported value: "Keep": supported values: "Delete", "Retain"' in run(
        "apply", "-f", "-", stdin=bad_policy, ok=False).stderr
    colour = SNAPSHOT_V1.replace("name: new-snapshot-demo-v1", "name: coloured").replace(
        "    persistentVolumeClaimName: hpvc", "    persistentVolumeClaimName: hpvc\n    colour: blue")
    assert 'strict decoding error: unknown field "spec.source.colour"' in run(
        "apply", "-f", "-", stdin=colour, ok=False).stderr

    assert "referencegrant.gateway.networking.k8s.io/allow-restore-from-default created" in run(
        "apply", "-f", "-", stdin=GRANT).stdout
    grants = run("get", "referencegrants", "-n", "other").stdout.splitlines()
    assert grants[0].split() == ["NAME", "AGE"] and grants[1].split()[0] == "allow-restore-from-default"
    assert run("get", "refgrant", "-n", "other", "-o", "jsonpath={.items[0].spec.to[0].kind}").stdout == \
        "VolumeSnapshot"
    bad_grant = GRANT.replace("name: allow-restore-from-default", "name: bad").replace(
        "    namespace: default\n", "    namespace: Default\n")
    refused = run("apply", "-f", "-", stdin=bad_grant, ok=False)
    assert 'spec.from[0].namespace: Invalid value: "Default"' in refused.stderr, refused.stderr


def test_restore_claim_data_sources(server: RunningServer) -> None:
    """DS1-DS4 through kubectl: the example restore claim gets its dataSourceRef mirrored; a claim naming a
    Pod as its source is refused; a dataSourceRef into another namespace is kept without a dataSource."""
    def run(*args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return kubectl(server, *args, stdin=stdin, ok=ok)

    run("apply", "-f", "-", stdin=RESTORE)
    spec: dict[str, Any] = json.loads(run("get", "pvc", "hpvc-restore", "-o", "json").stdout)["spec"]
    ref = {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "new-snapshot-demo-v1"}
    assert spec["dataSource"] == ref and spec["dataSourceRef"] == ref
    # kubectl apply again: the mirrored field is the server's default, not a difference.
    assert "unchanged" in run("apply", "-f", "-", stdin=RESTORE).stdout
    assert run("diff", "-f", "-", stdin=RESTORE, ok=False).returncode == 0

    pod_source = RESTORE.replace("name: hpvc-restore", "name: from-pod").replace(
        "    kind: VolumeSnapshot\n    apiGroup: snapshot.storage.k8s.io\n", "    kind: Pod\n")
    refused = run("apply", "-f", "-", stdin=pod_source, ok=False)
    assert 'spec.dataSource: Unsupported value: "Pod": supported values: "PersistentVolumeClaim"' in refused.stderr

    cross = yaml.safe_load(RESTORE)
    cross["metadata"]["name"] = "cross"
    cross["spec"].pop("dataSource")
    cross["spec"]["dataSourceRef"] = {**ref, "namespace": "other"}
    run("apply", "-f", "-", stdin=yaml.safe_dump(cross))
    spec = json.loads(run("get", "pvc", "cross", "-o", "json").stdout)["spec"]
    assert spec["dataSourceRef"] == {**ref, "namespace": "other"} and "dataSource" not in spec
    both = yaml.safe_load(RESTORE)
    both["metadata"]["name"] = "both"
    both["spec"]["dataSourceRef"] = {**ref, "namespace": "other"}
    refused = run("apply", "-f", "-", stdin=yaml.safe_dump(both), ok=False)
    assert "may not be specified when dataSourceRef.namespace is specified" in refused.stderr, refused.stderr


def test_json_only_kinds(server: RunningServer) -> None:
    """VS12: asked for protobuf first (client-go's default for built-in kinds), the server answers JSON; a
    protobuf body is refused with 415 naming the accepted types, as for any CRD."""
    import httpx

    from k8s_protobuf_writer import envelope, field

    kubectl(server, "apply", "-f", "-", stdin=SNAPSHOTCLASS_V1)
    url = server.url + "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses"
    headers = {"Authorization": f"Bearer {server.token}"}
    got = httpx.get(url, headers={**headers, "Accept": "application/vnd.kubernetes.protobuf, application/json"},
                    verify=server.verify(), timeout=30)
    assert got.status_code == 200 and got.headers["content-type"].startswith("application/json")
    assert [i["metadata"]["name"] for i in got.json()["items"]] == ["csi-hostpath-snapclass-v1"]
    body = envelope("snapshot.storage.k8s.io/v1", "VolumeSnapshotClass", field(1, field(1, b"pb")))
    refused = httpx.post(url, content=body, headers={**headers, "Content-Type": "application/vnd.kubernetes.protobuf"},
                         verify=server.verify(), timeout=30)
    assert refused.status_code == 415, refused.text
    assert "application/json" in refused.json()["message"]
    # Whatever kind the envelope names: the endpoint reads no protobuf.
    pod = envelope("v1", "ConfigMap", field(1, field(1, b"pb")))
    refused = httpx.post(url, content=pod, headers={**headers, "Content-Type": "application/vnd.kubernetes.protobuf"},
                         verify=server.verify(), timeout=30)
    assert refused.status_code == 415, refused.text
