"""The Azure File provisioner against a File-service stand-in that refuses what the real one refuses
(P1, P2, CZ5, CZ11)."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest
from azure.storage.fileshare import ShareServiceClient

from provisioners.azure_disk import ANN_SECRET_NAME, ANN_SECRET_NAMESPACE, GiB
from provisioners.azure_file import AzureFileProvisioner, share_quota_gib
from provisioners.base import ProvisionRequest
from provisioners.testing import ProvisionerContract, make_claim, pv_from_result
from storage.errors import PermanentError, StowageError, TemporaryError

from azure_file_fake import FileServiceFake
from azurite_service import DEV_ACCOUNT, DEV_KEY

SECRET = ("kube-system", "azure-files")


@pytest.fixture(scope="module")
def file_service() -> Iterator[FileServiceFake]:
    with FileServiceFake(DEV_ACCOUNT) as fake:
        yield fake


@pytest.fixture
def connection_string(file_service: FileServiceFake) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"FileEndpoint={file_service.endpoint};")


@pytest.fixture
def provisioner(connection_string: str) -> AzureFileProvisioner:
    data = {SECRET: {"connectionString": connection_string}}
    return AzureFileProvisioner(secrets=lambda ns, name: data.get((ns, name)))


def _class(**params: str) -> dict[str, Any]:
    return {"metadata": {"name": "files"}, "provisioner": "file.csi.azure.com",
            "parameters": {"secretName": SECRET[1], "secretNamespace": SECRET[0], **params}}


def _request(storage_class: dict[str, Any], size: str = "1Gi", modes: tuple[str, ...] = ("ReadWriteMany",)) -> ProvisionRequest:
    claim = make_claim(size, class_name="files", modes=modes)
    return ProvisionRequest(volume_name=f"pvc-{claim['metadata']['uid']}", claim=claim, storage_class=storage_class)


class TestAzureFileContract(ProvisionerContract):
    """P1/P2 and the shared contract."""

    @pytest.fixture
    def storage_class(self) -> dict[str, Any]:
        return _class()

    @pytest.fixture
    def backend_count(self, file_service: FileServiceFake) -> Callable[[str], int]:
        return lambda volume_name: sum(1 for s in file_service.shares.values() if s.metadata.get("stowagevolume") == volume_name)


def test_share_quota_and_pv_source(provisioner: AzureFileProvisioner, file_service: FileServiceFake) -> None:
    """CZ11: quota is the claim rounded up to GiB; the PV names share and Secret for the node."""
    req = _request(_class(), "1536Mi")
    result = provisioner.provision(req)
    assert result.capacity == "2Gi"
    assert result.source == {"azureFile": {"secretName": SECRET[1], "secretNamespace": SECRET[0],
                                           "shareName": req.volume_name, "readOnly": False}}
    assert file_service.shares[req.volume_name].quota == 2
    assert (result.annotations[ANN_SECRET_NAMESPACE], result.annotations[ANN_SECRET_NAME]) == SECRET
    pv = pv_from_result(provisioner, req, result)
    assert provisioner.expand(pv, 3 * GiB) == 3 * GiB and file_service.shares[req.volume_name].quota == 3
    assert provisioner.expand(pv, 1 * GiB) == 3 * GiB  # never shrinks
    provisioner.delete(pv)
    assert req.volume_name not in file_service.shares


def test_quota_limits() -> None:
    """CZ11: 1..102,400 GiB."""
    assert share_quota_gib(1) == 1 and share_quota_gib(102400 * GiB) == 102400
    with pytest.raises(PermanentError, match="102400 GiB"):
        share_quota_gib(102400 * GiB + 1)


def test_the_fake_refuses_what_the_service_refuses(connection_string: str) -> None:
    """The stand-in is only trusted because it refuses: duplicate share, missing share, quota out of range."""
    from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

    share = ShareServiceClient.from_connection_string(connection_string, retry_total=0).get_share_client("probe-share")
    share.create_share(quota=1)
    with pytest.raises(ResourceExistsError) as exists:
        share.create_share()
    assert exists.value.error_code == "ShareAlreadyExists"
    for quota in (0, 102401):
        with pytest.raises(HttpResponseError) as bad:
            share.set_share_quota(quota)
        assert bad.value.status_code == 400
    share.delete_share()
    with pytest.raises(ResourceNotFoundError) as missing:
        share.get_share_properties()
    assert missing.value.error_code == "ShareNotFound"
    wrong = ShareServiceClient.from_connection_string(connection_string.replace(DEV_ACCOUNT, "other"), retry_total=0)
    with pytest.raises(HttpResponseError) as denied:
        wrong.get_share_client("probe-share").create_share()
    assert denied.value.status_code == 403


def test_foreign_share_of_the_same_name_is_not_adopted(provisioner: AzureFileProvisioner,
                                                       file_service: FileServiceFake, connection_string: str) -> None:
    """P2: only a share tagged with this volume is taken over after a crash."""
    req = _request(_class())
    ShareServiceClient.from_connection_string(connection_string).get_share_client(req.volume_name).create_share(quota=1)
    try:
        with pytest.raises(PermanentError, match="not made for"):
            provisioner.provision(req)
    finally:
        del file_service.shares[req.volume_name]


@pytest.mark.parametrize("params,needle", [
    ({"skuName": "Ultra"}, "skuName="),
    ({"secretName": ""}, "secretName"),
    ({"storageAccount": "x"}, "storageAccount="),
])
def test_bad_parameters(provisioner: AzureFileProvisioner, params: dict[str, str], needle: str) -> None:
    """CZ11: bad class parameters are permanent errors naming the parameter."""
    with pytest.raises(PermanentError, match=needle):
        provisioner.provision(_request(_class(**params)))


def test_wrong_key_error_has_no_key(file_service: FileServiceFake) -> None:
    """CZ5: a refused request reports the account problem, not the key."""
    provisioner = AzureFileProvisioner(secrets=lambda ns, name: {
        "connectionString": f"AccountName=other;AccountKey={DEV_KEY};FileEndpoint={file_service.endpoint};"})
    with pytest.raises(StowageError) as info:
        provisioner.provision(_request(_class()))
    assert isinstance(info.value, (PermanentError, TemporaryError))
    assert "403" in str(info.value) or "authentication" in str(info.value)
    assert DEV_KEY not in str(info.value) and "AccountKey" not in str(info.value)
