"""The symlink-swap escapes of hostPath and subPath (CVE-2017-1002101, CVE-2021-25741), with real
pods on real runc: a pod swaps a directory for a symlink to a host directory outside what it may
reach, then another container (or the same one) restarts. Each must be refused at the restart
(Waiting, CreateContainerConfigError) and the outside directory must stay untouched (SEMANTICS A6, A7)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "agent"))

from agent_cluster import Cluster, cluster, pod, tmp_base, wait_until  # noqa: E402,F401  (fixtures)

pytestmark = pytest.mark.root

Obj = dict

# Each start writes into /data at once (so an escaped mount would show outside), then waits.
VICTIM = "echo victim >> /data/written; while [ ! -e /data/go ]; do sleep 0.1; done; exit 1"
MARKER = "host-secret-marker\n"


def _namespace(cluster: Cluster, name: str) -> None:
    # hostPath needs a namespace whose Pod Security level allows it.
    cluster.apply({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}})


def _outside(base: Path) -> Path:
    """A host directory no pod may reach, writable by anyone (so an escape would show)."""
    outside = base / "outside"
    outside.mkdir()
    outside.chmod(0o777)
    (outside / "marker").write_text(MARKER)
    return outside


def _untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["marker"], "something was written outside the prefix"
    assert (outside / "marker").read_text() == MARKER


def _in_ns(obj: Obj, namespace: str) -> Obj:
    obj["metadata"]["namespace"] = namespace
    return obj


def _waiting(p: Obj) -> dict:
    statuses = (p.get("status") or {}).get("containerStatuses") or [{}]
    return (statuses[0].get("state") or {}).get("waiting") or {}


def _restarts(p: Obj) -> int:
    statuses = (p.get("status") or {}).get("containerStatuses") or [{}]
    return int(statuses[0].get("restartCount") or 0)


def test_hostpath_symlink_swap_by_another_pod_is_refused_at_restart(cluster: Cluster) -> None:
    cluster.start_controllers()  # the namespace's default ServiceAccount, which every pod's token needs
    allowed = cluster.base / "allowed"
    shared = allowed / "shared"
    for d in (allowed, shared, shared / "sub", shared / "sub2", shared / "sub3"):
        d.mkdir()
        d.chmod(0o777)
    outside = _outside(cluster.base)
    _namespace(cluster, "sec")
    cluster.add_agent("n1", host_path_prefixes=(str(allowed),))
    host_shared = {"name": "shared", "hostPath": {"path": str(shared), "type": "Directory"}}
    # Victim 1: the shared directory with subPath "sub". Victim 2: hostPath naming shared/sub2 itself.
    # Each exits (so it restarts) once the attacker says go.
    victim_sub = pod("victim-sub", VICTIM,
                     volumes=[host_shared], mounts_=[{"name": "shared", "mountPath": "/data", "subPath": "sub"}],
                     nodeName="n1", grace=1)
    victim_host = pod("victim-host", VICTIM,
                      volumes=[{"name": "sub2", "hostPath": {"path": str(shared / "sub2")}}],
                      mounts_=[{"name": "sub2", "mountPath": "/data"}], nodeName="n1", grace=1)
    # Victim 3: hostPath shared/sub3 of type Directory, which the attacker turns into a plain file.
    victim_type = pod("victim-type", VICTIM,
                      volumes=[{"name": "sub3", "hostPath": {"path": str(shared / "sub3"), "type": "Directory"}}],
                      mounts_=[{"name": "sub3", "mountPath": "/data"}], nodeName="n1", grace=1)
    cluster.apply(_in_ns(victim_sub, "sec"), _in_ns(victim_host, "sec"), _in_ns(victim_type, "sec"))
    for name in ("victim-sub", "victim-host", "victim-type"):
        cluster.wait_pod(name, lambda p: (p.get("status") or {}).get("phase") == "Running", "Running", namespace="sec")

    # The attacker: no extra capabilities, swaps both directories for symlinks to the outside
    # directory, then lets the victims' containers exit.
    swap = (f"mv /shared/sub /shared/sub.old && ln -s {outside} /shared/sub && "
            f"mv /shared/sub2 /shared/sub2.old && ln -s {outside} /shared/sub2 && "
            "mv /shared/sub3 /shared/sub3.old && echo not-a-dir > /shared/sub3 && "
            "touch /shared/sub.old/go /shared/sub2.old/go /shared/sub3.old/go; trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done")
    cluster.apply(_in_ns(pod("attacker", swap, volumes=[host_shared],
                             mounts_=[{"name": "shared", "mountPath": "/shared"}], nodeName="n1", grace=1), "sec"))
    wait_until(lambda: (shared / "sub").is_symlink() and (shared / "sub2").is_symlink(), "the attacker's swap")

    for name, why in (("victim-sub", "symbolic link"), ("victim-host", "symbolic link"),
                      ("victim-type", "is not a directory")):
        refused = cluster.wait_pod(
            name, lambda p: (_untouched(outside), _waiting(p).get("reason") == "CreateContainerConfigError"
                             and why in _waiting(p).get("message", ""))[1],
            "the restart refused", namespace="sec")
        assert _restarts(refused) == 0, "no container may have started after the swap"
    # Both victims ran once in the real directories, before the swap.
    assert (shared / "sub.old" / "written").read_text() == "victim\n"
    assert (shared / "sub2.old" / "written").read_text() == "victim\n"
    assert (shared / "sub3.old" / "written").read_text() == "victim\n"
    assert (shared / "sub3").read_text() == "not-a-dir\n", "nothing was mounted over or written into the file"
    _untouched(outside)
    # The refusal is for good, not a race the next attempt may win: still refused after more attempts.
    agent = cluster.agents["n1"]
    assert agent.runtime is not None
    uid = cluster.pod("victim-sub", "sec")["metadata"]["uid"]
    wait_until(lambda: "symbolic link" in (agent.runtime.pod_status(uid) or {}).get("containerStatuses", [{}])[0]
               .get("state", {}).get("waiting", {}).get("message", ""), "the runtime's own status")
    _untouched(outside)
    assert not list((cluster.agent_dir("n1") / "pods" / uid).glob("volume-subpaths/*/*")), \
        "nothing may stay staged for a refused container"


@pytest.mark.parametrize("link", ["absolute", "relative"])
def test_subpath_symlink_swap_inside_emptydir_is_refused_at_restart(cluster: Cluster, link: str) -> None:
    cluster.start_controllers()  # the namespace's default ServiceAccount, which every pod's token needs
    outside = _outside(cluster.base)
    cluster.add_agent("n1")
    # The volume sits at <agent>/pods/<uid>/volumes/kubernetes.io~empty-dir/work: a relative link
    # with enough ".." reaches the host's "/", and from there the outside directory.
    target = str(outside) if link == "absolute" else "../../../../../../../../../../../.." + str(outside)
    # First run: plant the symlink where the subPath was a real directory, then exit to be restarted.
    script = ("if [ -e /vol/ran ]; then echo second-run > /data/escaped; sleep 3600; fi; "
              f"touch /vol/ran; rm -rf /vol/data; ln -s {target} /vol/data; exit 1")
    cluster.apply(pod("swapper", script, volumes=[{"name": "work", "emptyDir": {}}], nodeName="n1", grace=1,
                      mounts_=[{"name": "work", "mountPath": "/vol"},
                               {"name": "work", "mountPath": "/data", "subPath": "data"}]))
    refused = cluster.wait_pod(
        "swapper", lambda p: (_untouched(outside), _waiting(p).get("reason") == "CreateContainerConfigError")[1],
        "the restart refused")
    message = _waiting(refused)["message"]
    assert "subPath" in message and "symbolic link" in message, message
    _untouched(outside)
    uid = refused["metadata"]["uid"]
    work = next((cluster.agent_dir("n1") / "pods" / uid / "volumes").glob("*/work"))
    assert (work / "data").is_symlink() and (work / "ran").exists(), "the first run did plant the link"
    assert not (work / "escaped").exists()
