"""The ``Store`` interface: versioned objects, optimistic concurrency, watch.

Objects are plain JSON dicts in their wire form (camelCase, as a Kubernetes
client writes them). The store owns ``metadata.uid``, ``creationTimestamp``,
``resourceVersion``, ``generation`` and ``deletionTimestamp``; it does not
validate anything else (the API server does that before calling it).

A resource is named by its plural (``persistentvolumes``, ``statefulsets``):
the plurals of every group Stowage serves are distinct. Cluster-scoped
objects use the namespace ``""``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal

EventType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclass(frozen=True)
class WatchEvent:
    type: EventType
    resource: str
    object: dict[str, Any]
    revision: int
    # Encodings of a shared event (see ``Store.watch(shared=True)``), made once for all its watchers.
    encoded: dict[Any, bytes] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class ListPage:
    """One page of a list, read at one revision (see ``Store.list_page``)."""

    items: list[dict[str, Any]]
    revision: int
    # The last key examined, (namespace, name), when more objects follow it at ``revision``; else None.
    next_after: tuple[str, str] | None
    # How many objects follow ``next_after`` at ``revision``; None when the page was filtered
    # (selectors, ``accept``) or is the last.
    remaining: int | None


class Watcher(ABC):
    """A stream of events after a revision, in revision order, none missed, none twice."""

    @abstractmethod
    def get(self, timeout: float | None = None) -> WatchEvent | None:
        """The next event, or ``None`` when ``timeout`` seconds pass without one (or after ``close``)."""

    @abstractmethod
    def close(self) -> None:
        """Stop the stream; a blocked ``get`` returns ``None``."""

    def __iter__(self) -> Iterator[WatchEvent]:
        while True:
            event = self.get(timeout=None)
            if event is None:
                return
            yield event

    def __enter__(self) -> "Watcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Store(ABC):
    @abstractmethod
    def create(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Insert a new object. AlreadyExists if (namespace, name) is taken.

        Sets uid, creationTimestamp, resourceVersion, generation=1; a
        ``metadata.generateName`` without name gets a random suffix.
        """

    @abstractmethod
    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        """The stored object, or NotFound."""

    @abstractmethod
    def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Objects (all namespaces when ``namespace`` is None) and the revision they were read at."""

    @abstractmethod
    def list_page(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        *,
        limit: int | None,
        after: tuple[str, str] | None = None,
        revision: int | None = None,
        accept: Callable[[dict[str, Any]], bool] | None = None,
    ) -> ListPage:
        """Up to ``limit`` matching objects (None: all) after the key ``after`` (exclusive), in key
        order, as they were at ``revision`` (None: now, the revision read is returned).

        Every page of a list read at the same revision shows one snapshot however the objects
        change in between. Gone when ``revision`` is older than the compacted revision; BadRequest
        when it is newer than the newest. ``accept`` filters further, like the selectors.
        """

    @abstractmethod
    def update(self, resource: str, obj: dict[str, Any], *, check_version: bool = True) -> dict[str, Any]:
        """Replace an object. NotFound if missing.

        With ``check_version`` and ``metadata.resourceVersion`` set, a
        different stored version raises Conflict. ``generation`` grows when
        anything outside ``metadata`` and ``status`` changes. An object marked
        for deletion whose finalizers become empty is removed (DELETED event).
        """

    @abstractmethod
    def delete(
        self, resource: str, namespace: str, name: str, *, resource_version: str | None = None,
        grace_seconds: int | None = None,
    ) -> dict[str, Any]:
        """Delete, or only mark (``deletionTimestamp``) while finalizers remain.

        Pods are deleted gracefully (``storage.api.deletion``): ``grace_seconds`` is the request's
        ``gracePeriodSeconds`` (None: the pod's own). Conflict if ``resource_version`` is given and
        differs. Returns the object as last stored (marked, or as it was when removed).
        """

    @abstractmethod
    def watch(self, resource: str | None, namespace: str | None = None, since: int = 0, *,
              shared: bool = False) -> Watcher:
        """Events with revision > ``since`` (all resources when ``resource`` is None).

        Gone if ``since`` is older than the oldest revision still kept.

        ``shared``: the caller only reads the events, so one event (object and
        ``encoded`` cache) serves every shared watcher of a change; a server
        feeding many node agents decodes and encodes each change once, not
        once per watch.
        """

    @abstractmethod
    def current_revision(self) -> int:
        """The newest revision written."""

    @abstractmethod
    def compact(self, keep: int, keep_bytes: int | None = None) -> int:
        """Forget events older than the newest ``keep`` (and beyond ``keep_bytes`` of bodies);
        return the oldest revision still watchable."""

    def health(self, timeout: float = 2.0) -> list[tuple[str, str | None]]:
        """Readiness checks: (name, None when passing, or a reason safe to show any client)."""
        return []

    @abstractmethod
    def close(self) -> None:
        ...
