"""Ingress and IngressClass with the real kubectl of each release the README promises: ``kubectl create
ingress`` (with TLS and a class), ``get`` with kubectl's columns, the default class marked and given to a
new Ingress, ``describe`` and ``delete`` (SEMANTICS IN1, IN6)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from storage.apiserver.server import RunningServer
from support import KUBECTL_VERSIONS, kubectl_binary


def _kubectl(server: RunningServer, version: str, tmp_path: Path, *args: str, stdin: str | None = None) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    done = subprocess.run([kubectl_binary(version), "--kubeconfig", str(server.kubeconfig), "--cache-dir",
                           str(tmp_path / "cache"), *args], capture_output=True, text=True, timeout=120, env=clean,
                          input=stdin)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


def _rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


@pytest.mark.parametrize("version", KUBECTL_VERSIONS)
def test_kubectl_creates_lists_describes_and_deletes_ingresses(module_server: RunningServer, tmp_path: Path,
                                                               version: str) -> None:
    suffix = version.replace(".", "")
    namespace = f"ing-{suffix}"
    _kubectl(module_server, version, tmp_path, "create", "namespace", namespace)
    shop = f"shop-{suffix}"
    made = _kubectl(module_server, version, tmp_path, "-n", namespace, "create", "ingress", shop,
                    "--class=nginx", "--rule=shop.example.com/cart*=cart:8080,tls=shop-cert",
                    "--rule=api.example.com/=api:http")
    assert made.strip() == f"ingress.networking.k8s.io/{shop} created"
    spec = yaml.safe_load(_kubectl(module_server, version, tmp_path, "-n", namespace, "get", "ingress", shop,
                                   "-o", "yaml"))["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["shop.example.com"], "secretName": "shop-cert"}]
    paths = {r["host"]: r["http"]["paths"][0] for r in spec["rules"]}
    assert paths["shop.example.com"] == {"path": "/cart", "pathType": "Prefix",
                                         "backend": {"service": {"name": "cart", "port": {"number": 8080}}}}
    assert paths["api.example.com"]["backend"]["service"]["port"] == {"name": "http"}
    assert paths["api.example.com"]["pathType"] == "Exact"

    # IN6: a class marked default is listed so and given to an Ingress that names none.
    default_class = f"default-{suffix}"
    _kubectl(module_server, version, tmp_path, "apply", "-f", "-", stdin=yaml.safe_dump({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": default_class, "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "example.com/ingress"}}))
    classes = {row[0]: row for row in _rows(_kubectl(module_server, version, tmp_path, "get", "ingressclass"))[1:]}
    assert classes[default_class][:2] == [default_class, "(default)"] and classes[default_class][2] == \
        "example.com/ingress", classes
    plain = f"plain-{suffix}"
    _kubectl(module_server, version, tmp_path, "-n", namespace, "create", "ingress", plain,
             "--default-backend=web:80")
    try:
        table = _rows(_kubectl(module_server, version, tmp_path, "-n", namespace, "get", "ingress"))
        assert table[0] == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
        rows = {row[0]: row for row in table[1:]}
        assert rows[shop][1:5] == ["nginx", "shop.example.com,api.example.com", "80,", "443"], rows
        # Newest default wins; another test may have made a newer one, which is then the one given.
        assert rows[plain][1].startswith("default-") and rows[plain][2:4] == ["*", "80"], rows
        described = _kubectl(module_server, version, tmp_path, "-n", namespace, "describe", "ingress", shop)
        assert "shop-cert terminates shop.example.com" in described, described
        assert "/cart" in described and "cart:8080" in described, described
    finally:
        _kubectl(module_server, version, tmp_path, "delete", "ingressclass", default_class)
    deleted = _kubectl(module_server, version, tmp_path, "-n", namespace, "delete", "ingress", shop, plain)
    assert f'ingress.networking.k8s.io "{shop}" deleted' in deleted
    assert _kubectl(module_server, version, tmp_path, "-n", namespace, "get", "ingress", "-o", "name").strip() == ""
