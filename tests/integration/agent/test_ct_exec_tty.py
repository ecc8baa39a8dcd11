"""CT4: `kubectl exec -it` (the real kubectl, given a terminal by util-linux `script`): the agent's own terminal
between the session and runc is raw from the start, so what the client sends reaches the container's terminal
once, and only that terminal echoes it."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from agent_cluster import Cluster
from storage.agent.agent import NodeAgent
from support import kubectl_binary

from test_streams_exec import kubectl_env, run_pod

pytestmark = pytest.mark.root


@pytest.fixture
def node(cluster: Cluster) -> NodeAgent:
    """The agent the pods run on (n1), with the controllers, as in test_streams_exec."""
    cluster.start_controllers()
    return cluster.add_agent("n1")


@pytest.fixture
def kubeconfig(cluster: Cluster) -> Path:
    assert cluster.server.kubeconfig is not None
    return cluster.server.kubeconfig


def test_ct4_kubectl_exec_with_a_terminal_prints_only_the_commands_output(cluster: Cluster, node: NodeAgent,
                                                                          kubeconfig: Path) -> None:
    if shutil.which("script") is None:
        pytest.skip("script (util-linux) is not installed")
    run_pod(cluster, "reader", ["sleep", "1d"])
    env = kubectl_env(kubeconfig)
    command = f"{kubectl_binary()} exec -it reader -- echo hi"
    # kubectl's terminal input open and quiet, as in an interactive session: the command's output alone.
    held = subprocess.run(f"sleep 3 | script -qec '{command}' /dev/null", shell=True, capture_output=True,
                          timeout=120, env=env)
    assert held.returncode == 0, held
    # (Carriage returns aside, as in test_streams_exec: kubectl may restore its own terminal, whose output
    # processing adds one, before the last bytes are written.)
    assert held.stdout.replace(b"\r", b"") == b"hi\n", held.stdout
    # Its input at end of file: `script` hands the terminal an end-of-file that kubectl, once raw, reads as a
    # NUL byte and sends as stdin (the session's first stdin frame, b"\x00\x00"). The container's terminal echoes
    # that byte as ^@ at most once; the agent's terminal, cooked until runc made it raw, echoed it a second time.
    done = subprocess.run(["script", "-qec", command, "/dev/null"], input=b"", capture_output=True, timeout=120, env=env)
    assert done.returncode == 0, done
    assert done.stdout.replace(b"\r", b"") in (b"hi\n", b"^@hi\n", b"hi\n^@"), done.stdout
    # Without a terminal, as before.
    plain = subprocess.run([kubectl_binary(), "exec", "-i", "reader", "--", "echo", "hi"], input=b"",
                           capture_output=True, timeout=120, env=env)
    assert plain.stdout == b"hi\n", plain
