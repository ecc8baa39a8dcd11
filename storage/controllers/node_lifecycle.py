"""Marks a node NotReady (Ready=Unknown) when its agent stops heartbeating.

The agent refreshes the Ready condition's ``lastHeartbeatTime``; this
reconciler re-checks each node when its heartbeat is due to expire, so a
silent node is noticed within one grace period without any polling loop.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from storage.api.conditions import condition
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

    def reconcile(self, key: str) -> Result:
        _, name = split_key(key)
        node = self.ctx.cache.get("nodes", "", name)
        if node is None:
            return Result()
        cond = ready_condition(node)
        if cond is None or cond.get("status") != "True":
            return Result()
        beat = parse_time(cond.get("lastHeartbeatTime"))
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
        cond.update(status="Unknown", reason="NodeStatusUnknown",
                    message="Kubelet stopped posting node status.", lastTransitionTime=format_time(now))
        try:
            self.ctx.store.update("nodes", fresh)
        except Conflict:
            return Result(requeue_after=0.1)
        self.ctx.events.record(fresh, "Normal", "NodeNotReady", f"Node {name} status is now: NodeNotReady")
        return Result()
