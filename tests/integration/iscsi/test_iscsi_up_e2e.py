"""``stowage up`` with a stowage.io/iscsi-tgt class on the session tgtd: the claim is provisioned as a real
LUN with CHAP, and a pod on it gets a FailedMount that names the missing initiator (this kernel has no
iscsi_tcp); deleting the claim removes the target (IS6, IS7, IS11)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "e2e"))

from provisioners.iscsi_tgt import parse_target_show  # noqa: E402
from stowage_e2e import Stowage, poll, remove_data_dir  # noqa: E402
from support import need_programs, need_root  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def stowage_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    need_root("pods run in runc containers")
    need_programs("runc", "losetup", "mkfs.ext4", "nsenter")
    data_dir = tmp_path_factory.mktemp("stowage-iscsi")
    yield data_dir
    remove_data_dir(data_dir)


def _manifests(tgt: Any, luns: Path) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "chap", "namespace": "default"},
         "type": "kubernetes.io/iscsi-chap",
         "stringData": {"node.session.auth.username": "e2e-user", "node.session.auth.password": "e2e-password-1"}},
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "iscsi"},
         "provisioner": "stowage.io/iscsi-tgt", "reclaimPolicy": "Delete",
         "parameters": tgt.class_parameters(luns, chapSecretName="chap", chapSecretNamespace="default")},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "default"},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "iscsi",
                  "resources": {"requests": {"storage": "16Mi"}}}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "user", "namespace": "default"},
         "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
                                  "volumeMounts": [{"name": "d", "mountPath": "/data"}]}],
                  "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}},
    ]


def test_pod_on_iscsi_claim_fails_mount_naming_the_missing_initiator(tgt: Any, stowage_dir: Path,
                                                                       tmp_path: Path) -> None:
    """IS6/IS11: provisioned for real (a target with CHAP on tgtd, the PV naming the Secret); the node cannot
    log in, and says why in a FailedMount event, the password nowhere in it; IS7: the claim's deletion
    removes the target and its file."""
    if Path("/sys/module/iscsi_tcp").exists():
        pytest.skip("this kernel has an iSCSI initiator: the FailedMount path does not apply")
    manifest = tmp_path / "iscsi.yaml"
    manifest.write_text("\n---\n".join(json.dumps(m) for m in _manifests(tgt, tmp_path / "luns")))
    stowage = Stowage(stowage_dir, [manifest])
    try:
        stowage.wait_started()
        api = stowage.client

        def bound_pv() -> dict[str, Any] | None:
            pvc = api.get("persistentvolumeclaims", "data", "default")
            name = (pvc.get("spec") or {}).get("volumeName")
            return api.get("persistentvolumes", name) if pvc.get("status", {}).get("phase") == "Bound" else None

        pv = poll("the claim bound to a provisioned PV", bound_pv, 60, diagnose=lambda: stowage.describe("pvc"))
        src = pv["spec"]["iscsi"]
        assert src["chapAuthSession"] is True and src["secretRef"]["name"] == "chap"
        targets = {t.name: t for t in parse_target_show(tgt.tgtadm("--mode", "target", "--op", "show").stdout)}
        assert src["iqn"] in targets and "e2e-user" in targets[src["iqn"]].accounts

        def failed_mount() -> str | None:
            items, _ = api.list("events", "default")
            return next((e["message"] for e in items if e.get("reason") == "FailedMount"
                         and (e.get("involvedObject") or {}).get("name") == "user"), None)

        message = poll("a FailedMount event for the pod", failed_mount, 90, diagnose=lambda: stowage.describe("pods"))
        print(f"FailedMount: {message}")
        assert "this node has no iSCSI initiator" in message and "iscsi_tcp" in message, message
        assert "e2e-password-1" not in message
        pod = api.get("pods", "user", "default")
        assert pod["status"].get("phase") == "Pending"
        described = stowage.cli("describe", "pod", "user").stdout
        assert "no iSCSI initiator" in described and "e2e-password-1" not in described

        api.delete("pods", "user", "default")
        poll("the pod gone", lambda: not any(p["metadata"]["name"] == "user"
                                             for p in api.list("pods", "default")[0]), 60)
        api.delete("persistentvolumeclaims", "data", "default")
        poll("the target deleted with the claim", lambda: src["iqn"] not in
             tgt.tgtadm("--mode", "target", "--op", "show").stdout, 60)
        # The provisioner removes the target, then its backing file: the file is waited for too.
        lun = tmp_path / "luns" / f"{pv['metadata']['name']}.img"
        poll("the LUN's backing file deleted with the claim", lambda: not lun.exists(), 60)
    finally:
        problems = stowage.stop()
        assert not problems, problems
