"""Enforcing a pod's AppArmor profiles on this host (SEMANTICS AA2, AA3), or refusing the pod as the kubelet
does: a container that asks for confinement never runs unconfined because the host cannot confine it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from storage.api.apparmor import Profile, confined, container_profile

ENABLED_FILE = Path("/sys/module/apparmor/parameters/enabled")
PROFILES_FILE = Path("/sys/kernel/security/apparmor/profiles")
NOT_ENABLED = "AppArmor is not enabled on the host"


def host_enabled(enabled_file: Path = ENABLED_FILE) -> bool:
    try:
        return enabled_file.read_text().strip().startswith("Y")
    except OSError:
        return False


def loaded_profiles(profiles_file: Path = PROFILES_FILE) -> set[str]:
    """The names in the kernel's list, one ``name (mode)`` per line."""
    try:
        lines = profiles_file.read_text().splitlines()
    except OSError:
        return set()
    return {line.rsplit(" (", 1)[0] for line in lines if line.strip()}


def admission_problem(pod: dict[str, Any], *, enabled_file: Path = ENABLED_FILE,
                      profiles_file: Path = PROFILES_FILE) -> str | None:
    """Why this host cannot confine the pod as asked, in the kubelet's words (None: it can, or nothing asks).
    Stowage loads no profile of its own, so RuntimeDefault needs one of the host's: it is refused too, rather
    than run unconfined under a name that promises confinement."""
    wanted = confined(pod)
    if not wanted:
        return None
    if not host_enabled(enabled_file):
        return f"Cannot enforce AppArmor: {NOT_ENABLED}"
    loaded: set[str] | None = None
    for name, profile in wanted:
        if profile.type == "Localhost":
            if not profile.localhost:
                return f'Cannot enforce AppArmor: container "{name}" names no localhost profile'
            loaded = loaded_profiles(profiles_file) if loaded is None else loaded
            if profile.localhost not in loaded:
                return f'Cannot enforce AppArmor: profile "{profile.localhost}" is not loaded'
        elif profile.type == "RuntimeDefault":
            return ("Cannot enforce AppArmor: this node's runtime has no default AppArmor profile; "
                    "use a Localhost profile or Unconfined")
        else:
            return f'Cannot enforce AppArmor: unknown profile type "{profile.type}"'
    return None


def process_profile(pod: dict[str, Any], container: dict[str, Any]) -> str | None:
    """The name runc enters before the container's program (``process.apparmorProfile``), for a Localhost
    profile; admission has refused every other confined case."""
    profile: Profile | None = container_profile(pod, container)
    return profile.localhost if profile is not None and profile.type == "Localhost" and profile.localhost else None
