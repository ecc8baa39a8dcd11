"""Which AppArmor profile a container asks for (SEMANTICS AA1), as the kubelet reads it: the container's
``securityContext.appArmorProfile``, else the deprecated per-container annotation, else the pod's field."""
from __future__ import annotations

from typing import Any, NamedTuple

ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"


class Profile(NamedTuple):
    type: str  # RuntimeDefault, Localhost or Unconfined
    localhost: str = ""


def _from_field(field: Any) -> Profile | None:
    if not isinstance(field, dict) or not field.get("type"):
        return None
    return Profile(str(field["type"]), str(field.get("localhostProfile") or ""))


def _from_annotation(value: str) -> Profile:
    if value == "runtime/default":
        return Profile("RuntimeDefault")
    if value == "unconfined":
        return Profile("Unconfined")
    if value.startswith("localhost/"):
        return Profile("Localhost", value.removeprefix("localhost/"))
    return Profile(value)  # unknown: validation refuses it; the agent reports it if it ever gets here


def container_profile(pod: dict[str, Any], container: dict[str, Any]) -> Profile | None:
    own = _from_field((container.get("securityContext") or {}).get("appArmorProfile"))
    if own is not None:
        return own
    annotation = ((pod.get("metadata") or {}).get("annotations") or {}).get(f"{ANNOTATION_PREFIX}{container.get('name')}")
    if isinstance(annotation, str) and annotation:
        return _from_annotation(annotation)
    return _from_field(((pod.get("spec") or {}).get("securityContext") or {}).get("appArmorProfile"))


def confined(pod: dict[str, Any]) -> list[tuple[str, Profile]]:
    """The containers (init, regular, ephemeral) that ask for confinement: any profile but Unconfined."""
    spec = pod.get("spec") or {}
    out = []
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(field) or []:
            if isinstance(container, dict):
                profile = container_profile(pod, container)
                if profile is not None and profile.type != "Unconfined":
                    out.append((str(container.get("name")), profile))
    return out
