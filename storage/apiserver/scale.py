"""The ``/scale`` subresource (``autoscaling/v1`` Scale) of StatefulSets, ReplicaSets, ReplicationControllers
and Deployments: what ``kubectl scale`` and autoscalers read and write.

GET answers a Scale built from the object; PUT and PATCH (merge, JSON,
strategic) change a Scale and write only ``spec.replicas`` back, through the
same defaults, validation and admission as any update of the object.
"""
from __future__ import annotations

import copy
from typing import Any

from storage.api.scale import SCALABLE
from storage.api.selectors import selector_from_dict
from storage.apiserver.handlers import Handlers, Target
from storage.apiserver.patch import apply_patch, parse_patch
from storage.errors import BadRequest, Conflict, FieldError, Invalid

__all__ = ["SCALABLE", "get", "patch", "to_scale", "update"]

SCALE_KIND = {"group": "autoscaling", "version": "v1", "kind": "Scale"}
Obj = dict[str, Any]


def _selector(info_plural: str, obj: Obj) -> str:
    spec = obj.get("spec") or {}
    if info_plural == "replicationcontrollers":
        plain = spec.get("selector") or {}
        return ",".join(f"{k}={v}" for k, v in sorted(plain.items()))
    return str(selector_from_dict(spec.get("selector")))


def to_scale(t: Target, obj: Obj) -> Obj:
    meta = obj.get("metadata") or {}
    replicas = (obj.get("spec") or {}).get("replicas")
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                     if k in meta},
        "spec": {"replicas": 1 if replicas is None else int(replicas)},
        "status": {"replicas": int((obj.get("status") or {}).get("replicas") or 0),
                   "selector": _selector(t.info.plural, obj)},
    }


def _replicas(scale: Any, name: str) -> tuple[int, str | None]:
    if not isinstance(scale, dict):
        raise BadRequest("the body must be an autoscaling/v1 Scale object")
    kind, version = scale.get("kind") or "Scale", scale.get("apiVersion") or "autoscaling/v1"
    if kind != "Scale" or version not in ("autoscaling/v1", "extensions/v1beta1", "apps/v1", "apps/v1beta2"):
        raise BadRequest(f"the body must be an autoscaling/v1 Scale object, not {version} {kind}")
    meta = scale.get("metadata") or {}
    if meta.get("name") not in (None, "", name):
        raise BadRequest(f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})")
    replicas = (scale.get("spec") or {}).get("replicas")
    if replicas is None:
        replicas = 0  # Scale.spec.replicas is optional in the API, and absent means 0
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise Invalid([FieldError("spec.replicas", "Invalid value", "must be greater than or equal to 0",
                                  replicas, True)], kind="Scale", name=name)
    return replicas, meta.get("resourceVersion") or None


def get(handlers: Handlers, t: Target) -> Obj:
    return to_scale(t, handlers.get(Target(t.info, t.namespace, t.name)))


def _write(handlers: Handlers, t: Target, replicas: int, wanted_rv: str | None, user: str, dry_run: bool,
           manager: str) -> Obj:
    main = Target(t.info, t.namespace, t.name)
    current = handlers.get(main)
    if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
        raise Conflict(
            f'Operation cannot be fulfilled on {t.info.plural}.{t.info.group or "core"} "{t.name}": the object has '
            "been modified; please apply your changes to the latest version and try again",
            kind=t.info.plural, name=t.name)
    body = copy.deepcopy(current)
    body.setdefault("spec", {})["replicas"] = replicas
    if not wanted_rv:
        body["metadata"].pop("resourceVersion", None)  # scale alone: a concurrent writer of other fields is fine
    # The writer owns spec.replicas as the scale subresource's manager, as Kubernetes records it.
    return to_scale(t, handlers.update(main, body, user=user, dry_run=dry_run, manager=manager, via="scale"))


def update(handlers: Handlers, t: Target, body: Any, *, user: str = "", dry_run: bool = False,
           manager: str = "") -> Obj:
    replicas, wanted_rv = _replicas(body, t.name)
    return _write(handlers, t, replicas, wanted_rv, user, dry_run, manager)


def patch(handlers: Handlers, t: Target, content_type: str, raw: bytes, *, user: str = "",
          dry_run: bool = False, manager: str = "") -> Obj:
    current = get(handlers, t)
    body = parse_patch(content_type, raw)
    patched = apply_patch(content_type, current, body)
    replicas, patched_rv = _replicas(patched, t.name)
    # A resourceVersion the patch names (kubectl scale --resource-version) is a precondition; the one
    # merely carried over from the Scale just read is not.
    named = None
    if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
        named = body["metadata"].get("resourceVersion") or None
    elif patched_rv != current["metadata"].get("resourceVersion"):
        named = patched_rv
    return _write(handlers, t, replicas, str(named) if named else None, user, dry_run, manager)
