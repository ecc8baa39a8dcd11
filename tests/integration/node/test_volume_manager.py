"""The volume manager on real mounts: layouts, plugins, teardown, reconstruct (A4-A7)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from storage.agent.pool import Pool
from storage.agent.volume_manager import PodVolumes, VolumeManager, VolumeRequest
from storage.agent.volumes_paths import resolve_subpath
from storage.errors import Invalid
from storage.system import blockdev, loop, mounts
from volume_plugins.registry import default_registry

MiB = 2**20


@pytest.fixture
def env(node_tmp: Path):
    pool = Pool(node_tmp / "pool", capacity=2048 * MiB)
    allowed = node_tmp / "host-allowed"
    allowed.mkdir()
    vm = VolumeManager(node_tmp / "kubelet", default_registry(host_path_prefixes=[str(allowed)]))
    return vm, pool, node_tmp


def pv_request(pool: Pool, name: str, vol: str = "data", **kw) -> VolumeRequest:
    spec = {"local": {"path": str(pool.image_path(name))}, "capacity": {"storage": "64Mi"}}
    return VolumeRequest(vol, spec, pv_name=name, **kw)


def test_local_pool_volume_is_mounted_globally_and_bound_into_the_pod(env) -> None:
    vm, pool, tmp = env
    pool.create("pvc-a", 64 * MiB, "ext4")
    res = vm.sync([PodVolumes("uid-1", "default", "web-0", [pv_request(pool, "pvc-a")])])
    assert res.errors == {}
    path = Path(res.paths["uid-1"]["data"])
    assert path == tmp / "kubelet/pods/uid-1/volumes/kubernetes.io~local-volume/data"
    global_path = tmp / "kubelet/plugins/kubernetes.io/local-volume/mounts/pvc-a"
    assert mounts.is_mount_point(global_path) and mounts.is_mount_point(path)
    (path / "hello").write_text("world")
    assert (global_path / "hello").read_text() == "world"
    assert vm.volumes_in_use() == ["kubernetes.io/local-volume/pvc-a"]
    assert vm.volumes_attached() == [{"name": "kubernetes.io/local-volume/pvc-a", "devicePath": pool.device("pvc-a")}]

    vm.sync([])  # the pod is gone

    assert not mounts.mounts_under(tmp / "kubelet")
    assert not (tmp / "kubelet/pods/uid-1").exists()
    assert not global_path.exists()
    assert vm.volumes_in_use() == []
    pool.delete("pvc-a")
    assert not loop.loops_under(tmp)


def test_two_pods_share_one_global_mount_until_the_last_leaves(env) -> None:
    vm, pool, tmp = env
    pool.create("pvc-s", 64 * MiB, "ext4")
    a = PodVolumes("uid-a", "default", "a", [pv_request(pool, "pvc-s")])
    b = PodVolumes("uid-b", "default", "b", [pv_request(pool, "pvc-s", read_only=True)])
    res = vm.sync([a, b])
    assert res.errors == {}
    assert mounts.top_mount(res.paths["uid-b"]["data"]).read_only
    assert not mounts.top_mount(res.paths["uid-a"]["data"]).read_only
    vm.sync([b])
    assert mounts.is_mount_point(tmp / "kubelet/plugins/kubernetes.io/local-volume/mounts/pvc-s")
    vm.sync([])
    assert not mounts.mounts_under(tmp / "kubelet")


def test_a4_blank_pool_block_device_requested_as_xfs_is_formatted_by_the_mounter(env, make_disk) -> None:
    vm, _, tmp = env
    dev = make_disk(320 * MiB)
    req = VolumeRequest("data", {"local": {"path": dev, "fsType": "xfs"}}, pv_name="pv-disk")
    res = vm.sync([PodVolumes("uid-1", "ns", "p", [req])])
    assert res.errors == {}
    assert mounts.top_mount(res.paths["uid-1"]["data"]).fstype == "xfs"
    vm.sync([])


def test_a4_read_only_blank_device_reports_the_error_per_volume(env, make_disk) -> None:
    vm, _, tmp = env
    dev = make_disk()
    bad = VolumeRequest("ro", {"local": {"path": dev}}, pv_name="pv-blank", read_only=True)
    good = VolumeRequest("scratch", {"emptyDir": {}})
    res = vm.sync([PodVolumes("uid-1", "ns", "p", [bad, good])])
    assert "cannot mount unformatted disk" in res.errors["uid-1"]["ro"]
    assert "scratch" in res.paths["uid-1"] and "ro" not in res.paths["uid-1"]
    assert blockdev.probe_filesystem(dev) is None
    vm.sync([])
    assert not mounts.mounts_under(tmp / "kubelet")


def test_block_mode_hands_the_raw_device_to_the_pod(env) -> None:
    vm, pool, tmp = env
    pool.create("pvc-raw", 16 * MiB, None, mode="Block")
    req = VolumeRequest("raw", {"local": {"path": str(pool.image_path("pvc-raw"))}}, pv_name="pvc-raw", mode="Block")
    res = vm.sync([PodVolumes("uid-1", "ns", "db-0", [req])])
    assert res.errors == {}
    path = Path(res.paths["uid-1"]["raw"])
    assert path == tmp / "kubelet/pods/uid-1/volumeDevices/kubernetes.io~local-volume/raw"
    assert stat.S_ISBLK(os.stat(path).st_mode)
    assert os.stat(path).st_rdev == os.stat(pool.device("pvc-raw")).st_rdev
    with open(path, "r+b") as f:
        f.write(b"raw bytes")
    with open(pool.device("pvc-raw"), "rb") as f:
        assert f.read(9) == b"raw bytes"
    vm.sync([])
    assert not (tmp / "kubelet/pods/uid-1").exists() and not mounts.mounts_under(tmp / "kubelet")


def test_local_directory_pv_is_bind_mounted(env) -> None:
    vm, _, tmp = env
    src = tmp / "disks-dir"
    src.mkdir()
    (src / "existing").write_text("x")
    res = vm.sync([PodVolumes("uid-1", "ns", "p", [VolumeRequest("d", {"local": {"path": str(src)}}, pv_name="pv-dir")])])
    assert (Path(res.paths["uid-1"]["d"]) / "existing").read_text() == "x"
    vm.sync([])
    assert (src / "existing").read_text() == "x", "teardown must never delete through a bind mount"


def test_a7_host_path_allow_list(env) -> None:
    vm, _, tmp = env
    inside = tmp / "host-allowed" / "logs"
    outside = tmp / "host-allowed-not"  # a string prefix, not a path prefix
    link = tmp / "host-allowed" / "escape"
    link.symlink_to("/etc")
    pod = PodVolumes("uid-1", "ns", "p", [
        VolumeRequest("ok", {"hostPath": {"path": str(inside), "type": "DirectoryOrCreate"}}),
        VolumeRequest("out", {"hostPath": {"path": str(outside), "type": "DirectoryOrCreate"}}),
        VolumeRequest("etc", {"hostPath": {"path": "/etc"}}),
        VolumeRequest("link", {"hostPath": {"path": str(link)}}),
        VolumeRequest("wrongtype", {"hostPath": {"path": str(inside), "type": "File"}}),
    ])
    res = vm.sync([pod])
    assert res.paths["uid-1"]["ok"] == str(inside) and inside.is_dir()
    assert "not under an allowed host path prefix" in res.errors["uid-1"]["out"]
    assert not outside.exists()
    assert "not under an allowed host path prefix" in res.errors["uid-1"]["etc"]
    assert "not under an allowed host path prefix" in res.errors["uid-1"]["link"]
    assert "is not a file" in res.errors["uid-1"]["wrongtype"]
    vm.sync([])
    assert inside.is_dir(), "hostPath contents belong to the host"


def test_a7_empty_dir_on_disk_and_in_memory_with_size_limit(env) -> None:
    vm, _, tmp = env
    pod = PodVolumes("uid-1", "ns", "p", [
        VolumeRequest("disk", {"emptyDir": {}}),
        VolumeRequest("mem", {"emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}),
        VolumeRequest("bad", {"emptyDir": {"medium": "Memory", "sizeLimit": "8MB"}}),
    ])
    res = vm.sync([pod])
    disk, mem = Path(res.paths["uid-1"]["disk"]), Path(res.paths["uid-1"]["mem"])
    assert disk == tmp / "kubelet/pods/uid-1/volumes/kubernetes.io~empty-dir/disk"
    assert not mounts.is_mount_point(disk)
    entry = mounts.top_mount(mem)
    assert entry.fstype == "tmpfs"
    st = os.statvfs(mem)
    assert st.f_blocks * st.f_frsize == 8 * MiB
    with pytest.raises(OSError):
        (mem / "big").write_bytes(b"x" * 9 * MiB)
    assert "emptyDir.sizeLimit" in res.errors["uid-1"]["bad"]
    vm.sync([pod])  # set up again: the tmpfs found in place (PF67), not a second one stacked on it
    assert [e.fstype for e in mounts.mounts_at(mem)] == ["tmpfs"]
    (disk / "scratch").write_text("tmp")
    vm.sync([])
    assert not (tmp / "kubelet/pods/uid-1").exists()
    assert not mounts.mounts_under(tmp / "kubelet")


def test_config_map_and_secret_are_written_and_updated_atomically(env) -> None:
    vm, _, tmp = env

    def pod(cm: dict, secret: dict) -> PodVolumes:
        return PodVolumes("uid-1", "ns", "p", [
            VolumeRequest("cfg", {"configMap": {"name": "app", "items": [{"key": "conf", "path": "etc/app.conf", "mode": 0o600}]}},
                          data={"configMap:app": cm}),
            VolumeRequest("all", {"configMap": {"name": "app", "defaultMode": 0o640}}, data={"configMap:app": cm}),
            VolumeRequest("creds", {"secret": {"secretName": "db"}}, data={"secret:db": secret}),
            VolumeRequest("opt", {"configMap": {"name": "missing", "optional": True}}),
            VolumeRequest("req", {"configMap": {"name": "missing"}}),
        ])

    res = vm.sync([pod({"conf": "v1", "other": "o"}, {"password": b"s3cret"})])
    cfg, all_, creds = (Path(res.paths["uid-1"][n]) for n in ("cfg", "all", "creds"))
    assert (cfg / "etc/app.conf").read_text() == "v1"
    assert stat.S_IMODE(os.stat(cfg / "etc/app.conf").st_mode) == 0o600
    assert sorted(p.name for p in all_.iterdir() if not p.name.startswith("..")) == ["conf", "other"]
    assert stat.S_IMODE(os.stat(all_ / "other").st_mode) == 0o640
    assert (creds / "password").read_bytes() == b"s3cret"
    assert stat.S_IMODE(os.stat(creds / "password").st_mode) == 0o644
    assert mounts.top_mount(creds).fstype == "tmpfs", "secrets never touch a disk"
    assert (all_ / "..data").is_symlink() and (all_ / "conf").is_symlink()
    assert res.errors["uid-1"] == {"req": 'configmap "missing" not found'}
    old_target = os.readlink(all_ / "..data")

    res = vm.sync([pod({"conf": "v2"}, {"password": b"new"})])
    assert (cfg / "etc/app.conf").read_text() == "v2"
    assert (creds / "password").read_bytes() == b"new"
    assert os.readlink(all_ / "..data") != old_target
    assert not (all_ / old_target).exists(), "the old payload directory is removed"
    assert not (all_ / "other").exists() and not (all_ / "other").is_symlink()
    before = os.readlink(all_ / "..data")
    vm.sync([pod({"conf": "v2"}, {"password": b"new"})])
    assert os.readlink(all_ / "..data") == before, "no rewrite when nothing changed"
    assert [e.fstype for e in mounts.mounts_at(creds)] == ["tmpfs"], "one tmpfs however often synced (PF67)"
    vm.sync([])
    assert not mounts.mounts_under(tmp / "kubelet")


def test_projected_and_downward_api(env) -> None:
    vm, _, tmp = env
    req = VolumeRequest("proj", {"projected": {"defaultMode": 0o444, "sources": [
        {"configMap": {"name": "c", "items": [{"key": "k", "path": "c/k"}]}},
        {"secret": {"name": "s"}},
        {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
    ]}}, data={"configMap:c": {"k": "cv"}, "secret:s": {"token": "tv"}, "downwardAPI": {"labels": 'app="web"'}})
    dw = VolumeRequest("dw", {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                       data={"downwardAPI": {"name": "web-0"}})
    res = vm.sync([PodVolumes("uid-1", "ns", "web-0", [req, dw])])
    proj = Path(res.paths["uid-1"]["proj"])
    assert (proj / "c/k").read_text() == "cv" and (proj / "token").read_text() == "tv"
    assert (proj / "labels").read_text() == 'app="web"'
    assert stat.S_IMODE(os.stat(proj / "token").st_mode) == 0o444
    assert (Path(res.paths["uid-1"]["dw"]) / "name").read_text() == "web-0"
    vm.sync([])


def test_a6_fs_group_sets_group_and_setgid(env) -> None:
    vm, pool, tmp = env
    pool.create("pvc-g", 64 * MiB, "ext4")
    gid = 4321
    reqs = [pv_request(pool, "pvc-g", fs_group=gid), VolumeRequest("e", {"emptyDir": {}}, fs_group=gid),
            VolumeRequest("c", {"configMap": {"name": "x"}}, fs_group=gid, data={"configMap:x": {"a": "b"}})]
    res = vm.sync([PodVolumes("uid-1", "ns", "p", reqs)])
    assert res.errors == {}
    for name in ("data", "e"):
        st = os.stat(res.paths["uid-1"][name])
        assert st.st_gid == gid and st.st_mode & stat.S_ISGID
    assert os.stat(Path(res.paths["uid-1"]["data"]) / "lost+found").st_gid == gid
    assert os.stat(Path(res.paths["uid-1"]["c"]) / "a").st_gid == gid
    new = Path(res.paths["uid-1"]["data"]) / "newfile"
    new.write_text("x")
    assert os.stat(new).st_gid == gid, "setgid directories make new files inherit the group"
    vm.sync([])


def test_a6_subpath_escapes_are_refused(node_tmp: Path) -> None:
    vol = node_tmp / "vol"
    vol.mkdir()
    (vol / "out").symlink_to("/etc")
    (vol / "sub").mkdir()
    (vol / "in").symlink_to("sub")
    assert resolve_subpath(vol, "a/b") == vol / "a/b" and (vol / "a/b").is_dir()
    # Any symlink is refused, even one that stays inside: it could be swapped later (A6, CVE-2017-1002101).
    for bad, why in [("../x", "'..'"), ("/etc", "relative"), ("a/../../x", "'..'"), ("out", "symlink"),
                     ("out/passwd", "symlink"), ("in/x", "symlink")]:
        with pytest.raises(Invalid, match=why):
            resolve_subpath(vol, bad)
    assert not Path("/etc/x").exists()


def test_a5_reconstruct_after_restart_keeps_wanted_and_cleans_orphans(env) -> None:
    vm, pool, tmp = env
    pool.create("pvc-keep", 64 * MiB, "ext4")
    pool.create("pvc-orphan", 64 * MiB, "ext4")
    keep = PodVolumes("uid-keep", "ns", "keep", [pv_request(pool, "pvc-keep"), VolumeRequest("mem", {"emptyDir": {"medium": "Memory"}})])
    orphan = PodVolumes("uid-orphan", "ns", "orphan", [pv_request(pool, "pvc-orphan"), VolumeRequest("mem", {"emptyDir": {"medium": "Memory"}})])
    res = vm.sync([keep, orphan])
    Path(res.paths["uid-keep"]["data"], "f").write_text("survives")
    # A new agent process: nothing in memory.
    vm2 = VolumeManager(tmp / "kubelet", default_registry())
    actual = vm2.reconstruct()
    assert {(a.pod_uid, a.name, a.mounted) for a in actual} == {
        ("uid-keep", "data", True), ("uid-keep", "mem", True), ("uid-orphan", "data", True), ("uid-orphan", "mem", True)}
    assert vm2.volumes_in_use() == ["kubernetes.io/local-volume/pvc-keep", "kubernetes.io/local-volume/pvc-orphan"]
    # The wanted pod's bind mount vanished meanwhile (e.g. an administrator's umount): it is remounted.
    mounts.unmount(res.paths["uid-keep"]["data"])
    res2 = vm2.sync([keep])
    assert res2.errors == {}
    assert Path(res2.paths["uid-keep"]["data"], "f").read_text() == "survives"
    assert not (tmp / "kubelet/pods/uid-orphan").exists()
    assert not mounts.is_mount_point(tmp / "kubelet/plugins/kubernetes.io/local-volume/mounts/pvc-orphan")
    assert vm2.volumes_in_use() == ["kubernetes.io/local-volume/pvc-keep"]
    vm2.sync([])
    assert not mounts.mounts_under(tmp / "kubelet")


def test_finish_resize_grows_the_mounted_filesystem(env) -> None:
    vm, pool, tmp = env
    pool.create("pvc-x", 320 * MiB, "xfs")
    req = VolumeRequest("data", {"local": {"path": str(pool.image_path("pvc-x")), "fsType": "xfs"}}, pv_name="pvc-x")
    res = vm.sync([PodVolumes("uid-1", "ns", "p", [req])])
    path = res.paths["uid-1"]["data"]
    before = os.statvfs(path).f_blocks * os.statvfs(path).f_frsize
    # Grow only the file, as a provisioner on another code path might: the node finishes the job.
    with open(pool.image_path("pvc-x"), "ab") as f:
        f.truncate(640 * MiB)
    assert vm.finish_resize("pvc-x")
    after = os.statvfs(path).f_blocks * os.statvfs(path).f_frsize
    assert after > before + 200 * MiB
    assert not vm.finish_resize("pvc-absent")
    vm.sync([])
