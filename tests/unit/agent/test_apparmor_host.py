"""AppArmor admission on a host (SEMANTICS AA1-AA3), with the kernel's two files written by the test: which
profile each container asks for, and when the kubelet's refusal applies."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from storage.agent.runtime.apparmor import admission_problem, loaded_profiles, process_profile
from storage.api.apparmor import Profile, container_profile


def _pod(annotations: dict[str, str] | None = None, pod_profile: Any = None, container_profile_: Any = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": "i"}
    if container_profile_ is not None:
        container["securityContext"] = {"appArmorProfile": container_profile_}
    return {"metadata": {"name": "p", "annotations": annotations or {}},
            "spec": {"containers": [container],
                     "securityContext": {"appArmorProfile": pod_profile} if pod_profile else {}}}


def test_aa1_the_container_field_then_the_annotation_then_the_pod_field() -> None:
    both = _pod({"container.apparmor.security.beta.kubernetes.io/c": "localhost/a"}, {"type": "RuntimeDefault"},
                {"type": "Unconfined"})
    container = both["spec"]["containers"][0]
    assert container_profile(both, container) == Profile("Unconfined")
    del container["securityContext"]
    assert container_profile(both, container) == Profile("Localhost", "a")
    both["metadata"]["annotations"] = {}
    assert container_profile(both, container) == Profile("RuntimeDefault")
    assert container_profile(_pod(), container) is None


def test_aa2_aa3_refusals_on_hosts_with_and_without_apparmor(tmp_path: Path) -> None:
    enabled, profiles = tmp_path / "enabled", tmp_path / "profiles"
    enabled.write_text("N\n")
    profiles.write_text("k8s-deny-write (enforce)\nother (complain)\n")
    files = {"enabled_file": enabled, "profiles_file": profiles}
    localhost = _pod(pod_profile={"type": "Localhost", "localhostProfile": "k8s-deny-write"})
    assert admission_problem(localhost, **files) == "Cannot enforce AppArmor: AppArmor is not enabled on the host"
    assert admission_problem(_pod(pod_profile={"type": "Unconfined"}), **files) is None
    assert admission_problem(_pod(), **files) is None
    (tmp_path / "missing").unlink(missing_ok=True)
    assert admission_problem(localhost, enabled_file=tmp_path / "missing", profiles_file=profiles) is not None

    enabled.write_text("Y\n")
    assert loaded_profiles(profiles) == {"k8s-deny-write", "other"}
    assert admission_problem(localhost, **files) is None
    assert process_profile(localhost, localhost["spec"]["containers"][0]) == "k8s-deny-write"
    missing = _pod({"container.apparmor.security.beta.kubernetes.io/c": "localhost/nope"})
    assert admission_problem(missing, **files) == 'Cannot enforce AppArmor: profile "nope" is not loaded'
    runtime_default = _pod(pod_profile={"type": "RuntimeDefault"})
    assert "no default AppArmor profile" in str(admission_problem(runtime_default, **files))
    assert process_profile(runtime_default, runtime_default["spec"]["containers"][0]) is None
