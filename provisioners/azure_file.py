"""Azure File shares (the ``azureFile`` source), made through the File service API.

A share is named after the PV (``pvc-<claim uid>``, a valid share name) and
tagged with it in its metadata, so provisioning again after a crash adopts
it (P2). Its quota is the claim rounded up to whole GiB, 1..102,400 (CZ11).
The class's Secret holds the storage account's name and key; the PV names the
same Secret (``secretName``/``secretNamespace``) for the node's SMB mount and
for delete and expand (CZ5).
"""
from __future__ import annotations

from typing import Any

import structlog
from azure.storage.fileshare import ShareServiceClient  # noqa: F401  not installed: the registry skips this backend

from provisioners.azure_disk import (
    ANN_SECRET_NAME, ANN_SECRET_NAMESPACE, GiB, META_VOLUME, AzureCredentials, azure_errors, read_credentials,
)
from provisioners.base import ProvisionRequest, ProvisionResult, Provisioner, SecretReader, current_secrets
from storage.errors import PermanentError

log = structlog.get_logger(__name__)

MIN_QUOTA_GIB, MAX_QUOTA_GIB = 1, 102400
SKUS = frozenset({"Standard_LRS", "Standard_GRS", "Standard_RAGRS", "Standard_ZRS", "Premium_LRS", "Premium_ZRS"})


def share_quota_gib(requested_bytes: int) -> int:
    gib = max(MIN_QUOTA_GIB, -(-requested_bytes // GiB))
    if gib > MAX_QUOTA_GIB:
        raise PermanentError(f"requested storage {requested_bytes} bytes rounds up to {gib} GiB, over the"
                             f" {MAX_QUOTA_GIB} GiB quota limit of an Azure file share")
    return gib


class AzureFileProvisioner(Provisioner):
    name = "kubernetes.io/azure-file"
    aliases = frozenset({"file.csi.azure.com"})
    known_parameters = frozenset({"skuname", "storageaccount", "location", "secretname", "secretnamespace"})

    def __init__(self, secrets: SecretReader | None = None) -> None:
        self._fallback_secrets = secrets  # for calls made outside the controllers (tests, tools)

    def check_parameters(self, parameters: dict[str, str]) -> None:
        unknown = sorted(k for k in parameters if k.lower() not in self.known_parameters)
        if unknown:
            raise PermanentError(
                f"invalid parameter(s) for provisioner {self.name}: {', '.join(repr(u) for u in unknown)}"
                " (known: skuName, storageAccount, location, secretName, secretNamespace)")

    def _reader(self, given: SecretReader | None = None) -> SecretReader | None:
        return given or current_secrets() or self._fallback_secrets

    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        self.check_parameters(req.parameters)
        params = {k.lower(): str(v) for k, v in req.parameters.items()}
        sku = params.get("skuname") or "Standard_LRS"
        if sku not in SKUS:
            raise PermanentError(f"parameter skuName={sku!r} is not one of {', '.join(sorted(SKUS))}")
        if not params.get("secretname"):
            raise PermanentError("parameter secretName is required: the Secret holding azurestorageaccountname and"
                                 " azurestorageaccountkey (or connectionString)")
        if req.volume_mode == "Block":
            raise PermanentError("volumeMode Block is not supported by an Azure file share")
        namespace, secret = params.get("secretnamespace") or "default", params["secretname"]
        quota = share_quota_gib(req.requested_bytes)
        creds = read_credentials(self._reader(req.secrets), namespace, secret)
        if params.get("storageaccount") and params["storageaccount"] != creds.account:
            raise PermanentError(f"parameter storageAccount={params['storageaccount']!r} does not match the account"
                                 f" of Secret {namespace}/{secret} ({creds.account!r})")
        share_name = req.volume_name.lower()
        with azure_errors(creds, f"creating Azure file share {share_name}"):
            from azure.core.exceptions import ResourceExistsError

            share = creds.file_service().get_share_client(share_name)
            try:
                share.create_share(quota=quota, metadata={META_VOLUME: req.volume_name})
                log.info("azure_file.share_created", volume=req.volume_name, share=share_name, gib=quota)
            except ResourceExistsError:
                props = share.get_share_properties()
                if (props.metadata or {}).get(META_VOLUME) != req.volume_name:
                    raise PermanentError(f"file share {share_name} exists and was not made for {req.volume_name}") from None
                quota = int(props.quota)
        source = {"azureFile": {"secretName": secret, "secretNamespace": namespace, "shareName": share_name,
                                "readOnly": False}}
        return ProvisionResult.finished(source, f"{quota}Gi",
                                        annotations={ANN_SECRET_NAMESPACE: namespace, ANN_SECRET_NAME: secret})

    def _share(self, pv: dict[str, Any]) -> tuple[Any, AzureCredentials, str]:
        spec = (pv.get("spec") or {}).get("azureFile") or {}
        annotations = (pv.get("metadata") or {}).get("annotations") or {}
        name = annotations.get(ANN_SECRET_NAME) or spec.get("secretName")
        namespace = annotations.get(ANN_SECRET_NAMESPACE) or spec.get("secretNamespace") or "default"
        share_name = spec.get("shareName") or ""
        if not name or not share_name:
            raise PermanentError(f"PersistentVolume {pv.get('metadata', {}).get('name')}: azureFile needs secretName"
                                 " and shareName")
        creds = read_credentials(self._reader(), namespace, name)
        with azure_errors(creds, f"opening Azure file share {share_name}"):
            share = creds.file_service().get_share_client(share_name)
        return share, creds, share_name

    def delete(self, pv: dict[str, Any]) -> None:
        if not self.owns(pv):
            return
        volume = (pv.get("metadata") or {}).get("name", "")
        share, creds, share_name = self._share(pv)
        with azure_errors(creds, f"deleting Azure file share {share_name}"):
            from azure.core.exceptions import ResourceNotFoundError

            try:
                props = share.get_share_properties()
                if (props.metadata or {}).get(META_VOLUME) != volume:
                    log.warning("azure_file.delete_foreign_share", volume=volume, share=share_name)
                    return
                share.delete_share()
            except ResourceNotFoundError:
                return  # already gone
        log.info("azure_file.deleted", volume=volume, share=share_name)

    def expand(self, pv: dict[str, Any], new_size: int) -> int:
        """A share grows by raising its quota; the mounted share sees it at once (no node step)."""
        quota = share_quota_gib(new_size)
        share, creds, share_name = self._share(pv)
        with azure_errors(creds, f"resizing Azure file share {share_name}"):
            current = int(share.get_share_properties().quota)
            if current < quota:
                share.set_share_quota(quota)
        return max(current, quota) * GiB
