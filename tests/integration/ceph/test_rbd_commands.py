"""The RBD node plugin's mapper choice and command lines, without a cluster (RB7, RB8, RB11)."""
from __future__ import annotations

from pathlib import Path

import pytest

from storage.api.volume_secrets import SECRET_DATA_KEY
from storage.errors import PermanentError, TemporaryError
from volume_plugins.base import VolumeContext
from volume_plugins.rbd import ANN_MAPPER, Commands, RbdPlugin, choose_mapper, read_keyring
from volume_plugins.registry import default_registry


def _which(*present: str):
    return lambda name: f"/usr/bin/{name}" if name in present else None


def test_mapper_choice_follows_the_kernel(tmp_path: Path) -> None:
    """RB7: krbd where /sys/bus/rbd exists, rbd-nbd where nbd exists, rbd-fuse otherwise, none without tools."""
    everything = _which("rbd", "rbd-nbd", "rbd-fuse", "losetup")
    assert choose_mapper(tmp_path, everything) == "fuse"
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/nbd0").touch()
    assert choose_mapper(tmp_path, everything) == "nbd"
    assert choose_mapper(tmp_path, _which("rbd", "rbd-fuse", "losetup")) == "fuse"  # nbd module, no rbd-nbd
    (tmp_path / "sys/bus/rbd").mkdir(parents=True)
    assert choose_mapper(tmp_path, everything) == "krbd"
    assert choose_mapper(tmp_path, _which()) == ""


def test_this_machine_uses_fuse_and_says_so() -> None:
    """RB7: on a kernel without rbd and nbd (this one) the registry's plugin maps through rbd-fuse and
    reports it for the Node's annotations."""
    if Path("/sys/bus/rbd").exists() or Path("/sys/module/nbd").exists():
        pytest.skip("this kernel has rbd or nbd")
    plugin = default_registry().by_name("kubernetes.io/rbd")
    assert isinstance(plugin, RbdPlugin)
    assert plugin.node_annotations() == {ANN_MAPPER: "fuse" if plugin.mapper == "fuse" else "none"}


def test_command_lines_are_exact_and_keyless() -> None:
    """RB8, RB11: each mapper's argv; a key is never an argument (only the conf naming the 0600 keyring)."""
    assert Commands.krbd_map("/c", "u", "p", "i", False) == ["rbd", "map", "-c", "/c", "--id", "u", "p/i"]
    assert Commands.krbd_map("/c", "u", "p", "i", True) == ["rbd", "map", "-c", "/c", "--id", "u", "--read-only", "p/i"]
    assert Commands.krbd_unmap("/dev/rbd0") == ["rbd", "unmap", "/dev/rbd0"]
    assert Commands.nbd_map("/c", "u", "p", "i", True) == ["rbd-nbd", "map", "-c", "/c", "--id", "u", "--read-only", "p/i"]
    assert Commands.nbd_unmap("/dev/nbd1") == ["rbd-nbd", "unmap", "/dev/nbd1"]
    assert Commands.nbd_list() == ["rbd-nbd", "list-mapped", "--format", "json"]
    assert Commands.fuse_mount("/c", "u", "p", "i", "/d") == ["rbd-fuse", "-f", "-c", "/c", "--id", "u", "-p", "p", "-r", "i", "/d"]
    assert Commands.loop_attach("/d/i", True) == ["losetup", "--find", "--show", "--read-only", "/d/i"]
    assert Commands.loop_attach("/d/i", False) == ["losetup", "--find", "--show", "/d/i"]
    assert Commands.loop_detach("/dev/loop3") == ["losetup", "--detach", "/dev/loop3"]
    assert Commands.unmount("/d", lazy=True) == ["umount", "-l", "/d"]


def _ctx(tmp_path: Path, spec: dict, data: dict | None = None, modes: list[str] | None = None, read_only: bool = False) -> VolumeContext:
    source = {"rbd": spec, **({"accessModes": modes} if modes else {})}
    return VolumeContext(pod_uid="u", pod_namespace="default", pod_name="p", volume_name="v", source=source,
                         target=tmp_path / "t", data=data or {}, read_only=read_only)


def test_source_fields_and_both_secret_layouts(tmp_path: Path) -> None:
    """RB8: monitors, pool (default rbd), image, user (default admin), secretRef in the in-tree or ceph-csi
    layout, keyring file, readOnly and ReadOnlyMany."""
    plugin = RbdPlugin(node_name="n1", state_dir=tmp_path / "s", mapper="fuse")
    spec = {"monitors": ["10.0.0.1:6789"], "image": "img", "secretRef": {"name": "s"}}
    target = plugin.target(_ctx(tmp_path, spec, {SECRET_DATA_KEY: {"key": b"AQB=="}}, ["ReadWriteOnce"]))
    assert (target.pool, target.credentials.user, target.credentials.key, target.exclusive) == ("rbd", "admin", "AQB==", True)
    target = plugin.target(_ctx(tmp_path, {**spec, "user": "kube"},
                                {SECRET_DATA_KEY: {"userID": b"csi-user", "userKey": b"AQC=="}}, ["ReadOnlyMany"]))
    assert (target.credentials.user, target.credentials.key, target.read_only, target.exclusive) == ("csi-user", "AQC==", True, False)
    assert plugin.target(_ctx(tmp_path, {**spec, "readOnly": True}, {SECRET_DATA_KEY: {"key": b"k"}})).read_only
    with pytest.raises(TemporaryError, match="Secret s"):
        plugin.target(_ctx(tmp_path, spec, {SECRET_DATA_KEY: None}))
    with pytest.raises(PermanentError, match="rbd.image"):
        plugin.target(_ctx(tmp_path, {"monitors": ["m:1"]}))
    with pytest.raises(PermanentError, match="rbd.monitors"):
        plugin.target(_ctx(tmp_path, {"image": "i", "monitors": []}))
    keyring = tmp_path / "keyring"
    keyring.write_text("[client.admin]\n\tkey = AQD==\n[client.kube]\n\tkey = AQE==\n")
    target = plugin.target(_ctx(tmp_path, {"monitors": ["m:1"], "image": "i", "user": "kube", "keyring": str(keyring)}))
    assert target.credentials.key == "AQE=="
    with pytest.raises(PermanentError, match="no key for client.nobody"):
        read_keyring(keyring, "nobody")


def test_no_mapper_is_a_clear_error(tmp_path: Path) -> None:
    """RB7: a node with neither kernel module nor rbd-fuse says so."""
    plugin = RbdPlugin(node_name="n1", state_dir=tmp_path, mapper="")
    ctx = _ctx(tmp_path, {"monitors": ["m:1"], "image": "i", "secretRef": {"name": "s"}}, {SECRET_DATA_KEY: {"key": b"k"}})
    with pytest.raises(PermanentError, match="no rbd or nbd module"):
        plugin.connect(ctx)


def test_describe_node_shows_the_mapper() -> None:
    """RB7: `stowage describe node` shows the mapper the agent reported."""
    from storage.cli.describe import describe_node

    class NoPods:
        def list_objects(self, *args: object, **kwargs: object) -> list:
            return []

    out = describe_node({"metadata": {"name": "n1", "annotations": {ANN_MAPPER: "fuse"}}, "status": {}}, NoPods())  # type: ignore[arg-type]
    assert f"{ANN_MAPPER}=fuse" in out
