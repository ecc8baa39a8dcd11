"""examples/glusterfs: the manifests load and validate, the class's parameters are the provisioner's, and
the static PV names Endpoints that the example defines (GF1, GF4, GF5)."""
from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import yaml

from provisioners.glusterfs import GlusterfsProvisioner
from storage.api.defaults import apply_defaults
from storage.api.validation import validate

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "glusterfs"


def docs() -> list[dict[str, Any]]:
    return [d for path in sorted(EXAMPLE.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]


def test_every_manifest_validates() -> None:
    kinds = []
    for doc in docs():
        validate(apply_defaults(copy.deepcopy(doc)))
        kinds.append(doc["kind"])
    assert sorted(set(kinds)) == ["Endpoints", "PersistentVolume", "PersistentVolumeClaim", "Pod", "Service", "StorageClass"]


def test_class_parameters_are_understood_and_static_pv_names_its_endpoints() -> None:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs():
        by_kind.setdefault(doc["kind"], []).append(doc)
    storage_class = by_kind["StorageClass"][0]
    assert storage_class["provisioner"] == GlusterfsProvisioner.name
    GlusterfsProvisioner().check_parameters(storage_class["parameters"])  # raises on an unknown one
    pv = by_kind["PersistentVolume"][0]
    endpoints = {e["metadata"]["name"] for e in by_kind["Endpoints"]}
    assert pv["spec"]["glusterfs"]["endpoints"] in endpoints
    assert {s["metadata"]["name"] for s in by_kind["Service"]} == endpoints


def test_start_script_is_valid_bash_and_explains_itself() -> None:
    script = EXAMPLE / "start-glusterd.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "start STATE_DIR" in usage.stderr and "stop" in usage.stderr
