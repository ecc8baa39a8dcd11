"""``metadata.generateName`` as Kubernetes' API server handles it (SEMANTICS K5): the name is generated before
validation and admission, the prefix is checked as a name, and refusals name the generated name. Before, a
prefix was never checked: ``generateName: Bad_`` stored an object named ``Bad_48n75``, a 300-character
prefix stored a 305-character name, and a refused pod was named by its prefix."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from storage.api.names import GENERATE_NAME_ALPHABET, generate_name, mask_trailing_dash
from storage.apiserver.server import RunningServer
from support import KUBECTL_VERSIONS, run_kubectl

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
SUFFIX = f"[{GENERATE_NAME_ALPHABET}]{{5}}"


def configmap(prefix: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": prefix}, "data": {"k": "v"}}


def causes(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {c["field"]: c["message"] for c in response.json()["details"]["causes"]}


def test_k5_a_generated_name_is_the_prefix_and_five_characters_of_kubernetes_alphabet() -> None:
    assert re.fullmatch(f"web-{SUFFIX}", generate_name("web-"))
    assert len({generate_name("web-") for _ in range(50)}) > 45
    long = generate_name("p" * 100)
    assert re.fullmatch(f"p{{58}}{SUFFIX}", long) and len(long) == 63
    # apimachinery's maskTrailingDash: the dash and the character before it become one "a".
    assert mask_trailing_dash("web-") == "wea" and mask_trailing_dash("-") == "-" and mask_trailing_dash("ab") == "ab"


def test_k5_a_created_object_gets_a_generated_name_that_is_stored(http: httpx.Client) -> None:
    made = http.post(CONFIGMAPS, json=configmap("gen-"))
    assert made.status_code == 201, made.text
    name = made.json()["metadata"]["name"]
    assert re.fullmatch(f"gen-{SUFFIX}", name), name
    assert made.json()["metadata"]["generateName"] == "gen-"
    assert http.get(f"{CONFIGMAPS}/{name}").json()["data"] == {"k": "v"}
    # A prefix longer than 58 characters is cut, so the name stays a valid one.
    long = http.post(CONFIGMAPS, json=configmap("q" * 100))
    assert long.status_code == 201, long.text
    assert re.fullmatch(f"q{{58}}{SUFFIX}", long.json()["metadata"]["name"])


@pytest.mark.parametrize("prefix", ["Bad_", "../", "a/b-", "x" * 254])
def test_k5_a_prefix_that_is_no_name_is_refused_and_nothing_is_stored(http: httpx.Client, prefix: str) -> None:
    before = {c["metadata"]["name"] for c in http.get(CONFIGMAPS).json()["items"]}
    refused = http.post(CONFIGMAPS, json=configmap(prefix))
    found = causes(refused)
    assert "metadata.generateName" in found, found
    # The refusal names the name the object would have had, as Kubernetes' does.
    assert re.match(f'ConfigMap "{re.escape(prefix[:58])}{SUFFIX}" is invalid', refused.json()["message"]), \
        refused.json()["message"]
    assert {c["metadata"]["name"] for c in http.get(CONFIGMAPS).json()["items"]} == before


def test_k5_a_service_prefix_is_checked_as_a_dns1035_label(http: httpx.Client) -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"generateName": "1svc-"},
               "spec": {"ports": [{"port": 80}]}}
    found = causes(http.post("/api/v1/namespaces/default/services", json=service))
    assert found["metadata.generateName"].startswith('Invalid value: "1svc-": a DNS-1035 label must consist of'), found
    assert re.match(f'Invalid value: "1svc-{SUFFIX}": a DNS-1035 label', found["metadata.name"]), found


def test_k5_a_dry_run_answers_with_a_generated_name_that_is_not_kept(http: httpx.Client) -> None:
    made = http.post(f"{CONFIGMAPS}?dryRun=All", json=configmap("dry-"))
    assert made.status_code == 201, made.text
    name = made.json()["metadata"]["name"]
    assert re.fullmatch(f"dry-{SUFFIX}", name)
    assert http.get(f"{CONFIGMAPS}/{name}").status_code == 404


def test_k5_pod_security_names_the_generated_pod_it_refuses(http: httpx.Client) -> None:
    namespace = "k5-restricted"
    made = http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": namespace, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    assert made.status_code == 201, made.text
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    refused = http.post(f"/api/v1/namespaces/{namespace}/pods", json=pod)
    assert refused.status_code == 403, refused.text
    message = refused.json()["message"]
    assert re.match(f'pods "web-{SUFFIX}" is forbidden: violates PodSecurity "restricted:latest"', message), message
    assert http.get(f"/api/v1/namespaces/{namespace}/pods").json()["items"] == []


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_k5_kubectl_create_of_a_generate_name_manifest(module_server: RunningServer, tmp_path: Path,
                                                       version: str) -> None:
    prefix = f"kc{version.replace('.', '')}-"
    manifest = yaml.safe_dump(configmap(prefix))

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return run_kubectl(version, module_server.kubeconfig, tmp_path / "cache", *args, stdin=manifest)

    first, second = kubectl("create", "-f", "-"), kubectl("create", "-f", "-")
    assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
    names = [re.fullmatch(f"configmap/({prefix}{SUFFIX}) created", done.stdout.strip()) for done in (first, second)]
    assert all(names), (first.stdout, second.stdout)
    assert names[0] is not None and names[1] is not None and names[0].group(1) != names[1].group(1)
    listed = kubectl("get", "configmaps", "-o", "name")
    assert {f"configmap/{m.group(1)}" for m in names if m} <= set(listed.stdout.split())
    manifest = yaml.safe_dump(configmap("Bad_"))
    refused = kubectl("create", "-f", "-")
    assert refused.returncode != 0
    assert re.search(f'ConfigMap "Bad_{SUFFIX}" is invalid: .*metadata.generateName: Invalid value: "Bad_"',
                     refused.stderr, re.S), refused.stderr
