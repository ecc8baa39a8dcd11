"""Per namespace: the ``default`` ServiceAccount and the ``kube-root-ca.crt`` ConfigMap, as
kube-controller-manager's serviceaccount and root-ca-cert-publisher controllers keep them.

A namespace counts as existing when it has a Namespace object or any pod or
service account in it. The CA comes from ``kube-system/kube-root-ca.crt``,
which the API server writes from the cluster PKI on start.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import structlog

from storage.controllers.base import Reconciler, Result
from storage.errors import AlreadyExists, NotFound

Obj = dict[str, Any]
log = structlog.get_logger(__name__)

DEFAULT_SA = "default"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
ROOT_CA_SOURCE_NAMESPACE = "kube-system"


def _ns(obj: Obj) -> str:
    return (obj.get("metadata") or {}).get("namespace") or ""


def calculate_changes(namespace: Obj | None, has_default_sa: bool, ca: str | None,
                      published: Obj | None) -> tuple[bool, Obj | None]:
    """(create the default SA?, ConfigMap to write or None)."""
    if namespace is not None and (namespace.get("metadata") or {}).get("deletionTimestamp"):
        return False, None  # a terminating namespace gets nothing new
    wanted: Obj | None = None
    if ca is not None and ((published or {}).get("data") or {}).get("ca.crt") != ca:
        wanted = {"ca.crt": ca}
    return not has_default_sa, wanted


class ServiceAccountsReconciler(Reconciler):
    name = "serviceaccounts"
    primary = "namespaces"

    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        def everywhere(obj: Obj) -> list[str]:
            meta = obj.get("metadata") or {}
            if meta.get("name") == ROOT_CA_CONFIGMAP and meta.get("namespace") == ROOT_CA_SOURCE_NAMESPACE:
                return sorted(self._namespaces())  # the CA changed: every namespace's copy
            if meta.get("name") == ROOT_CA_CONFIGMAP:
                return [_ns(obj)]
            return []

        return {
            "pods": lambda o: [_ns(o)] if _ns(o) else [],
            "serviceaccounts": lambda o: [_ns(o)] if _ns(o) else [],
            "configmaps": everywhere,
        }

    def _namespaces(self) -> set[str]:
        cache = self.ctx.cache
        names = {(n.get("metadata") or {}).get("name", "") for n in cache.list("namespaces")}
        names |= {_ns(o) for o in cache.list("pods")} | {_ns(o) for o in cache.list("serviceaccounts")}
        return {n for n in names if n}

    def reconcile(self, key: str) -> Result:
        namespace = key
        cache, store = self.ctx.cache, self.ctx.store
        ns_obj = cache.get("namespaces", "", namespace)
        if ns_obj is None and namespace not in self._namespaces():
            return Result()
        source = cache.get("configmaps", ROOT_CA_SOURCE_NAMESPACE, ROOT_CA_CONFIGMAP)
        ca = ((source or {}).get("data") or {}).get("ca.crt") if source else None
        published = cache.get("configmaps", namespace, ROOT_CA_CONFIGMAP)
        create_sa, data = calculate_changes(ns_obj, cache.get("serviceaccounts", namespace, DEFAULT_SA) is not None,
                                            ca, published)
        if create_sa:
            try:
                store.create("serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount",
                                                 "metadata": {"name": DEFAULT_SA, "namespace": namespace}})
                log.info("default service account created", namespace=namespace)
            except AlreadyExists:
                pass
        if data is not None and namespace != ROOT_CA_SOURCE_NAMESPACE:
            self._publish(namespace, data)
        return Result()

    def _publish(self, namespace: str, data: Obj) -> None:
        store = self.ctx.store
        try:
            current = store.get("configmaps", namespace, ROOT_CA_CONFIGMAP)
        except NotFound:
            try:
                store.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                            "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": namespace},
                                            "data": data})
            except AlreadyExists:
                pass  # another worker made it; its content is checked on the next event
            return
        store.update("configmaps", {**current, "data": data})  # Conflict: requeued by the manager


# Picked up by storage.controllers.manager.DEFAULT_RECONCILERS.
RECONCILERS = [ServiceAccountsReconciler]
