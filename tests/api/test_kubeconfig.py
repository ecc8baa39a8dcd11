"""Kubeconfig writing, loading and kubectl's search order."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from storage.client import Client, default_kubeconfig_path, load_kubeconfig, write_kubeconfig


def test_round_trip_and_private_mode(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1234", "secret-token", context="here")
    assert path.stat().st_mode & 0o777 == 0o600
    doc = yaml.safe_load(path.read_text())
    assert doc["current-context"] == "here" and doc["kind"] == "Config"
    assert doc["clusters"][0]["cluster"]["server"] == "http://127.0.0.1:1234"
    assert load_kubeconfig(path) == ("http://127.0.0.1:1234", "secret-token")


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = write_kubeconfig(tmp_path / "explicit", "http://explicit:1", "t1")
    env_first = write_kubeconfig(tmp_path / "env1", "http://env:2", "t2")
    env_second = write_kubeconfig(tmp_path / "env2", "http://env:3", "t3")
    data_dir = tmp_path / "data"
    write_kubeconfig(data_dir / "kubeconfig", "http://default:4", "t4")

    monkeypatch.setenv("STOWAGE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("KUBECONFIG", f"{env_first}:{env_second}")
    assert load_kubeconfig(explicit)[0] == "http://explicit:1"
    assert load_kubeconfig()[0] == "http://env:2"
    monkeypatch.delenv("KUBECONFIG")
    assert default_kubeconfig_path() == data_dir / "kubeconfig"
    assert load_kubeconfig()[0] == "http://default:4"
    monkeypatch.delenv("STOWAGE_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_kubeconfig_path() == tmp_path / "home" / ".stowage" / "kubeconfig"


def test_missing_and_broken_files_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="kubeconfig"):
        load_kubeconfig(tmp_path / "none")
    broken = tmp_path / "broken"
    broken.write_text(yaml.safe_dump({"current-context": "x", "contexts": []}))
    with pytest.raises(ValueError, match="current-context"):
        load_kubeconfig(broken)


def test_server_writes_a_usable_kubeconfig(api_server) -> None:
    with Client.from_kubeconfig(api_server.kubeconfig) as client:
        client.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}})
        assert [o["metadata"]["name"] for o in client.list("configmaps", "default")[0]] == ["c"]
