"""``stowage bench --nodes 2`` on a two-agent cluster: one claim and pod per node, started together,
reported per node and as an aggregate, everything removed afterwards (BN23, BN24, BN2)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from agent_cluster import Cluster, local_class
from support import stowage_executable

from storage.system import loop

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_two_nodes_at_once_per_node_and_aggregate(cluster: Cluster, tmp_path: Path) -> None:
    """BN23, BN24, BN2: two Ready nodes, one pod each pinned by hostname; both pods' first fio job starts at the
    same second (each after its own prefill, released together through the run's ConfigMap); throughput aggregates as the sum of the nodes' medians; no pod, claim, volume or loop is left."""
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.add_agent("n2")
    cluster.apply(local_class("local"))
    out = tmp_path / "run"
    proc = subprocess.run([stowage_executable(), "bench", "--quick", "--nodes", "2", "--storage-class", "local",
                           "--size", "256Mi", "--jobs", "randread-lat,seqwrite-bw", "--runtime", "1", "--ramp", "0",
                           "--output-dir", str(out),
                           "--kubeconfig", str(cluster.server.kubeconfig)],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ), check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "result.json").read_text())
    nodes = doc["classes"][0]["nodes"]
    assert sorted(n["node"] for n in nodes) == ["n1", "n2"]
    agg = doc["classes"][0]["aggregate"]["seqwrite-bw"]["write_bw_mib"]
    meds = [n["jobs"]["seqwrite-bw"]["figures"]["write_bw_mib"]["median"] for n in nodes]
    assert agg == pytest.approx(sum(meds))
    p99 = [n["jobs"]["randread-lat"]["figures"]["read_clat_p99_us"]["median"] for n in nodes]
    assert doc["classes"][0]["aggregate"]["randread-lat"]["read_clat_p99_us"] == pytest.approx(max(p99))
    assert "all 2" in proc.stdout
    first = [n["fio_ends"][0] for n in nodes]
    assert max(first) - min(first) <= 3, first  # both nodes' first job ran at the same time
    assert not cluster.client.list("pods", "default")[0]
    assert not cluster.client.list("configmaps", "default", label_selector="stowage.io/bench-run")[0]
    assert not cluster.client.list("persistentvolumeclaims", "default")[0]
    assert not cluster.client.list("persistentvolumes", "")[0]
    assert not loop.loops_under(cluster.base)
