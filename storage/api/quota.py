"""ResourceQuota and LimitRange arithmetic (SEMANTICS QL1-QL14), free of I/O.

What an object charges to a namespace's quotas, whether a create or a claim's
resize fits, and Kubernetes' wording when it does not. The admission plugins
(``storage.api.quota_admission``) and the quota controller
(``storage.controllers.resourcequota``) share these.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any, Iterable, Mapping

from storage.api.quantity import (QuantityFormat, canonical, format_quantity, parse_quantity,
                                  parse_quantity_with_format)
from storage.api.registry import by_plural
from storage.api.storage_class import object_class

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
_TERMINAL_POD_PHASES = ("Succeeded", "Failed")
# The compute resources a pod is charged for (Kubernetes' podComputeUsageHelper): the bare name and requests.<r>
# count requests, limits.<r> limits.
COMPUTE_RESOURCES = ("cpu", "memory", "ephemeral-storage")
COMPUTE_NAMES = frozenset(n for r in COMPUTE_RESOURCES for n in (r, f"requests.{r}", f"limits.{r}"))
# Kubernetes' pod evaluator validationSet: a quota on one of these makes every container state it.
MUST_SPECIFY = frozenset({"cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"})
LIMIT_RANGER_ANNOTATION = "kubernetes.io/limit-ranger"


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _q(value: Any) -> Fraction | None:
    try:
        return parse_quantity(value)
    except (TypeError, ValueError):
        return None


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
    """Every quota name ``obj`` (of resource ``plural``) counts toward, and by how much (QL3, QL11)."""
    out: Usage = {count_name(plural): Fraction(1)}
    if plural == "pods":
        # count/pods counts every stored pod; a finished one holds nothing else (Kubernetes' QuotaV1Pod).
        if _d(obj.get("status")).get("phase") not in _TERMINAL_POD_PHASES:
            out["pods"] = Fraction(1)
            out.update(pod_compute_usage(pod_resources(obj, "requests", overhead=True),
                                         pod_resources(obj, "limits", overhead=True)))
        return out
    if plural in LEGACY_COUNTS:
        out[LEGACY_COUNTS[plural]] = Fraction(1)
    if plural == "persistentvolumeclaims":
        size = claim_request(obj)
        out[REQUESTS_STORAGE] = size
        cls = object_class(obj)  # the beta annotation wins, as in Kubernetes' quota evaluator
        if cls:
            out[f"{cls}{CLASS_SUFFIX}{REQUESTS_STORAGE}"] = size
            out[f"{cls}{CLASS_SUFFIX}persistentvolumeclaims"] = Fraction(1)
    return out


def resource_of(name: str) -> str | None:
    """The resource (plural) whose objects a quota name counts; None for names Stowage does not track."""
    if name in LEGACY_COUNTS:
        return LEGACY_COUNTS[name]
    if name in COMPUTE_NAMES:
        return "pods"
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
    """apimachinery's NewAggregate text: repeated messages once; one error as itself, several in brackets."""
    unique = list(dict.fromkeys(errors))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


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
        if isinstance(kind, str):
            out += _limit_type_errors(kind, f"{path}.type")
        names = ("max", "min", "maxLimitRequestRatio") if kind == "Pod" else \
            ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio")
        for key in names:
            for res in raw[key]:
                out += _limit_resource_errors(str(kind), str(res), f"{path}.{key}[{res}]")
        if kind == "Pod":
            for key in ("default", "defaultRequest"):
                if raw[key]:
                    out.append(("forbidden", f"{path}.{key}", None, "may not be specified when `type` is 'Pod'"))
        if kind == "PersistentVolumeClaim" and STORAGE not in raw["min"] and STORAGE not in raw["max"]:
            out.append(("required", f"{path}",  None,
                        "either minimum or maximum storage value is required, but neither was provided"))
        for res in sorted(set(sections["min"]) | set(sections["max"]) | set(sections["default"])
                          | set(sections["defaultRequest"])):
            for lower, upper, field, lower_words, upper_words in _LIMIT_ORDER:
                lo, hi = sections[lower].get(res), sections[upper].get(res)
                if lo is not None and hi is not None and lo > hi:
                    out.append(("invalid", f"{path}.{field}.{res}", str(raw[field][res]),
                                f"{lower_words} {raw[lower][res]} is greater than {upper_words} {raw[upper][res]}"))
    return out


# Kubernetes' standardResources and standardContainerResources (hugepages-<size> too, and requests.hugepages-).
_STANDARD_RESOURCES = frozenset({
    "cpu", "memory", "ephemeral-storage", "requests.cpu", "requests.memory", "requests.ephemeral-storage",
    "limits.cpu", "limits.memory", "limits.ephemeral-storage", "pods", "resourcequotas", "services",
    "replicationcontrollers", "secrets", "configmaps", "persistentvolumeclaims", "storage", "requests.storage",
    "services.nodeports", "services.loadbalancers"})
_STANDARD_CONTAINER_RESOURCES = frozenset({"cpu", "memory", "ephemeral-storage"})
_STANDARD_LIMIT_TYPES = frozenset({"Pod", "Container", "PersistentVolumeClaim"})


def _limit_type_errors(kind: str, path: str) -> list[tuple[str, str, Any, str]]:
    """Kubernetes' validateLimitRangeTypeName."""
    from storage.api.names import is_qualified_name

    problems = is_qualified_name(kind)
    if problems:
        return [("invalid", path, kind, msg) for msg in problems]
    if "/" not in kind and kind not in _STANDARD_LIMIT_TYPES:
        return [("invalid", path, kind, "must be a standard limit type or fully qualified")]
    return []


def _limit_resource_errors(kind: str, name: str, path: str) -> list[tuple[str, str, Any, str]]:
    """Kubernetes' validateLimitRangeResourceName: a qualified name, and without a domain a standard resource (a
    container one for Pod and Container limits)."""
    from storage.api.names import is_qualified_name

    problems = is_qualified_name(name)
    if problems:
        return [("invalid", path, name, msg) for msg in problems]
    out: list[tuple[str, str, Any, str]] = []
    if "/" in name:
        return out
    if name not in _STANDARD_RESOURCES and not name.startswith("requests.hugepages-"):
        out.append(("invalid", path, name, "must be a standard resource type or fully qualified"))
        if kind not in ("Pod", "Container"):
            return out
    if kind in ("Pod", "Container") and name not in _STANDARD_CONTAINER_RESOURCES and not name.startswith("hugepages-"):
        out.append(("invalid", path, name, "must be a standard resource for containers"))
    return out


# Kubernetes' ValidateLimitRange order checks, in its order and words: (lower bound, upper bound, field named,
# words for the lower value, words for the upper one).
_LIMIT_ORDER = (
    ("min", "max", "min", "min value", "max value"),
    ("min", "defaultRequest", "defaultRequest", "min value", "default request value"),
    ("defaultRequest", "max", "defaultRequest", "default request value", "max value"),
    ("defaultRequest", "default", "defaultRequest", "default request value", "default limit value"),
    ("min", "default", "default", "min value", "default value"),
    ("default", "max", "default", "default value", "max value"),
)


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


# --- Pods: compute resources (QL10-QL14) ------------------------------------------------------------


def _containers(pod: Obj, key: str) -> list[Obj]:
    return [c for c in _d(pod.get("spec")).get(key) or [] if isinstance(c, dict)]


def _resources(container: Obj, which: str) -> dict[str, Any]:
    return _d(_d(container.get("resources")).get(which))


def _text(value: Any) -> str:
    """A quantity as Kubernetes' Quantity.String() prints it."""
    try:
        return canonical(value)
    except (TypeError, ValueError):
        return str(value)


class _Sum:
    """Quantities by resource name, remembering the first operand's text so a sum prints in its format family
    (Kubernetes' Quantity.Add keeps the receiver's format)."""

    def __init__(self) -> None:
        self.values: dict[str, Fraction] = {}
        self.like: dict[str, Any] = {}

    def add(self, other: Mapping[str, Any]) -> None:
        for name, raw in other.items():
            q = raw if isinstance(raw, Fraction) else _q(raw)
            if q is not None:
                self.values[name] = self.values.get(name, Fraction(0)) + q
                self.like.setdefault(name, raw)

    def max(self, other: "_Sum") -> None:
        for name, q in other.values.items():
            if name not in self.values or q > self.values[name]:
                self.values[name] = q
                self.like.setdefault(name, other.like.get(name))

    def text(self, name: str) -> str:
        return render(self.values[name], self.like.get(name))


def _pod_sum(pod: Obj, which: str) -> _Sum:
    """Kubernetes' AggregateContainerRequests/Limits: app containers summed, then the maximum with each init
    container, where a restartable (sidecar) init container keeps running and adds to all that follow it."""
    total = _Sum()
    for c in _containers(pod, "containers"):
        total.add(_resources(c, which))
    sidecars, init_peak = _Sum(), _Sum()
    for c in _containers(pod, "initContainers"):
        own = _resources(c, which)
        during = _Sum()
        if c.get("restartPolicy") == "Always":
            total.add(own)
            sidecars.add(own)
            during.add(sidecars.values)
        else:
            during.add(own)
            during.add(sidecars.values)
        init_peak.max(during)
    total.max(init_peak)
    return total


def pod_resources(pod: Obj, which: str, overhead: bool = False) -> dict[str, Fraction]:
    """Kubernetes' PodRequests/PodLimits (``which`` is "requests" or "limits"); with ``overhead`` the pod's
    spec.overhead is added to every request and to the limits the pod sets, as the quota evaluator does."""
    total = _pod_sum(pod, which)
    if overhead:
        for name, raw in _d(_d(pod.get("spec")).get("overhead")).items():
            q = _q(raw)
            if q is not None and (which == "requests" or name in total.values):
                total.values[name] = total.values.get(name, Fraction(0)) + q
    return total.values


def pod_compute_usage(requests: Mapping[str, Any], limits: Mapping[str, Any]) -> Usage:
    """Kubernetes' podComputeUsageHelper for cpu, memory and ephemeral-storage: what these requests and limits
    count toward."""
    out: Usage = {}
    for r in COMPUTE_RESOURCES:
        if r in requests:
            value = requests[r] if isinstance(requests[r], Fraction) else (_q(requests[r]) or Fraction(0))
            out[r] = out[f"requests.{r}"] = value
        if r in limits:
            out[f"limits.{r}"] = limits[r] if isinstance(limits[r], Fraction) else (_q(limits[r]) or Fraction(0))
    return out


def pod_quota_constraints(hard_names: Iterable[str], pod: Obj) -> str | None:
    """QL12: Kubernetes' pod evaluator Constraints: when a quota limits cpu or memory (requests or limits),
    every container and init container must state it; the refusal names what is missing, by resource."""
    required = set(hard_names) & MUST_SPECIFY
    missing: dict[str, set[str]] = {}
    for c in _containers(pod, "containers") + _containers(pod, "initContainers"):
        stated = pod_compute_usage(_resources(c, "requests"), _resources(c, "limits"))
        for name in required - set(stated):
            missing.setdefault(name, set()).add(str(c.get("name", "")))
    if not missing:
        return None
    return "must specify " + "; ".join(f"{name} for: {','.join(sorted(missing[name]))}" for name in sorted(missing))


def limit_range_item_defaults(item: Obj) -> Obj:
    """Kubernetes' SetDefaults_LimitRangeItem for a Container item: default falls back to max, defaultRequest
    to default and then to min. Other items are returned unchanged."""
    if item.get("type") != "Container":
        return item
    default = {**_d(item.get("max")), **_d(item.get("default"))}
    default_request = {**_d(item.get("min")), **default, **_d(item.get("defaultRequest"))}
    out = {**item}
    # Empty maps are omitted on the wire, as Kubernetes' omitempty does.
    for key, value in (("default", default), ("defaultRequest", default_request)):
        if value:
            out[key] = value
    return out


def default_pod_resources(pod: Obj, limit_ranges: Iterable[Obj]) -> Obj:
    """QL10: a new pod's resources as Kubernetes stores them: a limit without a request makes the request
    (SetDefaults_Pod), then each LimitRange's Container defaults fill what is still missing and the pod is
    annotated with what was set (the LimitRanger plugin). Returns a new pod; ``pod`` is untouched."""
    spec = dict(_d(pod.get("spec")))
    keys = ("containers", "initContainers")
    for key in keys:
        if isinstance(spec.get(key), list):
            spec[key] = [_limits_as_requests(c) if isinstance(c, dict) else c for c in spec[key]]
    meta = dict(_d(pod.get("metadata")))
    for limit_range in limit_ranges:
        limits: dict[str, Any] = {}
        requests: dict[str, Any] = {}
        for item in _d(limit_range.get("spec")).get("limits") or []:
            item = limit_range_item_defaults(_d(item))
            if item.get("type") == "Container":
                requests.update(_d(item.get("defaultRequest")))
                limits.update(_d(item.get("default")))
        if not limits and not requests:
            continue
        notes: list[str] = []
        for key, label in (("containers", "container"), ("initContainers", "init container")):
            for c in _containers({"spec": spec}, key):
                notes += _merge_defaults(c, requests, limits, f"{label} {c.get('name', '')}")
        if notes:
            meta["annotations"] = {**_d(meta.get("annotations")),
                                   LIMIT_RANGER_ANNOTATION: "LimitRanger plugin set: " + "; ".join(notes)}
    return {**pod, "metadata": meta, "spec": spec}


def _limits_as_requests(container: Obj) -> Obj:
    resources = _d(container.get("resources"))
    limits = _d(resources.get("limits"))
    if not limits:
        return {**container}
    requests = {**limits, **_d(resources.get("requests"))}
    return {**container, "resources": {**resources, "requests": requests}}


def _merge_defaults(container: Obj, requests: Mapping[str, Any], limits: Mapping[str, Any], who: str) -> list[str]:
    """Fills ``container`` in place (it is already a copy); Kubernetes' mergeContainerResources."""
    resources = dict(_d(container.get("resources")))
    notes: list[str] = []
    for which, defaults, word in (("requests", requests, "request"), ("limits", limits, "limit")):
        have = dict(_d(resources.get(which)))
        added = sorted(k for k in defaults if k not in have)
        if added:
            have.update({k: defaults[k] for k in added})
            resources[which] = have
            notes.append(f"{', '.join(added)} {word} for {who}")
    if notes:
        container["resources"] = resources
    return notes


def pod_limit_violations(limit_range: Obj, pod: Obj) -> list[str]:
    """QL13: Kubernetes' PodValidateLimitFunc for one LimitRange: min, max and maxLimitRequestRatio of each
    Container item on every container and init container, and of each Pod item on the pod's totals."""
    errors: list[str] = []
    for item in _d(limit_range.get("spec")).get("limits") or []:
        item = _d(item)
        kind = item.get("type")
        if kind == "Container":
            for c in _containers(pod, "containers") + _containers(pod, "initContainers"):
                requests, limits = _resources(c, "requests"), _resources(c, "limits")
                errors += _constraints("Container", item,
                                       {k: _text(v) for k, v in requests.items()},
                                       {k: _text(v) for k, v in limits.items()})
        elif kind == "Pod":
            requests, limits = _pod_sum(pod, "requests"), _pod_sum(pod, "limits")
            errors += _constraints("Pod", item, {k: requests.text(k) for k in requests.values},
                                   {k: limits.text(k) for k in limits.values})
    return errors


def _milli(q: Fraction) -> int:
    # Kubernetes compares MilliValue()s, which round up.
    return -((-q * 1000) // 1)


def _constraints(kind: str, item: Obj, requests: Mapping[str, str], limits: Mapping[str, str]) -> list[str]:
    """Kubernetes' minConstraint, maxConstraint and limitRequestRatioConstraint, in that order, resources by
    name (Kubernetes walks a map, so its order varies between calls)."""
    out: list[str] = []
    for res, enforced in sorted(_d(item.get("min")).items()):
        bound, head = _q(enforced), f"minimum {res} usage per {kind} is {_text(enforced)}"
        if res not in requests:
            out.append(f"{head}.  No request is specified")  # two spaces, as Kubernetes writes it
        elif bound is not None and _milli(_q(requests[res]) or Fraction(0)) < _milli(bound):
            out.append(f"{head}, but request is {requests[res]}")
        elif bound is not None and res in limits and _milli(_q(limits[res]) or Fraction(0)) < _milli(bound):
            out.append(f"{head}, but limit is {limits[res]}")
    for res, enforced in sorted(_d(item.get("max")).items()):
        bound, head = _q(enforced), f"maximum {res} usage per {kind} is {_text(enforced)}"
        if res not in limits:
            out.append(f"{head}.  No limit is specified")
        elif bound is not None and _milli(_q(limits[res]) or Fraction(0)) > _milli(bound):
            out.append(f"{head}, but limit is {limits[res]}")
        elif bound is not None and res in requests and _milli(_q(requests[res]) or Fraction(0)) > _milli(bound):
            out.append(f"{head}, but request is {requests[res]}")
    for res, enforced in sorted(_d(item.get("maxLimitRequestRatio")).items()):
        ratio, head = _q(enforced), f"{res} max limit to request ratio per {kind} is {_text(enforced)}"
        request = _milli(_q(requests[res]) or Fraction(0)) if res in requests else 0
        limit = _milli(_q(limits[res]) or Fraction(0)) if res in limits else 0
        if request == 0:
            out.append(f"{head}, but no request is specified or request is 0")
        elif limit == 0:
            out.append(f"{head}, but no limit is specified or limit is 0")
        elif ratio is not None and Fraction(limit, request) > Fraction(_milli(ratio), 1000):
            out.append(f"{head}, but provided ratio is {limit / request:f}")
    return out
