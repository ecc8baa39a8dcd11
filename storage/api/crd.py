"""CustomResourceDefinitions (SEMANTICS CRD1-CRD4). Stowage serves a fixed set of kinds; the definitions it
accepts are those of the kinds it already serves as Kubernetes serves CRDs (the snapshot API, ReferenceGrant),
so that a cluster's usual install step, applying the external-snapshotter's CRDs, works unchanged. Any other
definition is refused when it is written, rather than stored and never served."""
from __future__ import annotations

from typing import Any

from storage.api import registry


def served_by_definitions() -> list[registry.ResourceInfo]:
    return sorted((r for r in registry.RESOURCES if r.crd), key=lambda r: (r.group, r.plural))


def apply_defaults(obj: dict[str, Any]) -> None:
    """apiextensions' defaults: the singular and list kind from the kind, no conversion webhook."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    names = spec.get("names")
    if isinstance(names, dict) and isinstance(names.get("kind"), str):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", f"{names['kind']}List")
    conversion = spec.setdefault("conversion", {"strategy": "None"})
    if isinstance(conversion, dict):
        conversion.setdefault("strategy", "None")


def storage_version(obj: dict[str, Any]) -> str | None:
    versions = (obj.get("spec") or {}).get("versions") or []
    stored = [v.get("name") for v in versions if isinstance(v, dict) and v.get("storage")]
    return str(stored[0]) if len(stored) == 1 and stored[0] else None


def initial_status(obj: dict[str, Any], now: str) -> dict[str, Any]:
    """What kube-apiserver's naming and establishing controllers write for a definition without conflicts;
    here at once, since the kind it defines is already served."""
    names = dict((obj.get("spec") or {}).get("names") or {})
    version = storage_version(obj)
    return {
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found",
             "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
        "acceptedNames": names,
        "storedVersions": [version] if version else [],
    }


def served_kind_problem(obj: dict[str, Any]) -> tuple[str, Any, str] | None:
    """(field, value, detail) when the definition is not one of a kind served here, else None."""
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    group, plural = spec.get("group"), names.get("plural")
    info = registry.by_plural(str(plural)) if plural else None
    if info is None or not info.crd or info.group != group:
        known = ", ".join(f"{r.plural}.{r.group}" for r in served_by_definitions())
        return ("metadata.name", f"{plural}.{group}",
                f"Stowage serves no custom resources; it accepts the definitions of the kinds it serves built in: {known}")
    if names.get("kind") != info.kind:
        return "spec.names.kind", names.get("kind"), f"{plural}.{group} is served with kind {info.kind}"
    scope = "Namespaced" if info.namespaced else "Cluster"
    if spec.get("scope") != scope:
        return "spec.scope", spec.get("scope"), f"{plural}.{group} is served {scope}"
    served = {v.get("name") for v in spec.get("versions") or [] if isinstance(v, dict) and v.get("served")}
    offered = {info.api_version.split("/")[-1], *(v.split("/")[-1] for v in info.legacy_api_versions)}
    extra = sorted(str(v) for v in served - offered)
    if extra:
        return ("spec.versions", ", ".join(extra),
                f"{plural}.{group} is served at {', '.join(sorted(offered))} only")
    return None
