"""How ``stowage bench`` prepares the test file before measuring (BN30, BN31): the pod's script and a
real fio prefill on a temp file (no cluster)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from storage.cli.bench import jobs as jobmod
from storage.cli.bench.runner import MARK, START_DIR, START_KEY, Plan, Target, _script, objects, start_config_map

MiB = 1 << 20
FIO_COMMAND = jobmod.shell(list(jobmod.FIO)) + " "  # BN33: fio behind its environment


def _plan(names: list[str], *, block: bool = False, repeats: int = 2, job_file: str | None = None) -> Plan:
    s = jobmod.Settings(size=64 * MiB, runtime=2, ramp=1, repeats=repeats)
    return Plan(storage_class="c", size="1Gi", size_bytes=1 << 30, volume_mode="Block" if block else "Filesystem",
                jobs=jobmod.select(names), settings=s, job_file=job_file)


def _fio_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith(FIO_COMMAND)]


def test_pod_script_prefills_once_before_the_first_measured_job() -> None:
    """BN30: one sequential direct write of the whole test file, before the first job of the first repeat,
    whichever jobs were chosen, so a job's figure does not depend on what ran before it."""
    script = _script(_plan(["randwrite-iops", "randread-lat"]), False)
    fio = _fio_lines(script)
    assert len(fio) == 1 + 2 * 2  # the prefill, then two jobs x two repeats
    pre = fio[0]
    assert "--name=prefill" in pre and "--filename=/data/stowage-bench/fio.dat" in pre
    assert {"--rw=write", "--bs=1m", "--direct=1", f"--size={64 * MiB}", "--fallocate=none"} <= set(pre.split())
    assert script.index("--name=prefill") < script.index(f"{MARK} begin randwrite-iops 1")
    assert all("--name=prefill" not in line for line in fio[1:])
    assert all("--filename=/data/stowage-bench/fio.dat" in line for line in fio[1:])
    # A failing prefill ends the pod with fio's message, as a failing job does.
    assert f"{MARK} fail prefill 0" in script
    subprocess.run(["sh", "-n", "-c", script], check=True)


def test_fdatasync_writes_a_new_file_of_its_own_each_run() -> None:
    """BN31: the etcd job runs on fio-sync.dat, removed after every run; alone it needs no prefill."""
    script = _script(_plan(["fdatasync"]), False)
    fio = _fio_lines(script)
    assert len(fio) == 2 and not any("--name=prefill" in line for line in fio)
    assert all(f"--filename=/data/stowage-bench/{jobmod.SYNC_FILE}" in line for line in fio)
    lines = script.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(FIO_COMMAND):
            assert lines[i + 1] == f"rm -f /data/stowage-bench/{jobmod.SYNC_FILE}"
    mixed = _fio_lines(_script(_plan(["fdatasync", "seqwrite-bw"], repeats=1), False))
    assert "--name=prefill" in mixed[0] and "--filename=/data/stowage-bench/fio.dat" in mixed[0]


def test_block_mode_and_job_files() -> None:
    """BN30-BN31 in Block mode: the device range is prefilled and fdatasync runs on the device; a user's job
    file (BN6) runs as written, with no prefill."""
    fio = _fio_lines(_script(_plan(["randwrite-iops", "fdatasync"], block=True, repeats=1), False))
    assert "--name=prefill" in fio[0] and all("--filename=/dev/stowage-bench" in line for line in fio)
    custom = _script(_plan([], job_file="[j]\nrw=read\n"), False)
    assert "--name=prefill" not in custom and "rm -f" not in custom


def test_several_nodes_wait_after_their_prefill_for_the_common_start_BN23() -> None:
    """BN23: with several nodes each pod prepares its file first (prefill times differ between nodes), then
    logs that it is ready and waits for the start time in the run's mounted ConfigMap; a single pod does not."""
    plan = _plan(["randread-lat", "seqwrite-bw"])
    script = _script(plan, True)
    ready = script.index(f"echo '{MARK} ready'")
    assert script.index("--name=prefill") < ready < script.index(f"{MARK} begin randread-lat 1")
    assert script.index(f"{START_DIR}/{START_KEY}", ready) < script.index(f"{MARK} begin randread-lat 1")
    subprocess.run(["sh", "-n", "-c", script], check=True)
    _, pod = objects(plan, Target("n1", "p", "c"), True)
    container = pod["spec"]["containers"][0]
    assert {"name": "start", "configMap": {"name": start_config_map(plan)}} in pod["spec"]["volumes"]
    assert {"name": "start", "mountPath": START_DIR, "readOnly": True} in container["volumeMounts"]

    alone = _script(plan, False)
    assert f"{MARK} ready" not in alone and START_DIR not in alone
    _, pod = objects(plan, Target("n1", "p", "c"), False)
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["data"]


def test_prefill_leaves_the_file_fully_written(tmp_path: Path) -> None:
    """BN30: after the prefill the test file has its full size and no unwritten (fallocated-only) extent,
    so write jobs measure overwrites and read jobs read real blocks."""
    if not shutil.which("fio") or not shutil.which("filefrag"):
        pytest.skip("fio or filefrag is not installed")
    s = jobmod.Settings(size=8 * MiB, runtime=1, ramp=0, repeats=1)
    # The state the rule exists for: a file fio lays out for a write job is only fallocated (unwritten).
    fresh = tmp_path / "fresh.dat"
    subprocess.run(["fio", "--name=layout", f"--filename={fresh}", f"--size={8 * MiB}", "--rw=randwrite",
                    "--bs=4k", "--io_size=4k", "--direct=1", "--output-format=json"],
                   capture_output=True, text=True, timeout=60, check=True)
    if "unwritten" not in subprocess.run(["filefrag", "-v", str(fresh)], capture_output=True, text=True,
                                         check=True).stdout:
        pytest.skip("this filesystem keeps no unwritten extents, so the contrast cannot be seen")
    target = tmp_path / "fio.dat"
    subprocess.run(jobmod.prefill_argv(s, str(target)), capture_output=True, text=True, timeout=60, check=True)
    assert target.stat().st_size == 8 * MiB and target.stat().st_blocks * 512 >= 8 * MiB
    extents = subprocess.run(["filefrag", "-v", str(target)], capture_output=True, text=True, check=True).stdout
    # filefrag says "1 extent found" for a contiguous file and "N extents found" otherwise.
    assert "unwritten" not in extents and re.search(r"\b\d+ extents? found", extents), extents
