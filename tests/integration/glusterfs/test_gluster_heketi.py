"""kubernetes.io/glusterfs in Heketi mode (resturl), against a small server that follows Heketi's REST API
(heketi_fake.py: the real heketi is not available from the Go module proxy here): the shared contract,
the request Heketi gets, the async 202/Location flow, JWT auth with the Secret's key, errors (GF1, GF3, GF9)."""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterator

import jwt
import pytest

from heketi_fake import HeketiFake
from provisioners.base import ProvisionRequest, secrets_available
from provisioners.glusterfs import ANN_GID, ANN_HEKETI_ID, GlusterfsProvisioner
from provisioners.testing import ProvisionerContract, make_claim, pv_from_result
from storage.errors import PermanentError, TemporaryError

KEY = "heketi-admin-key-that-must-never-be-logged"


@pytest.fixture
def heketi() -> Iterator[HeketiFake]:
    server = HeketiFake(user="admin", key=KEY)
    try:
        yield server
    finally:
        server.close()


def _secrets(namespace: str, name: str) -> dict[str, str] | None:
    return {"key": KEY} if (namespace, name) == ("kube-system", "heketi-secret") else None


def _class(heketi: HeketiFake, **params: str) -> dict[str, Any]:
    return {"metadata": {"name": "heketi"}, "provisioner": GlusterfsProvisioner.name,
            "parameters": {"resturl": heketi.url, "restauthenabled": "true", "restuser": "admin",
                           "secretNamespace": "kube-system", "secretName": "heketi-secret", **params}}


class TestGlusterHeketiContract(ProvisionerContract):
    """GF3: the shared contract in Heketi mode."""

    @pytest.fixture
    def provisioner(self) -> GlusterfsProvisioner:
        return GlusterfsProvisioner(secrets=_secrets)

    @pytest.fixture
    def storage_class(self, heketi: HeketiFake) -> dict[str, Any]:
        return _class(heketi)

    @pytest.fixture
    def backend_count(self, heketi: HeketiFake) -> Callable[[str], int]:
        return lambda name: sum(1 for v in heketi.volumes.values() if v["name"] == name)


def _request(storage_class: dict[str, Any], size: str = "1500Mi") -> ProvisionRequest:
    claim = make_claim(size, name="db", namespace="apps", class_name="heketi", modes=("ReadWriteMany",))
    return ProvisionRequest(volume_name=f"pvc-{claim['metadata']['uid']}", claim=claim, storage_class=storage_class)


def test_create_request_and_pv(heketi: HeketiFake) -> None:
    """GF3, GF4, GF8: POST /volumes carries size in GiB, name, durability, clusters, gid, snapshot and options;
    the PV names the Heketi volume and the Endpoints with the cluster's storage addresses; delete removes it."""
    provisioner = GlusterfsProvisioner(secrets=_secrets)
    req = _request(_class(heketi, volumetype="disperse:4:2", clusterid=heketi.cluster, snapfactor="1.5",
                          volumenameprefix="dept", volumeoptions="performance.cache-size 32MB, nfs.disable on",
                          gidMin="3000", gidMax="3999"))
    result = provisioner.provision(req)
    post = next(body for method, path, body in heketi.requests if method == "POST")
    name = f"dept_apps_db_{req.claim['metadata']['uid']}"
    assert post == {"size": 2, "name": name, "durability": {"type": "disperse", "disperse": {"data": 4, "redundancy": 2}},
                    "gid": int(result.annotations[ANN_GID]), "clusters": [heketi.cluster],
                    "snapshot": {"enable": True, "factor": 1.5},
                    "glustervolumeoptions": ["performance.cache-size 32MB", "nfs.disable on"]}
    assert 3000 <= int(result.annotations[ANN_GID]) <= 3999
    assert result.capacity == "2Gi"
    assert result.source == {"glusterfs": {"endpoints": "glusterfs-dynamic-db", "path": name, "endpointsNamespace": "apps"}}
    assert next(o for o in result.objects if o["kind"] == "Endpoints")["subsets"][0]["addresses"] == [{"ip": "127.0.0.1"}]
    polls = [path for method, path, _ in heketi.requests if path.startswith("/queue/")]
    assert len(polls) >= 2  # pending once, then 303 See Other
    pv = pv_from_result(provisioner, req, result)
    assert pv["metadata"]["annotations"][ANN_HEKETI_ID] in heketi.volumes
    with secrets_available(_secrets):
        GlusterfsProvisioner().delete(pv)  # delete finds the key through the controllers' reader
    assert not heketi.volumes


def test_token_is_heketis_jwt_and_the_key_never_shows(heketi: HeketiFake, capsys: pytest.CaptureFixture[str]) -> None:
    """GF3: a wrong key is refused by Heketi and reported as a PermanentError without the key."""
    provisioner = GlusterfsProvisioner(secrets=lambda ns, name: {"key": "wrong-key"})
    req = _request(_class(heketi))
    with pytest.raises(PermanentError) as info:
        provisioner.provision(req)
    assert "refused" in str(info.value) and "wrong-key" not in str(info.value)
    assert KEY not in capsys.readouterr().out
    from provisioners.glusterfs import HeketiClient

    token = HeketiClient(heketi.url, "admin", KEY)._token("GET", "/volumes")
    claims = jwt.decode(token, KEY, algorithms=["HS256"])
    assert claims["iss"] == "admin" and claims["qsh"] == hashlib.sha256(b"GET&/volumes").hexdigest()


def test_heketi_rejects_bad_input_and_unknown_cluster(heketi: HeketiFake) -> None:
    """GF3: a cluster Heketi does not know is a PermanentError quoting Heketi's answer; nothing is made."""
    req = _request(_class(heketi, clusterid="nosuchcluster"))
    with pytest.raises(PermanentError, match="nosuchcluster"):
        GlusterfsProvisioner(secrets=_secrets).provision(req)
    assert not heketi.volumes


def test_unreachable_heketi_is_a_temporary_error_naming_the_url(heketi: HeketiFake) -> None:
    """GF9: Heketi not answering: TemporaryError naming the URL and the error."""
    url = heketi.url
    heketi.close()
    with pytest.raises(TemporaryError) as info:
        GlusterfsProvisioner(secrets=_secrets).provision(_request(_class(heketi)))
    assert url in str(info.value) and "refused" in str(info.value).lower()


def test_missing_secret_and_cli_parameters_in_heketi_mode(heketi: HeketiFake) -> None:
    """GF1, GF3: a missing Secret is temporary; CLI-only parameters with resturl are refused."""
    with pytest.raises(TemporaryError, match="kube-system/heketi-secret"):
        GlusterfsProvisioner(secrets=lambda ns, name: None).provision(_request(_class(heketi)))
    with pytest.raises(PermanentError, match="brickRoot"):
        GlusterfsProvisioner(secrets=_secrets).provision(_request(_class(heketi, brickRoot="/srv")))
    assert not heketi.volumes
