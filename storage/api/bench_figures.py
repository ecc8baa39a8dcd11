"""Performance-aware placement: measured storage figures on nodes, and the StorageClass parameters that use them.

``stowage bench --label-nodes`` measures a storage class on each node (fio in a pod on a claim of that class)
and records the figures as one node annotation per class (SEMANTICS BP1-BP4):

    bench.stowage.io/<class name>: {"randReadIOPS": 52000, "randWriteIOPS": 31000, ..., "measuredAt": "..."}

A class then asks for figures with parameters such as ``minRandomWriteIOPS: "20000"`` or
``maxWriteLatencyP99: "2ms"``; ``benchPlacement`` says whether nodes that miss them are filtered out
(``Required``, the default) or only ranked lower (``Preferred``). The scheduler applies them to pods whose
WaitForFirstConsumer claims of the class are still unbound (BP8-BP14). These parameters are the scheduler's:
provisioners never see them (BP6).

Pure functions over wire dicts, usable from the CLI, the API server's validation and the scheduler.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from storage.api.timestamps import now

ANNOTATION_PREFIX = "bench.stowage.io/"
# On a pod: it is `stowage bench` measuring its node, so the class's performance requirements do not apply
# to it (BP20); without this a Required class could never be measured on a new node.
ANN_MEASURING = "bench.stowage.io/measuring"
# The name part of an annotation key is at most 63 characters (a qualified name); longer class names are
# cut and suffixed with a hash of the whole name, so each class keeps one stable key (BP2).
_NAME_MAX = 63
_HASH_LEN = 10

# The figures an annotation carries, by their JSON key; numbers, never negative (BP3).
FIGURE_KEYS: tuple[str, ...] = (
    "randReadIOPS", "randWriteIOPS", "seqReadMBps", "seqWriteMBps",
    "readLatencyP99Us", "writeLatencyP99Us", "fsyncLatencyP99Us",
)
META_KEYS: tuple[str, ...] = ("measuredAt", "fioVersion", "storageClass")

# StorageClass parameter -> (figure key, "min" or "max", what a user reads in a message).
MIN_PARAMETERS: dict[str, tuple[str, str]] = {
    "minRandomReadIOPS": ("randReadIOPS", "random read IOPS"),
    "minRandomWriteIOPS": ("randWriteIOPS", "random write IOPS"),
    "minSequentialReadMBps": ("seqReadMBps", "sequential read MB/s"),
    "minSequentialWriteMBps": ("seqWriteMBps", "sequential write MB/s"),
}
MAX_PARAMETERS: dict[str, tuple[str, str]] = {
    "maxReadLatencyP99": ("readLatencyP99Us", "read latency p99"),
    "maxWriteLatencyP99": ("writeLatencyP99Us", "write latency p99"),
    "maxFsyncLatencyP99": ("fsyncLatencyP99Us", "fsync latency p99"),
}
PLACEMENT_PARAMETER = "benchPlacement"
PLACEMENTS = ("Required", "Preferred")
# Every StorageClass parameter that is the scheduler's, not the provisioner's (BP6).
SCHEDULING_PARAMETERS: frozenset[str] = frozenset({*MIN_PARAMETERS, *MAX_PARAMETERS, PLACEMENT_PARAMETER})

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ns|us|µs|ms|s)\s*$")
_US_PER_UNIT = {"ns": 0.001, "us": 1.0, "µs": 1.0, "ms": 1000.0, "s": 1_000_000.0}
_NUMBER = re.compile(r"^\s*[0-9]+(?:\.[0-9]+)?\s*$")


class BenchParameterError(ValueError):
    """A bad performance parameter; ``parameter`` names it (the API answers 422 on ``parameters.<name>``)."""

    def __init__(self, parameter: str, value: str, reason: str) -> None:
        super().__init__(f"parameter {parameter}={value!r}: {reason}")
        self.parameter = parameter
        self.value = value
        self.reason = reason


@dataclass(frozen=True)
class Requirement:
    parameter: str  # minRandomWriteIOPS
    figure: str  # randWriteIOPS
    kind: Literal["min", "max"]
    limit: float  # in the figure's unit (latencies in microseconds)
    text: str  # the parameter's value as written ("2ms"), for messages

    def met_by(self, value: float) -> bool:
        return value >= self.limit if self.kind == "min" else value <= self.limit

    def ratio(self, value: float) -> float:
        """How far ``value`` is on the good side of the limit (>1 better, <1 worse); for ranking (BP12)."""
        if self.kind == "min":
            return value / self.limit if self.limit > 0 else math.inf
        return self.limit / value if value > 0 else math.inf


@dataclass(frozen=True)
class BenchRequirements:
    storage_class: str
    placement: Literal["Required", "Preferred"] = "Required"
    items: tuple[Requirement, ...] = field(default_factory=tuple)


# ---- annotations ------------------------------------------------------------------------------------


def annotation_key(storage_class: str) -> str:
    """``bench.stowage.io/<class>``; a class name longer than 63 characters is cut to 52, then ``-`` and ten
    hex digits of its SHA-256 (BP2): deterministic, distinct for distinct long names, a valid key."""
    if not storage_class:
        raise ValueError("storage class name must be non-empty")
    if len(storage_class) <= _NAME_MAX:
        return ANNOTATION_PREFIX + storage_class
    digest = hashlib.sha256(storage_class.encode()).hexdigest()[:_HASH_LEN]
    return ANNOTATION_PREFIX + storage_class[:_NAME_MAX - _HASH_LEN - 1] + "-" + digest


def _figure_value(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"figure {key} must be a number, not {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"figure {key} must be a finite number >= 0, not {value!r}")
    return number


def label_node_annotations(storage_class: str, figures: Mapping[str, Any]) -> dict[str, str]:
    """The node annotation recording ``figures`` measured for ``storage_class`` (what ``stowage bench
    --label-nodes`` patches onto each node). ``figures`` holds any of ``FIGURE_KEYS`` (numbers) and optionally
    ``measuredAt`` (RFC 3339, now when absent) and ``fioVersion``; anything else is a ValueError (BP3)."""
    unknown = sorted(set(figures) - set(FIGURE_KEYS) - {"measuredAt", "fioVersion"})
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(unknown)} (known: {', '.join(FIGURE_KEYS)}, measuredAt, "
                         "fioVersion)")
    body: dict[str, Any] = {}
    for key in FIGURE_KEYS:
        if key in figures and figures[key] is not None:
            number = _figure_value(key, figures[key])
            # Whole numbers stay integers so the annotation reads as fio printed them.
            body[key] = int(number) if number.is_integer() else round(number, 3)
    if not body:
        raise ValueError(f"no figures to record for storage class {storage_class} (expected some of "
                         f"{', '.join(FIGURE_KEYS)})")
    body["measuredAt"] = str(figures.get("measuredAt") or now())
    if figures.get("fioVersion"):
        body["fioVersion"] = str(figures["fioVersion"])
    # The class's full name, so a hashed key is never read as another class's figures (BP2).
    body["storageClass"] = storage_class
    return {annotation_key(storage_class): json.dumps(body, separators=(",", ":"), sort_keys=True)}


def node_figures(node: Mapping[str, Any], storage_class: str) -> dict[str, Any] | None:
    """The figures recorded on ``node`` for ``storage_class``; None when there are none or they are unreadable
    (not JSON, another class's, a figure not a number): a node is never ranked on figures it cannot show (BP4)."""
    annotations = ((node.get("metadata") or {}).get("annotations") or {})
    raw = annotations.get(annotation_key(storage_class))
    if not raw:
        return None
    try:
        body = json.loads(raw)
    except (TypeError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("storageClass", storage_class) != storage_class:
        return None
    out: dict[str, Any] = {}
    for key in FIGURE_KEYS:
        if key in body:
            try:
                out[key] = _figure_value(key, body[key])
            except ValueError:
                return None
    if not out:
        return None
    for key in META_KEYS:
        if key in body:
            out[key] = str(body[key])
    return out


# ---- StorageClass parameters ------------------------------------------------------------------------


def parse_duration_us(value: str) -> float:
    """``"2ms"``, ``"500us"``, ``"1.5s"`` in microseconds; ValueError otherwise (a unit is required)."""
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError("must be a duration with a unit: ns, us, ms or s (e.g. 2ms, 500us)")
    return float(match.group(1)) * _US_PER_UNIT[match.group(2)]


def _parse_number(value: str) -> float:
    if not _NUMBER.match(str(value)):
        raise ValueError("must be a non-negative number (e.g. 20000)")
    return float(value)


def _near_miss(key: str) -> str | None:
    """A key that is one of ours but for its case (``minrandomwriteiops``): a typo never silently ignored."""
    for known in SCHEDULING_PARAMETERS:
        if key != known and key.lower() == known.lower():
            return known
    return None


def parse_requirements(storage_class: str, parameters: Mapping[str, Any] | None) -> BenchRequirements | None:
    """The class's performance requirements; None when it has none. BenchParameterError for a bad value,
    naming the parameter (BP5)."""
    params = dict(parameters or {})
    for key in params:
        known = _near_miss(key)
        if known:
            raise BenchParameterError(key, str(params[key]), f"unknown parameter; did you mean {known}?")
    items: list[Requirement] = []
    for name, (figure, _what) in MIN_PARAMETERS.items():
        if name in params:
            try:
                limit = _parse_number(str(params[name]))
            except ValueError as exc:
                raise BenchParameterError(name, str(params[name]), str(exc)) from None
            items.append(Requirement(name, figure, "min", limit, str(params[name]).strip()))
    for name, (figure, _what) in MAX_PARAMETERS.items():
        if name in params:
            try:
                limit = parse_duration_us(str(params[name]))
            except ValueError as exc:
                raise BenchParameterError(name, str(params[name]), str(exc)) from None
            if limit <= 0:
                raise BenchParameterError(name, str(params[name]), "must be greater than zero")
            items.append(Requirement(name, figure, "max", limit, str(params[name]).strip()))
    placement = str(params.get(PLACEMENT_PARAMETER, "Required"))
    if placement not in PLACEMENTS:
        raise BenchParameterError(PLACEMENT_PARAMETER, placement, "must be Required or Preferred")
    if not items:
        if PLACEMENT_PARAMETER in params:
            raise BenchParameterError(PLACEMENT_PARAMETER, placement,
                                      "needs at least one of " + ", ".join([*MIN_PARAMETERS, *MAX_PARAMETERS]))
        return None
    return BenchRequirements(storage_class, placement, tuple(items))  # type: ignore[arg-type]


def class_requirements(storage_class: Mapping[str, Any]) -> BenchRequirements | None:
    """``parse_requirements`` of a StorageClass object."""
    name = str((storage_class.get("metadata") or {}).get("name", ""))
    return parse_requirements(name, storage_class.get("parameters") or {})


def backend_parameters(parameters: Mapping[str, Any] | None) -> dict[str, str]:
    """The class parameters without the scheduling ones: what a provisioner and its backend get (BP6)."""
    return {k: v for k, v in (parameters or {}).items() if k not in SCHEDULING_PARAMETERS}


# ---- checking ---------------------------------------------------------------------------------------


def no_figures_reason(storage_class: str) -> str:
    return (f"no measured figures for storage class {storage_class}; "
            f"run stowage bench --storage-class {storage_class} --label-nodes")


def _unmet_reason(req: Requirement, storage_class: str) -> str:
    what = (MIN_PARAMETERS.get(req.parameter) or MAX_PARAMETERS[req.parameter])[1]
    side = "below" if req.kind == "min" else "above"
    return f"{what} {side} {req.parameter}={req.text} of storage class {storage_class}"


def check(figures: Mapping[str, Any] | None, requirements: BenchRequirements) -> list[str]:
    """Why a node with ``figures`` does not meet ``requirements``: empty when it does (BP7). The reasons name
    the requirement, not the node's figures, so the scheduler can count nodes per reason as Kubernetes does."""
    if figures is None:
        return [no_figures_reason(requirements.storage_class)]
    reasons = []
    for req in requirements.items:
        value = figures.get(req.figure)
        if value is None:
            reasons.append(f"no measured {req.figure} for storage class {requirements.storage_class} "
                           f"(needed by {req.parameter}); run stowage bench --storage-class "
                           f"{requirements.storage_class} --label-nodes")
        elif not req.met_by(float(value)):
            reasons.append(_unmet_reason(req, requirements.storage_class))
    return reasons


def score(figures: Mapping[str, Any] | None, requirements: BenchRequirements) -> tuple[int, float]:
    """(requirements met, how well) for ranking nodes under ``Preferred`` (BP12): more requirements met first,
    then the mean log-ratio of each figure to its limit (each capped at 100x, so one huge figure does not
    outweigh the rest). A node without figures ranks below every node with some."""
    if figures is None:
        return (-1, -math.inf)
    met, total = 0, 0.0
    for req in requirements.items:
        value = figures.get(req.figure)
        if value is None:
            total += math.log(0.01)
            continue
        met += req.met_by(float(value))
        ratio = req.ratio(float(value))
        total += math.log(min(max(ratio, 0.01), 100.0)) if ratio > 0 else math.log(0.01)
    return (met, total / max(len(requirements.items), 1))


def describe_figures(figures: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows for ``describe node``'s "Measured storage" section."""
    labels = {
        "randReadIOPS": ("Random read", "IOPS"), "randWriteIOPS": ("Random write", "IOPS"),
        "seqReadMBps": ("Sequential read", "MB/s"), "seqWriteMBps": ("Sequential write", "MB/s"),
        "readLatencyP99Us": ("Read latency p99", "us"), "writeLatencyP99Us": ("Write latency p99", "us"),
        "fsyncLatencyP99Us": ("Fsync latency p99", "us"),
    }
    rows = []
    for key in FIGURE_KEYS:
        if key in figures:
            label, unit = labels[key]
            value = float(figures[key])
            text = str(int(value)) if value.is_integer() else f"{value:.1f}"
            rows.append((label, f"{text} {unit}"))
    return rows


def measured_classes(node: Mapping[str, Any]) -> list[str]:
    """The storage classes with figures on ``node``, by the class name inside each annotation."""
    out = []
    for key, raw in sorted(((node.get("metadata") or {}).get("annotations") or {}).items()):
        if not key.startswith(ANNOTATION_PREFIX):
            continue
        try:
            body = json.loads(raw)
        except (TypeError, ValueError):
            continue
        name = body.get("storageClass") if isinstance(body, dict) else None
        if not name:
            name = key[len(ANNOTATION_PREFIX):]
        if node_figures(node, str(name)) is not None:
            out.append(str(name))
    return out
