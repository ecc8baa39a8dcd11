"""PodTemplate (SEMANTICS PT1) through the real API server and the real kubectl: stored with the pod spec's
defaults, validated as Kubernetes' ValidatePodTemplate (the template's pod spec, any restart policy, no
ephemeral containers), printed with kubectl's columns, its generation counting changes of the template."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import httpx

from storage.apiserver.server import RunningServer
from support import kubectl_binary

PTS = "/api/v1/namespaces/default/podtemplates"


def _template(name: str, **template: Any) -> dict[str, Any]:
    body = template or {"metadata": {"labels": {"app": "db"}},
                        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": body}


def _causes(resp: httpx.Response) -> list[tuple[str, str]]:
    return [(c["field"], c["message"]) for c in resp.json()["details"]["causes"]]


def test_pt1_a_template_is_validated_as_a_pod_spec_and_defaulted_as_one(http: httpx.Client) -> None:
    resp = http.post(PTS, json={"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "pt-empty"}})
    assert resp.status_code == 422 and _causes(resp) == [("template.spec.containers", "Required value")]
    resp = http.post(PTS, json=_template("pt-eph", spec={"containers": [{"name": "c", "image": "busybox"}],
                                                         "ephemeralContainers": [{"name": "e", "image": "busybox"}]}))
    assert resp.status_code == 422
    assert _causes(resp) == [("template.spec.ephemeralContainers",
                              "Forbidden: ephemeral containers not allowed in pod template")]
    resp = http.post(PTS, json=_template("pt-name", spec={"containers": [{"name": "Not_A_Label", "image": "busybox"}]}))
    assert resp.status_code == 422 and _causes(resp)[0][0] == "template.spec.containers[0].name"
    assert http.get(f"{PTS}/pt-empty").status_code == 404
    # No protobuf message is carried for this kind: such a body is refused, naming what is accepted.
    resp = http.post(PTS, content=b"k8s\x00\x0a\x0e\x0a\x02v1\x12\x0bPodTemplate",
                     headers={"Content-Type": "application/vnd.kubernetes.protobuf"})
    assert resp.status_code == 415 and "application/json" in resp.json()["message"], resp.text

    # Unlike a workload's template, any restart policy; activeDeadlineSeconds too (only ReplicaSets refuse it).
    resp = http.post(PTS, json=_template("pt-once", spec={"restartPolicy": "Never", "activeDeadlineSeconds": 30,
                                                          "containers": [{"name": "c", "image": "busybox"}]}))
    assert resp.status_code == 201, resp.text
    stored = resp.json()
    spec = stored["template"]["spec"]
    assert spec["restartPolicy"] == "Never" and spec["dnsPolicy"] == "ClusterFirst"
    assert spec["containers"][0]["terminationMessagePath"] == "/dev/termination-log"
    assert stored["metadata"]["generation"] == 1

    # A change of the template counts in the generation; one of the labels alone does not.
    labelled = http.put(f"{PTS}/pt-once", json={**stored, "metadata": {**stored["metadata"], "labels": {"a": "b"}}})
    assert labelled.status_code == 200 and labelled.json()["metadata"]["generation"] == 1
    changed = labelled.json()
    changed["template"]["spec"]["containers"][0]["image"] = "debian:12"
    resp = http.put(f"{PTS}/pt-once", json=changed)
    assert resp.status_code == 200 and resp.json()["metadata"]["generation"] == 2


def test_pt1_kubectl_creates_lists_and_deletes_pod_templates(module_server: RunningServer, tmp_path: Path) -> None:
    manifest = tmp_path / "pt.yaml"
    manifest.write_text("""apiVersion: v1
kind: PodTemplate
metadata:
  name: db-template
  labels:
    team: storage
template:
  metadata:
    labels:
      app: db
      tier: backend
  spec:
    containers:
    - name: db
      image: postgres:16
    - name: backup
      image: busybox
""")
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: PodTemplate\nmetadata:\n  name: no-containers\ntemplate:\n  spec: {}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl_binary(), "--kubeconfig", str(module_server.kubeconfig), "--cache-dir",
                               str(tmp_path / "cache"), *args], capture_output=True, text=True, timeout=120, env=env)

    resources = kubectl("api-resources", "--api-group=", "-o", "name")
    assert resources.returncode == 0 and "podtemplates" in resources.stdout.split(), resources.stderr
    explained = kubectl("explain", "podtemplate")
    assert explained.returncode == 0 and "A pod template stored on its own" in explained.stdout, explained.stderr
    applied = kubectl("apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.strip() == "podtemplate/db-template created"
    listed = kubectl("get", "podtemplates", "db-template")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "CONTAINERS", "IMAGES", "POD", "LABELS"]
    assert row.split() == ["db-template", "db,backup", "postgres:16,busybox", "app=db,tier=backend"]
    image = kubectl("get", "podtemplate", "db-template", "-o", "jsonpath={.template.spec.containers[1].image}")
    assert image.stdout == "busybox"
    by_label = kubectl("get", "podtemplates", "-l", "team=storage", "-o", "name")
    assert by_label.stdout.split() == ["podtemplate/db-template"]

    refused = kubectl("apply", "-f", str(bad))
    assert refused.returncode != 0
    assert 'PodTemplate "no-containers" is invalid: template.spec.containers: Required value' in refused.stderr

    deleted = kubectl("delete", "podtemplate", "db-template")
    assert deleted.returncode == 0 and deleted.stdout.startswith('podtemplate "db-template" deleted'), deleted.stderr
    gone = kubectl("get", "podtemplate", "db-template")
    assert gone.returncode != 0 and 'podtemplates "db-template" not found' in gone.stderr
