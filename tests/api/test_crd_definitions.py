"""CustomResourceDefinitions (SEMANTICS CRD1-CRD4): the external-snapshotter's own CRD files, applied unchanged
with the real kubectl as every CSI snapshot guide does, are accepted and Established for the kinds Stowage
serves built in; any other definition is refused with a 422 that says why; Kubernetes' rules for a definition
apply."""
from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from storage.apiserver.server import RunningServer
from support import kubectl_binary

REPO = Path(__file__).resolve().parents[2]
CRDS_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def _snapshotter_crds() -> Path:
    for root in (REPO, _common_checkout()):
        found = sorted((root / ".cache/crds").glob("external-snapshotter-*")) if root else []
        if found:
            return found[-1]
    pytest.skip("the external-snapshotter CRDs are fetched from the Go module proxy by scripts/setup.sh, "
                "which needs `go`; they are not in .cache/crds")


def _common_checkout() -> Path | None:
    try:  # a worktree shares the main checkout's setup cache
        common = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--path-format=absolute", "--git-common-dir"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(common).parent if common else None


def _kubectl(server: RunningServer, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    return subprocess.run([kubectl_binary(), "--kubeconfig", str(server.kubeconfig), "--cache-dir", str(tmp_path / "cache"),
                           *args], capture_output=True, text=True, timeout=120, env=clean)


def _definition(plural: str = "volumesnapshotclasses", group: str = "snapshot.storage.k8s.io",
                kind: str = "VolumeSnapshotClass", scope: str = "Cluster", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "names": {"plural": plural, "kind": kind}, "scope": scope,
                     "versions": [{"name": "v1", "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": {"type": "object",
                                                                  "x-kubernetes-preserve-unknown-fields": True}}}],
                     **spec}}


def _causes(resp: httpx.Response) -> list[tuple[str, str]]:
    return [(c["field"], c["message"]) for c in resp.json()["details"]["causes"]]


def test_crd1_the_external_snapshotter_crds_apply_unchanged_and_are_established(
        module_server: RunningServer, tmp_path: Path, http: httpx.Client) -> None:
    crds = _snapshotter_crds()
    files = [crds / f"snapshot.storage.k8s.io_{p}.yaml" for p in ("volumesnapshots", "volumesnapshotcontents",
                                                                   "volumesnapshotclasses")]
    args = [a for f in files for a in ("-f", str(f))]

    applied = _kubectl(module_server, tmp_path, "apply", *args)

    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.count("created") == 3, applied.stdout
    waited = _kubectl(module_server, tmp_path, "wait", "--for=condition=established", "--timeout=30s",
                      "crd/volumesnapshots.snapshot.storage.k8s.io", "crd/volumesnapshotcontents.snapshot.storage.k8s.io",
                      "crd/volumesnapshotclasses.snapshot.storage.k8s.io")
    assert waited.returncode == 0, waited.stderr
    stored = http.get(f"{CRDS_PATH}/volumesnapshots.snapshot.storage.k8s.io").json()
    sent = yaml.safe_load(files[0].read_text())
    # Kept as sent (the whole schema), with the defaults and the status kube-apiserver gives it.
    assert stored["spec"]["versions"][0]["schema"] == sent["spec"]["versions"][0]["schema"]
    assert stored["spec"]["names"]["listKind"] == "VolumeSnapshotList"
    assert stored["spec"]["conversion"] == {"strategy": "None"}
    assert stored["status"]["storedVersions"] == ["v1"]
    assert stored["status"]["acceptedNames"]["kind"] == "VolumeSnapshot"
    # Applied again: the files carry an empty status, so kubectl sends a patch of status only ("configured",
    # as against Kubernetes); the main resource ignores it and nothing is written.
    before = stored["metadata"]["resourceVersion"]
    again = _kubectl(module_server, tmp_path, "apply", *args)
    assert again.returncode == 0, again.stderr
    after = http.get(f"{CRDS_PATH}/volumesnapshots.snapshot.storage.k8s.io").json()
    assert after["metadata"]["resourceVersion"] == before and after["status"] == stored["status"]
    listed = _kubectl(module_server, tmp_path, "get", "crd")
    assert listed.stdout.splitlines()[0].split() == ["NAME", "CREATED", "AT"]
    assert _kubectl(module_server, tmp_path, "get", "volumesnapshotclasses").returncode == 0
    # The group-snapshot definitions of the same kustomization name kinds Stowage does not serve.
    group = _kubectl(module_server, tmp_path, "apply", "-f",
                     str(crds / "groupsnapshot.storage.k8s.io_volumegroupsnapshots.yaml"))
    assert group.returncode != 0
    assert "Stowage serves no custom resources" in group.stderr and "volumesnapshots.snapshot.storage.k8s.io" in group.stderr
    deleted = _kubectl(module_server, tmp_path, "delete", "-f", str(files[2]))
    assert deleted.returncode == 0, deleted.stderr
    assert _kubectl(module_server, tmp_path, "get", "volumesnapshotclasses").returncode == 0  # CRD4: still served


def test_crd2_kubernetes_rules_for_a_definition(http: httpx.Client) -> None:
    bad = _definition()
    bad["metadata"]["name"] = "wrong.snapshot.storage.k8s.io"
    resp = http.post(CRDS_PATH, json=bad)
    assert resp.status_code == 422
    assert _causes(resp) == [("metadata.name", 'Invalid value: "wrong.snapshot.storage.k8s.io": must be '
                                               'spec.names.plural+"."+spec.group')]
    two = _definition()
    two["spec"]["versions"].append({**two["spec"]["versions"][0], "name": "v1beta1"})
    resp = http.post(CRDS_PATH, json=two)
    assert resp.status_code == 422 and _causes(resp)[0][0] == "spec.versions"
    assert "must have exactly one version marked as storage version" in _causes(resp)[0][1]
    schemaless = _definition()
    del schemaless["spec"]["versions"][0]["schema"]
    resp = http.post(CRDS_PATH, json=schemaless)
    assert _causes(resp) == [("spec.versions[0].schema.openAPIV3Schema", "Required value: schemas are required")]
    resp = http.post(CRDS_PATH, json=_definition(group="nodots", plural="things", kind="Thing"))
    assert ("spec.group", 'Invalid value: "nodots": should be a domain with at least one dot') in _causes(resp)
    resp = http.post(CRDS_PATH, json=_definition(scope="Everywhere"))
    assert resp.status_code == 422 and _causes(resp)[0][0] == "spec.scope"
    for name in ("wrong.snapshot.storage.k8s.io", "things.nodots"):
        assert http.get(f"{CRDS_PATH}/{name}").status_code == 404


def test_crd2_a_definition_of_a_kind_not_served_here_or_not_as_served_is_refused(http: httpx.Client) -> None:
    resp = http.post(CRDS_PATH, json=_definition(plural="certificates", group="cert-manager.io", kind="Certificate",
                                                 scope="Namespaced"))
    assert resp.status_code == 422
    field, message = _causes(resp)[0]
    assert field == "metadata.name" and message.startswith("Forbidden: Stowage serves no custom resources")
    assert "(got certificates.cert-manager.io)" in message
    resp = http.post(CRDS_PATH, json=_definition(kind="SnapshotClass"))
    assert _causes(resp) == [("spec.names.kind", "Forbidden: volumesnapshotclasses.snapshot.storage.k8s.io is served "
                                                 "with kind VolumeSnapshotClass (got SnapshotClass)")]
    resp = http.post(CRDS_PATH, json=_definition(scope="Namespaced"))
    assert _causes(resp) == [("spec.scope", "Forbidden: volumesnapshotclasses.snapshot.storage.k8s.io is served "
                                            "Cluster (got Namespaced)")]
    later = _definition()
    later["spec"]["versions"].append({**later["spec"]["versions"][0], "name": "v2", "storage": False})
    resp = http.post(CRDS_PATH, json=later)
    assert resp.status_code == 422 and _causes(resp)[0][0] == "spec.versions"
    assert "served at v1, v1beta1 only" in _causes(resp)[0][1]


def test_crd3_scope_is_immutable_and_status_is_its_own(http: httpx.Client) -> None:
    assert http.post(CRDS_PATH, json=_definition(plural="referencegrants", group="gateway.networking.k8s.io",
                                                 kind="ReferenceGrant", scope="Namespaced",
                                                 versions=[{"name": "v1beta1", "served": True, "storage": True,
                                                            "schema": {"openAPIV3Schema": {"type": "object"}}}])
                     ).status_code == 201
    path = f"{CRDS_PATH}/referencegrants.gateway.networking.k8s.io"
    live = http.get(path).json()
    assert {c["type"]: c["status"] for c in live["status"]["conditions"]} == {"NamesAccepted": "True", "Established": "True"}
    changed = copy.deepcopy(live)
    changed["spec"]["scope"] = "Cluster"
    resp = http.put(path, json=changed)
    assert resp.status_code == 422 and ("spec.scope", "Invalid value: \"Cluster\": field is immutable") in _causes(resp)
    forged = copy.deepcopy(live)
    forged["status"]["storedVersions"] = ["v9"]
    assert http.put(path, json=forged).status_code == 200
    assert http.get(path).json()["status"]["storedVersions"] == ["v1beta1"]
    assert http.delete(path).status_code == 200
