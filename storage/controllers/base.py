"""The controller contract: level-triggered reconcilers fed by a shared cache.

A controller manager (``storage/controllers/manager.py``) watches the store,
keeps an in-memory ``Cache`` of every object, and hands keys to each
``Reconciler`` through a de-duplicating work queue. ``reconcile`` re-reads
desired and actual state from the cache, acts through the store with
resourceVersion preconditions (a ``Conflict`` means: re-read and retry, the
manager requeues), and is safe to run twice at once.

Keys are ``"namespace/name"`` for namespaced objects and ``"name"`` for
cluster-scoped ones.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Literal, Protocol

from storage.api.taints import with_default_toleration_seconds
from storage.store.base import Store


@dataclass(frozen=True)
class Result:
    """``requeue_after`` seconds: look again later even if nothing changes (e.g. a backoff)."""

    requeue_after: float | None = None


class Cache(Protocol):
    """Read side: the newest state the manager has seen (may lag the store slightly)."""

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def list(self, resource: str, namespace: str | None = None, label_selector: str | None = None) -> list[dict[str, Any]]: ...

    def keyed(self, resource: str) -> dict[tuple[str, str], dict[str, Any]]:
        """Every cached object of ``resource`` by (namespace, name), "" for a cluster-scoped one: a copy made
        at once, for a reader that looks many up (PF86)."""
        ...


class EventRecorder(Protocol):
    def record(
        self, obj: dict[str, Any], type: Literal["Normal", "Warning"], reason: str, message: str
    ) -> None: ...


@dataclass(frozen=True)
class ControllerOptions:
    """Settings of the controller manager, named after kube-controller-manager's (and kube-apiserver's) flags."""

    # --node-monitor-grace-period: a node whose Lease and status stay unrenewed this long goes Ready=Unknown.
    node_monitor_grace_period: float = 40.0
    # --node-eviction-rate / --secondary-node-eviction-rate: nodes per second that get a NoExecute
    # not-ready/unreachable taint, per zone (the secondary rate once a zone is partially disrupted).
    node_eviction_rate: float = 0.1
    secondary_node_eviction_rate: float = 0.01
    # --unhealthy-zone-threshold: the share of not-Ready nodes (at least 3) that makes a zone partially disrupted.
    unhealthy_zone_threshold: float = 0.55
    # --large-cluster-size-threshold: a partially disrupted zone this small or smaller stops tainting.
    large_cluster_size_threshold: int = 50
    # The tolerationSeconds given to pods without a not-ready/unreachable toleration (kube-apiserver's
    # --default-not-ready-toleration-seconds and --default-unreachable-toleration-seconds): the API server
    # adds them on create, and so do the controllers for the pods they create.
    default_not_ready_toleration_seconds: int = 300
    default_unreachable_toleration_seconds: int = 300
    # How long the attach/detach controller waits for a not-Ready node to unmount a volume before it
    # detaches it anyway (Kubernetes' maxWaitForUnmountDuration; SEMANTICS A3).
    max_wait_for_unmount: float = 360.0
    # The API server's --pod-security-default: the Pod Security level of namespaces without labels, which
    # the pods controllers write themselves are held to as well (PS1).
    pod_security_default: str = "baseline"
    # --horizontal-pod-autoscaler-sync-period and --horizontal-pod-autoscaler-downscale-stabilization (HPA3).
    hpa_sync_period: float = 15.0
    hpa_downscale_stabilization: float = 300.0
    # The pods' resource usage for the autoscaler: pods -> PodSample by pod uid (storage.controllers.hpa),
    # read from the node agents as metrics-server would. None: no usage, so no Resource metric is valid.
    pod_usage: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None


@dataclass
class ControllerContext:
    store: Store
    cache: Cache
    events: EventRecorder
    options: ControllerOptions = field(default_factory=ControllerOptions)


def controller_options(ctx: Any) -> ControllerOptions:
    """The API server's admission settings the controllers apply themselves (defaults when the context has none)."""
    return getattr(ctx, "options", None) or ControllerOptions()


def defaulted_tolerations(ctx: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """A new pod's spec with DefaultTolerationSeconds applied, as admission does for pods created through
    the API server: controllers write their pods to the store directly."""
    options = controller_options(ctx)
    return with_default_toleration_seconds(spec, options.default_not_ready_toleration_seconds,
                                           options.default_unreachable_toleration_seconds)


def pod_security_default(ctx: Any) -> str:
    """The level the API server gives namespaces without Pod Security labels, for the pods controllers create."""
    return controller_options(ctx).pod_security_default


def object_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or ""
    return f"{namespace}/{meta['name']}" if namespace else str(meta["name"])


def split_key(key: str) -> tuple[str, str]:
    """``"ns/name"`` -> ("ns", "name"); ``"name"`` -> ("", "name")."""
    namespace, _, name = key.rpartition("/")
    return namespace, name


class Reconciler(ABC):
    name: ClassVar[str]
    primary: ClassVar[str]  # the resource whose keys this reconciler takes, e.g. "persistentvolumeclaims"

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx

    def watches(self) -> dict[str, Callable[[dict[str, Any]], Iterable[str]]]:
        """Other resources whose changes should requeue primary keys: resource -> mapper(obj) -> keys."""
        return {}

    def relevant(self, resource: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
        """Whether a change of ``resource`` (``old`` None: created; ``new`` None: deleted) requeues anything;
        the primary resource and ``watches`` decide which keys."""
        return True

    def warm_up(self) -> None:
        """Load, in the background at start, what the first reconcile would otherwise load on its critical
        path (PF91: the scheduler's first placement imported every provisioner's SDK, about 0.4 s)."""

    @abstractmethod
    def reconcile(self, key: str) -> Result:
        ...
