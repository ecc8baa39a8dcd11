"""ResourceQuota and LimitRange arithmetic (SEMANTICS QL1-QL9), free of I/O.

What an object charges to a namespace's quotas, whether a create or a claim's
resize fits, and Kubernetes' wording when it does not. The admission plugins
(``storage.apiserver.quota_admission``) and the quota controller
(``storage.controllers.resourcequota``) share these.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any, Iterable, Mapping

from storage.api.quantity import QuantityFormat, format_quantity, parse_quantity, parse_quantity_with_format
from storage.api.registry import by_plural

Obj = dict[str, Any]
Usage = dict[str, Fraction]

STORAGE = "storage"
REQUESTS_STORAGE = "requests.storage"
CLASS_SUFFIX = ".storageclass.storage.k8s.io/"
# The names Kubernetes counted objects by before count/<resource> (its legacy object-count evaluators).
LEGACY_COUNTS = {
    "pods": "pods", "services": "services", "secrets": "secrets", "configmaps": "configmaps",
    "persistentvolumeclaims": "persistentvolumeclaims", "replicationcontrollers": "replicationcontrollers",
    "resourcequotas": "resourcequotas",
}
BETA_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"
_TERMINAL_POD_PHASES = ("Succeeded", "Failed")


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _q(value: Any) -> Fraction | None:
    try:
        return parse_quantity(value)
    except (TypeError, ValueError):
        return None


def claim_storage_class(claim: Obj) -> str:
    """The class a claim is charged to: the beta annotation wins, as in Kubernetes' quota evaluator."""
    annotations = _d(_d(claim.get("metadata")).get("annotations"))
    if BETA_CLASS_ANNOTATION in annotations:
        return str(annotations[BETA_CLASS_ANNOTATION])
    return str(_d(claim.get("spec")).get("storageClassName") or "")


def claim_request(claim: Obj) -> Fraction:
    """What a claim charges to requests.storage: its request, or the size being expanded to when that is larger
    (a failed expansion that the user lowered again still holds its allocation)."""
    requested = _q(_d(_d(_d(claim.get("spec")).get("resources")).get("requests")).get(STORAGE)) or Fraction(0)
    allocated = _q(_d(_d(claim.get("status")).get("allocatedResources")).get(STORAGE)) or Fraction(0)
    return max(requested, allocated)


def count_name(plural: str) -> str:
    """``count/<resource>`` for core kinds, ``count/<resource>.<group>`` for the others."""
    info = by_plural(plural)
    group = info.group if info is not None else ""
    return f"count/{plural}.{group}" if group else f"count/{plural}"


def usage(plural: str, obj: Obj) -> Usage:
    """Every quota name ``obj`` (of resource ``plural``) counts toward, and by how much (QL3)."""
    if plural == "pods" and _d(obj.get("status")).get("phase") in _TERMINAL_POD_PHASES:
        return {}  # a finished pod holds no quota (Kubernetes' QuotaV1Pod)
    out: Usage = {count_name(plural): Fraction(1)}
    if plural in LEGACY_COUNTS:
        out[LEGACY_COUNTS[plural]] = Fraction(1)
    if plural == "persistentvolumeclaims":
        size = claim_request(obj)
        out[REQUESTS_STORAGE] = size
        cls = claim_storage_class(obj)
        if cls:
            out[f"{cls}{CLASS_SUFFIX}{REQUESTS_STORAGE}"] = size
            out[f"{cls}{CLASS_SUFFIX}persistentvolumeclaims"] = Fraction(1)
    return out


def resource_of(name: str) -> str | None:
    """The resource (plural) whose objects a quota name counts; None for names Stowage does not track."""
    if name in LEGACY_COUNTS:
        return LEGACY_COUNTS[name]
    if name == REQUESTS_STORAGE or (CLASS_SUFFIX in name and name.rpartition("/")[2] in (
            REQUESTS_STORAGE, "persistentvolumeclaims")):
        return "persistentvolumeclaims"
    if name.startswith("count/"):
        plural, _, group = name[len("count/"):].partition(".")
        info = by_plural(plural)
        if info is not None and info.group == group and info.namespaced and info.stored:
            return plural
    return None


def is_scoped(quota: Obj) -> bool:
    spec = _d(quota.get("spec"))
    return bool(spec.get("scopes")) or bool(_d(spec.get("scopeSelector")).get("matchExpressions"))


def render(value: Fraction, like: Any = None) -> str:
    """A quantity in the family of ``like`` (a quota's hard value): 5Gi stays binary, counts stay plain."""
    binary = False
    if like is not None:
        try:
            binary = parse_quantity_with_format(like)[1] is QuantityFormat.BINARY_SI
        except (TypeError, ValueError):
            binary = False
    return format_quantity(value, prefer_binary=binary)


def compute_used(hard: Mapping[str, Any], objects: Mapping[str, Iterable[Obj]]) -> dict[str, str]:
    """QL5: status.used of a quota, for every name of its hard list, from the namespace's objects by resource.
    Names Stowage does not track are reported as 0 (so admission never waits on them)."""
    used: dict[str, str] = {}
    for name, limit in hard.items():
        total = Fraction(0)
        plural = resource_of(name)
        if plural is not None:
            for obj in objects.get(plural, ()):
                total += usage(plural, obj).get(name, Fraction(0))
        used[name] = render(total, limit)
    return used


def delta(plural: str, new: Obj, old: Obj | None) -> Usage:
    """What a write adds: all of ``usage(new)`` on create; on update only the names that grow (QL4)."""
    grown = usage(plural, new)
    if old is None:
        return {k: v for k, v in grown.items() if v > 0}
    before = usage(plural, old)
    return {k: v - before.get(k, Fraction(0)) for k, v in grown.items() if v - before.get(k, Fraction(0)) > 0}


def _pretty(values: Mapping[str, str]) -> str:
    return ",".join(f"{k}={values[k]}" for k in sorted(values))


def charge(quota: Obj, requested: Usage) -> tuple[dict[str, str] | None, str | None]:
    """(new status.used, None) when ``requested`` fits the quota, (None, refusal) when it does not;
    (None, None) when the quota does not limit anything requested. Kubernetes' checkRequest, on status.hard."""
    status = _d(quota.get("status"))
    hard = _d(status.get("hard"))
    used = _d(status.get("used"))
    name = str(_d(quota.get("metadata")).get("name", ""))
    names = sorted(k for k in requested if k in hard)
    if not names:
        return None, None
    unknown = [k for k in names if k not in used]
    if unknown:
        return None, f"status unknown for quota: {name}, resources: {','.join(unknown)}"
    new_used = dict(used)
    exceeded: list[str] = []
    for k in names:
        total = (_q(used[k]) or Fraction(0)) + requested[k]
        limit = _q(hard[k])
        if limit is not None and total > limit:
            exceeded.append(k)
        new_used[k] = render(total, hard[k])
    if exceeded:
        return None, (f"exceeded quota: {name}, "
                      f"requested: {_pretty({k: render(requested[k], hard[k]) for k in exceeded})}, "
                      f"used: {_pretty({k: str(used[k]) for k in exceeded})}, "
                      f"limited: {_pretty({k: str(hard[k]) for k in exceeded})}")
    return new_used, None


# --- LimitRange ----------------------------------------------------------------------------------


def claim_limit_violations(limit_ranges: Iterable[Obj], claim: Obj) -> list[str]:
    """QL7: Kubernetes' PersistentVolumeClaimValidateLimitFunc over every PersistentVolumeClaim item."""
    requests = _d(_d(_d(claim.get("spec")).get("resources")).get("requests"))
    errors: list[str] = []
    for limit_range in limit_ranges:
        for item in _d(limit_range.get("spec")).get("limits") or []:
            item = _d(item)
            if item.get("type") != "PersistentVolumeClaim":
                continue
            for bound, enforced in _d(item.get("min")).items():
                errors += _bound_violation("minimum", bound, enforced, requests)
            for bound, enforced in _d(item.get("max")).items():
                errors += _bound_violation("maximum", bound, enforced, requests)
    return errors


def _bound_violation(which: str, resource: str, enforced: Any, requests: Mapping[str, Any]) -> list[str]:
    head = f"{which} {resource} usage per PersistentVolumeClaim is {enforced}"
    if resource not in requests:
        return [f"{head}.  No request is specified"]  # two spaces, as Kubernetes writes it
    request, bound = _q(requests[resource]), _q(enforced)
    if request is None or bound is None:
        return []
    if (which == "minimum" and request < bound) or (which == "maximum" and request > bound):
        return [f"{head}, but request is {requests[resource]}"]
    return []


def aggregate(errors: list[str]) -> str:
    """apimachinery's NewAggregate text: one error as itself, several in brackets."""
    return errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"


def limit_range_errors(obj: Obj) -> list[tuple[str, str, Any, str]]:
    """QL6: Kubernetes' ValidateLimitRange, as (kind, path, value, detail); kind is "invalid", "required",
    "duplicate", "unsupported" or "forbidden"."""
    out: list[tuple[str, str, Any, str]] = []
    seen: set[str] = set()
    for i, item in enumerate(_d(obj.get("spec")).get("limits") or []):
        item = _d(item)
        path = f"spec.limits[{i}]"
        kind = item.get("type")
        if kind in seen:
            out.append(("duplicate", f"{path}.type", kind, ""))
        if isinstance(kind, str):
            seen.add(kind)
        sections = {key: {k: _q(v) for k, v in _d(item.get(key)).items()}
                    for key in ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio")}
        raw = {key: _d(item.get(key)) for key in sections}
        for key, values in sections.items():
            for res, q in values.items():
                if q is not None and q < 0:
                    out.append(("invalid", f"{path}.{key}.{res}", raw[key][res], "must be greater than or equal to 0"))
        if kind == "Pod":
            for key in ("default", "defaultRequest"):
                if raw[key]:
                    out.append(("forbidden", f"{path}.{key}", None, "may not be specified when `type` is 'Pod'"))
        if kind == "PersistentVolumeClaim" and STORAGE not in raw["min"] and STORAGE not in raw["max"]:
            out.append(("required", f"{path}",  None,
                        "either minimum or maximum storage value is required, but neither was provided"))
        mins, maxs, defaults, requests = (sections[k] for k in ("min", "max", "default", "defaultRequest"))
        for res in sorted(set(mins) | set(maxs) | set(defaults) | set(requests)):
            lo, hi, dflt, dreq = mins.get(res), maxs.get(res), defaults.get(res), requests.get(res)

            def text(key: str) -> str:
                return str(raw[key][res])

            if lo is not None and hi is not None and lo > hi:
                out.append(("invalid", f"{path}.min.{res}", text("min"),
                            f"min value {text('min')} is greater than max value {text('max')}"))
            if dreq is not None and lo is not None and lo > dreq:
                out.append(("invalid", f"{path}.defaultRequest.{res}", text("defaultRequest"),
                            f"min value {text('min')} is greater than default request value {text('defaultRequest')}"))
            if dreq is not None and hi is not None and dreq > hi:
                out.append(("invalid", f"{path}.defaultRequest.{res}", text("defaultRequest"),
                            f"default request value {text('defaultRequest')} is greater than max value {text('max')}"))
            if dreq is not None and dflt is not None and dreq > dflt:
                out.append(("invalid", f"{path}.defaultRequest.{res}", text("defaultRequest"),
                            f"default request value {text('defaultRequest')} is greater than default limit value "
                            f"{text('default')}"))
            if dflt is not None and lo is not None and lo > dflt:
                out.append(("invalid", f"{path}.default.{res}", text("default"),
                            f"min value {text('min')} is greater than default value {text('default')}"))
            if dflt is not None and hi is not None and dflt > hi:
                out.append(("invalid", f"{path}.default.{res}", text("default"),
                            f"default value {text('default')} is greater than max value {text('max')}"))
    return out


def quota_errors(obj: Obj) -> list[tuple[str, Any, str]]:
    """QL2: Kubernetes' ValidateResourceQuota for the quantities: (path, value, detail) of every negative one."""
    out: list[tuple[str, Any, str]] = []
    for section, values in (("spec.hard", _d(_d(obj.get("spec")).get("hard"))),
                            ("status.hard", _d(_d(obj.get("status")).get("hard"))),
                            ("status.used", _d(_d(obj.get("status")).get("used")))):
        for name, value in values.items():
            q = _q(value)
            if q is not None and q < 0:
                out.append((f"{section}.{name}", value, "must be greater than or equal to 0"))
    return out
