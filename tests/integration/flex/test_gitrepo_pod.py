"""A pod on a real node agent reads a gitRepo volume cloned from a repository a real git daemon serves (SV2)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))

from agent_cluster import Cluster, cluster, pod, tmp_base  # noqa: E402,F401  (fixtures)
from git_daemon import git_daemon  # noqa: E402
from support import wait_for_text  # noqa: E402

pytestmark = pytest.mark.root


def test_sv2_pod_sees_the_repository_at_its_revision(cluster: Cluster) -> None:
    """SV2: the clone is at the given revision inside the pod's mount; the pod's copy proves it saw it."""
    served = cluster.base / "served"
    repo = served / "repo"
    repo.mkdir(parents=True)

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                              capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q", "-b", "main")
    (repo / "version").write_text("v1\n")
    git("add", "version")
    git("commit", "-q", "-m", "v1")
    first = git("rev-parse", "HEAD")
    (repo / "version").write_text("v2\n")
    git("commit", "-q", "-am", "v2")

    cluster.start_controllers()
    cluster.add_agent("n1")
    with git_daemon(served) as url:
        volume = {"name": "src", "gitRepo": {"repository": f"{url}/repo", "revision": first, "directory": "app"}}
        cluster.apply(pod("reader", "cp /src/app/version /src/seen; trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done",
                          volumes=[volume], mounts_=[{"name": "src", "mountPath": "/src"}]))
        running = cluster.wait_running("reader")
        host = cluster.agent_dir("n1") / "pods" / running["metadata"]["uid"] / "volumes/kubernetes.io~git-repo/src"
        # Its content, not its existence: cp creates the file before it writes to it.
        wait_for_text(host / "seen", "v1\n", "the pod's copy of the file")
        cluster.client.delete("pods", "reader", "default")
        cluster.wait_gone("pods", "reader", "default")
        assert not host.exists()
