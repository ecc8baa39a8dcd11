"""Which volume serves a claim: the index and the rules of SEMANTICS B1–B5.

Kubernetes scans every volume for every claim (``findMatchingVolume``). The
``VolumeIndex`` keeps free volumes per (class, access-mode set, volumeMode)
ordered by capacity, plus volumes pre-bound by claimRef, so a decision costs a
bisection instead of a scan. ``find_best_volume_linear`` is a faithful port of
the Kubernetes scan: the oracle for the property tests and the benchmark's
baseline. Both must always give the same answer.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any, Iterable

from storage.api.node_affinity import volume_admits_node
from storage.api.quantity import parse_quantity
from storage.api.storage_class import object_class
from storage.api.volume_attributes import requested_class as requested_attributes_class
from storage.api.volume_attributes import volume_class


# The order Kubernetes prints access modes in (GetAccessModesAsString); used
# as the deterministic tie-break between mode sets of the same size, where
# Kubernetes itself iterates a map.
ACCESS_MODE_ORDER = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")

Volume = dict[str, Any]
Claim = dict[str, Any]


# ---------------------------------------------------------------- quantities

def quantity_value(q: Any) -> Fraction:
    """Exact value of a quantity; missing means 0, unparseable raises ValueError."""
    if q is None or q == "":
        return Fraction(0)
    if isinstance(q, Fraction):
        return q
    return _parse_cached(str(q))


@lru_cache(maxsize=4096)
def _parse_cached(text: str) -> Fraction:
    # Kubernetes keeps quantities parsed in its objects; caching keeps the
    # reference scan from paying a parse per comparison that Go never pays.
    return parse_quantity(text)


def volume_capacity(volume: Volume) -> Fraction:
    return quantity_value(((volume.get("spec") or {}).get("capacity") or {}).get("storage"))


def claim_request(claim: Claim) -> Fraction:
    spec = claim.get("spec") or {}
    return quantity_value(((spec.get("resources") or {}).get("requests") or {}).get("storage"))


# ------------------------------------------------------------- object facts

def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def volume_mode(obj: dict[str, Any]) -> str:
    return (obj.get("spec") or {}).get("volumeMode") or "Filesystem"


def access_modes(obj: dict[str, Any]) -> tuple[str, ...]:
    return modes_key((obj.get("spec") or {}).get("accessModes") or ())


def modes_key(modes: Iterable[str]) -> tuple[str, ...]:
    """A canonical, hashable mode set: known modes in Kubernetes' order, then unknown ones sorted."""
    unique = set(modes)
    known = tuple(m for m in ACCESS_MODE_ORDER if m in unique)
    return known + tuple(sorted(unique - set(ACCESS_MODE_ORDER)))


def is_deleting(obj: dict[str, Any]) -> bool:
    return bool(_meta(obj).get("deletionTimestamp"))


def volume_phase(volume: Volume) -> str:
    return (volume.get("status") or {}).get("phase") or ""


def claim_ref(volume: Volume) -> dict[str, Any] | None:
    return (volume.get("spec") or {}).get("claimRef") or None


def is_volume_bound_to_claim(volume: Volume, claim: Claim) -> bool:
    """Kubernetes' IsVolumeBoundToClaim: same name and namespace, and same uid when the ref has one."""
    ref = claim_ref(volume)
    if ref is None:
        return False
    meta = _meta(claim)
    if ref.get("name") != meta.get("name") or (ref.get("namespace") or "") != (meta.get("namespace") or ""):
        return False
    uid = ref.get("uid") or ""
    return not uid or uid == meta.get("uid")


def contains_all_modes(indexed: Iterable[str], requested: Iterable[str]) -> bool:
    have = set(indexed)
    return all(m in have for m in requested)


# ----------------------------------------------------------------- selectors

class SelectorError(ValueError):
    """A claim selector Kubernetes would refuse to turn into a labels.Selector."""


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str] | None) -> bool:
    """B4: matchLabels AND matchExpressions; NotIn and DoesNotExist match a missing key.

    Kept local because it runs in the binder's innermost loop; semantics are
    those of metav1.LabelSelectorAsSelector.
    """
    if selector is None:
        return True
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key = expr.get("key")
        op = expr.get("operator")
        values = expr.get("values") or []
        if op == "In":
            if not values:
                raise SelectorError(f"{key}: for 'in', 'notin' operators, values set can't be empty")
            if key not in labels or labels[key] not in values:
                return False
        elif op == "NotIn":
            if not values:
                raise SelectorError(f"{key}: for 'in', 'notin' operators, values set can't be empty")
            if key in labels and labels[key] in values:
                return False
        elif op == "Exists":
            if values:
                raise SelectorError(f"{key}: values set must be empty for exists and does not exist")
            if key not in labels:
                return False
        elif op == "DoesNotExist":
            if values:
                raise SelectorError(f"{key}: values set must be empty for exists and does not exist")
            if key in labels:
                return False
        else:
            raise SelectorError(f"{op!r} is not a valid label selector operator")
    return True


# -------------------------------------------------------- the reference scan

def find_matching_volume(claim: Claim, volumes: list[Volume], delay_binding: bool,
                         node: dict[str, Any] | None = None) -> Volume | None:
    """Port of Kubernetes' FindMatchingVolume (no exclusion map).

    ``node`` is the scheduler path: node affinity and access modes are checked,
    and delay_binding no longer hides free volumes.
    """
    smallest: Volume | None = None
    smallest_qty = Fraction(0)
    requested_qty = claim_request(claim)
    requested_class = object_class(claim)
    selector = (claim.get("spec") or {}).get("selector")
    claim_mode = volume_mode(claim)
    requested_vac = requested_attributes_class(claim)

    for volume in volumes:
        bound_here = is_volume_bound_to_claim(volume, claim)
        if claim_ref(volume) is not None and not bound_here:
            continue
        volume_qty = volume_capacity(volume)
        if volume_qty < requested_qty:
            continue
        if volume_mode(volume) != claim_mode:
            continue
        if volume_class(volume) != requested_vac:  # VAC2, before the pre-bound check as in Kubernetes
            continue
        if is_deleting(volume):
            continue
        node_ok = node is None or volume_admits_node(volume, node)
        if bound_here:
            return volume if node_ok else None
        if node is None and delay_binding:
            continue
        if volume_phase(volume) != "Available":
            continue
        if selector is not None and not selector_matches(selector, _meta(volume).get("labels")):
            continue
        if object_class(volume) != requested_class:
            continue
        if not node_ok:
            continue
        if node is not None and not contains_all_modes(access_modes(volume), access_modes(claim)):
            continue
        if smallest is None or smallest_qty > volume_qty:
            smallest, smallest_qty = volume, volume_qty
    return smallest


def match_candidates(claim: Claim, volumes: Iterable[Volume]) -> list[Volume]:
    """The volumes ``find_matching_volume`` does not skip before it looks at a node or a phase: bound to
    this claim, or claimed by nobody, large enough, of the claim's volume mode and not being deleted.

    Filtering with it first changes no answer (the order is kept) and lets the scheduler try every node
    against a short list instead of every volume once per node."""
    requested_qty = claim_request(claim)
    claim_mode = volume_mode(claim)
    requested_vac = requested_attributes_class(claim)
    return [v for v in volumes
            if (claim_ref(v) is None or is_volume_bound_to_claim(v, claim)) and volume_capacity(v) >= requested_qty
            and volume_mode(v) == claim_mode and volume_class(v) == requested_vac and not is_deleting(v)]


def candidate_mode_sets(requested: Iterable[str], known_sets: Iterable[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """allPossibleMatchingAccessModes: sets containing every requested mode, fewest modes first."""
    matched = [s for s in set(known_sets) if contains_all_modes(s, requested)]
    matched.sort(key=lambda s: (len(s), [_mode_rank(m) for m in s]))
    return matched


def _mode_rank(mode: str) -> tuple[int, str]:
    try:
        return (ACCESS_MODE_ORDER.index(mode), "")
    except ValueError:
        return (len(ACCESS_MODE_ORDER), mode)


def find_best_volume_linear(claim: Claim, volumes: list[Volume], delay_binding: bool,
                            node: dict[str, Any] | None = None) -> Volume | None:
    """Kubernetes' findByClaim over an access-mode index, then FindMatchingVolume per mode set."""
    by_modes: dict[tuple[str, ...], list[Volume]] = {}
    for volume in volumes:
        by_modes.setdefault(access_modes(volume), []).append(volume)
    for modes in candidate_mode_sets(access_modes(claim), by_modes):
        best = find_matching_volume(claim, by_modes[modes], delay_binding, node)
        if best is not None:
            return best
    return None


# ----------------------------------------------------------------- the index

@dataclass
class _Entry:
    name: str
    capacity: Fraction
    modes: tuple[str, ...]
    volume_mode: str
    klass: str
    vac: str  # spec.volumeAttributesClassName, "" without
    free: bool  # Available, no claimRef, not being deleted
    prebound_to: tuple[str, str] | None  # (namespace, name) of claimRef
    volume: Volume


@dataclass
class _Bucket:
    keys: list[tuple[Fraction, str]] = field(default_factory=list)
    volumes: dict[str, Volume] = field(default_factory=dict)

    def add(self, capacity: Fraction, name: str, volume: Volume) -> None:
        bisect.insort(self.keys, (capacity, name))
        self.volumes[name] = volume

    def remove(self, capacity: Fraction, name: str) -> None:
        i = bisect.bisect_left(self.keys, (capacity, name))
        if i < len(self.keys) and self.keys[i] == (capacity, name):
            del self.keys[i]
        self.volumes.pop(name, None)


class VolumeIndex:
    """Volumes by (class, mode set, volumeMode), free ones ordered by (capacity, name).

    Not thread-safe: the owner serialises access (the binder holds a lock).
    Ties between equal capacities go to the smallest name, which is the order
    the reference scan sees when it is given volumes sorted by name.
    """

    def __init__(self, volumes: Iterable[Volume] = ()) -> None:
        self._entries: dict[str, _Entry] = {}
        self._free: dict[tuple[str, str, tuple[str, ...], str], _Bucket] = {}
        self._prebound: dict[tuple[str, str], dict[str, _Entry]] = {}
        self._mode_sets: dict[tuple[str, ...], int] = {}
        for volume in volumes:
            self.add(volume)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> Volume | None:
        entry = self._entries.get(name)
        return entry.volume if entry else None

    def volumes(self) -> list[Volume]:
        return [e.volume for e in self._entries.values()]

    def mode_sets(self) -> list[tuple[str, ...]]:
        return list(self._mode_sets)

    def add(self, volume: Volume) -> None:
        """Add or replace (by name)."""
        name = _meta(volume)["name"]
        if name in self._entries:
            self.remove(name)
        ref = claim_ref(volume)
        entry = _Entry(
            name=name,
            capacity=volume_capacity(volume),
            modes=access_modes(volume),
            volume_mode=volume_mode(volume),
            klass=object_class(volume),
            vac=volume_class(volume),
            free=ref is None and volume_phase(volume) == "Available" and not is_deleting(volume),
            prebound_to=((ref.get("namespace") or ""), ref.get("name") or "") if ref is not None else None,
            volume=volume,
        )
        self._entries[name] = entry
        self._mode_sets[entry.modes] = self._mode_sets.get(entry.modes, 0) + 1
        if entry.free:
            self._free.setdefault((entry.klass, entry.vac, entry.modes, entry.volume_mode), _Bucket()).add(entry.capacity, name, volume)
        if entry.prebound_to is not None:
            self._prebound.setdefault(entry.prebound_to, {})[name] = entry

    update = add

    def remove(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is None:
            return
        count = self._mode_sets[entry.modes] - 1
        if count:
            self._mode_sets[entry.modes] = count
        else:
            del self._mode_sets[entry.modes]
        if entry.free:
            key = (entry.klass, entry.vac, entry.modes, entry.volume_mode)
            bucket = self._free[key]
            bucket.remove(entry.capacity, name)
            if not bucket.keys:
                del self._free[key]
        if entry.prebound_to is not None:
            refs = self._prebound[entry.prebound_to]
            refs.pop(name, None)
            if not refs:
                del self._prebound[entry.prebound_to]


def find_best_volume(claim: Claim, index: VolumeIndex, *, delay_binding: bool) -> Volume | None:
    """B1–B5 through the index; always the same answer as ``find_best_volume_linear``."""
    meta = _meta(claim)
    requested_qty = claim_request(claim)
    claim_mode = volume_mode(claim)
    requested_class = object_class(claim)
    requested_vac = requested_attributes_class(claim)
    selector = (claim.get("spec") or {}).get("selector")
    prebound = index._prebound.get((meta.get("namespace") or "", meta.get("name") or ""), {})

    for modes in candidate_mode_sets(access_modes(claim), index._mode_sets):
        # A volume pre-bound to this claim wins within its mode set whatever its
        # class, phase or labels (B3); the scan takes the first in list order.
        for name in sorted(prebound):
            entry = prebound[name]
            if entry.modes != modes:
                continue
            volume = entry.volume
            if not is_volume_bound_to_claim(volume, claim):
                continue
            if (entry.capacity < requested_qty or entry.volume_mode != claim_mode or entry.vac != requested_vac
                    or is_deleting(volume)):
                continue
            return volume
        if delay_binding:
            continue
        bucket = index._free.get((requested_class, requested_vac, modes, claim_mode))
        if bucket is None:
            continue
        start = bisect.bisect_left(bucket.keys, (requested_qty, ""))
        for i in range(start, len(bucket.keys)):
            volume = bucket.volumes[bucket.keys[i][1]]
            if selector is None or selector_matches(selector, _meta(volume).get("labels")):
                return volume
    return None
