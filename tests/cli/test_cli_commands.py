"""The ``stowage`` console script against a real API server (SQLite, uvicorn on port 0).

The API server runs without controllers here, so tests that need a bound
claim write the status the binder would write (rule B6) through the API.
"""
from __future__ import annotations

import json
import re

import pytest
import yaml

from cliutil import parse_table
from support import as_from_a_shell, signal_state, stowage_executable

PV_HEADERS = ["NAME", "CAPACITY", "ACCESS MODES", "RECLAIM POLICY", "STATUS", "CLAIM", "STORAGECLASS",
              "VOLUMEATTRIBUTESCLASS", "REASON", "AGE"]
PVC_HEADERS = ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "AGE"]
SC_HEADERS = ["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION", "AGE"]
AGE = re.compile(r"^\d+s$")

CLASSES = """
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: fast
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: stowage.io/local
allowVolumeExpansion: true
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: storage.k8s.io/v1beta1
kind: StorageClass
metadata:
  name: slow
provisioner: stowage.io/local
reclaimPolicy: Retain
"""

PV = """
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv1
  labels: {tier: gold}
spec:
  capacity: {storage: 2Gi}
  accessModes: [ReadWriteMany, ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: fast
  hostPath: {path: /srv/pv1}
"""

PVC = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  labels: {app: web}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: fast
  resources: {requests: {storage: 1Gi}}
"""


def _bind(cli, pv_name: str = "pv1", claim: str = "data") -> None:
    """What the binder does (B6): claimRef + Bound on the volume, volumeName + Bound on the claim."""
    client = cli.client()
    pvc = client.get("persistentvolumeclaims", claim, namespace="default")
    pv = client.get("persistentvolumes", pv_name)
    pv["spec"]["claimRef"] = {"kind": "PersistentVolumeClaim", "namespace": "default", "name": claim,
                              "uid": pvc["metadata"]["uid"]}
    pv = client.update(pv)
    pv["status"] = {"phase": "Bound"}
    client.update_status(pv)
    pvc["spec"]["volumeName"] = pv_name
    pvc = client.update(pvc)
    pvc["status"] = {"phase": "Bound", "capacity": {"storage": "2Gi"},
                     "accessModes": ["ReadWriteOnce", "ReadWriteMany"]}
    client.update_status(pvc)


# --- apply / create -------------------------------------------------------------

def test_apply_created_unchanged_configured(cli, tmp_path) -> None:
    path = tmp_path / "pvc.yaml"
    path.write_text(PVC)
    assert cli.ok("apply", "-f", str(path)) == "persistentvolumeclaim/data created\n"
    assert cli.ok("apply", "-f", str(path)) == "persistentvolumeclaim/data unchanged\n"
    path.write_text(PVC.replace("{app: web}", "{app: web, tier: db}"))
    assert cli.ok("apply", "-f", str(path)) == "persistentvolumeclaim/data configured\n"
    stored = cli.client().get("persistentvolumeclaims", "data", namespace="default")
    assert stored["metadata"]["labels"] == {"app": "web", "tier": "db"}


def test_apply_keeps_status_and_fields_the_manifest_does_not_set(cli, tmp_path) -> None:
    (tmp_path / "pv.yaml").write_text(PV)
    cli.ok("apply", "-f", str(tmp_path / "pv.yaml"))
    client = cli.client()
    pv = client.get("persistentvolumes", "pv1")
    pv["metadata"].setdefault("annotations", {})["pv.kubernetes.io/bound-by-controller"] = "yes"
    pv = client.update(pv)
    pv["status"] = {"phase": "Available", "message": "kept"}
    client.update_status(pv)
    (tmp_path / "pv.yaml").write_text(PV.replace("{tier: gold}", "{tier: silver}"))
    assert cli.ok("apply", "-f", str(tmp_path / "pv.yaml")) == "persistentvolume/pv1 configured\n"
    after = client.get("persistentvolumes", "pv1")
    assert after["metadata"]["labels"] == {"tier": "silver"}
    assert after["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] == "yes"
    assert after["status"]["message"] == "kept"


def test_apply_multi_document_with_legacy_api_version(cli, tmp_path) -> None:
    (tmp_path / "classes.yaml").write_text(CLASSES)
    out = cli.ok("apply", "-f", str(tmp_path / "classes.yaml"))
    assert out == "storageclass.storage.k8s.io/fast created\nstorageclass.storage.k8s.io/slow created\n"
    assert cli.ok("apply", "-f", str(tmp_path / "classes.yaml")).count("unchanged") == 2


def test_apply_directory_in_name_order_json_and_list(cli, tmp_path) -> None:
    d = tmp_path / "manifests"
    d.mkdir()
    (d / "b-pv.yaml").write_text(PV)
    (d / "a-classes.yml").write_text(CLASSES)
    (d / "c-list.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm1"}, "data": {"k": "v"}},
    ]}))
    (d / "README.txt").write_text("not a manifest")
    out = cli.ok("apply", "-f", str(d))
    assert out.splitlines() == [
        "storageclass.storage.k8s.io/fast created",
        "storageclass.storage.k8s.io/slow created",
        "persistentvolume/pv1 created",
        "configmap/cm1 created",
    ]


def test_apply_from_stdin_into_namespace(cli) -> None:
    cli.client().create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    out = cli.ok("apply", "-n", "team", "-f", "-", stdin=PVC)
    assert out == "persistentvolumeclaim/data created\n"
    assert cli.client().get("persistentvolumeclaims", "data", namespace="team")["metadata"]["namespace"] == "team"


def test_create_existing_is_an_error(cli, tmp_path) -> None:
    (tmp_path / "pv.yaml").write_text(PV)
    assert cli.ok("create", "-f", str(tmp_path / "pv.yaml")) == "persistentvolume/pv1 created\n"
    again = cli.run("create", "-f", str(tmp_path / "pv.yaml"))
    assert again.code == 1
    assert again.err.startswith("Error from server (AlreadyExists): ")
    assert "pv1" in again.err and len(again.err.strip().splitlines()) == 1


# --- get ------------------------------------------------------------------------

def test_get_pv_table_with_abbreviated_modes_and_claim(cli, tmp_path) -> None:
    (tmp_path / "all.yaml").write_text(CLASSES + "---" + PV + "---" + PVC)
    cli.ok("apply", "-f", str(tmp_path / "all.yaml"))
    _bind(cli)
    rows = parse_table(cli.ok("get", "pv"), PV_HEADERS)
    assert len(rows) == 1
    row = rows[0]
    assert AGE.match(row.pop("AGE"))
    assert row == {"NAME": "pv1", "CAPACITY": "2Gi", "ACCESS MODES": "RWO,RWX", "RECLAIM POLICY": "Retain",
                   "STATUS": "Bound", "CLAIM": "default/data", "STORAGECLASS": "fast",
                   "VOLUMEATTRIBUTESCLASS": "<unset>", "REASON": ""}
    wide = parse_table(cli.ok("get", "persistentvolumes", "-o", "wide"), PV_HEADERS + ["VOLUMEMODE"])
    assert wide[0]["VOLUMEMODE"] == "Filesystem"


def test_get_pvc_table_and_all_namespaces(cli, tmp_path) -> None:
    (tmp_path / "all.yaml").write_text(CLASSES + "---" + PV + "---" + PVC)
    cli.ok("apply", "-f", str(tmp_path / "all.yaml"))
    _bind(cli)
    rows = parse_table(cli.ok("get", "pvc"), PVC_HEADERS)
    assert [r.pop("AGE") for r in rows][0].endswith("s")
    assert rows == [{"NAME": "data", "STATUS": "Bound", "VOLUME": "pv1", "CAPACITY": "2Gi",
                     "ACCESS MODES": "RWO,RWX", "STORAGECLASS": "fast",
                     "VOLUMEATTRIBUTESCLASS": "<unset>"}]
    everywhere = parse_table(cli.ok("get", "PersistentVolumeClaim", "-A"), ["NAMESPACE", *PVC_HEADERS])
    assert everywhere[0]["NAMESPACE"] == "default" and everywhere[0]["NAME"] == "data"


def test_get_sc_marks_the_default_class(cli, tmp_path) -> None:
    (tmp_path / "classes.yaml").write_text(CLASSES)
    cli.ok("apply", "-f", str(tmp_path / "classes.yaml"))
    rows = parse_table(cli.ok("get", "sc"), SC_HEADERS)
    for r in rows:
        assert AGE.match(r.pop("AGE"))
    assert rows == [
        {"NAME": "fast (default)", "PROVISIONER": "stowage.io/local", "RECLAIMPOLICY": "Delete",
         "VOLUMEBINDINGMODE": "WaitForFirstConsumer", "ALLOWVOLUMEEXPANSION": "true"},
        {"NAME": "slow", "PROVISIONER": "stowage.io/local", "RECLAIMPOLICY": "Retain",
         "VOLUMEBINDINGMODE": "Immediate", "ALLOWVOLUMEEXPANSION": "false"},
    ]


def test_get_output_yaml_json_name_and_no_headers(cli, tmp_path) -> None:
    (tmp_path / "pv.yaml").write_text(PV)
    cli.ok("apply", "-f", str(tmp_path / "pv.yaml"))
    one = yaml.safe_load(cli.ok("get", "pv", "pv1", "-o", "yaml"))
    assert one["kind"] == "PersistentVolume" and one["metadata"]["name"] == "pv1"
    assert one["spec"]["capacity"]["storage"] == "2Gi"
    many = json.loads(cli.ok("get", "pv", "-o", "json"))
    assert many["kind"] == "List" and [i["metadata"]["name"] for i in many["items"]] == ["pv1"]
    assert cli.ok("get", "pv", "-o", "name") == "persistentvolume/pv1\n"
    plain = cli.ok("get", "pv", "--no-headers")
    assert plain.startswith("pv1 ") and "NAME" not in plain


def test_get_label_selector_and_names(cli, tmp_path) -> None:
    (tmp_path / "pv.yaml").write_text(PV + "---" + PV.replace("pv1", "pv2").replace("gold", "silver"))
    cli.ok("apply", "-f", str(tmp_path / "pv.yaml"))
    assert cli.ok("get", "pv", "-l", "tier=silver", "-o", "name") == "persistentvolume/pv2\n"
    assert cli.ok("get", "pv", "-l", "tier!=silver", "-o", "name") == "persistentvolume/pv1\n"
    assert cli.ok("get", "pv/pv2", "pv/pv1", "-o", "name") == "persistentvolume/pv2\npersistentvolume/pv1\n"


def test_get_missing_object_says_not_found(cli) -> None:
    result = cli.run("get", "pvc", "x")
    assert result.code == 1
    assert result.err == 'Error from server (NotFound): persistentvolumeclaims "x" not found\n'
    assert result.out == ""


def test_get_empty_list(cli) -> None:
    result = cli.run("get", "pvc")
    assert result.code == 0 and result.out == ""
    assert result.err == "No resources found in default namespace.\n"


# --- describe -------------------------------------------------------------------

def test_describe_pvc_with_events_and_users(cli, tmp_path) -> None:
    (tmp_path / "all.yaml").write_text(CLASSES + "---" + PV + "---" + PVC)
    cli.ok("apply", "-f", str(tmp_path / "all.yaml"))
    _bind(cli)
    client = cli.client()
    pvc = client.get("persistentvolumeclaims", "data", namespace="default")
    involved = {"kind": "PersistentVolumeClaim", "namespace": "default", "name": "data",
                "uid": pvc["metadata"]["uid"], "apiVersion": "v1"}
    for name, reason, when, message in (
        ("data.2", "ProvisioningSucceeded", "2024-01-01T00:00:02Z", "Successfully provisioned volume pv1"),
        ("data.1", "WaitForFirstConsumer", "2024-01-01T00:00:01Z", "waiting for first consumer to be created before binding"),
    ):
        client.create({"apiVersion": "v1", "kind": "Event",
                       "metadata": {"name": name, "namespace": "default"},
                       "involvedObject": involved, "reason": reason, "message": message, "type": "Normal",
                       "firstTimestamp": when, "lastTimestamp": when, "count": 1,
                       "source": {"component": "persistentvolume-controller"}})
    client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": "default"},
                   "spec": {"containers": [{"name": "c", "image": "busybox"}],
                            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}})
    out = cli.ok("describe", "pvc", "data")
    assert re.search(r"^Name:\s+data$", out, re.M)
    assert re.search(r"^Namespace:\s+default$", out, re.M)
    assert re.search(r"^StorageClass:\s+fast$", out, re.M)
    assert re.search(r"^Status:\s+Bound$", out, re.M)
    assert re.search(r"^Volume:\s+pv1$", out, re.M)
    assert re.search(r"^Capacity:\s+2Gi$", out, re.M)
    assert re.search(r"^Access Modes:\s+RWO,RWX$", out, re.M)
    assert re.search(r"^Used By:\s+web-0$", out, re.M)
    events = out[out.index("Events:"):]
    assert events.index("WaitForFirstConsumer") < events.index("ProvisioningSucceeded")
    assert "persistentvolume-controller" in events


def test_describe_pv_and_sc(cli, tmp_path) -> None:
    (tmp_path / "all.yaml").write_text(CLASSES + "---" + PV)
    cli.ok("apply", "-f", str(tmp_path / "all.yaml"))
    pv = cli.ok("describe", "pv", "pv1")
    assert re.search(r"^Reclaim Policy:\s+Retain$", pv, re.M)
    assert re.search(r"^Labels:\s+tier=gold$", pv, re.M)
    assert "Events:  <none>" in pv
    sc = cli.ok("describe", "storageclass", "fast")
    assert re.search(r"^IsDefaultClass:\s+Yes$", sc, re.M)
    assert re.search(r"^VolumeBindingMode:\s+WaitForFirstConsumer$", sc, re.M)


# --- delete / patch / label / annotate ------------------------------------------

def _config_map(name: str, tier: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, labels: {{tier: {tier}}}}}\ndata: {{k: v}}\n"


def test_delete_by_name_file_and_selector(cli, tmp_path) -> None:
    path = tmp_path / "cms.yaml"
    path.write_text("---\n".join([_config_map("a", "gold"), _config_map("b", "gold"), _config_map("c", "bronze")]))
    cli.ok("apply", "-f", str(path))
    assert cli.ok("delete", "cm", "c") == 'configmap "c" deleted\n'
    assert cli.ok("delete", "configmaps", "-l", "tier=gold") == 'configmap "a" deleted\nconfigmap "b" deleted\n'
    assert cli.ok("get", "cm", "-o", "name") == ""
    cli.ok("apply", "-f", str(path))
    assert cli.ok("delete", "-f", str(path)).count("deleted") == 3
    assert cli.ok("get", "cm", "-o", "name") == ""
    missing = cli.run("delete", "cm", "a")
    assert missing.code == 1
    assert missing.err == 'Error from server (NotFound): configmaps "a" not found\n'
    assert cli.run("delete", "cm", "a", "--ignore-not-found").code == 0
    cli.ok("apply", "-f", str(path))
    assert cli.ok("delete", "cm", "--all").count("deleted") == 3


def test_delete_protected_volume_shows_terminating_rule_b11(cli, tmp_path) -> None:
    (tmp_path / "pv.yaml").write_text(PV)
    cli.ok("apply", "-f", str(tmp_path / "pv.yaml"))
    # --wait=false: the volume stays Terminating, so waiting (the default, as kubectl's) would never end.
    assert cli.ok("delete", "pv", "pv1", "--wait=false") == 'persistentvolume "pv1" deleted\n'
    rows = parse_table(cli.ok("get", "pv"), PV_HEADERS)
    assert [(r["NAME"], r["STATUS"]) for r in rows] == [("pv1", "Terminating")]


def test_patch_merge_json_and_strategic(cli, tmp_path) -> None:
    (tmp_path / "pv.yaml").write_text(PV)
    cli.ok("apply", "-f", str(tmp_path / "pv.yaml"))
    assert cli.ok("patch", "pv", "pv1", "--type", "merge", "-p",
                  '{"spec": {"persistentVolumeReclaimPolicy": "Delete"}}') == "persistentvolume/pv1 patched\n"
    cli.ok("patch", "pv", "pv1", "--type", "json", "-p",
           '[{"op": "replace", "path": "/metadata/labels/tier", "value": "iron"}]')
    cli.ok("patch", "pv/pv1", "-p", '{"metadata": {"labels": {"extra": "yes"}}}')
    pv = cli.client().get("persistentvolumes", "pv1")
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert pv["metadata"]["labels"] == {"tier": "iron", "extra": "yes"}
    bad = cli.run("patch", "pv", "pv1", "-p", "{not json")
    assert bad.code == 1 and bad.err.startswith("error: --patch: ")


def test_label_and_annotate_refuse_overwrite_without_flag(cli, tmp_path) -> None:
    (tmp_path / "pv.yaml").write_text(PV)
    cli.ok("apply", "-f", str(tmp_path / "pv.yaml"))
    assert cli.ok("label", "pv", "pv1", "zone=a") == "persistentvolume/pv1 labeled\n"
    refused = cli.run("label", "pv", "pv1", "tier=silver")
    assert refused.code == 1
    assert refused.err == "error: 'tier' already has a value (gold), and --overwrite is false\n"
    cli.ok("label", "pv", "pv1", "tier=silver", "zone-", "--overwrite")
    assert cli.client().get("persistentvolumes", "pv1")["metadata"]["labels"] == {"tier": "silver"}
    assert cli.ok("annotate", "pv", "pv1", "note=hello world") == "persistentvolume/pv1 annotated\n"
    assert cli.run("annotate", "pv", "pv1", "note=other").code == 1
    cli.ok("annotate", "pv", "pv1", "note=other", "--overwrite")
    assert cli.client().get("persistentvolumes", "pv1")["metadata"]["annotations"]["note"] == "other"


# --- errors and misc ------------------------------------------------------------

def test_unknown_kind_is_one_line(cli) -> None:
    result = cli.run("get", "gizmos")
    assert result.code == 1
    assert result.err == 'error: the server doesn\'t have a resource type "gizmos"\n'


def test_bad_yaml_names_file_and_document(cli, tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(PV + "---\nkind: [unclosed\n")
    result = cli.run("apply", "-f", str(path))
    assert result.code == 1
    assert result.err.startswith(f"error: error parsing {path} (document 2):")
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err


def test_invalid_object_is_reported_by_the_server(cli, tmp_path) -> None:
    result = cli.run("apply", "-f", "-", stdin=PVC.replace("[ReadWriteOnce]", "[ReadWriteSometimes]"))
    assert result.code == 1
    assert result.err.startswith("Error from server (Invalid): ")
    assert "ReadWriteSometimes" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_undecodable_object_is_a_bad_request_from_the_server_K1(cli, tmp_path) -> None:
    result = cli.run("apply", "-f", "-", stdin=PVC.replace("storage: 1Gi", "storage: 1Gib"))
    assert result.code == 1
    assert result.err.startswith("Error from server (BadRequest): ")
    assert "quantities must match the regular expression" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_connection_refused_names_the_server(cli, tmp_path) -> None:
    import socket

    from storage.client.kubeconfig import write_kubeconfig

    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = write_kubeconfig(tmp_path / "dead-kubeconfig", f"http://127.0.0.1:{port}", "t")
    result = cli.run("get", "pv", "--kubeconfig", str(dead), kubeconfig=False)
    assert result.code == 1
    assert f"127.0.0.1:{port}" in result.err and "refused" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_kubeconfig_from_environment(cli, tmp_path) -> None:
    import subprocess

    env = cli.env()
    env["KUBECONFIG"] = str(cli.kubeconfig)
    proc = subprocess.run([stowage_executable(), "get", "pv"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and "No resources found" in proc.stderr


def test_version_and_api_resources(cli) -> None:
    version = cli.ok("version")
    assert version.startswith("Client Version: v") and "Server Version: " in version
    rows = parse_table(cli.ok("api-resources"), ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"])
    by_name = {r["NAME"]: r for r in rows}
    assert by_name["persistentvolumeclaims"] == {"NAME": "persistentvolumeclaims", "SHORTNAMES": "pvc",
                                                 "APIVERSION": "v1", "NAMESPACED": "true",
                                                 "KIND": "PersistentVolumeClaim"}
    assert by_name["storageclasses"]["APIVERSION"] == "storage.k8s.io/v1"
    assert by_name["statefulsets"]["SHORTNAMES"] == "sts"


def test_help_lists_every_command(cli) -> None:
    out = cli.run("--help", kubeconfig=False).out
    for command in ("apply", "create", "get", "describe", "delete", "patch", "label", "annotate",
                    "version", "api-resources", "up", "serve"):
        assert re.search(rf"^\s+{command}\s", out, re.M), command


def test_get_watch_prints_a_row_per_change_until_interrupted(cli, tmp_path) -> None:
    import queue
    import signal
    import subprocess
    import threading

    (tmp_path / "pv.yaml").write_text(PV)
    cli.ok("apply", "-f", str(tmp_path / "pv.yaml"))
    proc = subprocess.Popen([stowage_executable(), "get", "pv", "-w", "--kubeconfig", str(cli.kubeconfig)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli.env(),
                            preexec_fn=as_from_a_shell)
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        assert lines.get(timeout=60).startswith("NAME ")
        assert lines.get(timeout=60).startswith("pv1 ")
        # The watch is open once the initial table is out; a change now must show up as a row.
        cli.client().patch("persistentvolumes", "pv1", {"metadata": {"labels": {"seen": "yes"}}})
        cli.ok("label", "pv", "pv1", "again=yes")
        assert lines.get(timeout=60).startswith("pv1 ")
        state = signal_state(proc.pid)
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=60) == 0
        except subprocess.TimeoutExpired:
            pytest.fail(f"`get -w` still running 60 s after SIGINT; its signals: {state}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_beta_class_annotation_passes_through_rule_b1(cli) -> None:
    legacy = PVC.replace("  labels: {app: web}\n", "  annotations: {volume.beta.kubernetes.io/storage-class: slow}\n")
    legacy = legacy.replace("  storageClassName: fast\n", "")
    assert cli.ok("apply", "-f", "-", stdin=legacy) == "persistentvolumeclaim/data created\n"
    rows = parse_table(cli.ok("get", "pvc"), PVC_HEADERS)
    assert rows[0]["STORAGECLASS"] == "slow"
    assert cli.ok("apply", "-f", "-", stdin=legacy) == "persistentvolumeclaim/data unchanged\n"
