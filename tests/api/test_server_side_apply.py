"""Server-side apply over HTTP, by raw requests, the real kubectl and the official Python client (SSA1..SSA12).

One server for the module: each test works on objects of its own names.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import dynamic as k8s_dynamic

from serverutil import running_server
from storage.apiserver.server import RunningServer
from support import kubectl_binary

APPLY = "application/apply-patch+yaml"
CMS = "/api/v1/namespaces/default/configmaps"
DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("ssa")) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=60,
                      verify=server.verify()) as c:
        yield c


def config_map(name: str, data: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def apply(http: httpx.Client, path: str, body: dict[str, Any] | str, manager: str | None = "ssa-test",
          **params: str) -> httpx.Response:
    query = {**({"fieldManager": manager} if manager else {}), **params}
    content = body if isinstance(body, str) else yaml.safe_dump(body)
    return http.patch(path, params=query, content=content.encode(), headers={"Content-Type": APPLY})


def managers(obj: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["manager"], e["operation"]): e for e in obj["metadata"].get("managedFields", [])}


# ---- raw HTTP ---------------------------------------------------------------------------------

def test_ssa1_apply_needs_a_field_manager_and_force_only_goes_with_apply(http: httpx.Client) -> None:
    response = apply(http, f"{CMS}/ssa1", config_map("ssa1", {"a": "1"}), manager=None)
    assert response.status_code == 422
    status = response.json()
    assert status["message"] == 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'
    assert status["reason"] == "Invalid" and status["details"]["kind"] == "PatchOptions"
    assert status["details"]["group"] == "meta.k8s.io"
    assert status["details"]["causes"] == [{"reason": "FieldValueRequired", "field": "fieldManager",
                                            "message": "Required value: is required for apply patch"}]
    assert http.get(f"{CMS}/ssa1").status_code == 404, "nothing was created"

    assert http.post(CMS, json=config_map("ssa1", {"a": "1"})).status_code == 201
    merge = http.patch(f"{CMS}/ssa1", params={"force": "true"}, json={"data": {"a": "2"}},
                       headers={"Content-Type": "application/merge-patch+json"})
    assert merge.status_code == 422
    assert "force: Forbidden: may not be specified for non-apply patch" in merge.json()["message"]
    too_long = http.post(CMS, params={"fieldManager": "m" * 129}, json=config_map("ssa1-long", {}))
    assert too_long.status_code == 422
    assert too_long.json()["message"] == ('CreateOptions.meta.k8s.io "" is invalid: '
                                          "fieldManager: Too long: may not be more than 128 bytes")


def test_ssa2_ssa3_apply_creates_and_records_an_apply_entry(http: httpx.Client) -> None:
    created = apply(http, f"{CMS}/ssa2", config_map("ssa2", {"a": "1"}, {"app": "x"}))
    assert created.status_code == 201, created.text
    (entry,) = created.json()["metadata"]["managedFields"]
    assert entry["manager"] == "ssa-test" and entry["operation"] == "Apply" and entry["apiVersion"] == "v1"
    assert entry["fieldsType"] == "FieldsV1" and entry["time"].endswith("Z")
    assert entry["fieldsV1"] == {"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {"f:app": {}}}}
    again = apply(http, f"{CMS}/ssa2", config_map("ssa2", {"a": "1"}, {"app": "x"}))
    assert again.status_code == 200
    assert http.get(f"{CMS}/ssa2").json()["metadata"]["managedFields"][0]["fieldsV1"] == entry["fieldsV1"]
    listed = http.get(CMS).json()["items"]
    assert any(o["metadata"]["name"] == "ssa2" and o["metadata"].get("managedFields") for o in listed), \
        "lists carry managedFields too"


def test_ssa4_plain_writes_record_update_entries_named_by_user_agent_or_field_manager(http: httpx.Client) -> None:
    created = http.post(CMS, json=config_map("ssa4", {"a": "1"}), headers={"User-Agent": "kubectl-create/v1.37.1"})
    assert created.status_code == 201
    assert list(managers(created.json())) == [("kubectl-create", "Update")]
    assert managers(created.json())[("kubectl-create", "Update")]["fieldsV1"] == {"f:data": {"f:a": {}}}

    put = created.json()
    put["data"]["b"] = "2"
    updated = http.put(f"{CMS}/ssa4", params={"fieldManager": "editor"}, json=put).json()
    assert managers(updated)[("editor", "Update")]["fieldsV1"] == {"f:data": {"f:b": {}}}
    assert managers(updated)[("kubectl-create", "Update")]["fieldsV1"] == {"f:data": {"f:a": {}}}

    patched = http.patch(f"{CMS}/ssa4", json={"data": {"a": "3"}}, params={"fieldManager": "patcher"},
                         headers={"Content-Type": "application/merge-patch+json"}).json()
    assert managers(patched)[("patcher", "Update")]["fieldsV1"] == {"f:data": {"f:a": {}}}
    assert ("kubectl-create", "Update") not in managers(patched), "its only field was taken"

    same = http.patch(f"{CMS}/ssa4", json={"data": {"a": "3"}}, params={"fieldManager": "noop"},
                      headers={"Content-Type": "application/merge-patch+json"}).json()
    assert same["metadata"]["managedFields"] == patched["metadata"]["managedFields"], "no change, no entry"


def test_ssa5_ssa6_conflicts_are_409_and_force_takes_ownership(http: httpx.Client) -> None:
    assert apply(http, f"{CMS}/ssa5", config_map("ssa5", {"a": "1", "b": "1"})).status_code == 201
    http.patch(f"{CMS}/ssa5", json={"data": {"a": "2"}}, params={"fieldManager": "kubectl-edit"},
               headers={"Content-Type": "application/merge-patch+json"}).raise_for_status()
    before = http.get(f"{CMS}/ssa5").json()

    conflict = apply(http, f"{CMS}/ssa5", config_map("ssa5", {"a": "1", "b": "9"}))
    assert conflict.status_code == 409
    status = conflict.json()
    assert status["reason"] == "Conflict"
    assert status["message"] == 'Apply failed with 1 conflict: conflict with "kubectl-edit" using v1: .data.a'
    assert status["details"]["causes"] == [{"reason": "FieldManagerConflict", "field": ".data.a",
                                            "message": 'conflict with "kubectl-edit" using v1'}]
    after = http.get(f"{CMS}/ssa5").json()
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], "nothing was written"

    shared = apply(http, f"{CMS}/ssa5", config_map("ssa5", {"a": "2", "b": "1"}))
    assert shared.status_code == 200, "the same value shares ownership"
    owners = managers(shared.json())
    assert "f:a" in owners[("ssa-test", "Apply")]["fieldsV1"]["f:data"]
    assert "f:a" in owners[("kubectl-edit", "Update")]["fieldsV1"]["f:data"]

    http.patch(f"{CMS}/ssa5", json={"data": {"a": "3"}}, params={"fieldManager": "kubectl-edit"},
               headers={"Content-Type": "application/merge-patch+json"}).raise_for_status()
    forced = apply(http, f"{CMS}/ssa5", config_map("ssa5", {"a": "1", "b": "1"}), force="true")
    assert forced.status_code == 200 and forced.json()["data"] == {"a": "1", "b": "1"}
    assert ("kubectl-edit", "Update") not in managers(forced.json())


def test_ssa7_fields_the_applier_drops_go_unless_another_manager_owns_them(http: httpx.Client) -> None:
    apply(http, f"{CMS}/ssa7", config_map("ssa7", {"a": "1", "b": "1", "c": "1"}, {"x": "1", "y": "1"}))
    apply(http, f"{CMS}/ssa7", config_map("ssa7", {"c": "1"}), manager="other").raise_for_status()
    after = apply(http, f"{CMS}/ssa7", config_map("ssa7", {"a": "1"}, {"x": "1"}))
    assert after.status_code == 200
    assert after.json()["data"] == {"a": "1", "c": "1"}, "b is gone; c stays, 'other' owns it"
    assert after.json()["metadata"]["labels"] == {"x": "1"}


def test_ssa8_apply_to_status_manages_status_only(http: httpx.Client) -> None:
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ssa8"},
              "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "ssa8"}},
                       "template": {"metadata": {"labels": {"app": "ssa8"}},
                                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
              "status": {"observedGeneration": 7}}
    created = apply(http, f"{DEPLOYS}/ssa8", deploy)
    assert created.status_code == 201
    assert "status" not in managers(created.json())[("ssa-test", "Apply")]["fieldsV1"], "main resource: no status"
    status_config = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ssa8"},
                     "spec": {"replicas": 9}, "status": {"observedGeneration": 7}}
    response = apply(http, f"{DEPLOYS}/ssa8/status", status_config, manager="status-writer")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"]["observedGeneration"] == 7 and body["spec"]["replicas"] == 1
    entry = [e for e in body["metadata"]["managedFields"] if e["manager"] == "status-writer"][0]
    assert entry["operation"] == "Apply" and entry["subresource"] == "status"
    assert entry["fieldsV1"] == {"f:status": {"f:observedGeneration": {}}}


def test_ssa9_dry_run_apply_answers_and_stores_nothing(http: httpx.Client) -> None:
    dry = apply(http, f"{CMS}/ssa9", config_map("ssa9", {"a": "1"}), dryRun="All")
    assert dry.status_code == 201 and dry.json()["metadata"]["managedFields"][0]["manager"] == "ssa-test"
    assert http.get(f"{CMS}/ssa9").status_code == 404
    apply(http, f"{CMS}/ssa9", config_map("ssa9", {"a": "1"})).raise_for_status()
    before = http.get(f"{CMS}/ssa9").json()
    changed = apply(http, f"{CMS}/ssa9", config_map("ssa9", {"b": "2"}), dryRun="All")
    assert changed.status_code == 200 and changed.json()["data"] == {"b": "2"}
    assert http.get(f"{CMS}/ssa9").json() == before


def test_ssa10_ssa12_what_an_apply_or_a_write_may_say_about_managed_fields(http: httpx.Client) -> None:
    body = config_map("ssa10", {"a": "1"})
    body["metadata"]["managedFields"] = [{"manager": "x", "operation": "Apply", "fieldsType": "FieldsV1",
                                          "fieldsV1": {}}]
    refused = apply(http, f"{CMS}/ssa10", body)
    assert refused.status_code == 400 and refused.json()["message"] == "metadata.managedFields must be nil"
    wrong_name = apply(http, f"{CMS}/ssa10", config_map("other-name", {}))
    assert wrong_name.status_code == 400 and "does not match the name on the URL" in wrong_name.json()["message"]

    apply(http, f"{CMS}/ssa10", config_map("ssa10", {"a": "1"})).raise_for_status()
    cleared = http.patch(f"{CMS}/ssa10", json={"metadata": {"managedFields": [{}]}},
                         headers={"Content-Type": "application/merge-patch+json"})
    assert cleared.status_code == 200 and "managedFields" not in cleared.json()["metadata"]
    pod_body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ssa12"},
                "spec": {"containers": [{"image": "busybox"}]}}
    keyless = apply(http, "/api/v1/namespaces/default/pods/ssa12", pod_body)
    assert keyless.status_code == 400 and 'omits key field "name"' in keyless.json()["message"]


def test_ssa4_scale_writes_are_recorded_for_the_scale_subresource(http: httpx.Client) -> None:
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ssa4s"},
              "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "s"}},
                       "template": {"metadata": {"labels": {"app": "s"}},
                                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    apply(http, f"{DEPLOYS}/ssa4s", deploy).raise_for_status()
    http.patch(f"{DEPLOYS}/ssa4s/scale", json={"spec": {"replicas": 3}}, headers={
        "Content-Type": "application/merge-patch+json", "User-Agent": "kubectl/v1.37.1 (linux/amd64)"},
    ).raise_for_status()
    deploy["spec"]["replicas"] = 2
    conflict = apply(http, f"{DEPLOYS}/ssa4s", deploy)
    assert conflict.status_code == 409
    assert conflict.json()["message"] == ('Apply failed with 1 conflict: conflict with "kubectl" with subresource '
                                          '"scale" using apps/v1: .spec.replicas')


# ---- the real kubectl ---------------------------------------------------------------------------

WEB = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, tier: front}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: nginx
"""


def kubectl(server: RunningServer, *args: str, stdin: str | None = None, ok: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert server.kubeconfig is not None
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    proc = subprocess.run(
        [kubectl_binary(), "--kubeconfig", str(server.kubeconfig), "--cache-dir",
         str(server.kubeconfig.parent / "kube-cache"), *args],
        input=stdin, capture_output=True, text=True, timeout=120, env={**clean, **(env or {})})
    if ok:
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc


def test_ssa_kubectl_apply_server_side_conflicts_force_and_label_removal(server: RunningServer,
                                                                         tmp_path: Path) -> None:
    """SSA2, SSA3, SSA4, SSA5, SSA6, SSA7, SSA9 with kubectl's own flags and messages."""
    first = kubectl(server, "apply", "--server-side", "-f", "-", stdin=WEB)
    assert "deployment.apps/web serverside-applied" in first.stdout

    plain = yaml.safe_load(kubectl(server, "get", "deployment", "web", "-o", "yaml").stdout)
    assert "managedFields" not in plain["metadata"], "kubectl hides them without --show-managed-fields"
    shown = yaml.safe_load(kubectl(server, "get", "deployment", "web", "-o", "yaml", "--show-managed-fields").stdout)
    (entry,) = shown["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"], entry["apiVersion"]) == ("kubectl", "Apply", "apps/v1")
    assert entry["fieldsV1"]["f:spec"]["f:replicas"] == {}
    assert entry["fieldsV1"]["f:metadata"]["f:labels"] == {"f:app": {}, "f:tier": {}}

    # A second manager: kubectl edit (its own field manager) changes the image, kubectl scale the replicas.
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/image: nginx/image: httpd/' \"$1\"\n")
    editor.chmod(0o755)
    kubectl(server, "edit", "deployment", "web", env={"KUBE_EDITOR": str(editor)})
    kubectl(server, "scale", "deployment", "web", "--replicas=5")
    owners = {(e["manager"], e["operation"], e.get("subresource", "")) for e in yaml.safe_load(
        kubectl(server, "get", "deployment", "web", "-o", "yaml", "--show-managed-fields").stdout
    )["metadata"]["managedFields"]}
    assert owners == {("kubectl", "Apply", ""), ("kubectl-edit", "Update", ""), ("kubectl", "Update", "scale")}

    refused = kubectl(server, "apply", "--server-side", "-f", "-", stdin=WEB, ok=False)
    assert refused.returncode != 0
    assert "Apply failed with 2 conflicts" in refused.stderr
    assert 'conflicts with "kubectl" with subresource "scale" using apps/v1:\n- .spec.replicas' in refused.stderr
    assert ('conflicts with "kubectl-edit" using apps/v1:\n- .spec.template.spec.containers[name="app"].image'
            in refused.stderr)
    assert "--force-conflicts" in refused.stderr, "kubectl explains the way out"
    live = json.loads(kubectl(server, "get", "deployment", "web", "-o", "json").stdout)
    assert live["spec"]["replicas"] == 5

    dry = kubectl(server, "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-", stdin=WEB)
    assert "serverside-applied (server dry run)" in dry.stdout
    assert json.loads(kubectl(server, "get", "deployment", "web", "-o", "json").stdout)["spec"]["replicas"] == 5

    kubectl(server, "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=WEB)
    live = json.loads(kubectl(server, "get", "deployment", "web", "-o", "json", "--show-managed-fields").stdout)
    assert live["spec"]["replicas"] == 2
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx"
    assert {e["manager"] for e in live["metadata"]["managedFields"]} == {"kubectl"}, "both losers lost all"

    kubectl(server, "apply", "--server-side", "-f", "-", stdin=WEB.replace(", tier: front", ""))
    labels = json.loads(kubectl(server, "get", "deployment", "web", "-o", "json").stdout)["metadata"]["labels"]
    assert labels == {"app": "web"}, "the label the applier stopped specifying is gone"


# ---- the official Python client -----------------------------------------------------------------

def test_ssa_kubernetes_python_client_applies(server: RunningServer, tmp_path: Path) -> None:
    """SSA2, SSA5, SSA6 through CoreV1Api (content type and field_manager) and the dynamic client."""
    api_client = k8s_config.new_client_from_config(config_file=str(server.kubeconfig))
    try:
        core = k8s.CoreV1Api(api_client)
        made = core.patch_namespaced_config_map(
            "py-ssa", "default", config_map("py-ssa", {"a": "1"}), field_manager="py-client",
            _content_type=APPLY)
        assert made.data == {"a": "1"}
        assert [(m.manager, m.operation) for m in made.metadata.managed_fields] == [("py-client", "Apply")]

        # Its discovery cache goes in the test's own directory (by default a file in the machine's /tmp).
        dyn = k8s_dynamic.DynamicClient(api_client, cache_file=str(tmp_path / "discovery.json"))
        cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
        with pytest.raises(k8s_dynamic.exceptions.ConflictError) as info:
            dyn.server_side_apply(cms, body=config_map("py-ssa", {"a": "2"}), namespace="default",
                                  field_manager="dynamic")
        assert 'conflict with "py-client": .data.a' in json.loads(info.value.body)["message"]
        forced = dyn.server_side_apply(cms, body=config_map("py-ssa", {"a": "2"}), namespace="default",
                                       field_manager="dynamic", force_conflicts=True)
        assert forced.to_dict()["data"] == {"a": "2"}
        assert {m["manager"] for m in forced.to_dict()["metadata"]["managedFields"]} == {"dynamic"}
    finally:
        api_client.close()


def test_ssa1_stowage_client_names_a_manager_for_apply(server: RunningServer) -> None:
    with server.client() as c:
        made = c.patch("configmaps", "client-ssa", yaml.safe_dump(config_map("client-ssa", {"a": "1"})), "default",
                       "apply")
        assert [(e["manager"], e["operation"]) for e in made["metadata"]["managedFields"]] == [("stowage", "Apply")]
        mine = c.patch("configmaps", "client-ssa", yaml.safe_dump(config_map("client-ssa", {"a": "2"})), "default",
                       "apply", field_manager="mine", force=True)
        assert mine["data"] == {"a": "2"} and [e["manager"] for e in mine["metadata"]["managedFields"]] == ["mine"]
