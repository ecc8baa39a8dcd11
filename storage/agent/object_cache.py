"""The ConfigMaps and Secrets the node's pods use, kept in memory and current by the agent's watches.

This is the kubelet's watch-based ConfigMap and Secret manager: an object is read from the API once,
the first time a pod needs it, and afterwards each change arrives on the agent's watch (the node
authorizer shows a node exactly the objects its pods reference). Without it every pod start read the
same ``kube-root-ca.crt`` again over HTTP.

Only objects some pod on the node references are kept. Once none does, the node stops being shown
their changes, so a kept copy could go stale unseen: it is dropped, and the next pod that uses the
object reads it afresh.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Iterable

Obj = dict[str, Any]
Key = tuple[str, str, str]  # (resource, namespace, name)

# The pod's reference kinds (as _references names them) and the API resources they name.
RESOURCES = {"configMap": "configmaps", "secret": "secrets"}


def revision(obj: Obj) -> int:
    """An object's resourceVersion as a number (0 when absent or not a number), for ordering copies."""
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _key(resource: str, obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return resource, str(meta.get("namespace") or ""), str(meta.get("name") or "")


class ReferencedObjects:
    """Objects by (resource, namespace, name), served only while a pod of the node references them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[Key, set[str]] = {}  # key -> uids of the node's pods that reference it
        self._uses: dict[str, frozenset[Key]] = {}  # uid -> the keys it references
        self._objects: dict[Key, Obj] = {}
        # The revision of the last deletion seen of a key still referenced: an answer to a read that
        # began before it (older than it) must not bring the object back.
        self._deleted: dict[Key, int] = {}

    # ---- which objects are wanted ----------------------------------------------------------

    def pod_seen(self, uid: str, keys: Iterable[Key]) -> None:
        """Pod ``uid`` references ``keys`` (a pod's references never change: volumes and env are immutable)."""
        wanted = frozenset(keys)
        with self._lock:
            if self._uses.get(uid) == wanted:
                return
            self._forget_pod(uid)
            self._uses[uid] = wanted
            for key in wanted:
                self._users.setdefault(key, set()).add(uid)

    def pod_gone(self, uid: str) -> None:
        with self._lock:
            self._forget_pod(uid)

    def pods_listed(self, pods: dict[str, Iterable[Key]]) -> None:
        """The node's pods after a relist: every reference is rebuilt from them."""
        with self._lock:
            for uid in list(self._uses):
                if uid not in pods:
                    self._forget_pod(uid)
        for uid, keys in pods.items():
            self.pod_seen(uid, keys)

    def _forget_pod(self, uid: str) -> None:
        for key in self._uses.pop(uid, frozenset()):
            users = self._users.get(key)
            if users is not None:
                users.discard(uid)
                if not users:
                    del self._users[key]
                    self._objects.pop(key, None)
                    self._deleted.pop(key, None)

    # ---- what the objects hold -------------------------------------------------------------

    def get(self, resource: str, namespace: str, name: str, read: Callable[[], Obj]) -> Obj:
        """The object from memory, else ``read()`` (which may raise NotFound), kept if still wanted."""
        key = (resource, namespace, name)
        with self._lock:
            found = self._objects.get(key)
        if found is not None:
            return found
        obj = read()
        self._offer(key, obj)
        return obj

    def observed(self, resource: str, event: str, obj: Obj) -> None:
        """A watch event of ``resource``."""
        key = _key(resource, obj)
        if event == "DELETED":
            with self._lock:
                if key in self._users:
                    self._objects.pop(key, None)
                    self._deleted[key] = max(self._deleted.get(key, 0), revision(obj))
            return
        self._offer(key, obj)

    def listed(self, resource: str, items: list[Obj]) -> None:
        """A relist of ``resource``: changes may have been missed while the watch was down, so what
        is kept becomes exactly what the list shows (an object it lacks is read again when needed)."""
        fresh = {_key(resource, o): o for o in items}
        with self._lock:
            for key in [k for k in self._objects if k[0] == resource]:
                del self._objects[key]
            for key, obj in fresh.items():
                if key in self._users:
                    self._objects[key] = obj

    def _offer(self, key: Key, obj: Obj) -> None:
        incoming = revision(obj)
        with self._lock:
            if key not in self._users or incoming <= self._deleted.get(key, 0):
                return
            kept = self._objects.get(key)
            if kept is None or revision(kept) < incoming:
                self._objects[key] = obj

    def cached(self, resource: str, namespace: str, name: str) -> Obj | None:
        """What a pod needing the object now would be given without asking the API (None: it would ask)."""
        with self._lock:
            return self._objects.get((resource, namespace, name))
