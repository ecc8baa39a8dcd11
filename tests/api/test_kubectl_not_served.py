"""What the README's known differences say kubectl meets where Stowage serves less than Kubernetes,
checked with the real kubectl: ``kubectl debug`` finds ephemeral containers disabled, and
``kubectl apply --prune`` needs ``--prune-allowlist`` (its default list names Ingress, which is not
served), with which it prunes."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import yaml

from storage.apiserver.server import RunningServer
from support import kubectl_binary


def _kubectl(server: RunningServer, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    return subprocess.run([kubectl_binary(), "--kubeconfig", str(server.kubeconfig), "--cache-dir", str(tmp_path / "cache"),
                           *args], capture_output=True, text=True, timeout=120, env=clean)


def test_kubectl_debug_finds_ephemeral_containers_disabled(http: httpx.Client, module_server: RunningServer,
                                                           tmp_path: Path) -> None:
    made = http.post("/api/v1/namespaces/default/pods", json={
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "debugged"},
        "spec": {"containers": [{"name": "c", "image": "debian:12", "command": ["sleep", "1000"]}]}})
    assert made.status_code == 201, made.text
    r = _kubectl(module_server, tmp_path, "debug", "debugged", "--image=debian:12", "--", "true")
    assert r.returncode != 0
    assert "ephemeral containers are disabled for this cluster" in r.stderr, r.stderr


def test_kubectl_apply_prune_needs_an_allowlist_and_prunes_with_one(module_server: RunningServer, tmp_path: Path) -> None:
    manifests = tmp_path / "set"
    manifests.mkdir()

    def write(*names: str) -> None:
        for old in manifests.iterdir():
            old.unlink()
        for name in names:
            (manifests / f"{name}.yaml").write_text(yaml.safe_dump({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "default", "labels": {"set": "pruned"}}, "data": {"k": "v"}}))

    write("keep", "drop")
    assert _kubectl(module_server, tmp_path, "apply", "-f", str(manifests)).returncode == 0
    write("keep")
    refused = _kubectl(module_server, tmp_path, "apply", "-f", str(manifests), "-l", "set=pruned", "--prune")
    # The default list's kinds are looked up in its order; batch/v1's Job (J1) is served now.
    assert refused.returncode != 0, refused.stderr
    assert re.search(r'no matches for kind "(CronJob|Ingress)" in version "(batch|networking.k8s.io)/v1"', refused.stderr), \
        refused.stderr
    allowed = _kubectl(module_server, tmp_path, "apply", "-f", str(manifests), "-l", "set=pruned", "--prune",
                       "--prune-allowlist=core/v1/ConfigMap")
    assert allowed.returncode == 0, allowed.stderr
    assert "configmap/drop pruned" in allowed.stdout, allowed.stdout
    listed = _kubectl(module_server, tmp_path, "get", "configmaps", "-l", "set=pruned", "-o", "name")
    assert listed.stdout.split() == ["configmap/keep"], listed.stdout
