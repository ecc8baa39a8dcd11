"""K1/K2 over HTTP and with the real kubectl: a body of the wrong JSON types is 400 BadRequest, as Kubernetes'
decoder answers; the same mistake reached by a patch is the patch's 422; value errors stay 422."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from storage.apiserver.server import RunningServer
from support import kubectl_binary

_STS_PATH = "/apis/apps/v1/namespaces/default/statefulsets"
_REPLICAS_MESSAGE = ('StatefulSet in version "v1" cannot be handled as a StatefulSet: json: cannot unmarshal string '
                     'into Go struct field StatefulSetSpec.spec.replicas of type int32')


def _sts(name: str, replicas: object = 1) -> dict[str, object]:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
            "spec": {"serviceName": name, "replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


def _manifest(name: str, replicas: str, port: str) -> str:
    return f"""apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name}
  namespace: default
spec:
  serviceName: {name}
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: c
        image: busybox
        ports:
        - {{name: http, containerPort: {port}}}
        readinessProbe:
          httpGet: {{port: http}}
"""


def _kubectl(server: RunningServer, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    return subprocess.run([kubectl_binary(), "--kubeconfig", str(server.kubeconfig), "--cache-dir", str(tmp_path / "cache"),
                           *args], capture_output=True, text=True, timeout=120, env=clean)


def test_k1_create_and_replace_of_the_wrong_type_are_400_bad_request(http: httpx.Client) -> None:
    r = http.post(_STS_PATH, json=_sts("k1-post", replicas="three"))
    assert r.status_code == 400, r.text
    body = r.json()
    assert (body["reason"], body["code"], body["message"]) == ("BadRequest", 400, _REPLICAS_MESSAGE)
    assert http.get(f"{_STS_PATH}/k1-post").status_code == 404

    made = http.post(_STS_PATH, json=_sts("k1-put"))
    assert made.status_code == 201, made.text
    replaced = made.json()
    replaced["spec"]["replicas"] = "three"
    r = http.put(f"{_STS_PATH}/k1-put", json=replaced)
    assert r.status_code == 400 and r.json()["message"] == _REPLICAS_MESSAGE, r.text


def test_k1_a_patch_leaving_the_wrong_type_is_the_patchs_422(http: httpx.Client) -> None:
    assert http.post(_STS_PATH, json=_sts("k1-patch")).status_code == 201
    r = http.patch(f"{_STS_PATH}/k1-patch", json={"spec": {"replicas": "three"}},
                   headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 422, r.text
    causes = r.json()["details"]["causes"]
    assert [c["field"] for c in causes] == ["patch"]
    assert causes[0]["message"].endswith(
        "json: cannot unmarshal string into Go struct field StatefulSetSpec.spec.replicas of type int32"), causes
    assert http.get(f"{_STS_PATH}/k1-patch").json()["spec"]["replicas"] == 1


def test_k1_value_errors_stay_422_invalid(http: httpx.Client) -> None:
    r = http.post("/api/v1/namespaces/default/persistentvolumeclaims", json={
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "k1-bogus"},
        "spec": {"accessModes": ["Bogus"], "resources": {"requests": {"storage": "1Gi"}}}})
    assert r.status_code == 422 and r.json()["reason"] == "Invalid", r.text
    assert 'spec.accessModes: Unsupported value: "Bogus"' in r.json()["message"]


def test_k1_kubectl_create_and_apply_of_a_bad_manifest_say_bad_request(module_server: RunningServer,
                                                                      tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(_manifest("k1-kubectl", replicas="three", port="80"))
    for verb in ("create", "apply"):
        r = _kubectl(module_server, tmp_path, verb, "-f", str(bad))
        assert r.returncode != 0
        assert "Error from server (BadRequest)" in r.stderr and _REPLICAS_MESSAGE in r.stderr, (verb, r.stderr)


def test_k2_kubectl_a_quoted_port_is_refused_and_the_same_manifest_with_a_number_is_created(
        module_server: RunningServer, tmp_path: Path) -> None:
    quoted = tmp_path / "quoted.yaml"
    quoted.write_text(_manifest("k2-port", replicas="1", port='"80"'))
    r = _kubectl(module_server, tmp_path, "apply", "-f", str(quoted))
    assert r.returncode != 0 and "Error from server (BadRequest)" in r.stderr, r.stderr
    assert ("json: cannot unmarshal string into Go struct field ContainerPort"
            ".spec.template.spec.containers.ports.containerPort of type int32") in r.stderr, r.stderr

    plain = tmp_path / "plain.yaml"
    plain.write_text(_manifest("k2-port", replicas="1", port="80"))
    r = _kubectl(module_server, tmp_path, "apply", "-f", str(plain))
    assert r.returncode == 0 and "statefulset.apps/k2-port created" in r.stdout, r.stderr
    got = _kubectl(module_server, tmp_path, "get", "statefulset", "k2-port", "-o",
                   "jsonpath={.spec.template.spec.containers[0].ports[0].containerPort} "
                   "{.spec.template.spec.containers[0].readinessProbe.httpGet.port}")
    assert got.stdout == "80 http", got.stderr
