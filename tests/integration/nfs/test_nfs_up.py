"""`stowage up` on a node whose kernel has no NFS client: a claim of an nfs-subdir class is provisioned
on the session's ganesha by the control plane (over NFS, through the server's network namespace), and
pods on it and on a static EFS-style PV wait in ContainerCreating with a FailedMount event that names
the missing kernel client (NF1, NF4, NF6)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "e2e"))

from stowage_e2e import Stowage, poll, remove_data_dir  # noqa: E402
from support import need_programs, need_root  # noqa: E402
from volume_plugins.nfs import NO_CLIENT, nfs_supported  # noqa: E402

pytestmark = pytest.mark.root

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "nfs"


@pytest.fixture
def share(ganesha) -> Iterator[Path]:
    import shutil

    root = Path(ganesha.export) / "up"
    root.mkdir()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def stowage(tmp_path_factory: pytest.TempPathFactory, ganesha, share: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Stowage]:
    need_root("stowage up runs a node agent")
    need_programs("runc", "losetup", "mkfs.ext4", "nsenter")
    data_dir = tmp_path_factory.mktemp("stowage-nfs-up")
    # The examples users run, the dynamic one pointed at the session's export.
    manifest = data_dir / "nfs-subdir.yaml"
    manifest.write_text((EXAMPLES / "nfs-subdir.yaml").read_text().replace("/srv/nfs/export", str(share)))
    # The control plane reaches the server through its namespace (stowage up inherits the environment).
    monkeypatch.setenv("STOWAGE_NFS_NETNS", ganesha.netns)
    up = Stowage(data_dir, [EXAMPLES / "efs-static.yaml", manifest])
    problems: list[str] = []
    try:
        up.wait_started()
        yield up
    finally:
        problems += up.stop()
        problems += remove_data_dir(data_dir)
        if problems:
            pytest.fail("teardown found leftovers (cleaned up by force):\n" + "\n".join(problems))


@pytest.mark.skipif(nfs_supported(), reason="this kernel has an NFS client: the mount would be tried for real")
def test_nf6_pod_on_nfs_volume_gets_failed_mount_naming_the_missing_kernel_client(stowage: Stowage, share: Path) -> None:
    """NF1, NF6: the dynamic claim gets its directory on the export (named by pathPattern) and binds;
    the static claim binds to the EFS-style PV (NF4); each pod's FailedMount event says the node's
    kernel has no NFS client and names the export; no pod is started."""
    def failed_mount(pod: str) -> dict | None:
        events, _ = stowage.client.list("events", "default")
        return next((e for e in events if e.get("reason") == "FailedMount"
                     and (e.get("involvedObject") or {}).get("name") == pod), None)

    def bound() -> dict | None:
        pvc = stowage.client.get("persistentvolumeclaims", "dynamic", "default")
        return pvc if (pvc.get("status") or {}).get("phase") == "Bound" else None

    pvc = poll("claim dynamic Bound", bound, 120, diagnose=stowage.describe)
    pv = stowage.client.get("persistentvolumes", pvc["spec"]["volumeName"])
    assert pv["spec"]["nfs"] == {"server": "127.0.0.1", "path": f"{share}/default/web-content"}
    assert pv["spec"]["mountOptions"] == ["nfsvers=3"]
    assert (share / "default" / "web-content").is_dir()
    web = poll("FailedMount event of pod web", lambda: failed_mount("web"), 120, diagnose=stowage.describe)
    assert NO_CLIENT in web["message"] and f"127.0.0.1:{share}/default/web-content" in web["message"]

    event = poll("FailedMount event of pod reader", lambda: failed_mount("reader"), 120, diagnose=stowage.describe)
    assert NO_CLIENT in event["message"]
    assert "fs-0123abcd.efs.eu-west-1.amazonaws.com:/" in event["message"]
    assert 'MountVolume.SetUp failed for volume "data"' in event["message"]
    pod = stowage.client.get("pods", "reader", "default")
    waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "ContainerCreating" and NO_CLIENT in waiting["message"]
    assert NO_CLIENT in stowage.describe("pods")
    # Deleting the claim removes its directory (archiveOnDelete "false") over NFS.
    stowage.client.delete("pods", "web", "default")
    stowage.client.delete("persistentvolumeclaims", "dynamic", "default")
    poll("the claim's directory removed", lambda: not (share / "default" / "web-content").exists(), 120,
         diagnose=stowage.describe)
