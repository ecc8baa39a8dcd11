"""What authorization needs to know, kept current from the store's watch instead of read per request.

Two views are kept: the RBAC policy (roles, cluster roles and their bindings,
indexed by subject) and the node graph (which Secrets, ConfigMaps, claims and
volumes the pods bound to each node use), as Kubernetes' RBAC informers and
node authorizer graph do.

One watcher on every resource feeds it, so ``revision`` says how far the
index has read the store; a request denied while the index is behind waits
for it to catch up (``wait_for``) before the answer is final. That gives a
client read-your-writes (create a RoleBinding, then use it) without a store
read on any allowed request.
"""
from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

import structlog

from storage.api.ephemeral import claim_names
from storage.api.node_affinity import affinity_hostnames
from storage.api.volume_secrets import volume_secret_ref
from storage.apiserver.auth import User
from storage.apiserver.rbac import RoleRef, Rule, rules_from, subject_key, subject_keys
from storage.errors import Gone
from storage.store.base import Store, WatchEvent, Watcher

log = structlog.get_logger(__name__)

Obj = dict[str, Any]
RBAC_RESOURCES = ("clusterroles", "roles", "clusterrolebindings", "rolebindings")
GRAPH_RESOURCES = ("pods", "persistentvolumeclaims", "persistentvolumes", "volumeattachments")
TRACKED = frozenset(RBAC_RESOURCES + GRAPH_RESOURCES)
_POLL = 1.0


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _key(obj: Obj) -> tuple[str, str]:
    return _meta(obj).get("namespace") or "", _meta(obj).get("name") or ""


@dataclass(frozen=True)
class _Binding:
    ref: RoleRef
    subjects: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class PodRefs:
    """What one pod makes its node allowed to read."""

    node: str
    namespace: str
    name: str
    secrets: frozenset[str]
    config_maps: frozenset[str]
    claims: frozenset[str]
    service_account: str = ""


def _secret_refs_in(value: Any, out: set[str]) -> None:
    """Names under any ``secretRef``/``*SecretRef`` key (volume sources that log in with a Secret)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if (k == "secretRef" or k.endswith("SecretRef")) and isinstance(v, dict) and v.get("name"):
                out.add(str(v["name"]))
            else:
                _secret_refs_in(v, out)
    elif isinstance(value, list):
        for v in value:
            _secret_refs_in(v, out)


def pod_refs(pod: Obj) -> PodRefs | None:
    """The objects a pod references (Kubernetes' node graph edges), or None when it is not bound."""
    spec = pod.get("spec") or {}
    node = spec.get("nodeName") or ""
    if not node:
        return None
    secrets: set[str] = set()
    config_maps: set[str] = set()
    claims = set(claim_names(pod))  # an ephemeral volume's claim included (EV3)
    pod_name = _meta(pod).get("name") or ""
    for ref in spec.get("imagePullSecrets") or []:
        if isinstance(ref, dict) and ref.get("name"):
            secrets.add(str(ref["name"]))
    for volume in spec.get("volumes") or []:
        if not isinstance(volume, dict):
            continue
        if isinstance(volume.get("secret"), dict) and volume["secret"].get("secretName"):
            secrets.add(str(volume["secret"]["secretName"]))
        if isinstance(volume.get("azureFile"), dict) and volume["azureFile"].get("secretName"):
            secrets.add(str(volume["azureFile"]["secretName"]))  # the share's account key, pod's namespace
        inline_secret = volume_secret_ref(volume, "", inline=True)  # rbd, cephfs, iscsi, flexVolume, csi ...
        if inline_secret is not None:
            secrets.add(inline_secret[1])
        if isinstance(volume.get("configMap"), dict) and volume["configMap"].get("name"):
            config_maps.add(str(volume["configMap"]["name"]))
        for source in ((volume.get("projected") or {}).get("sources") or []) if isinstance(volume.get("projected"), dict) else []:
            if not isinstance(source, dict):
                continue
            if isinstance(source.get("secret"), dict) and source["secret"].get("name"):
                secrets.add(str(source["secret"]["name"]))
            if isinstance(source.get("configMap"), dict) and source["configMap"].get("name"):
                config_maps.add(str(source["configMap"]["name"]))
        rest = {k: v for k, v in volume.items() if k not in ("secret", "configMap", "projected")}
        _secret_refs_in(rest, secrets)
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(group) or []:
            if not isinstance(container, dict):
                continue
            for env in container.get("env") or []:
                source = (env or {}).get("valueFrom") if isinstance(env, dict) else None
                if not isinstance(source, dict):
                    continue
                if isinstance(source.get("secretKeyRef"), dict) and source["secretKeyRef"].get("name"):
                    secrets.add(str(source["secretKeyRef"]["name"]))
                if isinstance(source.get("configMapKeyRef"), dict) and source["configMapKeyRef"].get("name"):
                    config_maps.add(str(source["configMapKeyRef"]["name"]))
            for env_from in container.get("envFrom") or []:
                if not isinstance(env_from, dict):
                    continue
                if isinstance(env_from.get("secretRef"), dict) and env_from["secretRef"].get("name"):
                    secrets.add(str(env_from["secretRef"]["name"]))
                if isinstance(env_from.get("configMapRef"), dict) and env_from["configMapRef"].get("name"):
                    config_maps.add(str(env_from["configMapRef"]["name"]))
    namespace = _meta(pod).get("namespace") or ""
    service_account = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
    return PodRefs(node, namespace, pod_name, frozenset(secrets), frozenset(config_maps), frozenset(claims),
                   service_account)


class AuthzIndex:
    """The RBAC policy and node graph; implements ``storage.apiserver.rbac.Policy``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Condition()
        self.revision = 0
        # RBAC
        self._cluster_roles: dict[str, Obj] = {}
        self._cluster_role_rules: dict[str, tuple[Rule, ...]] = {}
        self._role_rules: dict[tuple[str, str], tuple[Rule, ...]] = {}
        self._cluster_bindings: dict[str, _Binding] = {}
        self._namespace_bindings: dict[tuple[str, str], _Binding] = {}
        self._cluster_by_subject: dict[tuple[str, ...], set[str]] = defaultdict(set)
        self._namespace_by_subject: dict[tuple[str, tuple[str, ...]], set[str]] = defaultdict(set)
        # node graph
        self._pods: dict[tuple[str, str], PodRefs] = {}
        self._node_refs: dict[str, dict[tuple[str, str, str], int]] = defaultdict(lambda: defaultdict(int))
        self._claim_volume: dict[tuple[str, str], str] = {}  # claim -> bound volume
        self._volume_claims: dict[str, set[tuple[str, str]]] = defaultdict(set)  # the reverse
        self._volume_node: dict[str, str] = {}  # node-local volume -> its node
        self._volume_secrets: dict[str, frozenset[tuple[str, str]]] = {}
        self._attachment_node: dict[str, str] = {}  # VolumeAttachment -> its spec.nodeName
        self._listeners: list[Any] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watcher: Watcher | None = None
        self._list_revisions: dict[str, int] = {}

    # ---- feeding --------------------------------------------------------------------------

    def add_listener(self, fn: Any) -> None:
        """``fn(resource)`` runs on the index thread after each applied change (e.g. cluster role aggregation)."""
        self._listeners.append(fn)

    def start(self) -> None:
        since = self._relist()
        self._thread = threading.Thread(target=self._run, args=(since,), name="authz-index", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.close()  # wakes the blocked get at once, so stopping takes no poll interval
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self._lock.notify_all()

    def _relist(self) -> int:
        revisions: dict[str, int] = {}
        lists: dict[str, list[Obj]] = {}
        for resource in sorted(TRACKED):
            items, revision = self.store.list(resource)
            lists[resource], revisions[resource] = items, revision
        with self._lock:
            self.__init_maps()
            for resource, items in lists.items():
                for obj in items:
                    self._apply(resource, "ADDED", obj)
            self._list_revisions = revisions
            since = min(revisions.values())
            self.revision = max(self.revision, since)
            self._lock.notify_all()
        for fn in self._listeners:
            fn(None)
        return since

    def __init_maps(self) -> None:
        self._cluster_roles.clear()
        self._cluster_role_rules.clear()
        self._role_rules.clear()
        self._cluster_bindings.clear()
        self._namespace_bindings.clear()
        self._cluster_by_subject.clear()
        self._namespace_by_subject.clear()
        self._pods.clear()
        self._node_refs.clear()
        self._claim_volume.clear()
        self._volume_claims.clear()
        self._volume_node.clear()
        self._volume_secrets.clear()
        self._attachment_node.clear()

    def _run(self, since: int) -> None:
        while not self._stop.is_set():
            try:
                watcher = self._watcher = self.store.watch(None, since=since)
            except Gone:
                since = self._relist()
                continue
            try:
                while not self._stop.is_set():
                    event = watcher.get(timeout=_POLL)
                    if event is None:
                        continue
                    since = event.revision
                    self.observe(event)
            except Gone:
                since = self._relist()
            except Exception as exc:  # keep the index alive; a relist repairs whatever was missed
                log.error("authz index: watch failed, relisting", error=repr(exc))
                self._stop.wait(_POLL)
                since = self._relist()
            finally:
                watcher.close()

    def observe(self, event: WatchEvent) -> None:
        applied = False
        with self._lock:
            if event.resource in TRACKED and event.revision > self._list_revisions.get(event.resource, 0):
                self._apply(event.resource, event.type, event.object)
                applied = True
            self.revision = max(self.revision, event.revision)
            self._lock.notify_all()
        if applied:
            for fn in self._listeners:
                fn(event.resource)

    def wait_for(self, revision: int, timeout: float) -> bool:
        """Block until the index has read the store up to ``revision``; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self.revision >= revision or self._stop.is_set(), timeout)

    def _apply(self, resource: str, kind: str, obj: Obj) -> None:
        deleted = kind == "DELETED"
        namespace, name = _key(obj)
        if resource == "clusterroles":
            self._cluster_roles.pop(name, None)
            self._cluster_role_rules.pop(name, None)
            if not deleted:
                self._cluster_roles[name] = obj
                self._cluster_role_rules[name] = rules_from(obj.get("rules"))
        elif resource == "roles":
            self._role_rules.pop((namespace, name), None)
            if not deleted:
                self._role_rules[(namespace, name)] = rules_from(obj.get("rules"))
        elif resource == "clusterrolebindings":
            self._drop_binding(self._cluster_bindings.pop(name, None), lambda s: self._cluster_by_subject[s], name)
            if not deleted:
                binding = self._binding(obj, "")
                self._cluster_bindings[name] = binding
                for s in binding.subjects:
                    self._cluster_by_subject[s].add(name)
        elif resource == "rolebindings":
            old = self._namespace_bindings.pop((namespace, name), None)
            self._drop_binding(old, lambda s: self._namespace_by_subject[(namespace, s)], name)
            if not deleted:
                binding = self._binding(obj, namespace)
                self._namespace_bindings[(namespace, name)] = binding
                for s in binding.subjects:
                    self._namespace_by_subject[(namespace, s)].add(name)
        elif resource == "pods":
            self._set_pod((namespace, name), None if deleted else pod_refs(obj))
        elif resource == "persistentvolumeclaims":
            old_volume = self._claim_volume.pop((namespace, name), None)
            if old_volume is not None:
                self._volume_claims[old_volume].discard((namespace, name))
                if not self._volume_claims[old_volume]:
                    del self._volume_claims[old_volume]
            volume = (obj.get("spec") or {}).get("volumeName")
            if not deleted and volume:
                self._claim_volume[(namespace, name)] = str(volume)
                self._volume_claims[str(volume)].add((namespace, name))
        elif resource == "volumeattachments":
            self._attachment_node.pop(name, None)
            node = (obj.get("spec") or {}).get("nodeName")
            if not deleted and node:
                self._attachment_node[name] = str(node)
        elif resource == "persistentvolumes":
            self._volume_node.pop(name, None)
            self._volume_secrets.pop(name, None)
            if not deleted:
                hosts = affinity_hostnames(obj)
                if len(hosts) == 1:  # a node-local volume: its node grows it and reports on it
                    self._volume_node[name] = hosts[0]
                ref = (obj.get("spec") or {}).get("claimRef") or {}
                # A volume's secret reference may name another namespace; without one, its claim's.
                refs: set[tuple[str, str]] = set()
                self._collect_pv_secrets(obj.get("spec") or {}, ref.get("namespace") or "", refs)
                azure_file = (obj.get("spec") or {}).get("azureFile") or {}
                if isinstance(azure_file, dict) and azure_file.get("secretName"):
                    # Kubernetes' VisitPVSecretNames: an azureFile PV's Secret, "default" without a namespace.
                    refs.add((str(azure_file.get("secretNamespace") or "default"), str(azure_file["secretName"])))
                if refs:
                    self._volume_secrets[name] = frozenset(refs)

    def _collect_pv_secrets(self, value: Any, default_ns: str, out: set[tuple[str, str]]) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if (k == "secretRef" or k.endswith("SecretRef")) and isinstance(v, dict) and v.get("name"):
                    out.add((str(v.get("namespace") or default_ns), str(v["name"])))
                else:
                    self._collect_pv_secrets(v, default_ns, out)
        elif isinstance(value, list):
            for v in value:
                self._collect_pv_secrets(v, default_ns, out)

    @staticmethod
    def _binding(obj: Obj, namespace: str) -> _Binding:
        ref = obj.get("roleRef") or {}
        keys = []
        for subject in obj.get("subjects") or []:
            key = subject_key(subject, namespace) if isinstance(subject, dict) else None
            if key is not None:
                keys.append(key)
        return _Binding(RoleRef(str(ref.get("kind") or ""), str(ref.get("name") or ""), namespace), tuple(keys))

    @staticmethod
    def _drop_binding(binding: _Binding | None, index: Any, name: str) -> None:
        if binding is None:
            return
        for s in binding.subjects:
            index(s).discard(name)

    def _set_pod(self, key: tuple[str, str], refs: PodRefs | None) -> None:
        old = self._pods.pop(key, None)
        if old == refs:
            if refs is not None:
                self._pods[key] = refs
            return
        if old is not None:
            counts = self._node_refs[old.node]
            for edge in self._edges(old):
                counts[edge] -= 1
                if counts[edge] <= 0:
                    del counts[edge]
        if refs is not None:
            self._pods[key] = refs
            counts = self._node_refs[refs.node]
            for edge in self._edges(refs):
                counts[edge] += 1

    @staticmethod
    def _edges(refs: PodRefs) -> list[tuple[str, str, str]]:
        ns = refs.namespace
        return ([("secrets", ns, s) for s in refs.secrets] + [("configmaps", ns, c) for c in refs.config_maps]
                + [("persistentvolumeclaims", ns, c) for c in refs.claims]
                + [("serviceaccounts", ns, refs.service_account)])

    # ---- Policy ---------------------------------------------------------------------------

    def cluster_role_rules(self, name: str) -> tuple[Rule, ...]:
        with self._lock:
            return self._cluster_role_rules.get(name, ())

    def role_rules(self, namespace: str, name: str) -> tuple[Rule, ...]:
        with self._lock:
            return self._role_rules.get((namespace, name), ())

    def cluster_bindings_for(self, user: User) -> Iterable[RoleRef]:
        with self._lock:
            names: set[str] = set()
            for key in subject_keys(user):
                found = self._cluster_by_subject.get(key)
                if found:
                    names |= found
            return [self._cluster_bindings[n].ref for n in sorted(names) if n in self._cluster_bindings]

    def namespace_bindings_for(self, namespace: str, user: User) -> Iterable[RoleRef]:
        with self._lock:
            names: set[str] = set()
            for key in subject_keys(user):
                found = self._namespace_by_subject.get((namespace, key))
                if found:
                    names |= found
            return [self._namespace_bindings[(namespace, n)].ref for n in sorted(names)
                    if (namespace, n) in self._namespace_bindings]

    def cluster_roles(self) -> list[Obj]:
        with self._lock:
            return list(self._cluster_roles.values())

    # ---- node graph -----------------------------------------------------------------------

    def pod_node(self, namespace: str, name: str) -> str | None:
        with self._lock:
            refs = self._pods.get((namespace, name))
            return refs.node if refs is not None else None

    def node_uses(self, node: str, resource: str, namespace: str, name: str) -> bool:
        """Whether a pod bound to ``node`` (or, for claims and volumes, a volume in its pools) needs this object."""
        with self._lock:
            return self._node_uses(node, resource, namespace, name)

    def _node_uses(self, node: str, resource: str, namespace: str, name: str) -> bool:
        edges = self._node_refs.get(node)
        if resource in ("secrets", "configmaps"):
            if edges is not None and edges.get((resource, namespace, name), 0) > 0:
                return True
            if resource == "secrets":
                return any((namespace, name) in secrets and self._node_uses(node, "persistentvolumes", "", volume)
                           for volume, secrets in self._volume_secrets.items())
            return False
        if resource == "persistentvolumeclaims":
            if edges is not None and edges.get((resource, namespace, name), 0) > 0:
                return True
            volume = self._claim_volume.get((namespace, name))
            return volume is not None and self._volume_node.get(volume) == node
        if resource == "persistentvolumes":
            if self._volume_node.get(name) == node:
                return True
            # The edge is the claim's spec.volumeName (as Kubernetes' graph), whatever the volume's claimRef says.
            return edges is not None and any(edges.get(("persistentvolumeclaims", *c), 0) > 0
                                             for c in self._volume_claims.get(name, ()))
        if resource == "volumeattachments":
            return self._attachment_node.get(name) == node
        if resource == "serviceaccounts":
            return edges is not None and edges.get((resource, namespace, name), 0) > 0
        if resource == "pods":
            refs = self._pods.get((namespace, name))
            return refs is not None and refs.node == node
        return False
