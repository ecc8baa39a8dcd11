"""Where the README once listed a difference kubectl met that is gone, checked with the real kubectl:
``kubectl apply --prune`` works with its default list. (``kubectl debug``, once refused here, is tested with
real pods in test_ec_kubectl_debug.py.)"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from storage.apiserver.server import RunningServer
from support import kubectl_binary


def _kubectl(server: RunningServer, tmp_path: Path, *args: str, version: str = "1.37") -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    return subprocess.run([kubectl_binary(version), "--kubeconfig", str(server.kubeconfig), "--cache-dir", str(tmp_path / "cache"),
                           *args], capture_output=True, text=True, timeout=120, env=clean)


def test_kubectl_apply_prune_with_its_default_list_prunes_configmaps_and_ingresses(
        module_server: RunningServer, tmp_path: Path) -> None:
    """Every kind of kubectl's default prune list is served (Ingress, IN1, was the last), so a plain
    ``apply --prune -l`` works and removes what left the set."""
    manifests = tmp_path / "set"
    manifests.mkdir()
    labels = {"set": "pruned"}

    def write(*names: str) -> None:
        for old in manifests.iterdir():
            old.unlink()
        for name in names:
            (manifests / f"{name}.yaml").write_text(yaml.safe_dump_all([
                {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": name, "namespace": "default", "labels": labels}, "data": {"k": "v"}},
                {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                 "metadata": {"name": name, "namespace": "default", "labels": labels},
                 "spec": {"defaultBackend": {"service": {"name": name, "port": {"number": 80}}}}}]))

    write("keep", "drop")
    applied = _kubectl(module_server, tmp_path, "apply", "-f", str(manifests))
    assert applied.returncode == 0, applied.stderr
    assert "ingress.networking.k8s.io/drop created" in applied.stdout, applied.stdout
    write("keep")
    pruned = _kubectl(module_server, tmp_path, "apply", "-f", str(manifests), "-l", "set=pruned", "--prune")
    assert pruned.returncode == 0, pruned.stderr
    assert "configmap/drop pruned" in pruned.stdout, pruned.stdout
    assert "ingress.networking.k8s.io/drop pruned" in pruned.stdout, pruned.stdout
    for kind in ("configmaps", "ingresses"):
        listed = _kubectl(module_server, tmp_path, "get", kind, "-l", "set=pruned", "-o", "name")
        assert [n.split("/")[-1] for n in listed.stdout.split()] == ["keep"], listed.stdout


def test_kubectl_1_20_apply_prune_needs_its_whitelist_as_against_kubernetes_1_25(module_server: RunningServer,
                                                                                tmp_path: Path) -> None:
    """kubectl 1.20's default list names batch/v1beta1 CronJob and extensions/v1beta1 Ingress, which
    Kubernetes stopped serving in 1.25 and 1.22: it stops as it does there, and prunes with a whitelist."""
    manifests = tmp_path / "set"
    manifests.mkdir()
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": "default", "labels": {"set": "old"}}}
    for name in ("keep20", "drop20"):
        (manifests / f"{name}.yaml").write_text(yaml.safe_dump({**doc, "metadata": {**doc["metadata"], "name": name}}))
    assert _kubectl(module_server, tmp_path, "apply", "-f", str(manifests), version="1.20").returncode == 0
    (manifests / "drop20.yaml").unlink()
    refused = _kubectl(module_server, tmp_path, "apply", "-f", str(manifests), "-l", "set=old", "--prune",
                       version="1.20")
    assert refused.returncode != 0
    assert 'no matches for kind "CronJob" in version "batch/v1beta1"' in refused.stderr, refused.stderr
    allowed = _kubectl(module_server, tmp_path, "apply", "-f", str(manifests), "-l", "set=old", "--prune",
                       "--prune-whitelist=core/v1/ConfigMap", version="1.20")
    assert allowed.returncode == 0, allowed.stderr
    assert "configmap/drop20 pruned" in allowed.stdout, allowed.stdout
