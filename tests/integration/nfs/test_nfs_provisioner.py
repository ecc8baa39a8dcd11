"""The subdirectory provisioner against a real nfs-ganesha, through the NFS protocol (libnfs, NFSv3)
(NF1, NF2, NF5, NF7), and the shared provisioner contract."""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from provisioners.base import ProvisionRequest
from provisioners.nfs_subdir import ANN_ON_DELETE, ANN_SHARE, NfsSubdirProvisioner, expand_path_pattern
from provisioners.testing import ProvisionerContract, make_claim, pv_from_result
from storage.errors import PermanentError, TemporaryError

pytestmark = pytest.mark.root


def sc(provisioner: str = "k8s-sigs.io/nfs-subdir-external-provisioner", **params: str) -> dict[str, Any]:
    return {"metadata": {"name": "nfs"}, "provisioner": provisioner, "parameters": params,
            "mountOptions": ["nfsvers=4.1", "hard"]}


@pytest.fixture
def share(ganesha) -> Iterator[str]:  # a fresh export subtree per test, made on disk
    import shutil
    import uuid

    name = f"t-{uuid.uuid4().hex[:8]}"
    root = Path(ganesha.export) / name
    root.mkdir()
    try:
        yield name
    finally:
        shutil.rmtree(root, ignore_errors=True)



@pytest.fixture
def prov(ganesha) -> NfsSubdirProvisioner:
    return NfsSubdirProvisioner(netns=ganesha.netns, local_exports={})


def request(cls: dict[str, Any], **claim_kw: Any) -> ProvisionRequest:
    claim = make_claim(**claim_kw)
    return ProvisionRequest(volume_name=f"pvc-{claim['metadata']['uid']}", claim=claim, storage_class=cls)


class TestNfsSubdirContract(ProvisionerContract):
    @pytest.fixture
    def provisioner(self, prov: NfsSubdirProvisioner) -> NfsSubdirProvisioner:
        return prov

    @pytest.fixture
    def storage_class(self, ganesha, share: str) -> dict[str, Any]:
        # nfs.csi.k8s.io names the directory after the PV; its default onDelete is delete.
        return {**sc("nfs.csi.k8s.io", server=ganesha.server, share=ganesha.export, subDir=share + "/${pv.metadata.name}")}

    @pytest.fixture
    def backend_count(self, ganesha, share: str) -> Callable[[str], int]:
        def count(volume_name: str) -> int:
            with ganesha.client() as client:  # listed over NFS, not on disk
                return sum(1 for name in client.listdir(share) if name == volume_name)
        return count


def test_nf1_directory_over_nfs_pv_source_annotations_and_timing(ganesha, share: str, prov) -> None:
    """NF1, NF5: the directory appears in the exported directory, mode 0777; the PV names server and path."""
    cls = sc(server=ganesha.server, path=ganesha.export, pathPattern=f"{share}/${{.PVC.namespace}}/${{.PVC.name}}")
    req = request(cls, name="web", namespace="shop")
    started = time.monotonic()
    result = prov.provision(req)
    elapsed = time.monotonic() - started
    on_disk = Path(ganesha.export) / share / "shop" / "web"
    assert on_disk.is_dir() and stat.S_IMODE(on_disk.stat().st_mode) == 0o777
    assert result.source == {"nfs": {"server": ganesha.server, "path": f"{ganesha.export}/{share}/shop/web"}}
    assert result.annotations == {ANN_SHARE: ganesha.export, ANN_ON_DELETE: "archive",
                                  "nfs.stowage.io/archive-to": f"{share}/shop/archived-web"}
    assert result.capacity == "1Gi"
    assert prov.provision(req).source == result.source  # again: the same directory, no error
    print(f"provision over NFS (mount + mkdir -p + chmod): {elapsed * 1000:.1f} ms")  # for the log: speed is benchmarks/' job


def test_nf2_path_patterns_of_both_provisioners() -> None:
    """NF2: nfs-subdir's ${.PVC.*} and csi-driver-nfs's ${pvc.metadata.*}/${pv.metadata.name}."""
    claim = make_claim(name="db", namespace="prod")
    claim["metadata"]["annotations"] = {"nfs.io/storage-path": "data"}
    claim["metadata"]["labels"] = {"app": "pg"}
    assert expand_path_pattern("${.PVC.namespace}/${.PVC.annotations.nfs.io/storage-path}", claim, "pv1") == "prod/data"
    assert expand_path_pattern("${.PVC.labels.app}-${.PVC.name}-${.PVC.labels.none}", claim, "pv1") == "pg-db-"
    assert expand_path_pattern("${pvc.metadata.namespace}/${pvc.metadata.name}/${pv.metadata.name}", claim, "pv1") == "prod/db/pv1"
    with pytest.raises(PermanentError, match=r"unknown variable \$\{.PVC.uid\}"):
        expand_path_pattern("${.PVC.uid}", claim, "pv1")


def test_nf2_defaults_and_bad_patterns(ganesha, share: str, prov) -> None:
    """NF2: the upstream default names; '..' and empty names are refused before touching the server."""
    sub = NfsSubdirProvisioner(netns=ganesha.netns, local_exports={})
    export = f"{ganesha.export}/{share}"
    req = request(sc(server=ganesha.server, path=export), name="a", namespace="ns1")
    assert sub.provision(req).source["nfs"]["path"] == f"{export}/ns1-a-{req.volume_name}"
    req = request(sc("nfs.csi.k8s.io", server=ganesha.server, share=export))
    assert prov.provision(req).source["nfs"]["path"] == f"{export}/{req.volume_name}"
    with pytest.raises(PermanentError, match="pathPattern.*leaves the export"):
        prov.provision(request(sc(server=ganesha.server, path=export, pathPattern="../${.PVC.name}")))
    # nfs-subdir: a pattern that expands to nothing falls back to the default name, as upstream.
    req = request(sc(server=ganesha.server, path=export, pathPattern="${.PVC.annotations.x}"), name="b", namespace="ns2")
    assert prov.provision(req).source["nfs"]["path"] == f"{export}/ns2-b-{req.volume_name}"
    with pytest.raises(PermanentError, match="'subDir'.*expands to an empty directory name"):
        prov.provision(request(sc("nfs.csi.k8s.io", server=ganesha.server, share=export, subDir="/./")))
    with pytest.raises(PermanentError, match="'server' is required"):
        prov.provision(request(sc(path=export)))
    with pytest.raises(PermanentError, match="'onDelete': 'shred' is not one of delete, retain, archive"):
        prov.provision(request(sc(server=ganesha.server, path=export, onDelete="shred")))
    with pytest.raises(PermanentError, match="mountPermissions"):
        prov.provision(request(sc("nfs.csi.k8s.io", server=ganesha.server, share=export, mountPermissions="rwx")))


def test_nf5_subdir_create_mode_and_owner_annotations(ganesha, share: str, prov) -> None:
    """NF5: nfs-subdir's claim annotations nfs.io/createMode, createUID, createGID set the directory's mode and owner."""
    claim = make_claim(name="owned")
    claim["metadata"]["annotations"] = {"nfs.io/createMode": "0750", "nfs.io/createUID": "1001", "nfs.io/createGID": "2002"}
    req = ProvisionRequest(volume_name=f"pvc-{claim['metadata']['uid']}", claim=claim,
                           storage_class=sc(server=ganesha.server, path=f"{ganesha.export}/{share}", pathPattern="${.PVC.name}"))
    prov.provision(req)
    st = (Path(ganesha.export) / share / "owned").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 1001, 2002)


def test_nf5_csi_mount_permissions(ganesha, share: str, prov) -> None:
    """NF5: csi-driver-nfs's mountPermissions is applied after mkdir."""
    cls = sc("nfs.csi.k8s.io", server=ganesha.server, share=f"{ganesha.export}/{share}", mountPermissions="0750")
    req = request(cls)
    prov.provision(req)
    assert stat.S_IMODE((Path(ganesha.export) / share / req.volume_name).stat().st_mode) == 0o750


def _provision_with_data(prov, cls) -> tuple[ProvisionRequest, dict[str, Any], Path]:
    req = request(cls)
    pv = pv_from_result(prov, req, prov.provision(req))
    on_disk = Path(pv["spec"]["nfs"]["path"])
    (on_disk / "sub").mkdir()
    (on_disk / "sub" / "f").write_text("data")
    os.symlink("/etc", on_disk / "link-out")  # removal must never follow it
    return req, pv, on_disk


@pytest.mark.parametrize("provisioner,params,kept,archived", [
    ("k8s-sigs.io/nfs-subdir-external-provisioner", {}, False, True),  # archiveOnDelete defaults to true
    ("k8s-sigs.io/nfs-subdir-external-provisioner", {"archiveOnDelete": "false"}, False, False),
    ("k8s-sigs.io/nfs-subdir-external-provisioner", {"onDelete": "retain"}, True, False),
    ("k8s-sigs.io/nfs-subdir-external-provisioner", {"onDelete": "delete", "archiveOnDelete": "true"}, False, False),
    ("nfs.csi.k8s.io", {}, False, False),
    ("nfs.csi.k8s.io", {"onDelete": "archive"}, False, True),
    ("nfs.csi.k8s.io", {"onDelete": "retain"}, True, False),
])
def test_nf7_reclaim_archive_delete_retain(ganesha, share: str, prov, provisioner: str, params: dict[str, str],
                                           kept: bool, archived: bool) -> None:
    """NF7: the directory is kept, archived (renamed archived-<dir>) or removed with its contents."""
    export = f"{ganesha.export}/{share}"
    key = "share" if provisioner == "nfs.csi.k8s.io" else "path"
    _, pv, on_disk = _provision_with_data(prov, sc(provisioner, server=ganesha.server, **{key: export}, **params))
    prov.delete(pv)
    prov.delete(pv)  # twice: gone already is success
    assert on_disk.exists() == kept
    archive = on_disk.parent / f"archived-{on_disk.name}"
    if provisioner == "nfs.csi.k8s.io":  # csi-driver-nfs archives to <share>/archived-<subDir>
        archive = Path(export) / f"archived-{on_disk.relative_to(export)}"
    assert archive.exists() == archived
    if archived:
        assert (archive / "sub" / "f").read_text() == "data"
    assert Path("/etc/passwd").exists()


def test_nf7_recycle_scrubs_contents_keeps_directory(ganesha, share: str, prov) -> None:
    """NF7: Recycle empties the directory (dot files and symlinks too, never following them) and keeps it."""
    _, pv, on_disk = _provision_with_data(prov, sc(server=ganesha.server, path=f"{ganesha.export}/{share}"))
    (on_disk / ".hidden").write_text("x")
    assert prov.can_recycle(pv)
    prov.recycle(pv)
    assert on_disk.is_dir() and list(on_disk.iterdir()) == []
    # A static nfs PV (no provisioner annotations): the nearest exported parent is found.
    (on_disk / "again").write_text("y")
    static = {"metadata": {"name": "static"}, "spec": {"nfs": {"server": ganesha.server, "path": str(on_disk)}}}
    prov.recycle(static)
    assert on_disk.is_dir() and list(on_disk.iterdir()) == []


def test_nf7_recycle_of_a_missing_directory_fails_naming_it(ganesha, share: str, prov) -> None:
    """NF7: a static PV whose directory is not on the server is not reported as recycled."""
    missing = f"{ganesha.export}/{share}/not-there"
    with pytest.raises(TemporaryError, match=f"cannot scrub {missing}: no such directory"):
        prov.recycle({"metadata": {"name": "m"}, "spec": {"nfs": {"server": ganesha.server, "path": missing}}})


def test_nf7_archive_places_of_nested_directories(ganesha, share: str, prov) -> None:
    """NF7: a nested nfs-subdir directory is archived beside itself; csi-driver-nfs's at <share>/archived-<subDir>."""
    export = f"{ganesha.export}/{share}"
    _, pv, on_disk = _provision_with_data(prov, sc(server=ganesha.server, path=export, pathPattern="${.PVC.namespace}/${.PVC.name}"))
    prov.delete(pv)
    assert (Path(export) / "default" / "archived-data" / "sub" / "f").read_text() == "data"
    _, pv, on_disk = _provision_with_data(prov, sc("nfs.csi.k8s.io", server=ganesha.server, share=export,
                                                  subDir="${pvc.metadata.namespace}/${pv.metadata.name}", onDelete="archive"))
    prov.delete(pv)
    assert (Path(export) / "archived-default" / pv["metadata"]["name"] / "sub" / "f").read_text() == "data"
    assert not on_disk.exists()


def test_nf7_archiving_a_reused_name_keeps_both_archives(ganesha, share: str, prov) -> None:
    """NF7: a pathPattern without the PV name reuses a directory; a second archive does not replace the first."""
    cls = sc(server=ganesha.server, path=f"{ganesha.export}/{share}", pathPattern="${.PVC.name}")
    first, pv1, on_disk = _provision_with_data(prov, cls)
    prov.delete(pv1)
    second, pv2, _ = _provision_with_data(prov, cls)
    prov.delete(pv2)
    root = Path(ganesha.export) / share
    assert sorted(p.name for p in root.iterdir()) == ["archived-data", f"archived-data-{second.volume_name}"]


def test_nf1_unreachable_server_is_temporary_naming_it(ganesha, share: str) -> None:
    """NF1: no server answering -> TemporaryError naming the server (here: the host's network, where
    nothing serves NFS)."""
    outside = NfsSubdirProvisioner(netns="", local_exports={}, timeout_ms=2000)
    with pytest.raises(TemporaryError, match=r"NFS server 127\.0\.0\.1: cannot mount export"):
        outside.provision(request(sc(server="127.0.0.1", path=ganesha.export)))


def test_nf1_local_export_path(ganesha, share: str) -> None:
    """NF1: with the export available locally (STOWAGE_NFS_LOCAL_EXPORTS), directories are made there."""
    local = NfsSubdirProvisioner(local_exports={("nfs.example", "/exports/k8s"): f"{ganesha.export}/{share}"})
    req = request(sc(server="nfs.example", path="/exports/k8s", archiveOnDelete="false"), name="x", namespace="y")
    pv = pv_from_result(local, req, local.provision(req))
    assert pv["spec"]["nfs"] == {"server": "nfs.example", "path": f"/exports/k8s/y-x-{req.volume_name}"}
    assert (Path(ganesha.export) / share / f"y-x-{req.volume_name}").is_dir()
    local.delete(pv)
    assert not (Path(ganesha.export) / share / f"y-x-{req.volume_name}").exists()


def test_nf1_local_exports_setting() -> None:
    """NF1: STOWAGE_NFS_LOCAL_EXPORTS maps server:/export to a local directory; bad entries are named."""
    from provisioners.nfs_subdir import parse_local_exports

    assert parse_local_exports("nfs1:/exports/k8s=/mnt/k8s; [fd00::5]:/e/=/mnt/e") == {
        ("nfs1", "/exports/k8s"): "/mnt/k8s", ("fd00::5", "/e"): "/mnt/e"}
    with pytest.raises(PermanentError, match="STOWAGE_NFS_LOCAL_EXPORTS: 'nfs1=/mnt' is not server:/export=/local/dir"):
        parse_local_exports("nfs1=/mnt")
