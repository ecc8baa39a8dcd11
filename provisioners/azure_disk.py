"""Azure disks as unmanaged VHD page blobs (the ``azureDisk`` source, kinds Shared and Dedicated).

A disk is a fixed VHD: the data (the claim rounded up to whole GiB, CZ2) then
a 512-byte footer (CZ3), stored as page blob ``<pv name>.vhd`` in container
``vhds`` of the storage account whose credentials a Secret holds (CZ5). The
blob name and its ``stowagevolume`` metadata are the idempotency key (P2): a
crash after the blob exists and before the PV is saved finds it again.

Attaching takes an infinite blob lease whose id is derived from the node name
(CZ6): the same node re-attaches idempotently, another node is refused, and
detach releases (or breaks) it. The LUN is the lowest one no other disk leased
by that node holds, recorded in the blob's metadata next to the node name, and
the node's data-disk limit is enforced there (CZ7).

Managed disks need the Azure Resource Manager compute API, which is not
implemented; a class asking for them fails with that reason (CZ1).
"""
from __future__ import annotations

import datetime as dt
import struct
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import unquote, urlparse

import structlog
from azure.storage.blob import BlobServiceClient  # not installed: the registry skips this backend

from provisioners.base import (
    ANN_PROVISIONED_BY, Attacher, ProvisionRequest, ProvisionResult, Provisioner, SecretReader, current_secrets,
)
from storage.errors import PermanentError, TemporaryError
from storage.system.faults import fault_point

log = structlog.get_logger(__name__)

GiB = 1 << 30
VHD_FOOTER_SIZE = 512
MAX_UNMANAGED_GIB = 1023  # the largest unmanaged data disk Azure accepts
CONTAINER = "vhds"  # where the in-tree provisioner keeps its blobs too
ATTACH_LIMIT_KEY = "attachable-volumes-azure-disk"
DEFAULT_ATTACH_LIMIT = 16

ANN_SECRET_NAMESPACE = "azure.stowage.io/secret-namespace"
ANN_SECRET_NAME = "azure.stowage.io/secret-name"
META_VOLUME = "stowagevolume"  # the PV name the blob was made for
META_NODE = "stowagenode"  # the node holding the lease
META_LUN = "stowagelun"
KINDS = {"shared": "Shared", "dedicated": "Dedicated"}
CACHING_MODES = {"none": "None", "readonly": "ReadOnly", "readwrite": "ReadWrite"}
SKUS = frozenset({"Standard_LRS", "Standard_GRS", "Standard_RAGRS", "Standard_ZRS", "Premium_LRS"})
FS_TYPES = frozenset({"ext2", "ext3", "ext4", "xfs"})
_STOWAGE_UUIDS = uuid.UUID("5f0c3e52-8d1e-4c7e-9a55-6b1f0a2d9c41")  # namespace of lease ids and VHD unique ids
_VHD_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
# Few, short SDK retries: the controllers retry with their own back-off, and a worker must
# not sit in the SDK's default 15 s, 18 s, 24 s waits for an endpoint that is down.
_SDK_RETRY: dict[str, Any] = {"retry_total": 2, "initial_backoff": 0.5, "increment_base": 2, "connection_timeout": 10}


# ------------------------------------------------------------ VHD footer

def chs_geometry(size: int) -> tuple[int, int, int]:
    """(cylinders, heads, sectors per track) as the VHD specification (appendix) computes them."""
    total = min(size // 512, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        sectors, heads = 255, 16
        cyl_times_heads = total // sectors
    else:
        sectors = 17
        cyl_times_heads = total // sectors
        heads = max(4, (cyl_times_heads + 1023) // 1024)
        if cyl_times_heads >= heads * 1024 or heads > 16:
            sectors, heads = 31, 16
            cyl_times_heads = total // sectors
        if cyl_times_heads >= heads * 1024:
            sectors, heads = 63, 16
            cyl_times_heads = total // sectors
    return cyl_times_heads // heads, heads, sectors


def vhd_checksum(footer: bytes) -> int:
    """One's complement of the byte sum, the checksum field (bytes 64..67) counted as zero."""
    return ~sum(footer[:64] + b"\0\0\0\0" + footer[68:]) & 0xFFFFFFFF


def vhd_footer(size: int, unique_id: uuid.UUID, now: dt.datetime | None = None) -> bytes:
    """The 512-byte footer of a fixed VHD whose data is ``size`` bytes."""
    if size <= 0 or size % 512:
        raise ValueError(f"VHD data size must be a positive multiple of 512, not {size}")
    stamp = int(((now or dt.datetime.now(dt.timezone.utc)) - _VHD_EPOCH).total_seconds()) & 0xFFFFFFFF
    cylinders, heads, sectors = chs_geometry(size)
    footer = bytearray(struct.pack(
        ">8sIIQI4sI4sQQHBBII16sB",
        b"conectix",  # cookie
        0x00000002,  # features: reserved bit always set
        0x00010000,  # format version 1.0
        0xFFFFFFFFFFFFFFFF,  # data offset: none for a fixed disk
        stamp,  # seconds since 2000-01-01 UTC
        b"stow",  # creator application
        0x00010000,  # creator version
        b"Wi2k",  # creator host OS
        size,  # original size
        size,  # current size
        cylinders, heads, sectors,
        2,  # disk type: fixed
        0,  # checksum, filled below
        unique_id.bytes,
        0,  # saved state
    ))
    footer += bytes(VHD_FOOTER_SIZE - len(footer))
    struct.pack_into(">I", footer, 64, vhd_checksum(bytes(footer)))
    return bytes(footer)


def parse_vhd_footer(footer: bytes) -> dict[str, Any]:
    """The fields of a footer; ValueError when it is not a valid fixed-VHD footer."""
    if len(footer) != VHD_FOOTER_SIZE or footer[:8] != b"conectix":
        raise ValueError("not a VHD footer (no conectix cookie)")
    (_, features, version, offset, stamp, _, _, _, original, current, cylinders, heads, sectors, disk_type,
     checksum, unique, _) = struct.unpack_from(">8sIIQI4sI4sQQHBBII16sB", footer)
    if checksum != vhd_checksum(footer):
        raise ValueError("VHD footer checksum mismatch")
    return {"features": features, "version": version, "data_offset": offset, "timestamp": stamp,
            "original_size": original, "current_size": current, "geometry": (cylinders, heads, sectors),
            "disk_type": disk_type, "unique_id": uuid.UUID(bytes=unique)}


def disk_size_gib(requested_bytes: int) -> int:
    """Azure's rounding (CZ2): whole GiB, at least 1, at most 1,023 for an unmanaged data disk."""
    gib = max(1, -(-requested_bytes // GiB))
    if gib > MAX_UNMANAGED_GIB:
        raise PermanentError(
            f"requested storage {requested_bytes} bytes rounds up to {gib} GiB, over the {MAX_UNMANAGED_GIB} GiB limit"
            " of an unmanaged Azure data disk")
    return gib


def lease_id_for(node_name: str) -> str:
    """The blob lease id a node holds its disks with: the same for every attach to that node (CZ6)."""
    return str(uuid.uuid5(_STOWAGE_UUIDS, f"azure-disk-attach:{node_name}"))


# ------------------------------------------------------------ credentials

@dataclass(frozen=True)
class AzureCredentials:
    """A storage account's credentials; ``repr`` and every error text leave the secrets out (CZ5)."""

    account: str
    key: str = field(repr=False)
    connection_string: str = field(default="", repr=False)
    endpoint_suffix: str = "core.windows.net"

    @classmethod
    def from_secret(cls, data: dict[str, str], where: str) -> "AzureCredentials":
        if data.get("connectionString"):
            parts = dict(p.split("=", 1) for p in data["connectionString"].split(";") if "=" in p)
            account, key = parts.get("AccountName", ""), parts.get("AccountKey", "")
            if not account or not key:
                raise PermanentError(f"Secret {where}: connectionString lacks AccountName or AccountKey")
            return cls(account, key, data["connectionString"], parts.get("EndpointSuffix") or "core.windows.net")
        missing = [k for k in ("azurestorageaccountname", "azurestorageaccountkey") if not data.get(k)]
        if missing:
            raise PermanentError(f"Secret {where} has no {' or '.join(missing)} (nor a connectionString)")
        return cls(data["azurestorageaccountname"], data["azurestorageaccountkey"])

    def blob_service(self) -> Any:
        if self.connection_string:
            return BlobServiceClient.from_connection_string(self.connection_string, **_SDK_RETRY)
        return BlobServiceClient(f"https://{self.account}.blob.{self.endpoint_suffix}",
                                 credential={"account_name": self.account, "account_key": self.key}, **_SDK_RETRY)

    def file_service(self) -> Any:
        """The File service client (Azure File shares; its SDK is imported only here)."""
        from azure.storage.fileshare import ShareServiceClient

        if self.connection_string:
            return ShareServiceClient.from_connection_string(self.connection_string, **_SDK_RETRY)
        return ShareServiceClient(f"https://{self.account}.file.{self.endpoint_suffix}",
                                  credential={"account_name": self.account, "account_key": self.key}, **_SDK_RETRY)

    def scrub(self, text: str) -> str:
        for secret in (self.connection_string, self.key):
            if secret:
                text = text.replace(secret, "<redacted>")
        return text


def read_credentials(reader: SecretReader | None, namespace: str, name: str) -> AzureCredentials:
    where = f"{namespace}/{name}"
    if reader is None:
        raise TemporaryError(f"cannot read Secret {where}: no Secret reader in this context")
    data = reader(namespace, name)
    if data is None:
        raise TemporaryError(f"Secret {where} with the storage account credentials not found", delay=5.0)
    return AzureCredentials.from_secret(data, where)


@contextmanager
def azure_errors(creds: AzureCredentials | None, what: str) -> Iterator[None]:
    """SDK errors as Stowage errors whose text holds the error code, never a key (CZ5). ``from None``:
    a logged traceback must not carry the SDK's own message either."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError, ServiceRequestError

    try:
        yield
    except (TemporaryError, PermanentError):
        raise
    except ClientAuthenticationError as exc:
        code = getattr(exc, "error_code", None) or "AuthenticationFailed"
        raise PermanentError(f"{what}: storage account authentication failed ({code}); check the Secret's key") from None
    except HttpResponseError as exc:
        code = exc.error_code or getattr(exc.response, "reason", None) or "error"
        status = exc.status_code or 0
        text = f"{what}: Azure storage answered {status} {code}"
        text = creds.scrub(text) if creds else text
        if status in (408, 409, 412, 429) or status >= 500:
            raise TemporaryError(text, delay=2.0) from None
        raise PermanentError(text) from None
    except ServiceRequestError as exc:
        raise TemporaryError(f"{what}: storage endpoint unreachable ({type(exc).__name__})", delay=2.0) from None
    except AzureError as exc:
        raise TemporaryError(f"{what}: {type(exc).__name__}", delay=2.0) from None
    except ValueError as exc:  # e.g. a malformed connection string or key (not base64): never echo the value
        raise PermanentError(f"{what}: invalid storage account credentials ({type(exc).__name__})") from None


def split_disk_uri(uri: str) -> tuple[str, str]:
    """(container, blob) of a diskURI: ``https://acct.blob.core.windows.net/vhds/x.vhd`` or an
    emulator's ``http://127.0.0.1:port/acct/vhds/x.vhd``."""
    parts = [unquote(p) for p in urlparse(uri).path.split("/") if p]
    if len(parts) < 2 or not parts[-1].endswith(".vhd"):
        raise PermanentError(f"azureDisk.diskURI {uri!r} is not the URL of a .vhd page blob")
    return parts[-2], parts[-1]


def node_attach_limit(node: dict[str, Any]) -> int:
    status = node.get("status") or {}
    for key in ("allocatable", "capacity"):
        value = (status.get(key) or {}).get(ATTACH_LIMIT_KEY)
        if value is not None:
            try:
                return int(str(value))
            except ValueError:
                break
    return DEFAULT_ATTACH_LIMIT


# ------------------------------------------------------------ the provisioner

class AzureDiskProvisioner(Provisioner, Attacher):
    name = "kubernetes.io/azure-disk"
    aliases = frozenset({"disk.csi.azure.com"})
    # In-tree parameter names are matched case-insensitively, as Kubernetes does.
    known_parameters = frozenset({"storageaccount", "skuname", "storageaccounttype", "kind", "cachingmode", "fstype",
                                  "location", "secretname", "secretnamespace"})

    def __init__(self, secrets: SecretReader | None = None) -> None:
        # A fallback reader for calls made outside the controllers (tests, tools).
        self._fallback_secrets = secrets
        self._node_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # -- parameters
    def check_parameters(self, parameters: dict[str, str]) -> None:
        unknown = sorted(k for k in parameters if k.lower() not in self.known_parameters)
        if unknown:
            raise PermanentError(
                f"invalid parameter(s) for provisioner {self.name}: {', '.join(repr(u) for u in unknown)}"
                f" (known: storageAccount, skuName, storageaccounttype, kind, cachingMode, fsType, location,"
                " secretName, secretNamespace)")

    def _parameters(self, req: ProvisionRequest) -> dict[str, str]:
        self.check_parameters(req.parameters)
        params = {k.lower(): str(v) for k, v in req.parameters.items()}
        kind = params.get("kind", "Dedicated")
        if kind.lower() == "managed":
            raise PermanentError(
                f"parameter kind={kind!r}: managed disks need the Azure Resource Manager (compute) API, which is not"
                " implemented; use kind Shared or Dedicated (unmanaged VHD page blobs)")
        if kind.lower() not in KINDS:
            raise PermanentError(f"parameter kind={kind!r} is not one of Shared, Dedicated, Managed")
        caching = params.get("cachingmode", "ReadWrite")
        if caching.lower() not in CACHING_MODES:
            raise PermanentError(f"parameter cachingMode={caching!r} is not one of None, ReadOnly, ReadWrite")
        sku, account_type = params.get("skuname"), params.get("storageaccounttype")
        if sku and account_type and sku != account_type:
            raise PermanentError(f"parameters skuName={sku!r} and storageaccounttype={account_type!r} disagree")
        sku = sku or account_type or "Standard_LRS"
        if sku not in SKUS:
            raise PermanentError(f"parameter skuName={sku!r} is not one of {', '.join(sorted(SKUS))}")
        fs_type = params.get("fstype", "ext4")
        if fs_type not in FS_TYPES:
            raise PermanentError(f"parameter fsType={fs_type!r} is not one of {', '.join(sorted(FS_TYPES))}")
        if not params.get("secretname"):
            raise PermanentError("parameter secretName is required: the Secret holding azurestorageaccountname and"
                                 " azurestorageaccountkey (or connectionString)")
        bad_modes = sorted(set(req.access_modes) - {"ReadWriteOnce"})
        if bad_modes:
            raise PermanentError(f"access mode(s) {', '.join(bad_modes)} not supported by an Azure disk (ReadWriteOnce only)")
        return {"kind": KINDS[kind.lower()], "cachingMode": CACHING_MODES[caching.lower()], "skuName": sku,
                "fsType": fs_type, "storageAccount": params.get("storageaccount", ""),
                "secretName": params["secretname"], "secretNamespace": params.get("secretnamespace") or "default"}

    def _reader(self, given: SecretReader | None = None) -> SecretReader | None:
        return given or current_secrets() or self._fallback_secrets

    # -- provision (P1, P2)
    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        params = self._parameters(req)
        gib = disk_size_gib(req.requested_bytes)
        creds = read_credentials(self._reader(req.secrets), params["secretNamespace"], params["secretName"])
        if params["storageAccount"] and params["storageAccount"] != creds.account:
            raise PermanentError(f"parameter storageAccount={params['storageAccount']!r} does not match the account of"
                                 f" Secret {params['secretNamespace']}/{params['secretName']} ({creds.account!r})")
        blob_name = f"{req.volume_name}.vhd"
        data_size = gib * GiB
        with azure_errors(creds, f"creating Azure disk {blob_name}"):
            from azure.core import MatchConditions
            from azure.core.exceptions import ResourceExistsError

            container = creds.blob_service().get_container_client(CONTAINER)
            try:
                container.create_container()
            except ResourceExistsError:
                pass
            blob = container.get_blob_client(blob_name)
            try:
                blob.create_page_blob(data_size + VHD_FOOTER_SIZE, metadata={META_VOLUME: req.volume_name},
                                      match_condition=MatchConditions.IfMissing)
                log.info("azure_disk.blob_created", volume=req.volume_name, blob=blob_name, gib=gib)
            except ResourceExistsError:
                props = blob.get_blob_properties()
                if (props.metadata or {}).get(META_VOLUME) != req.volume_name:
                    raise PermanentError(f"blob {CONTAINER}/{blob_name} exists and was not made for {req.volume_name}")
                data_size = props.size - VHD_FOOTER_SIZE  # made before a crash: keep its size
            fault_point("azure-disk:after-blob-create")
            tail = blob.download_blob(offset=data_size, length=VHD_FOOTER_SIZE).readall()
            try:
                parse_vhd_footer(tail)
            except ValueError:  # new, or a crash came before the footer: write it (pages are idempotent)
                footer = vhd_footer(data_size, uuid.uuid5(_STOWAGE_UUIDS, req.volume_name))
                blob.upload_page(footer, offset=data_size, length=VHD_FOOTER_SIZE)
            uri = blob.url
        source = {"azureDisk": {"diskName": blob_name, "diskURI": uri, "cachingMode": params["cachingMode"],
                                "fsType": params["fsType"], "readOnly": False, "kind": params["kind"]}}
        annotations = {ANN_SECRET_NAMESPACE: params["secretNamespace"], ANN_SECRET_NAME: params["secretName"]}
        return ProvisionResult.finished(source, f"{data_size // GiB}Gi", annotations=annotations)

    # -- the volume's blob, from the PV
    def _blob(self, pv: dict[str, Any]) -> tuple[Any, AzureCredentials, str]:
        spec = (pv.get("spec") or {}).get("azureDisk") or {}
        uri = spec.get("diskURI") or ""
        if not uri:
            raise PermanentError(f"PersistentVolume {pv.get('metadata', {}).get('name')} has no azureDisk.diskURI")
        annotations = (pv.get("metadata") or {}).get("annotations") or {}
        name = annotations.get(ANN_SECRET_NAME)
        if not name:
            raise PermanentError(f"PersistentVolume {pv.get('metadata', {}).get('name')} has no {ANN_SECRET_NAME}"
                                 " annotation: cannot find the storage account credentials")
        creds = read_credentials(self._reader(), annotations.get(ANN_SECRET_NAMESPACE) or "default", name)
        container, blob_name = split_disk_uri(uri)
        with azure_errors(creds, f"opening Azure disk {blob_name}"):
            blob = creds.blob_service().get_blob_client(container, blob_name)
        return blob, creds, blob_name

    def delete(self, pv: dict[str, Any]) -> None:
        if not self.owns(pv):
            return
        volume = (pv.get("metadata") or {}).get("name", "")
        blob, creds, blob_name = self._blob(pv)
        with azure_errors(creds, f"deleting Azure disk {blob_name}"):
            from azure.core.exceptions import ResourceNotFoundError

            try:
                props = blob.get_blob_properties()
            except ResourceNotFoundError:
                return  # already gone
            if (props.metadata or {}).get(META_VOLUME) != volume:
                log.warning("azure_disk.delete_foreign_blob", volume=volume, blob=blob_name)
                return
            if props.lease.state == "leased":
                raise TemporaryError(f"Azure disk {blob_name} is still attached to node"
                                     f" {(props.metadata or {}).get(META_NODE, '?')}", delay=5.0)
            try:
                blob.delete_blob()
            except ResourceNotFoundError:
                return
        log.info("azure_disk.deleted", volume=volume, blob=blob_name)

    # -- attach / detach (CZ6, CZ7)
    def _node_lock(self, node_name: str) -> threading.Lock:
        with self._locks_guard:
            return self._node_locks.setdefault(node_name, threading.Lock())

    def attach(self, pv: dict[str, Any], node: dict[str, Any]) -> dict[str, str]:
        node_name = (node.get("metadata") or {}).get("name", "")
        lease_id = lease_id_for(node_name)
        blob, creds, blob_name = self._blob(pv)
        with self._node_lock(node_name), azure_errors(creds, f"attaching Azure disk {blob_name} to node {node_name}"):
            from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

            try:
                props = blob.get_blob_properties()
            except ResourceNotFoundError:
                raise PermanentError(f"Azure disk {blob_name} does not exist") from None
            metadata = dict(props.metadata or {})
            if props.lease.state in ("leased", "breaking"):
                try:  # the service grants it again only to the same lease id: this node's
                    blob.acquire_lease(lease_duration=-1, lease_id=lease_id)
                except HttpResponseError as exc:
                    if exc.status_code != 409:
                        raise
                    holder = metadata.get(META_NODE) or "unknown"
                    raise TemporaryError(f"Azure disk {blob_name} is attached to another node ({holder});"
                                         f" refusing to attach it to {node_name}", delay=5.0) from None
                if metadata.get(META_NODE) == node_name and metadata.get(META_LUN):
                    return {"lun": metadata[META_LUN], "diskURI": blob.url}
                # Ours, but a crash came before the metadata: choose the LUN now.
            limit = node_attach_limit(node)
            used = self._luns_on(creds, split_disk_uri(blob.url)[0], node_name, exclude=blob_name)
            free = next((lun for lun in range(limit) if lun not in used), None)
            if free is None:
                raise TemporaryError(f"node {node_name} has reached its limit of {limit} Azure data disks"
                                     f" ({ATTACH_LIMIT_KEY}); cannot attach {blob_name}", delay=10.0)
            lease = blob.acquire_lease(lease_duration=-1, lease_id=lease_id)
            metadata.update({META_NODE: node_name, META_LUN: str(free)})
            blob.set_blob_metadata(metadata, lease=lease)
        log.info("azure_disk.attached", blob=blob_name, node=node_name, lun=free)
        return {"lun": str(free), "diskURI": blob.url}

    @staticmethod
    def _luns_on(creds: AzureCredentials, container_name: str, node_name: str, exclude: str) -> set[int]:
        """LUNs held by the other disks this node leases in the container (their metadata says so)."""
        container = creds.blob_service().get_container_client(container_name)
        used: set[int] = set()
        for item in container.list_blobs(include=["metadata"]):
            meta = item.metadata or {}
            if item.name == exclude or meta.get(META_NODE) != node_name or item.lease.state != "leased":
                continue
            try:
                used.add(int(meta.get(META_LUN, "")))
            except ValueError:
                continue
        return used

    def detach(self, pv: dict[str, Any], node_name: str) -> None:
        blob, creds, blob_name = self._blob(pv)
        lease_id = lease_id_for(node_name)
        with self._node_lock(node_name), azure_errors(creds, f"detaching Azure disk {blob_name} from node {node_name}"):
            from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
            from azure.storage.blob import BlobLeaseClient

            try:
                props = blob.get_blob_properties()
            except ResourceNotFoundError:
                return
            metadata = dict(props.metadata or {})
            if props.lease.state != "leased":
                return  # not attached anywhere
            holder = metadata.get(META_NODE)
            if holder is not None and holder != node_name:
                return  # held by another node: not ours to release
            lease = BlobLeaseClient(blob, lease_id=lease_id)
            clean = {k: v for k, v in metadata.items() if k not in (META_NODE, META_LUN)}
            try:
                blob.set_blob_metadata(clean, lease=lease)  # refused unless the lease id is this node's
                lease.release()
            except HttpResponseError as exc:
                if exc.status_code not in (409, 412):
                    raise
                if holder != node_name:
                    return  # leased under another id and not recorded as this node's: leave it
                # Recorded as this node's but leased under another id (set by hand, or an older
                # scheme): the record is what says who holds it, so break the lease.
                lease.break_lease(lease_break_period=0)
                blob.set_blob_metadata(clean)
        log.info("azure_disk.detached", blob=blob_name, node=node_name)
