"""The iSCSI node plugin: iscsiadm sequences, device lookup, multipath and logout (IS1-IS5, IS11).

This kernel has no iSCSI initiator (no iscsi_tcp): the command lines are checked through a recording
executor, and udev's by-path links and sysfs's session tree are a directory the tests build (block device
nodes made with mknod, never opened)."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Sequence

import pytest

from storage.api.volume_secrets import SECRET_DATA_KEY
from storage.errors import PermanentError, TemporaryError
from storage.system.devices import DeviceResolver
from storage.system.executor import RecordingExecutor
from volume_plugins.base import VolumeContext
from volume_plugins.iscsi import IscsiPlugin, by_path_name, normalize_portal, parse_source
from volume_plugins.registry import default_registry

IQN = "iqn.2024-01.io.stowage:pvc-1"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"
SECRET = {"discovery.sendtargets.auth.username": b"disc-user", "discovery.sendtargets.auth.password": b"disc-pass-123",
          "node.session.auth.username": b"sess-user", "node.session.auth.password": b"sess-pass-456",
          "node.session.auth.username_in": b"tgt-user", "node.session.auth.password_in": b"tgt-pass-789"}


class SecretRecordingExecutor(RecordingExecutor):
    """Also records what each call declared secret (the real Executor masks those)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.secret_args: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str], *, secrets: Sequence[str] = (), **kw: Any):  # type: ignore[override]
        self.secret_args.append(tuple(secrets))
        return super().run(argv, secrets=secrets, **kw)


class Node:
    """A fake /dev/disk and /sys under tmp_path; ``login`` makes the by-path link as udev would."""

    def __init__(self, root: Path, initiator: bool = True) -> None:
        self.dev = root / "dev"
        self.sys = root / "sys"
        (self.dev / "disk" / "by-path").mkdir(parents=True)
        (self.sys / "block").mkdir(parents=True)
        if initiator:
            (self.sys / "module" / "iscsi_tcp").mkdir(parents=True)
        self.resolver = DeviceResolver(dev_disk=self.dev / "disk", sys_block=self.sys / "block")
        self.disks: dict[str, str] = {}

    def disk(self, name: str, minor: int) -> Path:
        node = self.dev / name
        if not node.exists():
            os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(7, 200 + minor))
            (self.sys / "block" / name).mkdir()
        return node

    def link(self, portal: str, lun: int, disk: str) -> None:
        self.disks[portal] = disk
        node = self.disk(disk, len(self.disks))
        (self.dev / "disk" / "by-path" / by_path_name(portal, IQN, lun)).symlink_to(node)

    def session(self, n: int, portal: str, disk: str, lun: int = 1, iqn: str = IQN, iface: str = "default") -> None:
        """sysfs as the kernel lays out an iSCSI session's LUN."""
        s = self.sys / "class" / "iscsi_session" / f"session{n}"
        s.mkdir(parents=True)
        (s / "targetname").write_text(iqn + "\n")
        (s / "ifacename").write_text(iface + "\n")
        dev = self.sys / "devices" / "platform" / f"host{n}" / f"session{n}" / f"target{n}:0:0" / f"{n}:0:0:{lun}"
        (dev / "block" / disk).mkdir(parents=True)
        (s / "device").symlink_to(self.sys / "devices" / "platform" / f"host{n}" / f"session{n}")
        self.disk(disk, 50 + n + lun)
        (self.sys / "block" / disk / "device").symlink_to(dev)
        c = self.sys / "class" / "iscsi_connection" / f"connection{n}:0"
        c.mkdir(parents=True)
        host, port = portal.rsplit(":", 1)
        (c / "persistent_address").write_text(host + "\n")
        (c / "persistent_port").write_text(port + "\n")

    def executor(self, lun: int = 1, fail_login: Sequence[str] = (), udev: bool = True) -> SecretRecordingExecutor:
        def node(args: list[str]) -> tuple[int, str, str]:
            portal = args[args.index("-p") + 1]
            if "--login" in args:
                if portal in fail_login:
                    return 24, "", "iscsiadm: Could not login to [iface: default, target: x, portal: y]"
                if udev:
                    self.link(portal, lun, f"sd{chr(ord('b') + len(self.disks))}")
            return 0, "", ""

        return SecretRecordingExecutor(responses={
            ("iscsiadm", "-m", "node"): node,
            ("iscsiadm", "-m", "iface", "-I", "iface0", "-o", "show"):
                (0, "# BEGIN RECORD\niface.iscsi_ifacename = iface0\niface.transport_name = tcp\n"
                    "iface.initiatorname = <empty>\niface.net_ifacename = eth1\n# END RECORD\n", ""),
        })


def ctx(source: dict[str, Any], ex: RecordingExecutor, secret: dict[str, bytes] | None = None,
        tmp: Path | None = None) -> VolumeContext:
    data = {SECRET_DATA_KEY: secret} if secret is not None else {}
    return VolumeContext("uid", "default", "pod", "data", {"iscsi": source}, (tmp or Path("/nonexistent")) / "t",
                         pv_name="pvc-1", data=data, executor=ex)


def iscsiadm(ex: RecordingExecutor) -> list[list[str]]:
    return [c for c in ex.calls if c[0] == "iscsiadm" and c[1] != "--version"]


def test_registered_by_source_key() -> None:
    """IS1: the ``iscsi`` source picks this plugin; it is not attachable (the node logs in)."""
    plugin = default_registry().find({"iscsi": {"targetPortal": P1, "iqn": IQN, "lun": 0}})
    assert isinstance(plugin, IscsiPlugin) and plugin.attachable is False


def test_source_fields_checked() -> None:
    """IS1: bad or missing fields are PermanentErrors naming the field; a portal without port gets 3260."""
    for spec, field in [({"iqn": IQN, "lun": 0}, "targetPortal"), ({"targetPortal": P1, "iqn": "x", "lun": 0}, "iqn"),
                        ({"targetPortal": P1, "iqn": IQN, "lun": 300}, "lun"),
                        ({"targetPortal": P1, "iqn": IQN, "lun": "1"}, "lun"),
                        ({"targetPortal": P1, "iqn": IQN, "lun": 0, "portals": "a"}, "portals")]:
        with pytest.raises(PermanentError, match=field):
            parse_source(spec, "v")
    assert normalize_portal("10.0.0.1") == "10.0.0.1:3260" and normalize_portal("[fd00::1]") == "[fd00::1]:3260"
    assert normalize_portal("[fd00::1]:3261") == "[fd00::1]:3261"
    t = parse_source({"targetPortal": "10.0.0.1", "portals": ["10.0.0.1:3260", P2], "iqn": IQN, "lun": 0}, "v")
    assert t.portals == (P1, P2)


def test_single_portal_discovery_login_and_device(tmp_path: Path) -> None:
    """IS2/IS3: discoverydb new + discover, login, node.startup manual; the device is the by-path link's disk."""
    node = Node(tmp_path)
    ex = node.executor()
    device = IscsiPlugin(node.resolver).connect(ctx({"targetPortal": P1, "iqn": IQN, "lun": 1, "fsType": "xfs"}, ex))
    db = ["iscsiadm", "-m", "discoverydb", "-t", "sendtargets", "-p", P1, "-I", "default"]
    nd = ["iscsiadm", "-m", "node", "-p", P1, "-T", IQN, "-I", "default"]
    assert iscsiadm(ex) == [[*db, "-o", "new"], [*db, "--discover"], [*nd, "--login"],
                            [*nd, "-o", "update", "-n", "node.startup", "-v", "manual"]]
    assert device.path == str(node.dev / "sdb") and device.fs_type == "xfs"
    assert (node.dev / "disk" / "by-path" / f"ip-{P1}-iscsi-{IQN}-lun-1").is_symlink()
    found = IscsiPlugin(node.resolver).find_device(ctx({"targetPortal": P1, "iqn": IQN, "lun": 1}, ex))
    assert found is not None and found.path == device.path and found.fs_type == "ext4"


def test_discovery_and_session_chap_values_are_declared_secret(tmp_path: Path) -> None:
    """IS2/IS8: discovery CHAP on the discoverydb record, session CHAP (mutual too) on the node record;
    every password is handed to the executor as a secret, so logs and errors mask it."""
    node = Node(tmp_path)
    ex = node.executor()
    src = {"targetPortal": P1, "iqn": IQN, "lun": 1, "chapAuthDiscovery": True, "chapAuthSession": True,
           "secretRef": {"name": "chap"}}
    IscsiPlugin(node.resolver).connect(ctx(src, ex, SECRET))
    db = ["iscsiadm", "-m", "discoverydb", "-t", "sendtargets", "-p", P1, "-I", "default"]
    nd = ["iscsiadm", "-m", "node", "-p", P1, "-T", IQN, "-I", "default"]

    def upd(prefix: list[str], key: str, value: str) -> list[str]:
        return [*prefix, "-o", "update", "-n", key, "-v", value]

    assert iscsiadm(ex) == [
        [*db, "-o", "new"],
        upd(db, "discovery.sendtargets.auth.authmethod", "CHAP"),
        upd(db, "discovery.sendtargets.auth.username", "disc-user"),
        upd(db, "discovery.sendtargets.auth.password", "disc-pass-123"),
        [*db, "--discover"],
        upd(nd, "node.session.auth.authmethod", "CHAP"),
        upd(nd, "node.session.auth.username", "sess-user"),
        upd(nd, "node.session.auth.password", "sess-pass-456"),
        upd(nd, "node.session.auth.username_in", "tgt-user"),
        upd(nd, "node.session.auth.password_in", "tgt-pass-789"),
        [*nd, "--login"],
        upd(nd, "node.startup", "manual"),
    ]
    for call, secrets in zip(ex.calls, ex.secret_args):
        for password in ("disc-pass-123", "sess-pass-456", "tgt-pass-789"):
            if password in call:
                assert password in secrets, call


def test_chap_without_secret_is_a_clear_error(tmp_path: Path) -> None:
    """IS8: CHAP needs secretRef; a missing Secret is retried; a Secret without the keys names them."""
    node = Node(tmp_path)
    src = {"targetPortal": P1, "iqn": IQN, "lun": 1, "chapAuthSession": True}
    with pytest.raises(PermanentError, match="secretRef is required"):
        IscsiPlugin(node.resolver).connect(ctx(src, node.executor()))
    src["secretRef"] = {"name": "chap"}
    with pytest.raises(TemporaryError, match="Secret chap not found"):
        IscsiPlugin(node.resolver).connect(ctx(src, node.executor()))
    with pytest.raises(PermanentError, match="node.session.auth.password") as info:
        IscsiPlugin(node.resolver).connect(ctx(src, node.executor(), {"node.session.auth.username": b"u"}))
    assert "sess-pass" not in str(info.value)


def test_initiator_name_gets_its_own_iface(tmp_path: Path) -> None:
    """IS2: initiatorName: a per-volume iface "<portal>:<volume>" copied from iscsiInterface, with
    iface.initiatorname set; every command then uses it."""
    node = Node(tmp_path)
    ex = node.executor()
    src = {"targetPortal": P1, "iqn": IQN, "lun": 1, "iscsiInterface": "iface0",
           "initiatorName": "iqn.2024-01.io.stowage:node-a"}
    IscsiPlugin(node.resolver).connect(ctx(src, ex))
    iface = f"{P1}:pvc-1"
    calls = iscsiadm(ex)
    assert calls[:5] == [
        ["iscsiadm", "-m", "iface", "-I", "iface0", "-o", "show"],
        ["iscsiadm", "-m", "iface", "-I", iface, "-o", "new"],
        ["iscsiadm", "-m", "iface", "-I", iface, "-o", "update", "-n", "iface.net_ifacename", "-v", "eth1"],
        ["iscsiadm", "-m", "iface", "-I", iface, "-o", "update", "-n", "iface.transport_name", "-v", "tcp"],
        ["iscsiadm", "-m", "iface", "-I", iface, "-o", "update", "-n", "iface.initiatorname",
         "-v", "iqn.2024-01.io.stowage:node-a"],
    ]
    assert all(c[c.index("-I") + 1] == iface for c in calls[5:])
    other = Node(tmp_path / "b")
    plain = other.executor(lun=2)
    IscsiPlugin(other.resolver).connect(ctx({"targetPortal": P1, "iqn": IQN, "lun": 2, "iscsiInterface": "iface0"},
                                            plain))
    assert all(c[c.index("-I") + 1] == "iface0" for c in iscsiadm(plain))


def test_several_portals_use_the_multipath_device(tmp_path: Path) -> None:
    """IS4: every portal is logged in to; the dm device holding the paths is the volume's device."""
    node = Node(tmp_path)
    ex = node.executor()
    dm = node.sys / "block" / "dm-0" / "slaves"
    dm.mkdir(parents=True)
    (dm / "sdb").mkdir()
    (dm / "sdc").mkdir()
    device = IscsiPlugin(node.resolver).connect(ctx({"targetPortal": P1, "portals": [P2], "iqn": IQN, "lun": 1}, ex))
    logins = [c[c.index("-p") + 1] for c in iscsiadm(ex) if "--login" in c]
    assert logins == [P1, P2]
    assert device.path == str(node.dev / "dm-0")


def test_several_portals_without_multipath_use_the_first_path(tmp_path: Path) -> None:
    """IS4: no multipath map: the first path (logged)."""
    node = Node(tmp_path)
    device = IscsiPlugin(node.resolver).connect(ctx({"targetPortal": P1, "portals": [P2], "iqn": IQN, "lun": 1},
                                                    node.executor()))
    assert device.path == str(node.dev / "sdb")


def test_one_portal_failing_still_connects_through_the_other(tmp_path: Path) -> None:
    """IS4: a failed login is cleaned up (its node record deleted) and the other path is used."""
    node = Node(tmp_path)
    ex = node.executor(fail_login=[P1])
    device = IscsiPlugin(node.resolver).connect(ctx({"targetPortal": P1, "portals": [P2], "iqn": IQN, "lun": 1}, ex))
    assert device.path == str(node.dev / "sdb") and node.disks == {P2: "sdb"}
    assert ["iscsiadm", "-m", "node", "-p", P1, "-T", IQN, "-I", "default", "-o", "delete"] in ex.calls


def test_all_logins_failing_is_retried_with_the_reason(tmp_path: Path) -> None:
    """IS3: no path: TemporaryError carrying iscsiadm's reason; no device appearing: says so."""
    node = Node(tmp_path)
    with pytest.raises(TemporaryError, match="Could not login"):
        IscsiPlugin(node.resolver).connect(ctx({"targetPortal": P1, "iqn": IQN, "lun": 1}, node.executor(fail_login=[P1])))
    with pytest.raises(TemporaryError, match="no device appeared for LUN 1"):
        IscsiPlugin(node.resolver, path_wait=0.2).connect(ctx({"targetPortal": P1, "iqn": IQN, "lun": 1},
                                                              node.executor(udev=False)))


def test_no_initiator_is_a_permanent_error_naming_it(tmp_path: Path) -> None:
    """IS11: no iscsi_tcp in the kernel (or no iscsiadm): PermanentError, before any login is tried."""
    node = Node(tmp_path, initiator=False)
    ex = RecordingExecutor(responses={("iscsiadm", "--version"): (127, "", "command not found: iscsiadm")})
    with pytest.raises(PermanentError) as info:
        IscsiPlugin(node.resolver).connect(ctx({"targetPortal": P1, "iqn": IQN, "lun": 1}, ex))
    assert "this node has no iSCSI initiator" in str(info.value)
    assert "iscsi_tcp" in str(info.value) and "iscsiadm not found" in str(info.value)
    assert ex.calls == [["iscsiadm", "--version"]]


def test_this_host_has_no_initiator() -> None:
    """IS11: on this machine the real check says why (no kernel initiator)."""
    if Path("/sys/module/iscsi_tcp").exists():
        pytest.skip("this kernel has iscsi_tcp")
    with pytest.raises(PermanentError, match="kernel module iscsi_tcp is not loaded"):
        IscsiPlugin().check_initiator(__import__("storage.system.executor", fromlist=["x"]).Executor())


@pytest.mark.skipif(not Path("/sys/module/iscsi_tcp").exists(), reason="kernel has no iSCSI initiator (iscsi_tcp)")
def test_kernel_login_to_tgt(tgt: Any, tmp_path: Path) -> None:
    """IS3/IS5: a real kernel login to the test tgtd: the by-path device appears with the LUN's size, and
    disconnect logs out (needs iscsi_tcp and open-iscsi's iscsiadm with iscsid running)."""
    import shutil

    from provisioners.base import ProvisionRequest
    from provisioners.iscsi_tgt import IscsiTgtProvisioner
    from provisioners.testing import make_claim, pv_from_result
    from storage.system.executor import Executor

    if shutil.which("iscsiadm") is None:
        pytest.skip("iscsiadm is missing (Debian: open-iscsi)")
    sc = {"metadata": {"name": "c"}, "provisioner": IscsiTgtProvisioner.name,
          "parameters": tgt.class_parameters(tmp_path / "luns")}
    claim = make_claim("16Mi")
    prov = IscsiTgtProvisioner()
    req = ProvisionRequest(f"pvc-{claim['metadata']['uid']}", claim, sc)
    pv = pv_from_result(prov, req, prov.provision(req))
    plugin = IscsiPlugin()
    context = VolumeContext("uid", "default", "pod", "data", {"iscsi": pv["spec"]["iscsi"]}, tmp_path / "t",
                            pv_name=pv["metadata"]["name"], executor=Executor())
    try:
        device = plugin.connect(context)
        assert Path(f"/sys/block/{Path(device.path).name}/size").read_text().strip() == str(16 * 2048)
        plugin.disconnect(device.path, Executor())
        assert plugin.find_device(context) is None
    finally:
        prov.delete(pv)


def test_disconnect_logs_out_and_deletes_the_record(tmp_path: Path) -> None:
    """IS5: from the device alone, sysfs gives session, portal and target: logout, then delete the node record."""
    node = Node(tmp_path)
    node.session(3, P1, "sdb")
    ex = RecordingExecutor()
    IscsiPlugin(node.resolver).disconnect(str(node.dev / "sdb"), ex)
    nd = ["iscsiadm", "-m", "node", "-p", P1, "-T", IQN, "-I", "default"]
    assert ex.calls == [[*nd, "--logout"], [*nd, "-o", "delete"]]


def test_disconnect_multipath_flushes_and_logs_out_every_path(tmp_path: Path) -> None:
    """IS4/IS5: a dm device: flush the map, then log out of each path's session."""
    node = Node(tmp_path)
    node.session(3, P1, "sdb")
    node.session(4, P2, "sdc")
    dm = node.sys / "block" / "dm-0" / "slaves"
    dm.mkdir(parents=True)
    (dm / "sdb").mkdir()
    (dm / "sdc").mkdir()
    ex = RecordingExecutor()
    IscsiPlugin(node.resolver).disconnect(str(node.dev / "dm-0"), ex)
    assert ex.calls[0] == ["multipath", "-f", str(node.dev / "dm-0")]
    assert [c for c in ex.calls if "--logout" in c] == [
        ["iscsiadm", "-m", "node", "-p", P1, "-T", IQN, "-I", "default", "--logout"],
        ["iscsiadm", "-m", "node", "-p", P2, "-T", IQN, "-I", "default", "--logout"]]


def test_disconnect_keeps_session_while_another_lun_is_mounted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """IS5: another LUN of the same target still mounted on the node: no logout (Kubernetes does the same)."""
    from storage.system import mounts

    node = Node(tmp_path)
    node.session(3, P1, "sdb", lun=1)
    lun2 = node.sys / "devices" / "platform" / "host3" / "session3" / "target3:0:0" / "3:0:0:2" / "block" / "sdc"
    lun2.mkdir(parents=True)
    table = mounts.MountTable.read()
    other = mounts.MountTable([*table.entries, type(table.entries[0])(**{
        **table.entries[0].__dict__, "source": "/dev/sdc", "mount_point": "/var/lib/x"})])
    monkeypatch.setattr(mounts.MountTable, "read", classmethod(lambda cls: other))
    ex = RecordingExecutor()
    IscsiPlugin(node.resolver).disconnect(str(node.dev / "sdb"), ex)
    assert ex.calls == []
    monkeypatch.setattr(mounts.MountTable, "read", classmethod(lambda cls: table))
    IscsiPlugin(node.resolver).disconnect(str(node.dev / "sdb"), ex)
    assert [c[-1] for c in ex.calls] == ["--logout", "delete"]


def test_disconnect_per_volume_iface_is_deleted_and_gone_session_is_fine(tmp_path: Path) -> None:
    """IS5: a per-volume iface goes with its volume; logging out what is logged out already succeeds."""
    node = Node(tmp_path)
    iface = f"{P1}:pvc-1"
    node.session(3, P1, "sdb", iface=iface)
    ex = RecordingExecutor(responses={("iscsiadm", "-m", "node"): (21, "", "iscsiadm: No matching sessions found")})
    IscsiPlugin(node.resolver).disconnect(str(node.dev / "sdb"), ex)
    assert ex.calls[-1] == ["iscsiadm", "-m", "iface", "-I", iface, "-o", "delete"]
    ex2 = RecordingExecutor()
    IscsiPlugin(node.resolver).disconnect(str(node.dev / "sdz"), ex2)  # no session in sysfs: nothing to do
    assert ex2.calls == []
