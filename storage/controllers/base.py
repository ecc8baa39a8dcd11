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
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Literal, Protocol

from storage.store.base import Store


@dataclass(frozen=True)
class Result:
    """``requeue_after`` seconds: look again later even if nothing changes (e.g. a backoff)."""

    requeue_after: float | None = None


class Cache(Protocol):
    """Read side: the newest state the manager has seen (may lag the store slightly)."""

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def list(self, resource: str, namespace: str | None = None, label_selector: str | None = None) -> list[dict[str, Any]]: ...


class EventRecorder(Protocol):
    def record(
        self, obj: dict[str, Any], type: Literal["Normal", "Warning"], reason: str, message: str
    ) -> None: ...


@dataclass
class ControllerContext:
    store: Store
    cache: Cache
    events: EventRecorder


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

    @abstractmethod
    def reconcile(self, key: str) -> Result:
        ...
