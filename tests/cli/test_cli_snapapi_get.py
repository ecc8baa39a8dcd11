"""``stowage get`` of the snapshot kinds prints the same columns and cells as kubectl (SEMANTICS VS11, VS13)."""
from __future__ import annotations

import time

from cliutil import parse_table

MANIFESTS = """\
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata:
  name: csi-hostpath-snapclass-v1
driver: hostpath.csi.k8s.io
deletionPolicy: Delete
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata:
  name: new-snapshot-demo-v1
spec:
  volumeSnapshotClassName: csi-hostpath-snapclass-v1
  source:
    persistentVolumeClaimName: hpvc
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotContent
metadata:
  name: new-snapshot-content-test
spec:
  deletionPolicy: Retain
  driver: hostpath.csi.k8s.io
  source:
    snapshotHandle: 7bdd0de3-aaeb-11e8-9aae-0242ac110002
  volumeSnapshotRef:
    name: new-snapshot-test
    namespace: default
"""
VS_HEADERS = ["NAME", "READYTOUSE", "SOURCEPVC", "SOURCESNAPSHOTCONTENT", "RESTORESIZE", "SNAPSHOTCLASS",
              "SNAPSHOTCONTENT", "CREATIONTIME", "AGE"]
VSC_HEADERS = ["NAME", "READYTOUSE", "RESTORESIZE", "DELETIONPOLICY", "DRIVER", "VOLUMESNAPSHOTCLASS",
               "VOLUMESNAPSHOT", "VOLUMESNAPSHOTNAMESPACE", "AGE"]


def test_get_snapshot_kinds(cli, tmp_path) -> None:
    (tmp_path / "snap.yaml").write_text(MANIFESTS)
    cli.ok("apply", "-f", str(tmp_path / "snap.yaml"))
    client = cli.client()
    snap = client.get("volumesnapshots", "new-snapshot-demo-v1", "default")
    snap["status"] = {"readyToUse": False, "restoreSize": "2Gi", "boundVolumeSnapshotContentName": "snapcontent-x",
                      "creationTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 7200))}
    client.update_status(snap)

    rows = parse_table(cli.ok("get", "vs"), VS_HEADERS)
    assert len(rows) == 1 and rows[0].pop("AGE")
    assert rows[0] == {"NAME": "new-snapshot-demo-v1", "READYTOUSE": "false", "SOURCEPVC": "hpvc",
                       "SOURCESNAPSHOTCONTENT": "", "RESTORESIZE": "2Gi", "SNAPSHOTCLASS": "csi-hostpath-snapclass-v1",
                       "SNAPSHOTCONTENT": "snapcontent-x", "CREATIONTIME": "120m"}
    wide = cli.ok("get", "volumesnapshots", "-o", "wide")
    assert wide.splitlines()[0].split() == VS_HEADERS
    contents = parse_table(cli.ok("get", "vsc"), VSC_HEADERS)
    assert contents[0].pop("AGE") and contents == [{
        "NAME": "new-snapshot-content-test", "READYTOUSE": "", "RESTORESIZE": "", "DELETIONPOLICY": "Retain",
        "DRIVER": "hostpath.csi.k8s.io", "VOLUMESNAPSHOTCLASS": "", "VOLUMESNAPSHOT": "new-snapshot-test",
        "VOLUMESNAPSHOTNAMESPACE": "default"}]
    classes = parse_table(cli.ok("get", "vsclass"), ["NAME", "DRIVER", "DELETIONPOLICY", "AGE"])
    assert [(r["NAME"], r["DRIVER"], r["DELETIONPOLICY"]) for r in classes] == [
        ("csi-hostpath-snapclass-v1", "hostpath.csi.k8s.io", "Delete")]


def test_api_resources_list_snapshot_kinds(cli) -> None:
    """VS13: the CRDs' names and short names."""
    rows = parse_table(cli.ok("api-resources"), ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"])
    by_name = {r["NAME"]: r for r in rows}
    assert by_name["volumesnapshots"] == {"NAME": "volumesnapshots", "SHORTNAMES": "vs",
                                          "APIVERSION": "snapshot.storage.k8s.io/v1", "NAMESPACED": "true",
                                          "KIND": "VolumeSnapshot"}
    assert by_name["volumesnapshotcontents"]["SHORTNAMES"] == "vsc,vscs"
    assert by_name["volumesnapshotclasses"]["SHORTNAMES"] == "vsclass,vsclasses"
    assert by_name["referencegrants"]["APIVERSION"] == "gateway.networking.k8s.io/v1beta1"
