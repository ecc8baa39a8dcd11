"""The pure OCI config builder: user namespace, capabilities, seccomp, masks, runAsNonRoot, host namespaces."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from storage.agent.runtime.envvars import EnvError
from storage.agent.runtime.oci import (MASKED_PATHS, READONLY_PATHS, RUN_AS_ROOT, RUN_AS_USER_ROOT, build_config,
                                       capabilities, uses_user_namespace)
from storage.agent.runtime.seccomp import runtime_default

DEFAULT_14 = {"CAP_" + c for c in ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
                                   "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL",
                                   "AUDIT_WRITE")}


def pod(container: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    c = {"name": "c", "image": "x", **(container or {})}
    return {"metadata": {"name": "p", "namespace": "default", "uid": "u1"}, "spec": {"containers": [c], **spec}}


def config(p: dict[str, Any], **kw: Any) -> dict[str, Any]:
    kw.setdefault("userns_base", 1 << 24)
    return build_config(pod=p, container=p["spec"]["containers"][0], argv=["true"], env=[], volumes=kw.pop("volumes", {}),
                        hostname="p", hosts_file=Path("/h"), **kw)


def names(profile: dict[str, Any]) -> set[str]:
    return {n for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" and "args" not in rule
            for n in rule["names"]}


def test_default_is_user_namespace_default_caps_runtime_default_and_masks():
    c = config(pod())
    linux = c["linux"]
    assert {"type": "user"} in linux["namespaces"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": 1 << 24, "size": 65536}]
    assert linux["gidMappings"] == linux["uidMappings"]
    assert set(c["process"]["capabilities"]["bounding"]) == DEFAULT_14
    assert linux["maskedPaths"] == MASKED_PATHS and linux["readonlyPaths"] == READONLY_PATHS
    assert linux["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert c["process"]["noNewPrivileges"] is False
    assert {t["type"] for t in linux["namespaces"]} == {"mount", "pid", "ipc", "uts", "user"}


def test_host_users_true_has_no_user_namespace_and_host_namespaces_imply_it():
    assert uses_user_namespace(pod()) is True
    assert uses_user_namespace(pod(hostUsers=False)) is True
    assert uses_user_namespace(pod(hostUsers=True)) is False
    assert uses_user_namespace(pod(hostPID=True)) is False
    with pytest.raises(EnvError, match="hostUsers"):
        uses_user_namespace(pod(hostNetwork=True, hostUsers=False))
    c = config(pod(hostUsers=True), userns_base=None)
    assert "uidMappings" not in c["linux"] and {"type": "user"} not in c["linux"]["namespaces"]


def test_host_namespaces_drop_the_private_ones():
    c = config(pod(hostPID=True, hostIPC=True, hostNetwork=True), userns_base=None)
    assert [t["type"] for t in c["linux"]["namespaces"]] == ["mount"]
    assert "hostname" not in c, "runc cannot set a hostname without its own UTS namespace"
    assert not any(m["destination"] == "/dev/mqueue" for m in c["mounts"])
    shm = next(m for m in c["mounts"] if m["destination"] == "/dev/shm")
    assert shm["type"] == "bind" and shm["source"] == "/dev/shm"


def test_capabilities_add_drop_all_and_privileged():
    every = {"CHOWN", "SYS_ADMIN", "NET_ADMIN", "KILL"}
    assert capabilities({"capabilities": {"drop": ["ALL"]}}) == []
    assert capabilities({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}) == ["CAP_NET_BIND_SERVICE"]
    assert "CAP_NET_RAW" not in capabilities({"capabilities": {"drop": ["NET_RAW"]}})
    assert "CAP_SYS_PTRACE" in capabilities({"capabilities": {"add": ["CAP_SYS_PTRACE"]}})
    assert set(capabilities({"privileged": True}, every)) == {"CAP_" + c for c in every}
    assert set(capabilities({"capabilities": {"add": ["ALL"]}}, every)) == {"CAP_" + c for c in every}
    with pytest.raises(EnvError, match="capabilities.add"):
        capabilities({"capabilities": {"add": ["NOT_A_CAP"]}})


def test_privileged_has_no_masks_and_no_seccomp_unless_asked():
    c = config(pod({"securityContext": {"privileged": True}}))
    assert "maskedPaths" not in c["linux"] and "readonlyPaths" not in c["linux"] and "seccomp" not in c["linux"]
    asked = config(pod({"securityContext": {"privileged": True, "seccompProfile": {"type": "RuntimeDefault"}}}))
    assert "seccomp" in asked["linux"]


def test_no_new_privileges_from_allow_privilege_escalation():
    assert config(pod({"securityContext": {"allowPrivilegeEscalation": False}}))["process"]["noNewPrivileges"] is True


def test_seccomp_types():
    assert "seccomp" not in config(pod({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}))["linux"]
    assert "seccomp" not in config(pod(securityContext={"seccompProfile": {"type": "Unconfined"}}))["linux"]
    # The container's own profile wins over the pod's.
    c = config(pod({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}},
                   securityContext={"seccompProfile": {"type": "Unconfined"}}))
    assert "seccomp" in c["linux"]
    with pytest.raises(EnvError, match="Localhost"):
        config(pod({"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "a.json"}}}))


def test_runtime_default_follows_capabilities_like_containerd():
    base = runtime_default(sorted(DEFAULT_14), "x86_64")
    allowed = names(base)
    for denied in ("open_by_handle_at", "mount", "umount2", "unshare", "setns", "keyctl", "add_key", "bpf",
                   "ptrace", "kexec_load", "kexec_file_load", "init_module", "reboot", "perf_event_open", "clone3",
                   "open_tree", "move_mount", "fsopen", "userfaultfd", "settimeofday"):
        assert denied not in allowed, denied
    assert {"read", "chroot", "arch_prctl", "rseq", "close_range"} <= allowed
    clone3 = next(r for r in base["syscalls"] if r["names"] == ["clone3"])
    assert clone3["action"] == "SCMP_ACT_ERRNO" and clone3["errnoRet"] == 38, "ENOSYS, so libc falls back to clone"
    assert base["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"], "no x32 (PF71)"
    assert "open_by_handle_at" in names(runtime_default(["CAP_DAC_READ_SEARCH"], "x86_64"))
    admin = names(runtime_default(["CAP_SYS_ADMIN"], "x86_64"))
    assert {"mount", "umount2", "unshare", "setns", "clone"} <= admin
    assert "ptrace" in names(runtime_default(["CAP_SYS_PTRACE"], "x86_64"))
    assert "chroot" not in names(runtime_default([], "x86_64"))


def test_run_as_non_root():
    with pytest.raises(EnvError) as implicit:
        config(pod({"securityContext": {"runAsNonRoot": True}}))
    assert str(implicit.value) == RUN_AS_ROOT == "container has runAsNonRoot and image will run as root"
    with pytest.raises(EnvError) as explicit:
        config(pod({"securityContext": {"runAsUser": 0}}, securityContext={"runAsNonRoot": True}))
    assert str(explicit.value) == RUN_AS_USER_ROOT
    # The container's runAsNonRoot: false overrides the pod's true.
    config(pod({"securityContext": {"runAsNonRoot": False}}, securityContext={"runAsNonRoot": True}))
    c = config(pod({"securityContext": {"runAsUser": 1000, "runAsGroup": 2000}},
                   securityContext={"runAsNonRoot": True, "supplementalGroups": [3000], "fsGroup": 4000}))
    assert c["process"]["user"] == {"uid": 1000, "gid": 2000, "additionalGids": [3000, 4000]}


def test_volumes_are_staged_unless_they_need_propagation(tmp_path):
    staged: list[tuple[str, bool]] = []

    def stage(source: str, plain: bool) -> str:
        staged.append((source, plain))
        return f"/staged/{len(staged)}"

    c = config(pod({"volumeMounts": [{"name": "a", "mountPath": "/a"},
                                     {"name": "b", "mountPath": "/b", "mountPropagation": "HostToContainer"}]}),
               volumes={"a": str(tmp_path), "b": str(tmp_path)}, stage=stage)
    binds = {m["destination"]: m["source"] for m in c["mounts"] if m["destination"] in ("/a", "/b")}
    assert binds == {"/a": "/staged/1", "/b": "/staged/2"}
    assert staged == [(str(tmp_path), False), (str(tmp_path), True)]
