"""The scheduler: places pending pods on nodes and picks nodes for late-bound claims.

``place(pod, snapshot)`` is a pure function over a consistent view of nodes,
pods, claims, volumes and classes; the reconciler feeds it from the cache and
writes the outcome: ``volume.kubernetes.io/selected-node`` on each
WaitForFirstConsumer claim (SEMANTICS B8) first, then ``spec.nodeName`` and the
``PodScheduled`` condition. An unschedulable pod gets Kubernetes' summary
(``0/3 nodes are available: 1 node(s) had volume node affinity conflict, ...``)
on its condition and in a ``FailedScheduling`` event.

Storage classes with performance parameters (``minRandomWriteIOPS``, ``maxWriteLatencyP99`` ...) filter
(``Required``) or rank (``Preferred``) nodes by the figures ``stowage bench --label-nodes`` recorded on them
(SEMANTICS BP8-BP14), for pods whose WaitForFirstConsumer claims of such a class are unbound.
"""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from storage.api.bench_figures import ANN_MEASURING, BenchParameterError, BenchRequirements, check, class_requirements, node_figures, score
from storage.api.conditions import is_true
from storage.api.cordon import admits_pod
from storage.api.ephemeral import (claim_names, claim_volumes, ephemeral_claim_name, foreign_ephemeral_claim,
                                   not_created_for)
from storage.api.node_affinity import affinity_hostnames, pod_admits_node, volume_admits_node
from storage.api.selectors import selector_matches
from storage.api.scheduling_gates import gated
from storage.api.storage_capacity import node_has_capacity
from storage.api.taints import node_taints, pod_tolerations, tolerates_all
from storage.api.timestamps import now as _now
from storage.controllers.base import Reconciler, Result, split_key
from storage.controllers.binder_index import (claim_request, find_best_volume_linear, match_candidates, object_class,
                                              volume_capacity)
from storage.errors import Conflict, NotFound, StowageError
from provisioners import registry as provisioner_registry
from volume_plugins.registry import LimitKeys, attach_limit_keys

Obj = dict[str, Any]

SELECTED_NODE = "volume.kubernetes.io/selected-node"
BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
LOCAL_PROVISIONER = "stowage.io/local"
HOSTNAME_KEY = "kubernetes.io/hostname"

# Kubernetes' wording for each failed predicate, as `describe pod` shows it.
R_NOT_READY = "node(s) were not ready"
R_UNSCHEDULABLE = "node(s) were unschedulable"
R_TAINT = "node(s) had untolerated taint(s)"
R_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
R_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
R_EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
R_POD_AFFINITY = "node(s) didn't match pod affinity rules"
R_VOLUME_AFFINITY = "node(s) had volume node affinity conflict"
R_NO_STORAGE = "node(s) did not have enough free storage"
R_NO_VOLUME = "node(s) didn't find available persistent volumes to bind"
R_RWOP = "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode"
R_MAX_VOLUMES = "node(s) exceed max volume count"
R_PV_MISSING = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"
# The predicates Kubernetes reports as plain Unschedulable: evicting some pod could make room, so its preemption
# looks for victims there. Every other failure is UnschedulableAndUnresolvable (SC2).
R_PREEMPTIBLE = frozenset({R_ANTI_AFFINITY, R_EXISTING_ANTI_AFFINITY, R_RWOP, R_MAX_VOLUMES})
NO_NODES = "no nodes available to schedule pods"
# The field holding a disk's identity in each in-tree source: two inline uses of one disk count once.
_HANDLE_FIELDS = ("volumeID", "pdName", "diskURI", "diskName", "volumePath", "volumeHandle")


@dataclass
class Snapshot:
    nodes: list[Obj]
    pods: list[Obj]
    claims: dict[tuple[str, str], Obj]
    volumes: dict[str, Obj]
    classes: dict[str, Obj]
    # Which allocatable key counts which volume (AD3); empty: no attach limits.
    limit_keys: LimitKeys = field(default_factory=LimitKeys)
    # Unbound local-pool claims whose data source (a pool snapshot, a pool volume to clone) lives on one
    # node: (namespace, claim) -> that node (LS18). Empty: no such constraint.
    source_nodes: dict[tuple[str, str], str] = field(default_factory=dict)
    # SCAP3: the CSIStorageCapacity objects, and the drivers whose CSIDriver sets storageCapacity: true.
    capacities: list[Obj] = field(default_factory=list)
    capacity_drivers: frozenset[str] = frozenset()
    # pool_free_bytes' view, built on first use: node -> its local-pool volumes, and node -> the claims
    # sent there but not bound yet. Without it every node of a placement read every volume and claim.
    _on_node: tuple[dict[str, list[Obj]], dict[str, list[tuple[tuple[str, str], Obj]]]] | None = \
        field(default=None, repr=False, compare=False)

    def local_objects_on(self, node_name: str) -> tuple[list[Obj], list[tuple[tuple[str, str], Obj]]]:
        """The local-provisioner volumes whose affinity names the node, and the unbound claims whose
        selected node it is (with their keys)."""
        if self._on_node is None:
            volumes: dict[str, list[Obj]] = {}
            for pv in self.volumes.values():
                if (_meta(pv).get("annotations") or {}).get("pv.kubernetes.io/provisioned-by") == LOCAL_PROVISIONER:
                    for host in set(affinity_hostnames(pv)):
                        volumes.setdefault(host, []).append(pv)
            claims: dict[str, list[tuple[tuple[str, str], Obj]]] = {}
            for key, claim in self.claims.items():
                selected = (_meta(claim).get("annotations") or {}).get(SELECTED_NODE)
                if selected and not (claim.get("spec") or {}).get("volumeName"):
                    claims.setdefault(selected, []).append((key, claim))
            self._on_node = (volumes, claims)
        return self._on_node[0].get(node_name, []), self._on_node[1].get(node_name, [])


@dataclass
class Placement:
    node: str | None
    # claims (namespace, name) that need the selected-node annotation for this node
    select_claims: list[tuple[str, str]] = field(default_factory=list)
    message: str = ""  # why no node fits, Kubernetes' FitError: "0/N nodes are available: ..."
    waiting_reason: str = ""  # a reason found before any node is tried (missing claim, unbound immediate claim)
    preemption: str = ""  # what Kubernetes' preemption (PostFilter) adds: "preemption: 0/N nodes are available: ..."

    @property
    def failure(self) -> str:
        """What PodScheduled and FailedScheduling say (SC1)."""
        return f"{self.message} {self.preemption}" if self.preemption else self.message


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _request_bytes(claim: Obj) -> int:
    return int(claim_request(claim))


def _capacity_bytes(pv: Obj) -> int:
    return int(volume_capacity(pv))


def _is_terminated(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def node_ready(node: Obj) -> bool:
    return is_true(node, "Ready")


def _topology_domain(node: Obj, key: str) -> str | None:
    return (_meta(node).get("labels") or {}).get(key)


def _term_selects(term: Obj, pod: Obj, other: Obj) -> bool:
    namespaces = term.get("namespaces") or [_meta(pod).get("namespace", "default")]
    if _meta(other).get("namespace", "default") not in namespaces:
        return False
    return selector_matches(term.get("labelSelector") or {}, _meta(other).get("labels") or {})


def _required_anti_affinity(pod: Obj) -> list[Obj]:
    affinity = ((pod.get("spec") or {}).get("affinity") or {}).get("podAntiAffinity") or {}
    return affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or []


def _pod_affinity_ok(pod: Obj, node: Obj, nodes_by_name: dict[str, Obj], placed: list[Obj],
                     repelling: list[Obj]) -> tuple[bool, str]:
    """``repelling``: the pods of ``placed`` with required anti-affinity terms (found once per placement
    rather than once per node)."""
    affinity = (pod.get("spec") or {}).get("affinity") or {}
    # Kubernetes' InterPodAffinity order: the pod's affinity, its anti-affinity, then existing pods' anti-affinity.
    aff_terms = (affinity.get("podAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or []
    for term in aff_terms:
        key = term.get("topologyKey") or HOSTNAME_KEY
        domain = _topology_domain(node, key)
        matches = [o for o in placed if _term_selects(term, pod, o)]
        if not matches and _term_selects(term, pod, pod):
            continue  # the first pod of a self-affine group may go anywhere
        if domain is None or not any(
            _topology_domain(nodes_by_name.get((o.get("spec") or {}).get("nodeName", ""), {}), key) == domain
            for o in matches
        ):
            return False, R_POD_AFFINITY
    anti_terms = (affinity.get("podAntiAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or []
    for term in anti_terms:
        key = term.get("topologyKey") or HOSTNAME_KEY
        domain = _topology_domain(node, key)
        if domain is None:
            continue
        for other in placed:
            other_node = nodes_by_name.get((other.get("spec") or {}).get("nodeName", ""))
            if other_node is not None and _topology_domain(other_node, key) == domain and _term_selects(term, pod, other):
                return False, R_ANTI_AFFINITY
    # Existing pods' anti-affinity also repels this pod (symmetry, as Kubernetes does, with its own reason).
    for other in repelling:
        for term in _required_anti_affinity(other):
            key = term.get("topologyKey") or HOSTNAME_KEY
            other_node = nodes_by_name.get((other.get("spec") or {}).get("nodeName", ""))
            if other_node is None or _topology_domain(node, key) is None:
                continue
            if _topology_domain(other_node, key) == _topology_domain(node, key) and _term_selects(term, other, pod):
                return False, R_EXISTING_ANTI_AFFINITY
    return True, ""


def pool_free_bytes(node: Obj, snap: Snapshot, pool: str | None = None) -> int:
    """Free bytes in a node's local pool, counting what is already promised.

    The node reports each pool's total; what is taken is computed here from
    the volumes placed there and the claims already sent there but not yet
    provisioned, so a burst of claims never overcommits a pool regardless of
    how fresh the node's own report is.
    """
    name = _meta(node).get("name", "")
    pools = (node.get("status") or {}).get("storagePools") or []
    if pool:
        pools = [p for p in pools if p.get("name") == pool]
    if not pools:
        return 0
    chosen = pools[0]
    total = int(chosen.get("totalBytes", 0))
    pool_name = chosen.get("name", "")
    used = 0
    provisioned_claims: set[tuple[str, str]] = set()
    volumes, selected = snap.local_objects_on(name)
    for pv in volumes:
        if not _local_volume_on(pv, name, str(chosen.get("path", ""))):
            continue
        used += _capacity_bytes(pv)
        ref = (pv.get("spec") or {}).get("claimRef") or {}
        provisioned_claims.add((ref.get("namespace", ""), ref.get("name", "")))
    for (ns, cname), claim in selected:
        if (ns, cname) in provisioned_claims:
            continue
        cls = snap.classes.get(object_class(claim)) or {}
        if cls.get("provisioner") != LOCAL_PROVISIONER:
            continue
        if ((cls.get("parameters") or {}).get("pool") or pool_name) != pool_name:
            continue
        used += _request_bytes(claim)
    return total - used


def _local_volume_on(pv: Obj, node_name: str, pool_path: str) -> bool:
    """A pool volume lives on the node its affinity names, under the pool's directory."""
    path = ((pv.get("spec") or {}).get("local") or {}).get("path", "")
    if pool_path and not path.startswith(pool_path.rstrip("/") + "/"):
        return False
    return node_name in affinity_hostnames(pv)


def volume_limit_key(spec: Obj, keys: LimitKeys) -> str | None:
    """The allocatable key (``attachable-volumes-aws-ebs``) counting a PV spec or inline pod volume, if any:
    by its source key, or for a CSI volume by its driver (a provisioner's alias maps to its plugin)."""
    for source_key, limit_key in keys.by_source.items():
        if spec.get(source_key):
            return limit_key
    driver = (spec.get("csi") or {}).get("driver")
    return keys.by_name.get(str(driver)) if driver else None


def pod_attachable_volumes(pod: Obj, snap: Snapshot) -> dict[str, set[str]]:
    """Limit key -> the distinct volumes of ``pod`` it counts: bound claims by PV name, unbound claims whose
    class's provisioner attaches such disks by claim, inline disks by their handle (AD3)."""
    keys = snap.limit_keys
    out: dict[str, set[str]] = {}
    if not keys.by_source and not keys.by_name:
        return out
    namespace = _meta(pod).get("namespace", "default")
    for volume in claim_volumes(pod):
        claim_name = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if not claim_name:
            key = volume_limit_key(volume, keys)
            if key is not None:
                source = next((v for k, v in volume.items() if k in keys.by_source and isinstance(v, dict)), {})
                handle = next((str(source[f]) for f in _HANDLE_FIELDS if source.get(f)), volume.get("name", ""))
                out.setdefault(key, set()).add(f"inline:{handle}")
            continue
        claim = snap.claims.get((namespace, claim_name))
        if claim is None:
            continue
        volume_name = (claim.get("spec") or {}).get("volumeName")
        pv = snap.volumes.get(volume_name) if volume_name else None
        if pv is not None:
            key = volume_limit_key(pv.get("spec") or {}, keys)
            if key is not None:
                out.setdefault(key, set()).add(f"pv:{volume_name}")
        elif not volume_name:
            provisioner = (snap.classes.get(object_class(claim)) or {}).get("provisioner")
            key = keys.by_name.get(str(provisioner)) if provisioner else None
            if key is not None:
                out.setdefault(key, set()).add(f"claim:{namespace}/{claim_name}")
    return out


def exceeds_volume_limits(node: Obj, wanted: dict[str, set[str]], on_node: list[Obj], snap: Snapshot) -> bool:
    """Kubernetes' NodeVolumeLimits: the distinct volumes of each limited kind on the node, with the new
    pod's, may not exceed what the node's ``status.allocatable`` says it can take. A kind the node reports
    no limit for is unlimited; a pod adding no such volume always fits (AD3)."""
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    limited = {k: ids for k, ids in wanted.items() if k in allocatable}
    if not limited:
        return False
    present: dict[str, set[str]] = {}
    for other in on_node:
        for key, ids in pod_attachable_volumes(other, snap).items():
            present.setdefault(key, set()).update(ids)
    for key, ids in limited.items():
        try:
            limit = int(str(allocatable[key]))
        except ValueError:
            continue
        if len(present.get(key, set()) | ids) > limit:
            return True
    return False


def _topology_allows(cls: Obj, node: Obj) -> bool:
    topologies = cls.get("allowedTopologies") or []
    if not topologies:
        return True
    labels = _meta(node).get("labels") or {}
    for term in topologies:
        if all(labels.get(e.get("key")) in (e.get("values") or []) for e in term.get("matchLabelExpressions") or []):
            return True
    return False


def bench_requirements(late: list[Obj], snap: Snapshot) -> list[BenchRequirements] | str:
    """The performance requirements of the classes of the pod's late-bound claims, once per class (BP8);
    a message when a class's parameters cannot be read (validation refuses them, so only an old object)."""
    out: dict[str, BenchRequirements] = {}
    for claim in late:
        name = object_class(claim)
        cls = snap.classes.get(name)
        if cls is None or name in out:
            continue
        try:
            requirements = class_requirements(cls)
        except BenchParameterError as exc:
            return f"storage class {name} has an invalid performance parameter: {exc}"
        if requirements is not None:
            out[name] = requirements
    return list(out.values())


def bench_failures(node: Obj, requirements: list[BenchRequirements]) -> list[str]:
    """Every Required performance requirement ``node``'s measured figures miss, worded as Kubernetes words a
    predicate ("node(s) had ..."), one reason per requirement so nodes are counted per reason (BP9, BP10)."""
    reasons = []
    for req in requirements:
        if req.placement == "Required":
            reasons += [f"node(s) had {r}" for r in check(node_figures(node, req.storage_class), req)]
    return reasons


def bench_rank(node: Obj, requirements: list[BenchRequirements]) -> tuple[int, float]:
    """How well ``node`` suits the Preferred requirements: (requirements met, figures' mean log-ratio to their
    limits), summed over classes; (0, 0.0) when there are none, so placement is as without them (BP12)."""
    met, quality = 0, 0.0
    for req in requirements:
        if req.placement == "Preferred":
            n, q = score(node_figures(node, req.storage_class), req)
            met, quality = met + n, quality + q
    return met, quality


def preemption_message(pod: Obj, total: int, unresolvable: int) -> str:
    """What Kubernetes' default preemption says when it finds no node (SC2). Stowage never preempts, so a node
    whose failure another pod's eviction could fix counts as one where no victims were found, as it does in
    Kubernetes among pods of equal priority."""
    if (pod.get("spec") or {}).get("preemptionPolicy") == "Never":
        return "preemption: not eligible due to preemptionPolicy=Never."
    parts = [f"{unresolvable} Preemption is not helpful for scheduling"] if unresolvable else []
    if total - unresolvable:
        parts.append(f"{total - unresolvable} No preemption victims found for incoming pod")
    return f"preemption: 0/{total} nodes are available: {', '.join(sorted(parts))}."


def _before_nodes(pod: Obj, snap: Snapshot, reason: str) -> Placement:
    """A failure found before any node is tried (Kubernetes' PreFilter): said once, not counted per node, and
    unresolvable on every node (SC1)."""
    total = len(snap.nodes)
    return Placement(None, message=f"0/{total} nodes are available: {reason}.", waiting_reason=reason,
                     preemption=preemption_message(pod, total, total))


def place(pod: Obj, snap: Snapshot) -> Placement:
    if not snap.nodes:
        return Placement(None, message=NO_NODES)  # Kubernetes looks at nothing else then (SC1)
    namespace = _meta(pod).get("namespace", "default")
    uid = _meta(pod).get("uid")
    ephemeral = {ephemeral_claim_name(pod, v) for v in (pod.get("spec") or {}).get("volumes") or []
                 if isinstance(v, dict) and isinstance(v.get("ephemeral"), dict)}
    claims: list[Obj] = []
    for cname in claim_names(pod):
        claim = snap.claims.get((namespace, cname))
        # Kubernetes' VolumeBinding PreFilter, in its order and words.
        if claim is None and cname in ephemeral:
            return _before_nodes(pod, snap, "waiting for ephemeral volume controller to create the "
                                            f'persistentvolumeclaim "{cname}"')
        if claim is None:
            return _before_nodes(pod, snap, f'persistentvolumeclaim "{cname}" not found')
        if (claim.get("status") or {}).get("phase") == "Lost":
            return _before_nodes(pod, snap, f'persistentvolumeclaim "{cname}" bound to non-existent persistentvolume '
                                            f'"{(claim.get("spec") or {}).get("volumeName", "")}"')
        if _meta(claim).get("deletionTimestamp"):
            return _before_nodes(pod, snap, f'persistentvolumeclaim "{cname}" is being deleted')
        if foreign_ephemeral_claim(pod, claim):
            return _before_nodes(pod, snap, not_created_for(cname, pod))
        claims.append(claim)

    late: list[Obj] = []  # unbound claims whose class waits for the first consumer
    bound_volumes: list[Obj] = []
    missing_volume = False  # a bound claim's volume is gone
    for claim in claims:
        volume_name = (claim.get("spec") or {}).get("volumeName")
        if volume_name and BIND_COMPLETED in (_meta(claim).get("annotations") or {}):
            pv = snap.volumes.get(volume_name)
            if pv is not None:
                bound_volumes.append(pv)
            else:
                missing_volume = True
            continue
        cls = snap.classes.get(object_class(claim))
        if cls is not None and cls.get("volumeBindingMode") == "WaitForFirstConsumer" and not volume_name:
            late.append(claim)
        else:
            # SC1: a claim naming its volume waits for the binder whatever its class (B12), as Kubernetes
            # counts such a pre-bound claim among the immediate ones.
            return _before_nodes(pod, snap, "pod has unbound immediate PersistentVolumeClaims")
    # BP20: the benchmark that measures a node must be able to run on a node nobody has measured yet.
    measuring = (_meta(pod).get("annotations") or {}).get(ANN_MEASURING) == "true"
    performance = [] if measuring else bench_requirements(late, snap)
    if isinstance(performance, str):
        return _before_nodes(pod, snap, performance)

    rwop_conflict = False
    for claim in claims:
        if "ReadWriteOncePod" in ((claim.get("spec") or {}).get("accessModes") or []):
            cname = _meta(claim).get("name")
            for other in snap.pods:
                if _meta(other).get("uid") == uid or _is_terminated(other):
                    continue
                if _meta(other).get("namespace", "default") == namespace and cname in claim_names(other) and (other.get("spec") or {}).get("nodeName"):
                    rwop_conflict = True

    # The volumes each late claim could bind whatever the node, found once for all nodes (PF70).
    candidates = {id(claim): match_candidates(claim, snap.volumes.values()) for claim in late}
    nodes_by_name = {_meta(n).get("name", ""): n for n in snap.nodes}
    placed = [p for p in snap.pods if (p.get("spec") or {}).get("nodeName") and not _is_terminated(p) and _meta(p).get("uid") != uid]
    pods_per_node = Counter((p.get("spec") or {}).get("nodeName") for p in placed)
    repelling = [p for p in placed if _required_anti_affinity(p)]
    attachable = pod_attachable_volumes(pod, snap)
    failures: Counter[str] = Counter()
    preemptible = 0  # nodes failing only on a predicate another pod's eviction could fix
    # (-Preferred requirements met, -how well, pods already there, name): the best measured node first,
    # then the emptiest, as before when no class asks for figures.
    feasible: list[tuple[int, float, int, str]] = []
    for node in snap.nodes:
        name = _meta(node).get("name", "")
        reason = _node_failure(pod, node, snap, nodes_by_name, placed, repelling, bound_volumes, late, candidates,
                               rwop_conflict, missing_volume)
        if not reason and attachable and exceeds_volume_limits(
                node, attachable, [p for p in placed if (p.get("spec") or {}).get("nodeName") == name], snap):
            reason = R_MAX_VOLUMES
        if reason:
            failures[reason] += 1
            preemptible += reason in R_PREEMPTIBLE
            continue
        unmet = bench_failures(node, performance) if performance else []
        if unmet:
            failures.update(unmet)  # a node may miss several requirements; each is counted, as Kubernetes does
            continue
        met, quality = bench_rank(node, performance) if performance else (0, 0.0)
        feasible.append((-met, -quality, pods_per_node[name], name))
    if not feasible:
        total = len(snap.nodes)
        parts = sorted(f"{count} {reason}" for reason, count in failures.items())
        message = f"0/{total} nodes are available: " + ", ".join(parts) + "." if parts else f"0/{total} nodes are available."
        return Placement(None, message=message, preemption=preemption_message(pod, total, total - preemptible))
    feasible.sort()
    chosen = feasible[0][3]
    return Placement(chosen, select_claims=[(namespace, _meta(c).get("name", "")) for c in late])


def _node_failure(pod: Obj, node: Obj, snap: Snapshot, nodes_by_name: dict[str, Obj], placed: list[Obj],
                  repelling: list[Obj], bound_volumes: list[Obj], late: list[Obj], candidates: dict[int, list[Obj]],
                  rwop_conflict: bool, missing_volume: bool = False) -> str:
    if not node_ready(node):
        return R_NOT_READY
    if not admits_pod(node, pod):  # E14
        return R_UNSCHEDULABLE
    # NoSchedule and NoExecute taints keep a pod off a node unless it tolerates them (TaintToleration);
    # the node lifecycle controller's not-ready/unreachable taints thus also repel new pods.
    if not tolerates_all(pod_tolerations(pod), node_taints(node)):
        return R_TAINT

    if not pod_admits_node(pod, node):
        return R_AFFINITY
    ok, reason = _pod_affinity_ok(pod, node, nodes_by_name, placed, repelling)
    if not ok:
        return reason
    if rwop_conflict:
        return R_RWOP
    if missing_volume:
        return R_PV_MISSING
    for pv in bound_volumes:
        if not volume_admits_node(pv, node):
            return R_VOLUME_AFFINITY
    needed_local = 0
    for claim in late:
        source_node = snap.source_nodes.get((_meta(claim).get("namespace", ""), _meta(claim).get("name", "")))
        if source_node is not None and source_node != _meta(node).get("name"):
            return R_VOLUME_AFFINITY  # LS18: restored or cloned on the node holding the data
        # The binder's own matching rules (B2-B5), with the node's affinity checked,
        # as Kubernetes' scheduler calls FindMatchingVolume with the node.
        if find_best_volume_linear(claim, candidates[id(claim)], True, node) is not None:
            continue
        cls = snap.classes.get(object_class(claim)) or {}
        if not _topology_allows(cls, node):
            return R_VOLUME_AFFINITY
        if cls.get("provisioner") in snap.capacity_drivers and not node_has_capacity(
                object_class(claim), _request_bytes(claim), node, snap.capacities):
            return R_NO_STORAGE  # SCAP3: no reported capacity of the class here is large enough
        if cls.get("provisioner") == LOCAL_PROVISIONER:
            needed_local += _request_bytes(claim)
        elif not cls.get("provisioner") or cls.get("provisioner") == "kubernetes.io/no-provisioner":
            return R_NO_VOLUME
    if needed_local:
        pool = None
        for claim in late:
            cls = snap.classes.get(object_class(claim)) or {}
            pool = (cls.get("parameters") or {}).get("pool") or pool
        if pool_free_bytes(node, snap, pool) < needed_local:
            return R_NO_STORAGE
    return ""


def _set_condition(pod: Obj, status: str, reason: str, message: str) -> bool:
    """Set PodScheduled; True when something changed."""
    st = pod.setdefault("status", {})
    conditions = st.setdefault("conditions", [])
    for cond in conditions:
        if cond.get("type") == "PodScheduled":
            if cond.get("status") == status and cond.get("reason") == reason and cond.get("message") == message:
                return False
            cond.update(status=status, reason=reason, message=message, lastTransitionTime=_now())
            if not reason:
                cond.pop("reason"); cond.pop("message")
            return True
    # No null lastProbeTime: the API drops null fields on every write, so a stored null would read
    # back differently after the next one (and kubectl diff would show it).
    cond = {"type": "PodScheduled", "status": status, "lastTransitionTime": _now()}
    if reason:
        cond.update(reason=reason, message=message)
    conditions.append(cond)
    return True


def _ours(pod: Obj) -> bool:
    return (pod.get("spec") or {}).get("schedulerName") in (None, "", "default-scheduler", "stowage")


def _wants_a_node(pod: Obj | None) -> bool:
    """A live pod of this scheduler without a node, and not held back by a scheduling gate (SG3)."""
    return (pod is not None and not _meta(pod).get("deletionTimestamp") and not _is_terminated(pod)
            and _ours(pod) and not (pod.get("spec") or {}).get("nodeName") and not gated(pod))


class SchedulerReconciler(Reconciler):
    name = "scheduler"
    primary = "pods"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        # PF66: the pods being tried or whose last attempt found no node (Kubernetes' unschedulable queue).
        # A change of a node, claim, volume or class sends only these back: a pod not tried yet is queued
        # already. A pod enters before its attempt reads the cache, so a change the attempt did not see
        # requeues it even when its (unchanged) condition is not written again.
        self._unschedulable: set[str] = set()
        self._unschedulable_lock = threading.Lock()

    def rank(self, key: str) -> int:
        """PC5: pods of a higher ``spec.priority`` are placed first, as Kubernetes' scheduling queue takes
        them (no preemption: a placed pod is never moved for another)."""
        pod = self.ctx.cache.get("pods", *split_key(key))
        priority = ((pod or {}).get("spec") or {}).get("priority")
        return priority if isinstance(priority, int) and not isinstance(priority, bool) else 0

    def _waiting(self) -> list[str]:
        with self._unschedulable_lock:
            return sorted(self._unschedulable)

    def watches(self):  # type: ignore[override]
        def waiting(_obj: Obj) -> Iterable[str]:
            return self._waiting()
        def freed(pod: Obj) -> Iterable[str]:
            # A placed pod that finished or went away may leave room (attach limits, AD3): the pods waiting
            # for a node are looked at again. A pod is deleted from the cache before this runs.
            spec = pod.get("spec") or {}
            if not spec.get("nodeName") or not spec.get("volumes"):
                return []
            meta = _meta(pod)
            present = self.ctx.cache.get("pods", meta.get("namespace", "default"), meta.get("name", ""))
            if present is not None and _meta(present).get("uid") == meta.get("uid") and not _is_terminated(present):
                return []
            return self._waiting()
        # SCAP3: new or grown capacity may fit a pod that waits for storage.
        return {"nodes": waiting, "persistentvolumeclaims": waiting,
                "persistentvolumes": waiting, "storageclasses": waiting, "pods": freed,
                "csistoragecapacities": waiting, "csidrivers": waiting}

    def warm_up(self) -> None:
        provisioner_registry.all_provisioners()  # every provisioner, with its cloud SDK
        self._limit_keys()  # every volume plugin

    def _limit_keys(self) -> LimitKeys:
        """The plugins' limit keys, with each attaching provisioner's aliases (a CSI driver name) as well."""
        keys = attach_limit_keys()
        if not keys.by_name:
            return keys
        by_name = dict(keys.by_name)
        for provisioner in provisioner_registry.all_provisioners():
            key = keys.by_name.get(provisioner.name)
            if key is not None:
                by_name.update({alias: key for alias in provisioner.names()})
        return LimitKeys(keys.by_source, by_name)

    def _snapshot(self, pod: Obj) -> Snapshot:
        cache = self.ctx.cache
        # PF86: the cache's own keys, copied whole, instead of these maps built object by object for every
        # placement (21 µs against 113 µs with 500 claims and 500 volumes; it grows with the cluster).
        claims = cache.keyed("persistentvolumeclaims")
        namespace = _meta(pod).get("namespace", "default")
        # Only this pod's claims can constrain where it goes (LS18): no need to look at everyone's sources.
        mine = [c for c in (claims.get((namespace, n)) for n in claim_names(pod)) if c is not None]
        return Snapshot(
            nodes=cache.list("nodes"),
            pods=cache.list("pods"),
            claims=claims,
            volumes={name: v for (_, name), v in cache.keyed("persistentvolumes").items()},
            classes={_meta(c).get("name", ""): c for c in cache.list("storageclasses")},
            limit_keys=self._limit_keys(),
            source_nodes=self._source_nodes(mine),
            capacities=cache.list("csistoragecapacities"),
            capacity_drivers=frozenset(str(_meta(d).get("name")) for d in cache.list("csidrivers")
                                       if ((d.get("spec") or {}).get("storageCapacity")) is True),
        )

    def _source_nodes(self, claims: list[Obj]) -> dict[tuple[str, str], str]:
        """LS18: the node of each unbound local claim's data source that is pinned to a node."""
        from provisioners.local import HANDLE_PREFIX, parse_snapshot_handle

        out: dict[tuple[str, str], str] = {}
        for claim in claims:
            spec = claim.get("spec") or {}
            ref = spec.get("dataSourceRef") or spec.get("dataSource")
            if not ref or spec.get("volumeName"):
                continue
            cls = self.ctx.cache.get("storageclasses", "", object_class(claim)) or {}
            if cls.get("provisioner") != LOCAL_PROVISIONER:
                continue
            namespace = ref.get("namespace") or _meta(claim).get("namespace", "")
            try:
                if ref.get("kind") == "VolumeSnapshot":
                    vs = self.ctx.store.get("volumesnapshots", namespace, ref.get("name", ""))
                    content_name = (vs.get("status") or {}).get("boundVolumeSnapshotContentName")
                    if not content_name:
                        continue
                    content = self.ctx.store.get("volumesnapshotcontents", "", content_name)
                    handle = (content.get("status") or {}).get("snapshotHandle") or \
                        ((content.get("spec") or {}).get("source") or {}).get("snapshotHandle") or ""
                    if (content.get("spec") or {}).get("driver") == LOCAL_PROVISIONER and handle.startswith(HANDLE_PREFIX):
                        node, _ = parse_snapshot_handle(handle)
                        out[(_meta(claim).get("namespace", ""), _meta(claim).get("name", ""))] = node
                elif ref.get("kind") == "PersistentVolumeClaim":
                    source = self.ctx.cache.get("persistentvolumeclaims", namespace, ref.get("name", ""))
                    pv = self.ctx.cache.get("persistentvolumes", "", ((source or {}).get("spec") or {}).get("volumeName") or "")
                    annotations = _meta(pv or {}).get("annotations") or {}
                    if pv and annotations.get("pv.kubernetes.io/provisioned-by") == LOCAL_PROVISIONER:
                        hosts = affinity_hostnames(pv)
                        if hosts:
                            out[(_meta(claim).get("namespace", ""), _meta(claim).get("name", ""))] = hosts[0]
            except StowageError:  # a source not there yet, a foreign handle: no constraint here
                continue
        return out

    # Kubernetes schedules one pod at a time against a cache that already "assumes"
    # the previous decisions; two workers placing pods from one snapshot would both
    # pick the emptiest node. Decisions are serialised and written through to the cache.
    _decide = threading.Lock()

    def _assume(self, resource: str, obj: Obj) -> None:
        write_through = getattr(self.ctx.cache, "write_through", None)
        if write_through is not None:
            write_through(resource, obj)

    def reconcile(self, key: str) -> Result:
        with self._decide:
            # Marked before placement reads the cache (PF66), so a node or claim that appears meanwhile sends the
            # pod back; a pod already placed is not marked, or a change in that moment would send it back too.
            pod = self.ctx.cache.get("pods", *split_key(key))
            self._set_waiting(key, _wants_a_node(pod))
            try:
                return self._reconcile(key, pod)
            finally:
                # Placed (written through to the cache), gone, finished or another scheduler's: no longer waiting.
                self._set_waiting(key, _wants_a_node(self.ctx.cache.get("pods", *split_key(key))))

    def _reconcile(self, key: str, pod: Obj | None) -> Result:
        namespace, name = split_key(key)
        if pod is None or _meta(pod).get("deletionTimestamp") or _is_terminated(pod):
            return Result()
        spec = pod.get("spec") or {}
        if not _ours(pod) or gated(pod):
            return Result()  # SG3: the update that removes the last gate brings the pod back
        snap = self._snapshot(pod)
        if spec.get("nodeName"):
            # Placed by hand: still give its late-bound claims their node (Kubernetes leaves them stuck).
            self._select_claims(pod, snap, spec["nodeName"])
            return Result()
        placement = place(pod, snap)
        if placement.node is None:
            self._mark_unschedulable(pod, placement.failure)
            return Result()
        self._select_claims(pod, snap, placement.node, placement.select_claims)
        fresh = self.ctx.store.get("pods", namespace, name)
        if (fresh.get("spec") or {}).get("nodeName"):
            return Result()
        fresh.setdefault("spec", {})["nodeName"] = placement.node
        _set_condition(fresh, "True", "", "")
        self._assume("pods", self.ctx.store.update("pods", fresh))
        self.ctx.events.record(fresh, "Normal", "Scheduled",
                               f"Successfully assigned {namespace}/{name} to {placement.node}")
        return Result()

    def _set_waiting(self, key: str, waiting: bool) -> None:
        with self._unschedulable_lock:
            if waiting:
                self._unschedulable.add(key)
            else:
                self._unschedulable.discard(key)

    def _select_claims(self, pod: Obj, snap: Snapshot, node: str, keys: list[tuple[str, str]] | None = None) -> None:
        if keys is None:
            keys = []
            namespace = _meta(pod).get("namespace", "default")
            for cname in claim_names(pod):
                claim = snap.claims.get((namespace, cname))
                if claim is None or (claim.get("spec") or {}).get("volumeName"):
                    continue
                cls = snap.classes.get(object_class(claim)) or {}
                if cls.get("volumeBindingMode") == "WaitForFirstConsumer":
                    keys.append((namespace, cname))
        for ns, cname in keys:
            for _attempt in range(5):
                try:
                    claim = self.ctx.store.get("persistentvolumeclaims", ns, cname)
                except NotFound:
                    break
                annotations = claim.setdefault("metadata", {}).setdefault("annotations", {})
                if annotations.get(SELECTED_NODE) == node or (claim.get("spec") or {}).get("volumeName"):
                    break
                annotations[SELECTED_NODE] = node
                try:
                    self._assume("persistentvolumeclaims", self.ctx.store.update("persistentvolumeclaims", claim))
                    break
                except Conflict:
                    continue

    def _mark_unschedulable(self, pod: Obj, message: str) -> None:
        namespace, name = _meta(pod).get("namespace", ""), _meta(pod).get("name", "")
        fresh = self.ctx.store.get("pods", namespace, name)
        if (fresh.get("spec") or {}).get("nodeName"):
            return
        if _set_condition(fresh, "False", "Unschedulable", message):
            fresh.setdefault("status", {}).setdefault("phase", "Pending")
            self.ctx.store.update("pods", fresh)
            self.ctx.events.record(fresh, "Warning", "FailedScheduling", message)
