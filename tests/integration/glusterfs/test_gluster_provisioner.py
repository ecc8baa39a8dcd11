"""kubernetes.io/glusterfs in CLI mode against a real glusterd: the shared provisioner contract, the
volume layouts, the Service+Endpoints it asks for, half-made volumes finished on retry, and an
unreachable glusterd (GF1-GF4, GF8, GF9, P1, P2)."""
from __future__ import annotations

import socket
import time
from typing import Any, Callable

import pytest

from gluster_service import Glusterd
from provisioners.base import ProvisionRequest
from provisioners.glusterfs import ANN_GID, GlusterfsProvisioner, volume_name_for
from provisioners.testing import ProvisionerContract, make_claim, pv_from_result
from storage.errors import PermanentError, TemporaryError

pytestmark = pytest.mark.root


def _class(glusterd: Glusterd, **params: str) -> dict[str, Any]:
    return {"metadata": {"name": "gluster"}, "provisioner": GlusterfsProvisioner.name,
            "parameters": {"glusterSocket": glusterd.socket, "brickRoot": glusterd.bricks, "volumetype": "none",
                           **params}}


class TestGlusterCliContract(ProvisionerContract):
    """GF2: the shared contract (idempotent by name, delete twice, foreign volumes, unknown parameters)."""

    @pytest.fixture
    def provisioner(self) -> GlusterfsProvisioner:
        return GlusterfsProvisioner()

    @pytest.fixture
    def storage_class(self, glusterd: Glusterd) -> dict[str, Any]:
        return _class(glusterd)

    @pytest.fixture
    def backend_count(self, glusterd: Glusterd) -> Callable[[str], int]:
        return lambda name: glusterd.volumes().count(name)


def _request(storage_class: dict[str, Any], **claim_kw: Any) -> ProvisionRequest:
    claim = make_claim(class_name=storage_class["metadata"]["name"], **claim_kw)
    return ProvisionRequest(volume_name=f"pvc-{claim['metadata']['uid']}", claim=claim, storage_class=storage_class)


def test_replicate_volume_with_endpoints_service_and_gid(glusterd: Glusterd) -> None:
    """GF2, GF4, GF8: replicate:3 makes a started 1x3 volume named pvc-<uid>; the PV source names the
    Endpoints glusterfs-dynamic-<claim> in the claim's namespace; the GID is in range and set on the volume;
    delete removes the volume and its brick directories."""
    provisioner = GlusterfsProvisioner()
    storage_class = _class(glusterd, volumetype="replicate:3", gidMin="40000", gidMax="40100")
    req = _request(storage_class, name="shared", namespace="team", modes=("ReadWriteMany",))
    started = time.monotonic()
    result = provisioner.provision(req)
    print(f"replicate:3 create+start: {time.monotonic() - started:.2f}s")
    assert result.status == "finished"
    assert result.source == {"glusterfs": {"endpoints": "glusterfs-dynamic-shared", "path": req.volume_name,
                                           "endpointsNamespace": "team"}}
    assert result.capacity == "1Gi"
    gid = int(result.annotations[ANN_GID])
    assert 40000 <= gid <= 40100
    info = glusterd.cli("volume", "info", req.volume_name).stdout
    assert "Status: Started" in info and "1 x 3 = 3" in info, info
    assert f"storage.owner-gid: {gid}" in info
    kinds = {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in result.objects}
    assert kinds == {("Endpoints", "team", "glusterfs-dynamic-shared"), ("Service", "team", "glusterfs-dynamic-shared")}
    endpoints = next(o for o in result.objects if o["kind"] == "Endpoints")
    assert endpoints["subsets"][0]["addresses"] == [{"ip": "127.0.0.1"}]
    provisioner.delete(pv_from_result(provisioner, req, result))
    assert req.volume_name not in glusterd.volumes()
    assert not (glusterd.state / "bricks" / req.volume_name).exists()


def test_disperse_and_volumenameprefix(glusterd: Glusterd) -> None:
    """GF2: disperse:4:2 gives a 1 x (4 + 2) volume; volumenameprefix names it <prefix>_<ns>_<claim>_<uid>."""
    provisioner = GlusterfsProvisioner()
    storage_class = _class(glusterd, volumetype="disperse:4:2", volumenameprefix="dept")
    req = _request(storage_class, name="logs", namespace="ops")
    result = provisioner.provision(req)
    name = f"dept_ops_logs_{req.claim['metadata']['uid']}"
    assert volume_name_for(req, "dept") == name
    assert result.source["glusterfs"]["path"] == name
    info = glusterd.cli("volume", "info", name).stdout
    assert "Type: Disperse" in info and "1 x (4 + 2) = 6" in info, info
    provisioner.delete(pv_from_result(provisioner, req, result))
    assert name not in glusterd.volumes()


def test_created_but_not_started_volume_is_finished_on_retry(glusterd: Glusterd) -> None:
    """GF2: a crash after `volume create` and before `volume start` leaves a Created volume; the next
    provision adopts and starts it instead of failing or making a second one."""
    provisioner = GlusterfsProvisioner()
    storage_class = _class(glusterd)
    req = _request(storage_class)
    (glusterd.state / "bricks" / req.volume_name).mkdir(parents=True)
    glusterd.cli("volume", "create", req.volume_name, f"127.1:{glusterd.bricks}/{req.volume_name}/brick0", "force")
    assert "Status: Created" in glusterd.cli("volume", "info", req.volume_name).stdout
    result = provisioner.provision(req)
    assert "Status: Started" in glusterd.cli("volume", "info", req.volume_name).stdout
    assert glusterd.volumes().count(req.volume_name) == 1
    provisioner.delete(pv_from_result(provisioner, req, result))
    assert req.volume_name not in glusterd.volumes()


def test_unreachable_glusterd_is_a_temporary_error_naming_the_endpoint(glusterd: Glusterd, tmp_path: Any) -> None:
    """GF9: no glusterd behind the socket: TemporaryError naming the endpoint and the error; nothing made."""
    dead = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(dead))  # a socket nobody listens on: connection refused
    storage_class = _class(glusterd, glusterSocket=str(dead))
    req = _request(storage_class)
    with pytest.raises(TemporaryError) as info:
        GlusterfsProvisioner().provision(req)
    assert f"unix:{dead}" in str(info.value) and "refused" in str(info.value).lower()
    assert req.volume_name not in glusterd.volumes()


@pytest.mark.parametrize("params,field", [
    ({"volumetype": "replicate:x"}, "volumetype"),
    ({"volumetype": "disperse:2:2"}, "volumetype"),
    ({"volumenameprefix": "a_b"}, "volumenameprefix"),
    ({"gidMin": "100"}, "gidMin"),
    ({"brickRoot": "relative"}, "brickRoot"),
    ({"volumeoptions": "performance.cache-size"}, "volumeoptions"),
    ({"clusterid": "abc"}, "clusterid"),
])
def test_bad_parameters_are_permanent_errors_naming_the_field(glusterd: Glusterd, params: dict[str, str],
                                                              field: str) -> None:
    """GF1: bad class parameters are rejected before anything is made, naming the parameter."""
    req = _request(_class(glusterd, **params))
    with pytest.raises(PermanentError) as info:
        GlusterfsProvisioner().provision(req)
    assert field in str(info.value)
    assert req.volume_name not in glusterd.volumes()
