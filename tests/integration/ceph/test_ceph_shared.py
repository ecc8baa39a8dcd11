"""The pieces the RBD and CephFS backends share (storage/api/ceph.py), against the session's real cluster."""
from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from storage.api import ceph
from storage.errors import PermanentError


def test_bindings_load_and_talk_to_the_cluster(ceph_cluster) -> None:
    rados = ceph.import_binding("rados")
    rbd = ceph.import_binding("rbd")
    assert hasattr(rbd, "RBD")
    creds = ceph.Credentials(user="admin", key=ceph_cluster.admin_key)
    cluster = rados.Rados(rados_id=creds.user, conf=ceph.rados_conf((ceph_cluster.monitors,), creds))
    cluster.connect(timeout=10)
    try:
        assert cluster.get_fsid() == ceph_cluster.fsid
    finally:
        cluster.shutdown()


def test_client_files_hold_the_key_only_inside_the_block(ceph_cluster, tmp_path: Path) -> None:
    creds = ceph.Credentials(user="admin", key=ceph_cluster.admin_key)
    with ceph.client_files((ceph_cluster.monitors,), creds, parent=tmp_path) as (conf, keyring):
        assert stat.S_IMODE(keyring.stat().st_mode) == 0o600
        assert stat.S_IMODE(keyring.parent.stat().st_mode) == 0o700
        assert ceph_cluster.admin_key not in conf.read_text()
        import subprocess
        out = subprocess.run(["ceph", "-c", str(conf), "--id", "admin", "fsid"], capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == ceph_cluster.fsid, out.stderr
    assert list(tmp_path.iterdir()) == []


def test_csi_config_map_parsing() -> None:
    text = json.dumps([{"clusterID": "c1", "monitors": ["10.0.0.1:6789", "10.0.0.2:6789"],
                        "cephFS": {"subvolumeGroup": "g"}}])
    clusters = ceph.parse_csi_config(text)
    assert clusters["c1"].monitors == ("10.0.0.1:6789", "10.0.0.2:6789")
    assert clusters["c1"].subvolume_group == "g"
    for bad, field in [("{", "not JSON"), ('{"a": 1}', "JSON list"), ('[{"monitors": ["m"]}]', "[0].clusterID"),
                       ('[{"clusterID": "c", "monitors": []}]', "[0].monitors")]:
        with pytest.raises(PermanentError, match=field.replace("[", r"\[").replace("]", r"\]")):
            ceph.parse_csi_config(bad)


def test_credentials_from_both_secret_layouts_never_echo_the_key() -> None:
    assert ceph.credentials_from_secret({"key": b"AQB=="}, user="kube", secret="s") == ceph.Credentials("kube", "AQB==")
    assert ceph.credentials_from_secret({"userID": "csi", "userKey": "K1"}, secret="s").user == "csi"
    assert ceph.credentials_from_secret({"adminID": "client.admin", "adminKey": "K2"}, role="admin").user == "admin"
    # ceph-csi's RBD Secret (userID/userKey only) also serves as its provisioner Secret.
    assert ceph.credentials_from_secret({"userID": "kube", "userKey": "K3"}, role="admin") == ceph.Credentials("kube", "K3")
    with pytest.raises(PermanentError, match="Secret s has no userKey or key"):
        ceph.credentials_from_secret({"userID": "u"}, secret="s")
    with pytest.raises(PermanentError, match="Secret gone not found"):
        ceph.credentials_from_secret(None, secret="gone")
    assert "K1" not in repr(ceph.credentials_from_secret({"userID": "csi", "userKey": "K1"}))
