"""Namespace lifecycle rules shared by the API server and the namespace controller (SEMANTICS N1-N4).

A namespace with ``spec.finalizers`` (``kubernetes`` by default) is not
removed when deleted: it turns ``Terminating`` and the namespace controller
empties it, then drops the finalizer. The store removes an object only when
its ``metadata.finalizers`` are empty, so while ``spec.finalizers`` remain a
namespace being deleted also carries ``CONTENT_GUARD`` in its metadata.
"""
from __future__ import annotations

from typing import Any

SPEC_FINALIZER = "kubernetes"
CONTENT_GUARD = "stowage.io/namespace-content"
TERMINATING = "Terminating"
# Kubernetes' NamespaceLifecycle admission refuses to delete these.
IMMORTAL = ("default", "kube-system", "kube-public")
# What exists from the start, as in every Kubernetes cluster.
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
NODE_LEASE_NAMESPACE = "kube-node-lease"

Obj = dict[str, Any]


def is_terminating(ns: Obj) -> bool:
    meta = ns.get("metadata") or {}
    return bool(meta.get("deletionTimestamp")) or (ns.get("status") or {}).get("phase") == TERMINATING


def terminating_message(namespace: str) -> str:
    return f"unable to create new content in namespace {namespace} because it is being terminated"


def spec_finalizers(ns: Obj) -> list[str]:
    return list((ns.get("spec") or {}).get("finalizers") or [])


def without_guard_when_final(ns: Obj) -> Obj:
    """Drop the content guard once no spec finalizer is left, so the store can remove the namespace."""
    meta = ns.setdefault("metadata", {})
    if not spec_finalizers(ns) and CONTENT_GUARD in (meta.get("finalizers") or []):
        meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != CONTENT_GUARD]
    return ns
