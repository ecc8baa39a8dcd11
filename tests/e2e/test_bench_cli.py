"""``stowage bench`` end to end against ``stowage up`` with a local pool: a --quick run with a baseline and a
report, Block mode, compare, and cleanup proven after success, Ctrl-C mid-run and a failing fio job."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from stowage_e2e import Stowage, poll
from support import as_from_a_shell, signal_state, stowage_executable

from storage.system import loop

pytestmark = [pytest.mark.root, pytest.mark.slow]

CLASS = """apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-ssd
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: stowage.io/local
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
parameters:
  fsType: ext4
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-xfs
provisioner: stowage.io/local
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
parameters:
  fsType: xfs
"""


@pytest.fixture(scope="module")
def stowage(start_stowage: Callable[[list[Path]], Stowage], tmp_path_factory: pytest.TempPathFactory) -> Stowage:
    manifests = tmp_path_factory.mktemp("bench-manifests") / "classes.yaml"
    manifests.write_text(CLASS)
    return start_stowage([manifests])


def assert_nothing_left(s: Stowage) -> None:
    """BN2: no benchmark pod, claim or volume in the API, and no loop device of a volume on the host."""
    def clean() -> bool:
        pods = s.client.list("pods", "default", label_selector="stowage.io/bench-run")[0]
        claims = s.client.list("persistentvolumeclaims", "default", label_selector="stowage.io/bench-run")[0]
        volumes = s.client.list("persistentvolumes", "")[0]
        return not pods and not claims and not volumes and not loop.loops_under(s.data_dir / "pools")
    assert clean(), (s.client.list("pods", "default")[0], s.client.list("persistentvolumes", "")[0],
                     loop.loops_under(s.data_dir))


def test_quick_run_with_baseline_and_report(stowage: Stowage, tmp_path: Path) -> None:
    """BN1-BN4, BN8, BN13, BN15, BN16, BN19, BN22: all profiles on a fresh claim in under a minute of fio,
    volume ÷ raw pool for each figure, the result document and the report; the volume is a loop device
    with direct I/O that fio's disk statistics name; everything created is gone afterwards."""
    out = tmp_path / "run"
    started = time.monotonic()
    # One measured second per job, no ramp: the machinery is under test, not the disk (16 fio runs).
    r = stowage.cli("bench", "--quick", "--runtime", "1", "--ramp", "0", "--baseline", "--output-dir", str(out),
                    timeout=400)
    assert time.monotonic() - started < 300
    doc = json.loads((out / "result.json").read_text())
    assert doc["schema"] == "stowage.io/bench/v1" and doc["settings"]["quick"] is True
    node = doc["classes"][0]["nodes"][0]
    assert set(node["jobs"]) == {"randread-iops", "randwrite-iops", "seqread-bw", "seqwrite-bw", "randread-lat",
                                 "randwrite-lat", "mixed-70-30", "fdatasync"}
    assert node["jobs"]["randread-iops"]["figures"]["read_iops"]["median"] > 100
    assert node["jobs"]["fdatasync"]["figures"]["sync_lat_p99_us"]["median"] > 0
    loops = node["facts"]["loop_devices"]
    assert len(loops) == 1 and all(loops.values()), loops  # the pool's volume has direct I/O
    assert node["jobs"]["randread-lat"]["disks"] == sorted(loops)
    assert set(node["ratios"]) == set(node["jobs"]) and all(v > 0 for v in node["ratios"]["seqwrite-bw"].values())
    assert not [w for w in doc["warnings"] if "BN15" in w or "BN16" in w], doc["warnings"]
    for name in ("report.html", "iops.png", "bandwidth.png", "latency.png"):
        assert (out / name).stat().st_size > 1000
    assert "randread-iops" in r.stdout and "÷ baseline" in r.stdout
    assert_nothing_left(stowage)


def test_block_mode_two_classes_and_compare(stowage: Stowage, tmp_path: Path) -> None:
    """BN1, BN20, BN21: a Block claim is benchmarked as a device; two classes side by side; compare of two
    saved runs reports each figure and whether it exceeds the noise."""
    a, b = tmp_path / "a", tmp_path / "b"
    stowage.cli("bench", "--quick", "--volume-mode", "Block", "--jobs", "randread-lat,seqwrite-bw",
                "--runtime", "1", "--ramp", "0", "--output-dir", str(a), timeout=300)
    doc = json.loads((a / "result.json").read_text())
    assert doc["settings"]["volume_mode"] == "Block"
    assert doc["classes"][0]["nodes"][0]["jobs"]["seqwrite-bw"]["figures"]["write_bw_mib"]["median"] > 1
    r = stowage.cli("bench", "--quick", "--storage-class", "local-ssd,local-xfs", "--jobs", "randread-lat",
                    "--repeats", "2", "--runtime", "1", "--ramp", "0", "--output-dir", str(b), timeout=300)
    assert "side by side" in r.stdout and "local-xfs" in r.stdout
    assert [c["storage_class"] for c in json.loads((b / "result.json").read_text())["classes"]] == ["local-ssd", "local-xfs"]
    cmp = subprocess.run([stowage_executable(), "bench", "compare", str(b), str(b / "result.json"), "--all"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert cmp.returncode == 0, cmp.stderr
    assert "read_iops" in cmp.stdout and "differences exceed the noise" in cmp.stdout
    assert_nothing_left(stowage)


def test_ctrl_c_mid_run_cleans_up(stowage: Stowage) -> None:
    """BN2: SIGINT while fio runs in the pod: the command removes its pod, claim and volume, and exits 130."""
    proc = subprocess.Popen([stowage_executable(), "bench", "--repeats", "3", "--runtime", "20", "--size", "256Mi",
                             "--kubeconfig", str(stowage.kubeconfig)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ),
                            preexec_fn=as_from_a_shell)
    state = ""
    try:
        poll("the benchmark pod running fio", lambda: any(
            (p.get("status") or {}).get("phase") == "Running"
            for p in stowage.client.list("pods", "default", label_selector="stowage.io/bench-run")[0]), 120)
        time.sleep(3)
        state = signal_state(proc.pid)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, f"signals of the command: {state}\n{out[-3000:]}"
    assert "interrupted" in out
    assert_nothing_left(stowage)


def test_failing_job_cleans_up_and_names_fio_error(stowage: Stowage, tmp_path: Path) -> None:
    """BN2, BN6: a user's job file that fio rejects fails the command with fio's message; nothing is left."""
    job = tmp_path / "bad.fio"
    job.write_text("[bad]\nrw=randread\nbs=4k\nsize=16m\nfilename=${FILENAME}\nno_such_option=1\n")
    r = stowage.cli("bench", "--quick", "--job-file", str(job), check=False, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "fio job custom" in r.stderr and "no_such_option" in r.stderr, r.stderr
    assert_nothing_left(stowage)


def test_bad_input_is_refused_before_anything_is_created(stowage: Stowage) -> None:
    """BN1, BN23: unknown class, too many nodes, unknown job: a clear error naming the flag; nothing created."""
    r = stowage.cli("bench", "--storage-class", "nope", check=False)
    assert r.returncode == 1 and "nope" in r.stderr
    r = stowage.cli("bench", "--nodes", "2", check=False)
    assert r.returncode == 1 and "--nodes: 2 Ready nodes wanted, 1 match" in r.stderr
    r = stowage.cli("bench", "--jobs", "randread-iops,bogus", check=False)
    assert r.returncode == 1 and "--jobs: unknown job bogus" in r.stderr
    assert_nothing_left(stowage)


def test_label_nodes_then_a_class_requiring_the_figure_places_by_it(stowage: Stowage) -> None:
    """BN25 with BP1, BP8, BP20: a class that requires a measured figure can itself be benchmarked on a node
    nobody measured yet (the bench pod is exempt); `--label-nodes` records the figures on the node; then a
    claim of the class places its pod there. A class that requires far more than was measured leaves its pod
    Pending, the reason in `describe pod`."""
    from storage.api.bench_figures import node_figures

    def make_class(name: str, minimum: int) -> None:
        stowage.client.create({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
                               "provisioner": "stowage.io/local", "volumeBindingMode": "WaitForFirstConsumer",
                               "reclaimPolicy": "Delete", "parameters": {"fsType": "ext4",
                                                                         "minRandomWriteIOPS": str(minimum)}})

    def claim_and_pod(name: str, class_name: str) -> None:
        stowage.client.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                               "metadata": {"name": name, "namespace": "default"},
                               "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class_name,
                                        "resources": {"requests": {"storage": "64Mi"}}}})
        stowage.client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                               "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                                   "name": "main", "image": "debian:12", "command": ["sleep", "600"],
                                   "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
                                   "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": name}}]}})

    make_class("fast", 100)
    stowage.cli("bench", "--quick", "--runtime", "1", "--ramp", "0", "--storage-class", "fast", "--jobs",
                "randwrite-iops,fdatasync", "--label-nodes", timeout=400)
    node = stowage.client.list("nodes", "")[0][0]
    figures = node_figures(node, "fast")
    assert figures is not None and figures["randWriteIOPS"] > 100 and figures["fsyncLatencyP99Us"] > 0, figures
    make_class("faster", int(figures["randWriteIOPS"]) * 1000)
    stowage.cli("bench", "--quick", "--runtime", "1", "--ramp", "0", "--storage-class", "faster", "--jobs",
                "randwrite-iops", "--label-nodes", timeout=400)
    claim_and_pod("on-fast", "fast")
    claim_and_pod("on-faster", "faster")
    try:
        poll("the pod of the class the node meets scheduled",
             lambda: stowage.client.get("pods", "on-fast", "default")["spec"].get("nodeName"), 120,
             diagnose=lambda: stowage.describe("pod"))

        def reason() -> str | None:
            out = stowage.cli("describe", "pod", "on-faster").stdout
            return out if "below minRandomWriteIOPS" in out else None

        described = poll("the reason the other pod waits", reason, 120, diagnose=lambda: stowage.describe("pod"))
        assert "FailedScheduling" in described and "0/1 nodes are available" in described, described
        assert not stowage.client.get("pods", "on-faster", "default")["spec"].get("nodeName")
    finally:
        for name in ("on-fast", "on-faster"):
            stowage.client.delete("pods", name, "default")
            stowage.client.delete("persistentvolumeclaims", name, "default")
        poll("the placement test's volumes gone", lambda: not stowage.client.list("persistentvolumes", "")[0], 120)
