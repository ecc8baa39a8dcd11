"""The control-path driver interface: create, delete and grow volumes at a backend.

A provisioner never sees the store or the controllers: it takes plain wire
dicts and returns results. The volume name ``pvc-<claim uid>`` is the
idempotency key: a backend resource is named or tagged with it, so calling
``provision`` again after a crash finds what the first call made instead of
making a second one.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Literal

from storage.api.bench_figures import SCHEDULING_PARAMETERS as _BENCH_PARAMETERS

ANN_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
# StorageClass parameters that are the scheduler's (performance-aware placement, SEMANTICS BP6): every
# provisioner accepts them, and none passes them to its backend (``ProvisionRequest.parameters`` drops them).
SCHEDULING_PARAMETERS: frozenset[str] = _BENCH_PARAMETERS
# On a PV: JSON list of {"kind", "namespace", "name"} the controller created for it (ProvisionResult.objects).
ANN_PROVISIONED_OBJECTS = "stowage.io/provisioned-objects"
# On each such object: the PV it belongs to, so nothing else of the same name is ever replaced or deleted.
LABEL_PROVISIONED_FOR = "stowage.io/provisioned-for"
# The kinds a provisioner may ask for (least privilege: never RBAC objects, pods or workloads).
VOLUME_OBJECT_KINDS: dict[str, str] = {"Secret": "secrets", "Service": "services", "Endpoints": "endpoints"}

# (namespace, name) -> the Secret's data, decoded to text; None when there is no such Secret.
# Filled in by the controllers (they own the store): a provisioner that needs credentials
# reads them through it instead of importing the store.
SecretReader = Callable[[str, str], "dict[str, str] | None"]

# (namespace, name) -> the ConfigMap's data; None when there is no such ConfigMap (ceph-csi's cluster map).
ConfigMapReader = Callable[[str, str], "dict[str, str] | None"]

_secret_reader: ContextVar[SecretReader | None] = ContextVar("stowage_secret_reader", default=None)
_config_map_reader: ContextVar[ConfigMapReader | None] = ContextVar("stowage_config_map_reader", default=None)


@contextmanager
def secrets_available(reader: SecretReader | None, config_maps: ConfigMapReader | None = None) -> Iterator[None]:
    """Make ``reader`` (and ``config_maps``) the ones ``current_secrets()`` (``current_config_maps()``)
    return for calls that carry no request (``delete``, ``expand``, ``attach``, ``detach``): context
    variables, so two clusters in one process never see each other's objects."""
    token = _secret_reader.set(reader)
    cm_token = _config_map_reader.set(config_maps)
    try:
        yield
    finally:
        _config_map_reader.reset(cm_token)
        _secret_reader.reset(token)


def current_secrets() -> SecretReader | None:
    return _secret_reader.get()


def current_config_maps() -> ConfigMapReader | None:
    return _config_map_reader.get()


# The VolumeSnapshotClass driver that backs any volume up to an object store (S3, GCS, Azure Blob) as
# content-addressed chunks; its snapshots restore on any node and into another cluster.
BACKUP_DRIVER = "backup.stowage.io"


@dataclass(frozen=True)
class DataSource:
    """What a new volume is filled from: the claim's ``dataSource``/``dataSourceRef``, resolved by the
    provisioning controller (which has already checked ReferenceGrants and the size)."""

    kind: Literal["VolumeSnapshot", "PersistentVolumeClaim"]
    # VolumeSnapshot: the bound content's driver, ``status.snapshotHandle``, restore size and its class's
    # parameters (a backup snapshot's object store and credentials Secret).
    driver: str = ""
    snapshot_handle: str = ""
    restore_size: int = 0
    snapshot_parameters: dict[str, str] = field(default_factory=dict)
    # PersistentVolumeClaim (a clone): the source claim's bound PV.
    source_pv: dict[str, Any] | None = None


@dataclass(frozen=True)
class ProvisionRequest:
    volume_name: str  # pvc-<claim uid>: the idempotency key
    claim: dict[str, Any]
    storage_class: dict[str, Any]
    selected_node: dict[str, Any] | None = None  # the Node object under WaitForFirstConsumer
    # Reads the Secrets a class refers to (credentials of a cloud account); None outside a controller.
    secrets: SecretReader | None = field(default=None, compare=False, repr=False)
    # Reads ConfigMaps (ceph-csi's cluster-id -> monitors map); None outside a controller.
    config_maps: ConfigMapReader | None = field(default=None, compare=False, repr=False)
    # Set when the claim names a dataSource: the new volume must hold the source's data before it is Bound.
    data_source: DataSource | None = None
    # VAC3: the parameters of the VolumeAttributesClass the claim names (CSI's mutable_parameters); empty without.
    mutable_parameters: dict[str, str] = field(default_factory=dict)

    @property
    def parameters(self) -> dict[str, str]:
        return {k: v for k, v in (self.storage_class.get("parameters") or {}).items() if k not in SCHEDULING_PARAMETERS}

    @property
    def mount_options(self) -> list[str]:
        return list(self.storage_class.get("mountOptions") or [])

    @property
    def reclaim_policy(self) -> str:
        return self.storage_class.get("reclaimPolicy") or "Delete"

    @property
    def requested_bytes(self) -> int:
        from storage.controllers.binder_index import claim_request  # exact quantity arithmetic

        value = claim_request(self.claim)
        return int(value) if value == int(value) else int(value) + 1

    @property
    def access_modes(self) -> list[str]:
        return list((self.claim.get("spec") or {}).get("accessModes") or [])

    @property
    def volume_mode(self) -> str:
        return (self.claim.get("spec") or {}).get("volumeMode") or "Filesystem"


@dataclass(frozen=True)
class ProvisionResult:
    """``finished``: the volume exists; ``source`` is merged into the PV spec
    (e.g. ``{"hostPath": {"path": ...}}``), ``capacity`` is a quantity string.
    ``in_progress``: ask again later. ``reschedule``: this node cannot host it."""

    status: Literal["finished", "in_progress", "reschedule"]
    source: dict[str, Any] = field(default_factory=dict)
    capacity: str = ""
    node_affinity: dict[str, Any] | None = None
    message: str = ""
    retry_after: float = 1.0
    # Extra PV annotations (e.g. where the volume's credentials live, for a later delete or attach).
    annotations: dict[str, str] = field(default_factory=dict)
    # Namespaced objects the volume needs besides itself (a GlusterFS volume's Service and Endpoints,
    # a per-volume Ceph user's Secret): full manifests of kinds in ``VOLUME_OBJECT_KINDS``. The
    # provisioning controller creates them before saving the PV and deletes them after ``delete``.
    objects: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def finished(cls, source: dict[str, Any], capacity: str, node_affinity: dict[str, Any] | None = None,
                 annotations: dict[str, str] | None = None,
                 objects: list[dict[str, Any]] | None = None) -> "ProvisionResult":
        return cls("finished", source=source, capacity=capacity, node_affinity=node_affinity,
                   annotations=dict(annotations or {}), objects=list(objects or []))

    @classmethod
    def in_progress(cls, message: str = "", retry_after: float = 1.0) -> "ProvisionResult":
        return cls("in_progress", message=message, retry_after=retry_after)

    @classmethod
    def reschedule(cls, message: str) -> "ProvisionResult":
        return cls("reschedule", message=message)


@dataclass(frozen=True)
class CapacityReport:
    """SCAP2: what a backend can still provision in one topology segment for one class, in bytes."""

    available: int
    maximum_volume_size: int | None = None  # the largest single volume, when the backend says


class Provisioner(ABC):
    name: ClassVar[str]  # the StorageClass ``provisioner`` value, e.g. "stowage.io/hostpath"
    # Other ``provisioner`` values that select this one (an in-tree name and its CSI driver's name).
    aliases: ClassVar[frozenset[str]] = frozenset()
    supports_recycle: ClassVar[bool] = False
    # Parameters this provisioner understands; anything else is rejected (PermanentError).
    known_parameters: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def provision(self, req: ProvisionRequest) -> ProvisionResult:
        """Create (or find, by ``req.volume_name``) the backend volume."""

    @abstractmethod
    def delete(self, pv: dict[str, Any]) -> None:
        """Remove the backend volume. Already gone: success. Not ours: ignore."""

    def expand(self, pv: dict[str, Any], new_size: int) -> int:
        """Grow the backend volume to at least ``new_size`` bytes; return the new capacity in bytes."""
        raise NotImplementedError(f"provisioner {self.name} does not support expansion")

    def supports_modify(self) -> bool:
        """Whether volumes take VolumeAttributesClass parameters (VAC3): at creation and through ``modify``."""
        return False

    def modify(self, pv: dict[str, Any], parameters: dict[str, str]) -> None:
        """Apply a VolumeAttributesClass's ``parameters`` to the existing volume (VAC4). ``InfeasibleError``: the
        backend refuses these parameters; anything else is retried."""
        raise NotImplementedError(f"provisioner {self.name} does not support VolumeAttributesClasses")

    def get_capacity(self, storage_class: dict[str, Any], segment: dict[str, str]) -> CapacityReport | None:
        """SCAP2: the free capacity for new volumes of ``storage_class`` in topology ``segment`` (node labels);
        None when this provisioner does not report capacity."""
        return None

    def can_recycle(self, pv: dict[str, Any]) -> bool:
        return False

    def recycle(self, pv: dict[str, Any]) -> None:
        """Scrub the volume's contents so it can serve a new claim."""
        raise NotImplementedError(f"provisioner {self.name} does not support recycling")

    def check_parameters(self, parameters: dict[str, str]) -> None:
        """PermanentError naming every parameter this provisioner does not understand. Callers pass
        ``ProvisionRequest.parameters``, from which the scheduler's parameters are already gone (BP6)."""
        from storage.errors import PermanentError

        unknown = sorted(set(parameters) - set(self.known_parameters) - SCHEDULING_PARAMETERS)
        if unknown:
            raise PermanentError(
                f"invalid parameter(s) for provisioner {self.name}: {', '.join(repr(u) for u in unknown)}"
                f" (known: {', '.join(sorted(self.known_parameters)) or 'none'})"
            )

    @classmethod
    def names(cls) -> frozenset[str]:
        return frozenset({cls.name}) | cls.aliases

    def owns(self, pv: dict[str, Any]) -> bool:
        annotations = (pv.get("metadata") or {}).get("annotations") or {}
        return annotations.get(ANN_PROVISIONED_BY) in self.names()


class Attacher(ABC):
    """The control-plane half of an attachable volume (cloud disks, SAN LUNs): a provisioner that also
    subclasses ``Attacher`` has its volumes attached to a node before a pod there uses them, and detached
    after (the attach/detach controller, SEMANTICS A1-A3). Both calls are idempotent: attaching what is
    attached returns the same metadata, detaching what is not attached succeeds."""

    @abstractmethod
    def attach(self, pv: dict[str, Any], node: dict[str, Any]) -> dict[str, str]:
        """Attach ``pv`` to ``node``; returns VolumeAttachment ``status.attachmentMetadata`` (e.g. a device path)."""

    @abstractmethod
    def detach(self, pv: dict[str, Any], node_name: str) -> None:
        """Detach ``pv`` from the node; the node may be gone or down."""


@dataclass(frozen=True)
class SnapshotRequest:
    """Take a point-in-time copy of ``pv``. ``name`` (``snapcontent-<VolumeSnapshot uid>``) is the
    idempotency key: a backend snapshot is named or tagged with it, so a retry after a crash finds it."""

    name: str
    pv: dict[str, Any]
    parameters: dict[str, str]  # the VolumeSnapshotClass's parameters
    secrets: SecretReader | None = field(default=None, compare=False, repr=False)
    config_maps: ConfigMapReader | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SnapshotResult:
    """``handle`` is stored as the content's ``status.snapshotHandle`` and is all a later delete, status check
    or restore gets. ``ready`` False: the backend is still cutting or uploading it; ask again after
    ``retry_after`` seconds."""

    handle: str
    restore_size: int  # bytes
    ready: bool
    creation_time: float  # seconds since the epoch, when the point-in-time copy was cut
    message: str = ""
    retry_after: float = 2.0


class Snapshotter(ABC):
    """The snapshot half of a provisioner (a mixin, like ``Attacher``): the snapshot controller calls it for
    VolumeSnapshotClasses whose ``driver`` is one of the provisioner's names. Both calls are idempotent."""

    # A claim whose dataSource is another claim of this provisioner can be cloned.
    supports_clone: ClassVar[bool] = False

    @abstractmethod
    def create_snapshot(self, req: SnapshotRequest) -> SnapshotResult:
        """Cut (or find, by ``req.name``) the snapshot of ``req.pv``; call again until ``ready``."""

    @abstractmethod
    def delete_snapshot(self, handle: str, parameters: dict[str, str]) -> None:
        """Remove the snapshot. Already gone: success."""

    def snapshot_status(self, handle: str, parameters: dict[str, str]) -> SnapshotResult | None:
        """A pre-provisioned (static) content's snapshot as the backend sees it; None when it does not exist."""
        raise NotImplementedError(f"{type(self).__name__} cannot check pre-provisioned snapshots")
