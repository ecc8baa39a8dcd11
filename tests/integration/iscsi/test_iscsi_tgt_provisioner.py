"""The tgt provisioner against a real tgtd, checked with libiscsi's userspace initiator (IS6-IS10)."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from provisioners.base import ANN_PROVISIONED_BY, ProvisionRequest
from provisioners.iscsi_tgt import (
    ANN_BACKING_FILE, DEFAULT_IQN_PREFIX, IscsiTgtProvisioner, Tgtadm, parse_target_show,
)
from provisioners.registry import get
from provisioners.testing import ProvisionerContract, make_claim, pv_from_result
from storage.errors import PermanentError, TemporaryError

USER, PASSWORD = "stowage-user", "s3cret-chap-pw1"
USER_IN, PASSWORD_IN = "stowage-target", "s3cret-mutual-2"
MiB = 1 << 20


def _count(tgt: Any, volume_name: str) -> int:
    out = tgt.tgtadm("--mode", "target", "--op", "show").stdout
    return sum(1 for t in parse_target_show(out) if t.name == f"{DEFAULT_IQN_PREFIX}:{volume_name}")


class TestIscsiTgtContract(ProvisionerContract):
    """IS6-IS7: the shared provisioner contract on a real tgtd."""

    @pytest.fixture
    def provisioner(self) -> IscsiTgtProvisioner:
        return IscsiTgtProvisioner()

    @pytest.fixture
    def storage_class(self, tgt: Any, tmp_path: Path) -> dict[str, Any]:
        return {"metadata": {"name": "c"}, "provisioner": IscsiTgtProvisioner.name,
                "parameters": tgt.class_parameters(tmp_path / "luns")}

    @pytest.fixture
    def backend_count(self, tgt: Any) -> Callable[[str], int]:
        return lambda volume_name: _count(tgt, volume_name)


def _secrets(data: dict[str, str]) -> Callable[[str, str], dict[str, str] | None]:
    return lambda ns, name: dict(data) if (ns, name) == ("storage", "chap") else None


def _provision(tgt: Any, tmp_path: Path, size: str = "8Mi", secret: dict[str, str] | None = None,
               **params: str) -> tuple[IscsiTgtProvisioner, dict[str, Any]]:
    parameters = tgt.class_parameters(tmp_path / "luns", **params)
    if secret is not None:
        parameters.update(chapSecretName="chap", chapSecretNamespace="storage")
    sc = {"metadata": {"name": "c"}, "provisioner": IscsiTgtProvisioner.name, "parameters": parameters}
    claim = make_claim(size)
    req = ProvisionRequest(f"pvc-{claim['metadata']['uid']}", claim, sc,
                           secrets=_secrets(secret) if secret is not None else None)
    prov = IscsiTgtProvisioner()
    started = time.monotonic()
    result = prov.provision(req)
    print(f"LUN create: {time.monotonic() - started:.3f}s")
    assert result.status == "finished"
    return prov, pv_from_result(prov, req, result)


def _url(tgt: Any, pv: dict[str, Any], creds: str = "") -> str:
    src = pv["spec"]["iscsi"]
    return f"iscsi://{creds + '@' if creds else ''}{tgt.portal}/{src['iqn']}/{src['lun']}"


def _initiator(argv: list[str], user: str = "", password: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIBISCSI_")}
    if user:
        env.update(LIBISCSI_CHAP_USERNAME=user, LIBISCSI_CHAP_PASSWORD=password)
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)


def test_registered_builtin_and_tgtd_answers_on_its_portal(tgt: Any) -> None:
    """IS6: the provisioner is built in under its name; the private tgtd listens on its portal.
    (How fast it starts is printed for the log, not asserted: speed belongs to benchmarks/.)"""
    assert isinstance(get("stowage.io/iscsi-tgt"), IscsiTgtProvisioner)
    print(f"tgtd start (script, ready): {tgt.start_seconds:.3f}s")
    host, _, port = tgt.portal.rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=10):
        pass


def test_provisioned_lun_matches_pv_without_chap(tgt: Any, tmp_path: Path) -> None:
    """IS6/IS9: target <prefix>:<pv>, LUN 1 on a sparse file of the claim size; anyone (ACL ALL) can log in;
    bytes written through the initiator land in the backing file, and the reverse."""
    prov, pv = _provision(tgt, tmp_path)
    src = pv["spec"]["iscsi"]
    assert src["iqn"] == f"{DEFAULT_IQN_PREFIX}:{pv['metadata']['name']}" and src["lun"] == 1
    assert src["targetPortal"] == tgt.portal and src["fsType"] == "ext4" and "secretRef" not in src
    backing = Path(pv["metadata"]["annotations"][ANN_BACKING_FILE])
    assert backing.stat().st_size == 8 * MiB and backing.stat().st_blocks == 0  # sparse
    try:
        cap = _initiator(["iscsi-readcapacity16", _url(tgt, pv)])
        assert cap.returncode == 0, cap.stderr
        assert "Totalsize:8388608" in cap.stdout.replace(" ", "")
        w = _initiator(["qemu-io", "-f", "raw", _url(tgt, pv), "-c", "write -P 0xab 0 1M"])
        assert w.returncode == 0, w.stderr + w.stdout
        data = backing.read_bytes()
        assert data[:MiB] == b"\xab" * MiB and data[MiB:2 * MiB] == bytes(MiB)
        with backing.open("r+b") as f:
            f.seek(3 * MiB)
            f.write(b"\xcd" * 65536)
        r = _initiator(["qemu-io", "-f", "raw", _url(tgt, pv), "-c", "read -P 0xcd 3M 64k"])
        assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout
        bad = _initiator(["qemu-io", "-f", "raw", _url(tgt, pv), "-c", "read -P 0xcd 0 64k"])
        assert "Pattern verification failed" in bad.stdout  # the check above can fail
    finally:
        prov.delete(pv)
    assert not backing.exists() and _count(tgt, pv["metadata"]["name"]) == 0


def test_chap_session_right_wrong_and_none(tgt: Any, tmp_path: Path) -> None:
    """IS8/IS9: with chapSecretName the target needs session CHAP; the PV says chapAuthSession with a secretRef
    to the class's Secret; right credentials log in and move data, wrong ones and none are refused."""
    secret = {"node.session.auth.username": USER, "node.session.auth.password": PASSWORD}
    prov, pv = _provision(tgt, tmp_path, secret=secret)
    src = pv["spec"]["iscsi"]
    assert src["chapAuthSession"] is True and src["secretRef"] == {"name": "chap", "namespace": "storage"}
    assert PASSWORD not in repr(pv)
    backing = Path(pv["metadata"]["annotations"][ANN_BACKING_FILE])
    try:
        ok = _initiator(["iscsi-inq", _url(tgt, pv)], USER, PASSWORD)
        assert ok.returncode == 0 and "DIRECT_ACCESS" in ok.stdout, ok.stderr
        ls = _initiator(["iscsi-ls", "-s", f"iscsi://{tgt.portal}"], USER, PASSWORD)
        assert f"Target:{src['iqn']}" in ls.stdout and "DIRECT_ACCESS" in ls.stdout, ls.stderr
        wrong = _initiator(["iscsi-inq", _url(tgt, pv)], USER, "not-the-password")
        assert wrong.returncode != 0 and "Authentication failure" in wrong.stdout + wrong.stderr
        none = _initiator(["iscsi-inq", _url(tgt, pv)])
        assert none.returncode != 0 and "Authentication failure" in none.stdout + none.stderr
        w = _initiator(["qemu-io", "-f", "raw", _url(tgt, pv, f"{USER}%{PASSWORD}"), "-c", "write -P 0x5a 1M 1M"])
        assert w.returncode == 0, w.stderr + w.stdout
        assert backing.read_bytes()[MiB:2 * MiB] == b"\x5a" * MiB
        denied = _initiator(["qemu-io", "-f", "raw", _url(tgt, pv), "-c", "write -P 0x11 1M 4k"])
        assert denied.returncode != 0 and backing.read_bytes()[MiB:MiB + 4096] == b"\x5a" * 4096
    finally:
        prov.delete(pv)
    assert USER not in tgt.tgtadm("--mode", "account", "--op", "show").stdout  # IS7: the account went with it


def test_mutual_chap_binds_an_outgoing_account(tgt: Any, tmp_path: Path) -> None:
    """IS8: ``..._in`` keys make the target authenticate itself too (tgt's outgoing account)."""
    secret = {"node.session.auth.username": USER, "node.session.auth.password": PASSWORD,
              "node.session.auth.username_in": USER_IN, "node.session.auth.password_in": PASSWORD_IN}
    prov, pv = _provision(tgt, tmp_path, secret=secret)
    try:
        show = tgt.tgtadm("--mode", "target", "--op", "show").stdout
        assert f"{USER_IN} (outgoing)" in show and USER in show
        env_ok = _initiator(["iscsi-inq", _url(tgt, pv)], USER, PASSWORD)
        assert env_ok.returncode == 0, env_ok.stdout + env_ok.stderr
    finally:
        prov.delete(pv)
    accounts = tgt.tgtadm("--mode", "account", "--op", "show").stdout
    assert USER not in accounts and USER_IN not in accounts


def test_chap_account_shared_by_two_volumes_outlives_the_first(tgt: Any, tmp_path: Path) -> None:
    """IS7: one Secret for many volumes is one tgt account; deleting a volume keeps it while another target uses it."""
    secret = {"node.session.auth.username": USER, "node.session.auth.password": PASSWORD}
    prov, pv1 = _provision(tgt, tmp_path, secret=secret)
    _, pv2 = _provision(tgt, tmp_path, secret=secret)
    prov.delete(pv1)
    try:
        assert USER in tgt.tgtadm("--mode", "account", "--op", "show").stdout
        assert _initiator(["iscsi-inq", _url(tgt, pv2)], USER, PASSWORD).returncode == 0
    finally:
        prov.delete(pv2)
    assert USER not in tgt.tgtadm("--mode", "account", "--op", "show").stdout


def test_chap_secret_errors_are_clear(tgt: Any, tmp_path: Path) -> None:
    """IS8: a missing Secret is retried; one without the keys is a PermanentError naming them; never the value."""
    with pytest.raises(TemporaryError, match="Secret storage/chap .*not found"):
        sc = {"metadata": {"name": "c"}, "provisioner": IscsiTgtProvisioner.name,
              "parameters": tgt.class_parameters(tmp_path, chapSecretName="chap", chapSecretNamespace="storage")}
        IscsiTgtProvisioner().provision(ProvisionRequest("pvc-x", make_claim(), sc, secrets=lambda ns, n: None))
    with pytest.raises(PermanentError, match="node.session.auth.password") as info:
        _provision(tgt, tmp_path, secret={"node.session.auth.username": USER, "other": PASSWORD})
    assert PASSWORD not in str(info.value)


def test_parameter_errors_name_the_parameter(tgt: Any, tmp_path: Path) -> None:
    """IS6: a missing targetPortal or backingDir, a bad portal or IQN prefix: PermanentError naming it."""
    cases = [({"targetPortal": ""}, "targetPortal"), ({"targetPortal": "nohost"}, "targetPortal"),
             ({"backingDir": "relative"}, "backingDir"), ({"iqnPrefix": "NotAnIqn"}, "iqnPrefix"),
             ({"portals": "1.2.3.4:x"}, "portals"), ({"controlPort": "x"}, "controlPort")]
    for override, name in cases:
        params = {**tgt.class_parameters(tmp_path), **override}
        sc = {"metadata": {"name": "c"}, "provisioner": IscsiTgtProvisioner.name, "parameters": params}
        with pytest.raises(PermanentError, match=name):
            IscsiTgtProvisioner().provision(ProvisionRequest("pvc-y", make_claim(), sc))


def test_several_portals_and_acl_reach_the_pv(tgt: Any, tmp_path: Path) -> None:
    """IS6: ``portals`` go into the PV for multipath; ``initiatorAddress`` is tgt's ACL (others: Target not found)."""
    prov, pv = _provision(tgt, tmp_path, portals=f"{tgt.portal}, 127.0.0.1:3261", initiatorAddress="10.254.254.254")
    try:
        assert pv["spec"]["iscsi"]["portals"] == [tgt.portal, "127.0.0.1:3261"]
        refused = _initiator(["iscsi-inq", _url(tgt, pv)])
        assert refused.returncode != 0 and "Target not found" in refused.stdout + refused.stderr
    finally:
        prov.delete(pv)


def test_crash_between_target_and_lun_heals(tgt: Any, tmp_path: Path) -> None:
    """IS7: a target left without its LUN (a crash) is found by name and completed, not duplicated."""
    prov, pv = _provision(tgt, tmp_path)
    name = pv["spec"]["iscsi"]["iqn"]
    target = next(t for t in parse_target_show(tgt.tgtadm("--mode", "target", "--op", "show").stdout) if t.name == name)
    tgt.tgtadm("--mode", "logicalunit", "--op", "delete", "--tid", str(target.tid), "--lun", "1")
    sc = {"metadata": {"name": "c"}, "provisioner": IscsiTgtProvisioner.name,
          "parameters": tgt.class_parameters(tmp_path / "luns")}
    claim = make_claim("8Mi", uid=pv["metadata"]["name"].removeprefix("pvc-"))
    again = prov.provision(ProvisionRequest(pv["metadata"]["name"], claim, sc))
    try:
        assert again.source["iscsi"] == pv["spec"]["iscsi"] and _count(tgt, pv["metadata"]["name"]) == 1
        assert _initiator(["iscsi-inq", _url(tgt, pv)]).returncode == 0
    finally:
        prov.delete(pv)


def test_expand_grows_lun_when_no_initiator(tgt: Any, tmp_path: Path) -> None:
    """IS10: expand grows the file and remakes the LU (the initiator sees the new size); a no-op below the size."""
    prov, pv = _provision(tgt, tmp_path)
    try:
        assert prov.expand(pv, 4 * MiB) == 8 * MiB
        assert prov.expand(pv, 20 * MiB + 1) == 21 * MiB
        cap = _initiator(["iscsi-readcapacity16", _url(tgt, pv)])
        assert f"Totalsize:{21 * MiB}" in cap.stdout.replace(" ", ""), cap.stdout
    finally:
        prov.delete(pv)


def test_expand_refused_while_initiator_logged_in(tmp_path: Path) -> None:
    """IS10: with an I_T nexus on the target, expand is a TemporaryError (tgt cannot resize a LUN in use)."""
    from storage.system.executor import RecordingExecutor

    backing = tmp_path / "pvc-z.img"
    backing.write_bytes(bytes(MiB))
    show = (f"Target 3: {DEFAULT_IQN_PREFIX}:pvc-z\n    System information:\n    I_T nexus information:\n"
            "        I_T nexus: 4\n            Initiator: iqn.x alias: none\n    LUN information:\n        LUN: 1\n"
            f"            Backing store path: {backing}\n    Account information:\n    ACL information:\n        ALL\n")
    ex = RecordingExecutor(responses={("tgtadm",): (0, show, "")})
    pv = {"metadata": {"name": "pvc-z", "annotations": {ANN_PROVISIONED_BY: IscsiTgtProvisioner.name}},
          "spec": {"iscsi": {"iqn": f"{DEFAULT_IQN_PREFIX}:pvc-z", "lun": 1}}}
    with pytest.raises(TemporaryError, match="1 initiator"):
        IscsiTgtProvisioner(executor=ex).expand(pv, 4 * MiB)
    assert backing.stat().st_size == MiB
    assert not any("logicalunit" in c for c in ex.calls)


def test_chap_password_is_masked_in_command_errors(tmp_path: Path) -> None:
    """IS8: tgtadm takes the CHAP password as an argument; a failure's message masks it."""
    from storage.system.executor import CommandError, Executor

    tgtadm = Tgtadm(socket=str(tmp_path / "no-such.sock"), control_port=1, executor=Executor())
    with pytest.raises((CommandError, TemporaryError)) as info:
        tgtadm.run("--mode", "account", "--op", "new", "--user", USER, "--password", PASSWORD, secrets=(PASSWORD,))
    failure = info.value.__cause__ if isinstance(info.value, TemporaryError) else info.value
    assert isinstance(failure, CommandError) and "***" in failure.argv and PASSWORD not in failure.argv
    assert str(failure).startswith("tgtadm exited with status")
    assert PASSWORD not in str(info.value) and PASSWORD not in str(failure)
