"""Marks a node NotReady (Ready=Unknown) when its agent stops heartbeating.

The agent renews its Lease in ``kube-node-lease`` (and refreshes the Ready
condition's ``lastHeartbeatTime`` now and then); as in Kubernetes, the newer
of the Lease's ``renewTime`` and that heartbeat is the node's last sign of
life. This reconciler re-checks each node when that is due to expire, so a
silent node is noticed within one grace period without any polling loop.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Iterable

from storage.api.conditions import condition
from storage.api.namespaces import NODE_LEASE_NAMESPACE
from storage.api.timestamps import format_time, parse_time
from storage.controllers.base import Reconciler, Result, split_key
from storage.errors import Conflict, NotFound

Obj = dict[str, Any]

DEFAULT_GRACE_SECONDS = 40.0


def ready_condition(node: Obj) -> Obj | None:
    return condition(node, "Ready")


class NodeLifecycleReconciler(Reconciler):
    name = "node-lifecycle"
    primary = "nodes"
    grace_seconds: float = DEFAULT_GRACE_SECONDS

    def watches(self) -> dict[str, Callable[[Obj], Iterable[str]]]:
        return {"leases": self._lease_node}

    @staticmethod
    def _lease_node(lease: Obj) -> list[str]:
        meta = lease.get("metadata") or {}
        return [meta["name"]] if meta.get("namespace") == NODE_LEASE_NAMESPACE else []

    def _last_beat(self, node: Obj, cond: Obj) -> dt.datetime | None:
        beats = [parse_time(cond.get("lastHeartbeatTime"))]
        lease = self.ctx.cache.get("leases", NODE_LEASE_NAMESPACE, (node.get("metadata") or {}).get("name", ""))
        if lease is not None:
            beats.append(parse_time((lease.get("spec") or {}).get("renewTime")))
        known = [b for b in beats if b is not None]
        return max(known) if known else None

    def reconcile(self, key: str) -> Result:
        _, name = split_key(key)
        node = self.ctx.cache.get("nodes", "", name)
        if node is None:
            return Result()
        cond = ready_condition(node)
        if cond is None or cond.get("status") != "True":
            return Result()
        beat = self._last_beat(node, cond)
        now = dt.datetime.now(dt.timezone.utc)
        if beat is not None:
            age = (now - beat).total_seconds()
            if age < self.grace_seconds:
                return Result(requeue_after=self.grace_seconds - age + 0.5)
        try:
            fresh = self.ctx.store.get("nodes", "", name)
        except NotFound:
            return Result()
        cond = ready_condition(fresh)
        if cond is None or cond.get("status") != "True" or cond.get("lastHeartbeatTime") != (ready_condition(node) or {}).get("lastHeartbeatTime"):
            return Result()  # changed meanwhile: the next event decides
        try:  # the cache may lag a renewal: the stored Lease decides
            lease = self.ctx.store.get("leases", NODE_LEASE_NAMESPACE, name)
        except NotFound:
            lease = None
        renewed = parse_time(((lease or {}).get("spec") or {}).get("renewTime"))
        if renewed is not None and (now - renewed).total_seconds() < self.grace_seconds:
            return Result(requeue_after=self.grace_seconds - (now - renewed).total_seconds() + 0.5)
        cond.update(status="Unknown", reason="NodeStatusUnknown",
                    message="Kubelet stopped posting node status.", lastTransitionTime=format_time(now))
        try:
            self.ctx.store.update("nodes", fresh)
        except Conflict:
            return Result(requeue_after=0.1)
        self.ctx.events.record(fresh, "Normal", "NodeNotReady", f"Node {name} status is now: NodeNotReady")
        return Result()
